"""decompose / recompose / fidelity / exact explanation terms."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from clapdex.concepts.decompose import (DEFAULT_LAMBDA, Decomposition, audio_mean, decompose, explain_terms,
                                        recompose)
from clapdex.concepts.dictionary import ConceptDictionary
from clapdex.concepts.solver import kkt_violation
from clapdex.errors import DecompositionError


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture
def setup():
    rng = np.random.default_rng(0)
    d, k = 32, 80
    common = rng.standard_normal(d) * 2
    text = (common + rng.standard_normal((k, d))).astype(np.float32)
    dictionary = ConceptDictionary.from_text_embeddings([f"c{i}" for i in range(k)], text)
    audio_common = rng.standard_normal(d) * 3
    audio = (audio_common + rng.standard_normal((40, d))).astype(np.float32)
    return dictionary, audio, audio_mean(audio), rng


def test_audio_mean_is_mean_of_unit_rows():
    a = np.array([[3.0, 4.0], [0.0, 2.0]])
    np.testing.assert_allclose(audio_mean(a), [(0.6 + 0.0) / 2, (0.8 + 1.0) / 2])


@pytest.mark.parametrize("bad", [np.zeros((0, 4)), np.array([[np.nan, 1.0]]), np.array([[1.0, np.inf]]),
                                 np.array([[0.0, 0.0]])])
def test_audio_mean_rejects_bad_input(bad):
    with pytest.raises(DecompositionError):
        audio_mean(bad)


def test_decompose_solves_the_centred_problem(setup):
    dictionary, audio, mu, _ = setup
    result = decompose(audio, dictionary, mu, lam=0.05)
    assert isinstance(result, Decomposition) and len(result) == 40
    assert sp.isspmatrix_csr(result.weights) and result.weights.shape == (40, 80)
    assert result.weights.data.min() > 0
    z = unit(unit(audio.astype(np.float64)) - mu)
    b = z @ dictionary.atoms.T
    assert kkt_violation(dictionary.gram(), b, result.weights.toarray(), 0.05).max() <= 1e-8
    np.testing.assert_array_equal(result.lam, np.full(40, 0.05))
    # fidelity, recon_norm and shift_norm follow their definitions
    u = result.weights.toarray() @ dictionary.atoms
    n = np.linalg.norm(u, axis=1)
    assert np.all(n > 0)
    np.testing.assert_allclose(result.recon_norm, n)
    v = u / n[:, None] + mu
    np.testing.assert_allclose(result.shift_norm, np.linalg.norm(v, axis=1))
    r = recompose(result.weights, dictionary, mu)
    np.testing.assert_allclose(r, unit(v), atol=1e-12)
    np.testing.assert_allclose(result.fidelity, np.einsum("ij,ij->i", r, unit(audio.astype(np.float64))))
    assert np.all(result.fidelity > 0.5)


def test_default_lambda_and_sparsity_modes(setup):
    dictionary, audio, mu, _ = setup
    default = decompose(audio, dictionary, mu)
    np.testing.assert_array_equal(default.lam, DEFAULT_LAMBDA)
    capped = decompose(audio, dictionary, mu, max_concepts=3)
    assert np.diff(capped.weights.indptr).max() <= 3
    assert np.all(capped.lam > 0)
    with pytest.raises(DecompositionError):
        decompose(audio, dictionary, mu, lam=0.1, max_concepts=3)
    with pytest.raises(DecompositionError):
        decompose(audio, dictionary, mu, lam=-1)


def test_explanation_identity(setup):
    dictionary, audio, mu, rng = setup
    result = decompose(audio, dictionary, mu, lam=0.03)
    r = recompose(result.weights, dictionary, mu)
    for _ in range(5):
        q = unit(rng.standard_normal(dictionary.dimension))
        s = dictionary.atoms @ q
        for i in range(len(result)):
            contributions, baseline = explain_terms(result.weights[i], s, result.recon_norm[i],
                                                    result.shift_norm[i], float(mu @ q))
            assert contributions.shape == (dictionary.size,)
            assert abs(contributions.sum() + baseline - r[i] @ q) <= 1e-6
            # only concepts with weight contribute
            assert np.all(contributions[result.weights[i].toarray().ravel() == 0] == 0)


def test_zero_weights_case_keeps_the_identity(setup):
    dictionary, audio, mu, rng = setup
    result = decompose(audio[:3], dictionary, mu, lam=10.0)  # lam far above λ_max
    assert result.weights.nnz == 0
    np.testing.assert_array_equal(result.recon_norm, 1.0)
    np.testing.assert_allclose(result.shift_norm, np.linalg.norm(mu))
    r = recompose(result.weights, dictionary, mu)
    np.testing.assert_allclose(r, np.tile(unit(mu), (3, 1)))
    q = unit(rng.standard_normal(dictionary.dimension))
    contributions, baseline = explain_terms(result.weights[0], dictionary.atoms @ q, result.recon_norm[0],
                                            result.shift_norm[0], float(mu @ q))
    assert abs(contributions.sum() + baseline - r[0] @ q) <= 1e-12


def test_exactly_representable_embedding_has_fidelity_one(setup):
    dictionary, _, _, rng = setup
    # r = normalize(normalize(Cw) + μ_A) equals x = normalize(a) exactly when z = normalize(x − μ_A)
    # lies in the cone of the atoms and ‖x − μ_A‖ = 1. Build such an x and μ_A.
    w = np.zeros(dictionary.size)
    w[[3, 17, 42]] = [0.7, 0.4, 0.2]
    z = unit(w @ dictionary.atoms)
    side = rng.standard_normal(dictionary.dimension)
    side = unit(side - (side @ z) * z)            # orthogonal to z
    s = 0.5
    beta = -1 + np.sqrt(1 - s * s)                # so that ‖z + μ‖ = 1
    mu = beta * z + s * side
    x = z + mu
    assert np.linalg.norm(x) == pytest.approx(1.0)
    result = decompose(3.0 * x[None, :], dictionary, mu, lam=0.0)
    assert result.fidelity[0] == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(recompose(result.weights, dictionary, mu)[0], x, atol=1e-8)
    # a window that is not representable has fidelity < 1
    other = decompose(rng.standard_normal((1, dictionary.dimension)), dictionary, mu, lam=0.0)
    assert other.fidelity[0] < 0.999


def test_an_embedding_equal_to_the_mean_direction(setup):
    dictionary, _, _, rng = setup
    a = rng.standard_normal(dictionary.dimension)
    mu = unit(a)  # e.g. the mean of a one-window corpus
    result = decompose(a[None, :], dictionary, mu)
    assert result.weights.nnz == 0 and result.fidelity[0] == pytest.approx(1.0)


def test_zero_mean(setup):
    dictionary, audio, _, _ = setup
    result = decompose(audio[:5], dictionary, np.zeros(dictionary.dimension), lam=0.02)
    assert np.all(np.isfinite(result.fidelity))
    far = decompose(audio[:2], dictionary, np.zeros(dictionary.dimension), lam=10.0)
    np.testing.assert_array_equal(far.fidelity, 0.0)
    np.testing.assert_array_equal(far.shift_norm, 1.0)


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_rejects_non_finite_input(setup, value):
    dictionary, audio, mu, _ = setup
    bad = audio[:3].copy()
    bad[1, 4] = value
    with pytest.raises(DecompositionError):
        decompose(bad, dictionary, mu)
    bad_mu = mu.copy()
    bad_mu[0] = value
    with pytest.raises(DecompositionError):
        decompose(audio[:3], dictionary, bad_mu)
    s = np.ones(dictionary.size)
    s[2] = value
    with pytest.raises(DecompositionError):
        explain_terms(np.zeros(dictionary.size), s, 1.0, 1.0, 0.0)
    with pytest.raises(DecompositionError):
        explain_terms(np.zeros(dictionary.size), np.ones(dictionary.size), value, 1.0, 0.0)


def test_rejects_wrong_shapes(setup):
    dictionary, audio, mu, _ = setup
    with pytest.raises(DecompositionError):
        decompose(audio[:, :10], dictionary, mu)
    with pytest.raises(DecompositionError):
        decompose(audio, dictionary, mu[:10])
    with pytest.raises(DecompositionError):
        decompose(np.zeros((2, dictionary.dimension)), dictionary, mu)
    with pytest.raises(DecompositionError):
        recompose(sp.csr_matrix((2, 5)), dictionary, mu)
    with pytest.raises(DecompositionError):
        explain_terms(np.zeros(3), np.zeros(4), 1.0, 1.0, 0.0)


def test_empty_batch(setup):
    dictionary, _, mu, _ = setup
    result = decompose(np.zeros((0, dictionary.dimension), dtype=np.float32), dictionary, mu)
    assert result.weights.shape == (0, dictionary.size) and result.fidelity.shape == (0,)


def test_decompose_path_equals_separate_decompositions(setup):
    from clapdex.concepts.decompose import decompose_path

    dictionary, audio, mu, _ = setup
    lams = [0.05, 0.2, 0.01]
    results = decompose_path(audio, dictionary, mu, lams)
    assert len(results) == 3
    for lam, result in zip(lams, results):
        alone = decompose(audio, dictionary, mu, lam=lam)
        np.testing.assert_array_equal(result.lam, np.full(40, lam))
        np.testing.assert_array_equal(result.weights.indptr, alone.weights.indptr)
        np.testing.assert_array_equal(result.weights.indices, alone.weights.indices)
        np.testing.assert_allclose(result.weights.data, alone.weights.data, rtol=0, atol=1e-12)
        for field in ("fidelity", "concept_fidelity", "recon_norm", "shift_norm"):
            np.testing.assert_allclose(getattr(result, field), getattr(alone, field), rtol=0, atol=1e-12)
    assert results[2].weights.nnz > results[0].weights.nnz > results[1].weights.nnz
    with pytest.raises(DecompositionError):
        decompose_path(audio, dictionary, mu, [0.1, -1.0])


def test_max_concepts_path_equals_separate_decompositions(setup):
    from clapdex.concepts.decompose import decompose_max_concepts_path

    dictionary, audio, mu, _ = setup
    counts = [5, 2, 12]
    results = decompose_max_concepts_path(audio, dictionary, mu, counts)
    assert len(results) == 3
    for n_max, result in zip(counts, results):
        alone = decompose(audio, dictionary, mu, max_concepts=n_max)
        np.testing.assert_array_equal(result.lam, alone.lam)
        np.testing.assert_array_equal(result.weights.toarray(), alone.weights.toarray())
        for field in ("fidelity", "concept_fidelity", "recon_norm", "shift_norm"):
            np.testing.assert_array_equal(getattr(result, field), getattr(alone, field))
        assert np.diff(result.weights.indptr).max() <= n_max
    with pytest.raises(DecompositionError):
        decompose_max_concepts_path(audio, dictionary, mu, [3, 0])


def test_very_small_lambda_warns_and_says_why(setup):
    from clapdex.concepts.decompose import SLOW_LAMBDA, SlowDecompositionWarning

    dictionary, audio, mu, _ = setup
    with pytest.warns(SlowDecompositionWarning, match="conditioned"):
        decompose(audio[:2], dictionary, mu, lam=SLOW_LAMBDA / 2)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", SlowDecompositionWarning)
        decompose(audio[:2], dictionary, mu, lam=SLOW_LAMBDA)  # at the threshold: no warning
        decompose(audio[:2], dictionary, mu, max_concepts=3)
