"""The exact non-negative Lasso, checked against scikit-learn and the optimality conditions.

scikit-learn's Lasso minimises (1/(2·n_samples))‖y − Xw‖² + alpha‖w‖₁. With X = C (d × K, atoms as
columns) and y = z, n_samples = d; multiplying by d gives ½‖Cw − z‖² + (alpha·d)‖w‖₁, so our lam
corresponds to alpha = lam / d.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import Lasso

from clapdex.concepts.solver import (kkt_violation, lambda_max, nonneg_lasso, nonneg_lasso_max_concepts,
                                     nonneg_lasso_path, objective)
from clapdex.errors import DecompositionError


def unit_rows(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def random_atoms(rng, k, d):
    return unit_rows(rng.standard_normal((k, d)))


def clustered_atoms(rng, k, d, clusters, spread=0.25):
    """Highly coherent dictionary: atoms are small perturbations of a few cluster centres."""
    centres = unit_rows(rng.standard_normal((clusters, d)))
    labels = np.arange(k) % clusters
    return unit_rows(centres[labels] + spread * rng.standard_normal((k, d)) / np.sqrt(d))


def sklearn_solution(atoms, z, lam):
    d = atoms.shape[1]
    model = Lasso(alpha=lam / d, positive=True, fit_intercept=False, tol=1e-14, max_iter=200_000)
    model.fit(atoms.T, z)
    return model.coef_


def problem(atoms, z):
    return atoms @ atoms.T, z @ atoms.T


@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_matches_sklearn_objective_and_support(kind):
    rng = np.random.default_rng(1)
    d, k, n = 48, 120, 12
    atoms = random_atoms(rng, k, d) if kind == "random" else clustered_atoms(rng, k, d, clusters=8)
    z = unit_rows(rng.standard_normal((n, d)))
    gram, b = problem(atoms, z)
    lam = 0.25 * lambda_max(b).min()
    w = nonneg_lasso(gram, b, lam)
    assert w.shape == (n, k) and np.all(w >= 0)
    ours = objective(gram, b, w, lam)
    for i in range(n):
        ref = sklearn_solution(atoms, z[i], lam)
        theirs = objective(gram, b[i:i + 1], ref[None, :], lam)[0]
        assert (ours[i] - theirs) / abs(theirs) <= 1e-6
        assert np.array_equal(w[i] > 0, ref > 1e-9), f"row {i}: supports differ"
    assert np.count_nonzero(w, axis=1).min() >= 2  # a non-trivial problem


@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_kkt_conditions_hold(kind):
    rng = np.random.default_rng(2)
    d, k, n = 64, 400, 50
    atoms = random_atoms(rng, k, d) if kind == "random" else clustered_atoms(rng, k, d, clusters=20)
    z = unit_rows(rng.standard_normal((n, d)))
    gram, b = problem(atoms, z)
    for lam in (0.01, 0.05, 0.2):
        w = nonneg_lasso(gram, b, lam)
        assert kkt_violation(gram, b, w, lam).max() <= 1e-6
        # and literally: zero gradient on the support, non-negative gradient off it
        grad = w @ gram - b + lam
        assert np.abs(grad[w > 0]).max(initial=0) <= 1e-9
        assert grad[w == 0].min(initial=0) >= -1e-9


def test_kkt_checker_detects_a_wrong_solution():
    rng = np.random.default_rng(3)
    atoms = random_atoms(rng, 50, 20)
    z = unit_rows(rng.standard_normal((1, 20)))
    gram, b = problem(atoms, z)
    w = nonneg_lasso(gram, b, 0.05)
    w_bad = w.copy()
    w_bad[0, np.argmax(w[0])] *= 1.01
    assert kkt_violation(gram, b, w_bad, 0.05)[0] > 1e-6


def test_zero_target_gives_zero_weights():
    rng = np.random.default_rng(4)
    atoms = random_atoms(rng, 30, 16)
    gram = atoms @ atoms.T
    w = nonneg_lasso(gram, np.zeros((3, 30)), 0.1)
    assert np.count_nonzero(w) == 0
    # lam = 0 and z = 0: still zero (0 is the NNLS optimum)
    assert np.count_nonzero(nonneg_lasso(gram, np.zeros((1, 30)), 0.0)) == 0


def test_lambda_at_or_above_lambda_max_gives_zero():
    rng = np.random.default_rng(5)
    atoms = random_atoms(rng, 80, 32)
    z = unit_rows(rng.standard_normal((6, 32)))
    gram, b = problem(atoms, z)
    lmax = lambda_max(b)
    assert np.count_nonzero(nonneg_lasso(gram, b, lmax)) == 0
    assert np.count_nonzero(nonneg_lasso(gram, b, lmax * 1.5)) == 0
    assert np.all(np.count_nonzero(nonneg_lasso(gram, b, lmax * 0.99), axis=1) >= 1)


def test_duplicated_concepts():
    rng = np.random.default_rng(6)
    base = random_atoms(rng, 40, 24)
    atoms = np.concatenate([base, base[:10]])  # concepts 40..49 duplicate 0..9
    z = unit_rows(rng.standard_normal((8, 24)))
    gram, b = problem(atoms, z)
    lam = 0.05
    w = nonneg_lasso(gram, b, lam)
    assert kkt_violation(gram, b, w, lam).max() <= 1e-6
    # same optimum as the dictionary without duplicates (weights of twins summed)
    w_base = nonneg_lasso(base @ base.T, z @ base.T, lam)
    merged = w[:, :40].copy()
    merged[:, :10] += w[:, 40:]
    np.testing.assert_allclose(objective(gram, b, w, lam), objective(base @ base.T, z @ base.T, w_base, lam),
                               rtol=1e-9)
    np.testing.assert_allclose(merged, w_base, atol=1e-8)


def test_single_concept_has_closed_form():
    z = np.array([[0.6, 0.8], [0.6, -0.8], [-1.0, 0.0]])
    atoms = np.array([[1.0, 0.0]])
    gram, b = problem(atoms, z)
    w = nonneg_lasso(gram, b, 0.1)
    np.testing.assert_allclose(w[:, 0], [0.5, 0.5, 0.0], atol=1e-14)  # max(b − lam, 0)


def test_single_vector_in_and_out_is_one_dimensional():
    rng = np.random.default_rng(7)
    atoms = random_atoms(rng, 60, 20)
    z = unit_rows(rng.standard_normal(20))
    gram = atoms @ atoms.T
    w = nonneg_lasso(gram, atoms @ z, 0.05)
    assert w.shape == (60,)
    batch = nonneg_lasso(gram, (atoms @ z)[None, :], 0.05)
    np.testing.assert_array_equal(w, batch[0])


def test_large_batch_is_consistent_row_by_row():
    rng = np.random.default_rng(8)
    d, k, n = 16, 60, 5000
    atoms = clustered_atoms(rng, k, d, clusters=6, spread=1.0)
    z = unit_rows(rng.standard_normal((n, d)))
    gram, b = problem(atoms, z)
    w = nonneg_lasso(gram, b, 0.02)
    assert w.shape == (n, k)
    assert kkt_violation(gram, b, w, 0.02).max() <= 1e-6
    # each row depends only on itself: solving a few rows alone gives the same answer
    few = [0, 1234, 4999]
    np.testing.assert_array_equal(nonneg_lasso(gram, b[few], 0.02), w[few])


def test_deterministic():
    rng = np.random.default_rng(9)
    atoms = clustered_atoms(rng, 300, 40, clusters=15)
    z = unit_rows(rng.standard_normal((40, 40)))
    gram, b = problem(atoms, z)
    np.testing.assert_array_equal(nonneg_lasso(gram, b, 0.03), nonneg_lasso(gram, b, 0.03))


def test_per_row_lambda_and_warm_start():
    rng = np.random.default_rng(10)
    atoms = random_atoms(rng, 200, 40)
    z = unit_rows(rng.standard_normal((4, 40)))
    gram, b = problem(atoms, z)
    lams = np.array([0.01, 0.05, 0.1, 0.2])
    w = nonneg_lasso(gram, b, lams)
    for i, lam in enumerate(lams):
        np.testing.assert_allclose(w[i], nonneg_lasso(gram, b[i], lam), atol=1e-12)
    warm = nonneg_lasso(gram, b, 0.07, warm_start=w)  # from solutions at other lambdas
    np.testing.assert_allclose(warm, nonneg_lasso(gram, b, 0.07), atol=1e-12)


def test_planted_sparse_problem_recovers_support():
    rng = np.random.default_rng(11)
    d, k = 256, 500
    atoms = random_atoms(rng, k, d)
    truth = np.zeros((20, k))
    for row in truth:
        idx = rng.choice(k, 5, replace=False)
        row[idx] = rng.uniform(0.5, 1.5, 5)
    z = truth @ atoms + 0.01 * rng.standard_normal((20, d))
    gram, b = problem(atoms, z)
    w = nonneg_lasso(gram, b, 0.05)  # above the noise's correlation with any atom (~0.03)
    np.testing.assert_array_equal(w > 0, truth > 0)
    np.testing.assert_allclose(w, truth, atol=0.1)


def test_max_concepts_mode_respects_the_limit_and_is_deterministic():
    rng = np.random.default_rng(12)
    atoms = clustered_atoms(rng, 200, 64, clusters=30, spread=1.0)
    z = unit_rows(rng.standard_normal((15, 64)))
    gram, b = problem(atoms, z)
    for n_max in (1, 5, 12):
        w, lam_used = nonneg_lasso_max_concepts(gram, b, n_max)
        counts = np.count_nonzero(w, axis=1)
        assert counts.max() <= n_max
        assert np.all(lam_used > 0)
        # the returned weights are the exact solution at the reported lambda
        assert kkt_violation(gram, b, w, lam_used).max() <= 1e-6
        # and lam_used is as small as the bisection allows: 0.2% less lambda gives too many concepts
        # (unless the limit was not binding at the floor)
        smaller = nonneg_lasso(gram, b, lam_used / 1.002)
        binding = lam_used > lambda_max(b) * 1e-4
        assert np.all(np.count_nonzero(smaller, axis=1)[binding] > n_max)
        w2, lam2 = nonneg_lasso_max_concepts(gram, b, n_max)
        np.testing.assert_array_equal(w, w2)
        np.testing.assert_array_equal(lam_used, lam2)
    assert np.count_nonzero(nonneg_lasso_max_concepts(gram, b, 5)[0], axis=1).max() == 5


def sparse_targets(rng, atoms, n, active=15, noise=0.3):
    """Unit targets made of `active` random atoms with non-negative weights plus noise."""
    k, d = atoms.shape
    w = np.zeros((n, k))
    for row in w:
        row[rng.choice(k, active, replace=False)] = rng.exponential(1.0, active)
    clean = w @ atoms
    return unit_rows(clean + noise * unit_rows(rng.standard_normal((n, d))) * np.linalg.norm(clean, axis=1,
                                                                                               keepdims=True))


@pytest.mark.parametrize("kind", ["clustered", "centred"])
def test_max_concepts_is_the_exact_first_crossing(kind):
    rng = np.random.default_rng(5)
    atoms = clustered_atoms(rng, 400, 96, clusters=40, spread=2.0) if kind == "clustered" else centred_atoms(rng, 400, 96)
    z = sparse_targets(rng, atoms, 12)
    gram, b = problem(atoms, z)
    lmax = lambda_max(b)
    for n_max in (3, 20):
        w, lam_used = nonneg_lasso_max_concepts(gram, b, n_max)
        counts = np.count_nonzero(w, axis=1)
        assert counts.max() <= n_max
        assert np.all(lam_used > 1e-4 * lmax)
        # exact: the weights are the fixed-lambda solution (solved from scratch) at the reported lambda
        fixed = nonneg_lasso(gram, b, lam_used)
        np.testing.assert_array_equal(w > 0, fixed > 0)
        np.testing.assert_allclose(w, fixed, rtol=0, atol=1e-9)
        assert kkt_violation(gram, b, w, lam_used).max() <= 1e-10
        # a crossing: just below lam_used the support exceeds n_max
        below = nonneg_lasso(gram, b, lam_used * (1 - 1e-7))
        assert np.all(np.count_nonzero(below, axis=1) > n_max)
        # the first one: no lam above it exceeds n_max (checked on 300 points per row)
        for i in range(len(b)):
            grid = np.geomspace(lmax[i], lam_used[i], 302)[1:-1] * (1 + 1e-9)
            above = nonneg_lasso(gram, np.repeat(b[i:i + 1], grid.size, axis=0), grid)
            assert np.count_nonzero(above, axis=1).max() <= n_max


def test_max_concepts_on_near_parallel_atoms_stops_at_a_crossing_or_the_floor():
    # 30 directions with 20 atoms each, 1e-6 apart: the weights on P re-solved from the factor are
    # ill-determined, so an entering step must come from the path's own weights (from the re-solved
    # ones, concepts entered early: a "crossing" with no more than n_max concepts just below it).
    # The many near-ties also defeat the int16 bounds, so the float64 refresh of the gradient runs.
    rng = np.random.default_rng(31)
    base = random_atoms(rng, 30, 48)
    atoms = unit_rows(np.repeat(base, 20, axis=0) + 1e-6 * rng.standard_normal((600, 48)))
    z = unit_rows(rng.standard_normal((6, 48)))
    gram, b = problem(atoms, z)
    w, lam_used = nonneg_lasso_max_concepts(gram, b, 20)
    assert np.count_nonzero(w, axis=1).max() <= 20
    assert kkt_violation(gram, b, w, lam_used).max() <= 1e-10
    at_floor = np.isclose(lam_used, 1e-4 * lambda_max(b), rtol=1e-12, atol=0)
    below = np.count_nonzero(nonneg_lasso(gram, b, lam_used * (1 - 1e-7)), axis=1)
    assert np.all(at_floor | (below > 20)), (lam_used / lambda_max(b), below)


def test_max_concepts_path_equals_separate_searches():
    from clapdex.concepts.solver import nonneg_lasso_max_concepts_path

    rng = np.random.default_rng(7)
    atoms = centred_atoms(rng, 300, 64)
    z = sparse_targets(rng, atoms, 6)
    gram, b = problem(atoms, z)
    counts = [20, 3, 8, 3]
    weights, lams = nonneg_lasso_max_concepts_path(gram, b, counts)
    assert weights.shape == (4, 6, 300) and lams.shape == (4, 6)
    for t, n_max in enumerate(counts):
        w, lam_used = nonneg_lasso_max_concepts(gram, b, n_max)
        np.testing.assert_array_equal(lams[t], lam_used)
        np.testing.assert_array_equal(weights[t], w)
    # rows are independent
    w1, l1 = nonneg_lasso_max_concepts_path(gram, b[2:3], counts)
    np.testing.assert_array_equal(w1[:, 0], weights[:, 2])


def test_max_concepts_returns_the_floor_when_the_limit_never_binds_and_zero_for_no_signal():
    rng = np.random.default_rng(6)
    atoms = random_atoms(rng, 60, 32)
    z = unit_rows(rng.standard_normal((3, 32)))
    gram, b = problem(atoms, z)
    b[1] = -np.abs(b[1])  # no atom correlates positively: λ_max = 0, w = 0
    w, lam_used = nonneg_lasso_max_concepts(gram, b, 60, lam_floor=1e-2)
    lmax = lambda_max(b)
    assert lam_used[1] == 0 and not w[1].any()
    for row in (0, 2):
        np.testing.assert_allclose(lam_used[row], 1e-2 * lmax[row], rtol=1e-12)
        np.testing.assert_allclose(w[row], nonneg_lasso(gram, b[row], lam_used[row]), atol=1e-9)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_rejects_non_finite_input(bad):
    gram = np.eye(3)
    b = np.array([[0.1, bad, 0.3]])
    with pytest.raises(DecompositionError):
        nonneg_lasso(gram, b, 0.1)
    with pytest.raises(DecompositionError):
        nonneg_lasso(gram, np.ones((1, 3)), bad)
    with pytest.raises(DecompositionError):
        nonneg_lasso_max_concepts(gram, b, 2)


def test_rejects_bad_shapes_and_settings():
    with pytest.raises(DecompositionError):
        nonneg_lasso(np.eye(3), np.ones((2, 4)), 0.1)
    with pytest.raises(DecompositionError):
        nonneg_lasso(np.eye(3), np.ones((2, 3)), [0.1, 0.2, 0.3])
    with pytest.raises(DecompositionError):
        nonneg_lasso(np.eye(3), np.ones((2, 3)), -0.1)
    with pytest.raises(DecompositionError):
        nonneg_lasso_max_concepts(np.eye(3), np.ones((2, 3)), 0)
    with pytest.raises(DecompositionError):
        nonneg_lasso_max_concepts(np.eye(4), np.ones((2, 3)), 2)
    with pytest.raises(DecompositionError):
        nonneg_lasso_max_concepts(np.eye(3), np.ones((2, 3)), 2, lam_floor=1.0)


# --- large supports, degenerate dictionaries, lam -> 0, paths ---------------------------------------

def centred_atoms(rng, k, d, coherence=0.65):
    """Atoms made like ConceptDictionary's: raw vectors sharing a common part, centred, normalised."""
    raw = coherence * rng.standard_normal(d) + rng.standard_normal((k, d))
    t = unit_rows(raw)
    return unit_rows(t - t.mean(axis=0))


def test_large_support_matches_sklearn():
    rng = np.random.default_rng(20)
    d, k = 512, 1500
    atoms = centred_atoms(rng, k, d)
    z = unit_rows(rng.standard_normal((2, d)))
    gram, b = problem(atoms, z)
    lam = 0.012
    w = nonneg_lasso(gram, b, lam)
    counts = np.count_nonzero(w, axis=1)
    assert counts.min() >= 300
    assert kkt_violation(gram, b, w, lam).max() <= 1e-10
    for i in range(2):
        ref = sklearn_solution(atoms, z[i], lam)
        ours, theirs = objective(gram, b[i:i + 1], w[i:i + 1], lam)[0], objective(gram, b[i:i + 1], ref[None], lam)[0]
        assert abs(ours - theirs) / theirs <= 1e-9
        assert ours <= theirs + 1e-15
        assert np.array_equal(w[i] > 0, ref > 1e-9)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
def test_duplicate_and_near_parallel_atoms_with_rank_deficient_supports():
    rng = np.random.default_rng(21)
    d = 24
    base = random_atoms(rng, 60, d)
    near = unit_rows(base[:10] + 1e-9 * rng.standard_normal((10, d)))   # cosines 1 − O(1e-18)
    close = unit_rows(base[10:20] + 1e-4 * rng.standard_normal((10, d)))
    mix = unit_rows(base[20:25] + base[25:30])                           # in the span of other atoms
    atoms = np.concatenate([base, base[:5], near, close, mix])
    z = unit_rows(rng.standard_normal((10, d)))
    gram, b = problem(atoms, z)
    for lam in (0.05, 1e-3, 1e-7):
        w = nonneg_lasso(gram, b, lam)
        assert np.all(w >= 0)
        assert kkt_violation(gram, b, w, lam).max() <= 1e-10
        # the optimum is not unique here; its value is, and equals the base dictionary's when lam ≈ 0
        for i in range(3):
            ref = sklearn_solution(atoms, z[i], lam)
            theirs = objective(gram, b[i:i + 1], ref[None], lam)[0]
            assert objective(gram, b[i:i + 1], w[i:i + 1], lam)[0] <= theirs * (1 + 1e-9) + 1e-15


def test_lambda_to_zero_support_reaches_the_dimension():
    from scipy.optimize import nnls

    rng = np.random.default_rng(22)
    d, k = 32, 300
    atoms = centred_atoms(rng, k, d)
    z = unit_rows(rng.standard_normal((6, d)))
    gram, b = problem(atoms, z)
    lam = 1e-9
    w = nonneg_lasso(gram, b, lam)
    assert kkt_violation(gram, b, w, lam).max() <= 1e-10
    counts = np.count_nonzero(w, axis=1)
    assert counts.max() <= d
    assert np.all(counts == d)  # z lies inside the cone of the atoms: a basic solution uses d of them
    for i in range(6):
        ref, _ = nnls(atoms.T, z[i])
        assert objective(gram, b[i:i + 1], w[i:i + 1], lam)[0] <= objective(gram, b[i:i + 1], ref[None], lam)[0]


@pytest.mark.parametrize("kind", ["clustered", "centred"])
def test_path_equals_independent_solves(kind):
    from clapdex.concepts.solver import nonneg_lasso_path

    rng = np.random.default_rng(23)
    d, k = 96, 600
    atoms = clustered_atoms(rng, k, d, clusters=40, spread=2.0) if kind == "clustered" else centred_atoms(rng, k, d)
    z = unit_rows(rng.standard_normal((8, d)))
    gram, b = problem(atoms, z)
    lams = [0.05, 0.2, 0.01, 0.1, 0.003, 0.02]   # any order; solved from the largest down
    path = nonneg_lasso_path(gram, b, lams)
    assert path.shape == (6, 8, k)
    for t, lam in enumerate(lams):
        alone = nonneg_lasso(gram, b, lam)
        np.testing.assert_array_equal(path[t] > 0, alone > 0)
        np.testing.assert_allclose(path[t], alone, rtol=0, atol=1e-10)
        assert kkt_violation(gram, b, path[t], lam).max() <= 1e-10
    assert np.count_nonzero(path[4], axis=1).min() > np.count_nonzero(path[1], axis=1).max()
    # rows are independent: one row alone gives the same path
    np.testing.assert_array_equal(nonneg_lasso_path(gram, b[3:4], lams)[:, 0], path[:, 3])


def test_gram_object_is_checked_once_and_gives_the_same_answer():
    from clapdex.concepts.solver import Gram

    rng = np.random.default_rng(24)
    atoms = centred_atoms(rng, 400, 64)
    z = unit_rows(rng.standard_normal((6, 64)))
    gram, b = problem(atoms, z)
    prepared = Gram(gram)
    assert prepared.matrix is gram  # no copy of the float64 matrix
    np.testing.assert_array_equal(nonneg_lasso(prepared, b, 0.03), nonneg_lasso(gram, b, 0.03))
    np.testing.assert_array_equal(nonneg_lasso_path(prepared, b, [0.1, 0.03]), nonneg_lasso_path(gram, b, [0.1, 0.03]))
    bad = gram.copy()
    bad[3, 5] = np.nan
    with pytest.raises(DecompositionError, match="NaN"):
        Gram(bad)
    with pytest.raises(DecompositionError, match="square"):
        Gram(gram[:, :10])
    with pytest.raises(DecompositionError, match="expected"):
        nonneg_lasso(prepared, b[:, :10], 0.03)


def test_kkt_is_exact_although_violators_are_screened_in_int16():
    # Near-duplicates (cosine 1 − O(1e-11)) of supported atoms have gradients within ~1e-9 of zero,
    # far below what G's int16 screening copy (or a float32 one) can resolve; deciding them from
    # that copy alone left KKT violations of ~3e-9 here. They must be decided from the float64 G.
    rng = np.random.default_rng(25)
    d, k, n = 64, 400, 40
    base = centred_atoms(rng, k, d)
    near = unit_rows(base[:200] + 3e-6 * rng.standard_normal((200, d)))
    atoms = np.concatenate([base, near])
    z = unit_rows(rng.standard_normal((n, d)))
    gram, b = problem(atoms, z)
    for lam in (0.05, 0.01):
        w = nonneg_lasso(gram, b, lam)
        assert np.count_nonzero(w, axis=1).min() >= 20
        assert kkt_violation(gram, b, w, lam).max() <= 1e-10


def screening_case(seed, k=500, d=64, p=40):
    """A prepared Gram, q = b − lam and weights on a random support P (as the solver holds them)."""
    from clapdex.concepts.solver import Gram

    rng = np.random.default_rng(seed)
    atoms = centred_atoms(rng, k, d)
    gram, b = problem(atoms, unit_rows(rng.standard_normal(d)))
    members = rng.choice(k, p, replace=False).astype(np.int64)
    x = rng.exponential(0.1, p)
    return rng, Gram(gram), b - 0.02, members, x


def test_screening_gradient_is_within_its_bound_and_finds_exactly_the_violators():
    from clapdex.concepts.solver import _screen_gradient

    rng, gram, q, members, x = screening_case(28)
    k, p = q.size, members.size
    in_set = np.zeros(k, dtype=np.bool_)
    in_set[members] = True
    exact = gram.matrix[:, members] @ x - q
    tol = 1e-10
    grad = np.empty(k)
    bound = _screen_gradient(gram.matrix, gram.screen, gram.scale, q, members, x, p, in_set, tol, grad)
    error = np.abs(grad - exact)
    assert 0 < error.max() <= bound < 1e-3  # an approximation (the int16 copy), inside its bound
    outside = ~in_set
    np.testing.assert_array_equal((grad < -tol) & outside, (exact < -tol) & outside)
    assert 0 < np.count_nonzero((exact < -tol) & outside) < k - p
    # Weights too large for float32 sums: every entry comes from the float64 G instead.
    huge = x * 1e31
    bound = _screen_gradient(gram.matrix, gram.screen, gram.scale, q, members, huge, p, in_set, tol, grad)
    assert bound == 0.0
    np.testing.assert_allclose(grad, gram.matrix[:, members] @ huge - q, rtol=1e-12)


def test_gradient_after_a_small_change_is_recomputed_only_where_a_violator_could_be():
    from clapdex.concepts.solver import _screen_changed, _screen_gradient

    rng, gram, q, members, x_ref = screening_case(29, p=43)
    k, p_ref, p = q.size, 40, 43
    g = gram.matrix
    in_set = np.zeros(k, dtype=np.bool_)
    in_set[members[:p_ref]] = True
    tol = 1e-10
    reference = np.empty(k)
    ref_bound = _screen_gradient(g, gram.screen, gram.scale, q, members, x_ref[:p_ref], p_ref, in_set, tol,
                                 reference)
    in_set[members] = True  # three concepts entered, and the weights moved a little
    gpp = g[np.ix_(members, members)].copy()
    delta = np.empty(p)
    rechecked = []
    for scale in (1e-4, 1e-2):
        x = x_ref[:p_ref] + scale * rng.standard_normal(p_ref) * x_ref[:p_ref]
        x = np.concatenate([x, scale * rng.random(3)])
        exact = g[:, members] @ x - q
        grad = np.full(k, np.nan)
        done = _screen_changed(g, gpp, gram.scale, q, members, x, p, x_ref, p_ref, reference, ref_bound,
                               in_set, tol, grad, delta, k)
        assert done
        outside = ~in_set
        np.testing.assert_array_equal((grad < -tol) & outside, (exact < -tol) & outside)
        changed = grad != reference
        recomputed = np.count_nonzero(changed)
        assert 0 < recomputed < k
        # Beyond the old violators (the weights here are not a solution: many), only concepts near
        # the threshold are rechecked: none for the tiny change, some for the larger one.
        rechecked.append(np.count_nonzero(changed & (reference >= -tol)))
        # Over the limit: nothing is done (the caller computes the full gradient).
        assert not _screen_changed(g, gpp, gram.scale, q, members, x, p, x_ref, p_ref, reference, ref_bound,
                                   in_set, tol, grad, delta, recomputed - 1)
    assert rechecked[0] < rechecked[1] < k // 10


def test_a_block_appends_exactly_like_one_concept_at_a_time():
    from clapdex.concepts.solver import _append_block, _new_state

    rng = np.random.default_rng(26)
    atoms = centred_atoms(rng, 60, 24)
    atoms = np.concatenate([atoms, atoms[:2], unit_rows(atoms[2:3] + atoms[3:4])])  # dependent ones
    gram, b = problem(atoms, unit_rows(rng.standard_normal(24)))
    order = rng.permutation(atoms.shape[0])
    k = atoms.shape[0]
    states = []
    for grouping in ([k], [1] * k, [7, 1, 13, 30, k]):
        members, chol, gpp, x, y = _new_state(k, k)
        in_set = np.zeros(k, dtype=np.bool_)
        p = start = 0
        for size in grouping:
            p += _append_block(gram, b, members, chol, gpp, y, p, order[start:start + size].copy(), in_set)
            start += size
        states.append((p, members[:p].copy(), chol[:p, :p].copy(), gpp[:p, :p].copy(), y[:p].copy()))
    p, members, chol, gpp, y = states[0]
    assert p == 24  # the dimension: every later atom is in the span
    np.testing.assert_array_equal(gpp, gram[np.ix_(members, members)])
    np.testing.assert_allclose(chol.T @ chol, gpp, atol=1e-12)
    for other in states[1:]:
        assert other[0] == p
        for mine, theirs in zip(states[0][1:], other[1:]):
            np.testing.assert_array_equal(mine, theirs)


def test_max_concepts_at_large_supports_and_with_degenerate_atoms():
    rng = np.random.default_rng(27)
    d, k = 256, 1200
    atoms = centred_atoms(rng, k, d)
    z = unit_rows(rng.standard_normal((2, d)))
    gram, b = problem(atoms, z)
    w, lam_used = nonneg_lasso_max_concepts(gram, b, 200)
    assert np.all(np.count_nonzero(w, axis=1) == 200)
    assert kkt_violation(gram, b, w, lam_used).max() <= 1e-10
    assert np.all(np.count_nonzero(nonneg_lasso(gram, b, lam_used * (1 - 1e-7)), axis=1) > 200)
    # duplicates, near-parallel atoms and atoms in the span of others: the path must not stall on them
    base = random_atoms(rng, 60, 24)
    near = unit_rows(base[:10] + 1e-9 * rng.standard_normal((10, 24)))
    mix = unit_rows(base[20:25] + base[25:30])
    atoms = np.concatenate([base, base[:5], near, mix])
    z = unit_rows(rng.standard_normal((8, 24)))
    gram, b = problem(atoms, z)
    for n_max in (5, 20):
        w, lam_used = nonneg_lasso_max_concepts(gram, b, n_max)
        assert np.count_nonzero(w, axis=1).max() <= n_max
        assert kkt_violation(gram, b, w, lam_used).max() <= 1e-10
        assert np.all(lam_used > 1e-4 * lambda_max(b))
