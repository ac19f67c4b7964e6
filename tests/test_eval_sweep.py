"""Zero-shot / retrieval with concept reconstructions and sparsity sweeps on planted synthetic data."""

from __future__ import annotations

import numpy as np
import pytest

from clapdex.concepts.decompose import audio_mean, decompose
from clapdex.concepts.dictionary import ConceptDictionary
from clapdex.evaluation.representations import ConceptSetting
from clapdex.evaluation.retrieval import evaluate_retrieval, retrieval_metrics
from clapdex.evaluation.sweep import plot_sweep
from clapdex.evaluation.zeroshot import evaluate_zeroshot

LAMBDAS = [0.005, 0.02, 0.05, 0.1, 0.2]


def _planted(seed=0, d=48, k=30, n_classes=4, per_class=25):
    """Concepts are random directions; class c's files are mostly concept c plus a few others."""
    rng = np.random.default_rng(seed)
    text = rng.standard_normal((k, d)).astype(np.float32)
    unit = text / np.linalg.norm(text, axis=1, keepdims=True)
    targets = np.repeat(np.arange(n_classes), per_class)
    audio = 1.0 * unit[targets]
    for i in range(len(targets)):
        others = rng.choice(np.arange(n_classes, k), 3, replace=False)
        audio[i] += rng.uniform(0.1, 0.4, 3) @ unit[others]
    audio += 0.05 * rng.standard_normal(audio.shape)
    names = tuple(f"concept {i}" for i in range(k))
    return audio.astype(np.float32), targets, text[:n_classes], ConceptDictionary.from_text_embeddings(names, text)


def _direct_concept_accuracy(audio, targets, class_text, dictionary, lam):
    """Independent reading of design.md: decompose, recompose by hand, argmax cosine, mean correct."""
    mu = audio_mean(audio)
    weights = decompose(audio, dictionary, mu, lam=lam).weights.toarray()
    u = weights @ dictionary.atoms
    norms = np.linalg.norm(u, axis=1, keepdims=True)
    r = np.where(norms > 0, u / np.where(norms > 0, norms, 1), 0) + mu
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    t = class_text / np.linalg.norm(class_text, axis=1, keepdims=True)
    return np.mean(np.argmax(r @ t.T, axis=1) == targets), (weights > 0).sum(axis=1).mean()


def test_zeroshot_rows_match_a_direct_computation():
    audio, targets, class_text, dictionary = _planted()
    settings = [ConceptSetting(lam=lam) for lam in LAMBDAS]
    rows = evaluate_zeroshot(audio, targets, class_text, dictionary, audio_mean(audio), settings)
    dense = np.mean(np.argmax(audio @ class_text.T / np.linalg.norm(class_text, axis=1), axis=1) == targets)
    assert rows[0].representation == "dense" and rows[0].accuracy == pytest.approx(dense)
    assert rows[0].accuracy == 1.0  # planted classes: the answer is known
    for row, lam in zip(rows[1:], LAMBDAS):
        expected_accuracy, expected_active = _direct_concept_accuracy(audio, targets, class_text, dictionary, lam)
        assert row.accuracy == pytest.approx(expected_accuracy)
        assert row.mean_active == pytest.approx(expected_active)
        assert 0 < row.mean_fidelity <= 1
    assert rows[1].accuracy == 1.0  # with little shrinkage the planted concept is recovered


def test_sweep_is_monotone_in_sparsity():
    audio, targets, class_text, dictionary = _planted(seed=1)
    settings = [ConceptSetting(lam=lam) for lam in LAMBDAS]
    rows = evaluate_zeroshot(audio, targets, class_text, dictionary, audio_mean(audio), settings)[1:]
    active = [row.mean_active for row in rows]
    fidelity = [row.mean_fidelity for row in rows]
    assert all(a >= b for a, b in zip(active, active[1:])) and active[0] > active[-1]
    assert all(a >= b - 1e-9 for a, b in zip(fidelity, fidelity[1:]))


def test_max_concepts_caps_active_concepts():
    audio, targets, class_text, dictionary = _planted(seed=2)
    settings = [ConceptSetting(max_concepts=n) for n in (1, 3, 8)]
    rows = evaluate_zeroshot(audio, targets, class_text, dictionary, audio_mean(audio), settings)[1:]
    for row, n in zip(rows, (1, 3, 8)):
        assert row.mean_active <= n and row.setting == f"N={n}"


def test_retrieval_concept_rows_use_reconstructions():
    audio, targets, class_text, dictionary = _planted(seed=3, per_class=5)
    captions = np.concatenate([audio[:10] + 0.01, class_text])  # 10 exact + 4 class-level captions
    caption_file = list(range(10)) + [0, 5, 10, 15]
    rows = evaluate_retrieval(audio, captions, caption_file, dictionary, audio_mean(audio),
                              [ConceptSetting(lam=0.005), ConceptSetting(lam=0.2)])
    assert rows[0].t2a_r1 == pytest.approx(retrieval_metrics(audio, captions, caption_file)["t2a_r1"])
    assert rows[1].mean_active > rows[2].mean_active
    assert all(0 <= getattr(row, m) <= 1 for row in rows for m in ("t2a_r10", "a2t_map10"))


@pytest.mark.parametrize("suffix", [".png", ".svg"])
def test_plot_is_written(tmp_path, suffix):
    audio, targets, class_text, dictionary = _planted(seed=4, per_class=8)
    rows = evaluate_zeroshot(audio, targets, class_text, dictionary, audio_mean(audio),
                             [ConceptSetting(lam=lam) for lam in (0.01, 0.1)])
    path = plot_sweep(rows, "accuracy", tmp_path / f"sweep{suffix}")
    head = path.read_bytes()[:200]
    assert head.startswith(b"\x89PNG") if suffix == ".png" else b"<svg" in path.read_bytes()


def test_concept_views_of_a_sweep_equal_one_setting_at_a_time():
    from clapdex.evaluation.representations import concept_view, concept_views

    audio, targets, class_text, dictionary = _planted(seed=5, per_class=6)
    mu = audio_mean(audio)
    settings = [ConceptSetting(lam=0.2), ConceptSetting(max_concepts=3), ConceptSetting(lam=0.005),
                ConceptSetting(lam=0.05), ConceptSetting(max_concepts=8)]
    views = list(concept_views(audio, dictionary, mu, settings))
    assert [v.setting for v in views] == settings
    for view, setting in zip(views, settings):
        alone = concept_view(audio, dictionary, mu, setting)
        np.testing.assert_array_equal(view.active, alone.active)
        np.testing.assert_allclose(view.reconstructions, alone.reconstructions, rtol=0, atol=1e-12)
        np.testing.assert_allclose(view.concept_fidelity, alone.concept_fidelity, rtol=0, atol=1e-12)
