"""Evaluation metrics, datasets and the embedding cache (no concept decomposition needed)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

from clapdex.evaluation.datasets import DatasetError, load_captions, load_labeled
from clapdex.evaluation.embeddings import embed_files
from clapdex.evaluation.report import format_table
from clapdex.evaluation.retrieval import retrieval_metrics
from clapdex.evaluation.sweep import SweepError, parse_settings
from clapdex.evaluation.zeroshot import PromptError, accuracy, class_prompts, classify, macro_f1
from tests.doubles import SpectralTestEncoder, sine


def test_accuracy_and_macro_f1_match_direct_computation():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    targets = rng.integers(0, 5, 200)
    predictions = np.where(rng.random(200) < 0.6, targets, rng.integers(0, 5, 200))
    predictions[predictions == 4] = 3  # class 4 never predicted: its F1 must count as 0
    assert accuracy(targets, predictions) == pytest.approx(np.mean(targets == predictions))
    assert macro_f1(targets, predictions, 5) == pytest.approx(
        sklearn_metrics.f1_score(targets, predictions, average="macro", labels=range(5), zero_division=0))


def test_classify_picks_the_highest_cosine_not_the_highest_dot_product():
    classes = np.array([[1.0, 0.0], [10.0, 10.0]])  # class 1 is long: cosine must ignore that
    vectors = np.array([[1.0, 0.1], [0.2, 1.0]])
    assert classify(vectors, classes).tolist() == [0, 1]


def test_retrieval_metrics_on_a_hand_computed_example():
    audio = np.eye(3)
    # captions 0,1 -> file 0; caption 2 -> file 1; caption 3 -> file 2
    text = np.array([[1.0, 0.0, 0.0], [0.0, 0.9, 0.1], [0.0, 1.0, 0.0], [0.5, 0.0, 0.4]])
    metrics = retrieval_metrics(audio, text, [0, 0, 1, 2])
    # text->audio ranks of the right file: 1, 3, 1, 2
    assert metrics["t2a_r1"] == pytest.approx(2 / 4)
    assert metrics["t2a_r10"] == pytest.approx(1.0)
    assert metrics["t2a_map10"] == pytest.approx((1 + 1 / 3 + 1 + 1 / 2) / 4)
    # audio->text: file 0 ranks captions 0(1.0),3(0.5),1,2 -> relevant at ranks 1 and 3
    ap0 = (1 / 1 + 2 / 3) / 2
    # file 1 ranks caption 2 (1.0) then 1 (0.9): relevant at rank 1; file 2: caption 3 (0.4) first
    assert metrics["a2t_r1"] == pytest.approx(1.0)
    assert metrics["a2t_map10"] == pytest.approx((ap0 + 1 + 1) / 3)
    # a file without captions is not an audio→text query
    with_extra = retrieval_metrics(np.vstack([audio, [[0.6, 0.6, 0.5]]]), text, [0, 0, 1, 2])
    assert with_extra["a2t_map10"] == pytest.approx(metrics["a2t_map10"])


def _write_sine(path, freq, seconds=1.0, sample_rate=8000):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, sine(freq, seconds, sample_rate), sample_rate)


def test_folder_and_csv_datasets(tmp_path):
    for label in ("a", "b"):
        for i in range(2):
            _write_sine(tmp_path / "data" / label / f"{i}.wav", 440)
    (tmp_path / "data" / "b" / "notes.txt").write_text("not audio")
    folder = load_labeled(tmp_path / "data")
    assert folder.classes == ("a", "b") and folder.targets == [0, 0, 1, 1]
    (tmp_path / "labels.csv").write_text("Path,Label\ndata/a/0.wav,x\ndata/b/1.wav,y\n")
    table = load_labeled(tmp_path / "labels.csv")
    assert table.labels == ("x", "y") and table.paths[0] == tmp_path / "data" / "a" / "0.wav"
    (tmp_path / "captions.csv").write_text("file_name,caption\nx.wav,one\ny.wav,two\nx.wav,three\n")
    captions = load_captions(tmp_path / "captions.csv")
    assert [p.name for p in captions.paths] == ["x.wav", "y.wav"] and captions.caption_file == (0, 1, 0)


def test_bad_datasets_raise_typed_errors(tmp_path):
    (tmp_path / "bad.csv").write_text("name,thing\nx,y\n")
    with pytest.raises(DatasetError, match="path column"):
        load_labeled(tmp_path / "bad.csv")
    (tmp_path / "one.csv").write_text("path,label\nx.wav,dog\n")
    with pytest.raises(DatasetError, match="2 classes"):
        load_labeled(tmp_path / "one.csv")
    with pytest.raises(DatasetError, match="no such"):
        load_labeled(tmp_path / "missing")
    with pytest.raises(PromptError):
        class_prompts(["dog"], "no placeholder")
    with pytest.raises(SweepError):
        parse_settings(sweep="0.1,abc")
    with pytest.raises(SweepError):
        parse_settings(lam=0.1, max_concepts="5")


def test_sweep_settings_are_sorted_and_deduplicated():
    assert [s.lam for s in parse_settings(sweep="0.2,0.05,0.2")] == [0.05, 0.2]
    assert [s.max_concepts for s in parse_settings(max_concepts="40,5,10")] == [5, 10, 40]


def test_embeddings_are_cached_per_content_and_encoder(tmp_path):
    encoder = SpectralTestEncoder(dimension=16, window_seconds=0.5)
    _write_sine(tmp_path / "a.wav", 440, seconds=1.2)  # 3 windows
    _write_sine(tmp_path / "copy_of_a.wav", 440, seconds=1.2)
    (tmp_path / "broken.wav").write_bytes(b"not audio at all")
    paths = [tmp_path / "a.wav", tmp_path / "broken.wav", tmp_path / "copy_of_a.wav"]
    first = embed_files(encoder, paths, cache_dir=tmp_path / "cache")
    assert first.kept == [0, 2] and [p for p, _ in first.skipped] == [str(tmp_path / "broken.wav")]
    assert first.encoded == 1  # the copy has the same bytes: a cache hit
    calls = encoder.audio_calls
    second = embed_files(encoder, paths, cache_dir=tmp_path / "cache")
    assert encoder.audio_calls == calls and second.encoded == 0
    np.testing.assert_array_equal(first.embeddings, second.embeddings)
    other = SpectralTestEncoder(dimension=16, window_seconds=0.5, seed=1)
    assert embed_files(other, paths, cache_dir=tmp_path / "cache").encoded == 1  # another fingerprint


def test_files_are_embedded_in_batches_across_files(tmp_path):
    """Ten one-window files and a three-window file, batch size 4: 13 windows in 4 forward passes
    (4 + 4 + 4 + 1), not 11; each file's embedding is the one embed_file gives it alone, and a
    broken file in between loses nothing."""
    from clapdex.evaluation.embeddings import embed_file

    encoder = SpectralTestEncoder(dimension=16, window_seconds=0.5)
    encoder.batch_size = 4
    paths = []
    for i in range(10):
        paths.append(tmp_path / f"one_{i}.wav")
        _write_sine(paths[-1], 300 + 150 * i, seconds=0.4)
        if i == 4:
            paths.append(tmp_path / "broken.wav")
            paths[-1].write_bytes(b"not audio at all")
    paths.append(tmp_path / "three.wav")
    _write_sine(paths[-1], 2000, seconds=1.3)
    calls = []
    embed_audio = encoder.embed_audio
    encoder.embed_audio = lambda windows: calls.append(len(windows)) or embed_audio(windows)
    batched = embed_files(encoder, paths, use_cache=False)
    assert calls == [4, 4, 4, 1]
    assert batched.kept == [i for i in range(len(paths)) if i != 5]
    assert [p for p, _ in batched.skipped] == [str(tmp_path / "broken.wav")]
    assert batched.encoded == 11
    alone = np.stack([embed_file(encoder, paths[i]) for i in batched.kept])
    np.testing.assert_allclose(batched.embeddings, alone, rtol=1e-5, atol=1e-6)


def test_file_embedding_is_the_mean_of_unit_window_embeddings(tmp_path):
    from clapdex.audio import cut_windows, load_audio

    encoder = SpectralTestEncoder(dimension=16, window_seconds=0.5)
    samples = np.concatenate([sine(300, 0.5, 8000), 3 * sine(2000, 0.5, 8000)])
    soundfile.write(tmp_path / "two.wav", samples, 8000)
    pooled = embed_files(encoder, [tmp_path / "two.wav"], use_cache=False).embeddings[0]
    windows, _ = cut_windows(load_audio(tmp_path / "two.wav", 8000)[0], 8000, 0.5)
    emb = encoder.embed_audio(windows)
    expected = (emb / np.linalg.norm(emb, axis=1, keepdims=True)).mean(axis=0)
    np.testing.assert_allclose(pooled, expected, rtol=1e-5, atol=1e-6)


def test_table_fits_80_columns():
    from clapdex.evaluation.zeroshot import ZeroShotRow

    rows = [ZeroShotRow("dense", "", None, None, 0.823, 0.8),
            ZeroShotRow("concepts", "λ=0.125", 0.125, None, 0.828, 0.81, 27.25, 27.0, 0.71234)]
    text = format_table(rows, [("representation", "repr", 0), ("setting", "setting", 0),
                               ("mean_active", "active", 1), ("accuracy", "accuracy", 3)])
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "0.828" in text and "27.2" in text and "-" in text.splitlines()[2]


def _brute_force_retrieval(scores, caption_file):
    """Direct per-query loops: t2a R@1, R@10, mAP@10 (one relevant file); a2t R@1, R@10, mAP@10."""
    n_captions, n_files = scores.shape
    t2a = {"r1": [], "r10": [], "map10": []}
    for j in range(n_captions):
        order = sorted(range(n_files), key=lambda f: (-scores[j, f], f))
        rank = order.index(caption_file[j]) + 1
        t2a["r1"].append(rank <= 1)
        t2a["r10"].append(rank <= 10)
        t2a["map10"].append(1 / rank if rank <= 10 else 0.0)
    a2t = {"r1": [], "r10": [], "map10": []}
    for f in range(n_files):
        mine = [j for j in range(n_captions) if caption_file[j] == f]
        if not mine:
            continue
        order = sorted(range(n_captions), key=lambda j: (-scores[j, f], j))[:10]
        hits = [caption_file[j] == f for j in order]
        a2t["r1"].append(hits[0])
        a2t["r10"].append(any(hits))
        precision = [sum(hits[:i + 1]) / (i + 1) for i in range(len(hits))]
        a2t["map10"].append(sum(p for p, h in zip(precision, hits) if h) / min(len(mine), 10))
    return {f"{side}_{k}": float(np.mean(v)) for side, d in (("t2a", t2a), ("a2t", a2t))
            for k, v in d.items()}


def test_hybrid_retrieval_rows_equal_a_direct_computation():
    from clapdex.concepts.decompose import audio_mean, decompose, recompose
    from clapdex.concepts.dictionary import ConceptDictionary
    from clapdex.evaluation.representations import ConceptSetting
    from clapdex.evaluation.retrieval import evaluate_retrieval

    rng = np.random.default_rng(3)
    d, k, n_files = 32, 20, 25
    dictionary = ConceptDictionary.from_text_embeddings([f"c{i}" for i in range(k)],
                                                        rng.standard_normal((k, d)))
    audio = rng.standard_normal((n_files, d)) + 2.0 * rng.standard_normal(d)  # a shared part
    caption_file = [f for f in range(n_files) for _ in range(1 + f % 3)][:-4] + [0, 0, 0, 0]
    text = audio[caption_file] + 1.5 * rng.standard_normal((len(caption_file), d))
    mean = audio_mean(audio)
    settings = [ConceptSetting(lam=0.05), ConceptSetting(max_concepts=3)]
    rows = evaluate_retrieval(audio, text, caption_file, dictionary, mean, settings, [0.2, 0.5, 0.8])
    assert [(r.representation, r.alpha) for r in rows] == [("dense", None)] + [
        (kind, a) for _ in settings for kind, a in
        [("concepts", None), ("hybrid", 0.2), ("hybrid", 0.5), ("hybrid", 0.8)]]
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    dense = unit(text) @ unit(audio).T
    for row in rows[1:]:
        setting = settings[0] if row.lam is not None else settings[1]
        weights = decompose(audio, dictionary, mean, lam=setting.lam,
                            max_concepts=setting.max_concepts).weights
        concept = unit(text) @ recompose(weights, dictionary, mean).T
        alpha = 0.0 if row.alpha is None else row.alpha
        expected = _brute_force_retrieval(alpha * dense + (1 - alpha) * concept, caption_file)
        for metric, value in expected.items():
            assert getattr(row, metric) == pytest.approx(value), (row.setting, metric)
    # the α = 0.5 hybrid is not just one of its parts on this data
    hybrid = [r for r in rows if r.alpha == 0.5][0]
    assert (hybrid.t2a_map10, hybrid.a2t_map10) != (rows[0].t2a_map10, rows[0].a2t_map10)


def test_alpha_options():
    from clapdex.evaluation.sweep import ALPHA_SWEEP, SweepError, parse_alphas

    assert parse_alphas("0.8,0.2,0.5,0.2") == [0.2, 0.5, 0.8]
    assert parse_alphas(None, sweep=True) == list(ALPHA_SWEEP) and len(ALPHA_SWEEP) == 11
    assert parse_alphas(None) == []
    for bad in ("1.5", "x", ""):
        with pytest.raises(SweepError):
            parse_alphas(bad)
    with pytest.raises(SweepError, match="only one"):
        parse_alphas("0.5", sweep=True)
