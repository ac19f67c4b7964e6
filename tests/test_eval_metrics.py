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
