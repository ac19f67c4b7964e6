"""Exact non-negative Lasso for many vectors that share one dictionary.

For every row z of a batch we solve

    w* = argmin_{w >= 0}  ½‖C w − z‖² + lam·‖w‖₁            (C is d × K: atoms c_k as columns)

which, with G = CᵀC and b = Cᵀz, is the quadratic program  min_{w>=0} ½wᵀGw − (b − lam)ᵀw.
Our lam is half of the λ in SpLiCE's code (which minimises ‖Cw − z‖² + λ‖w‖₁); see docs/method.md.

Optimality (KKT), with the gradient g = G w − b + lam:
    w_k > 0  ⇒  g_k = 0        and        w_k = 0  ⇒  g_k >= 0.

Method, per row (rows run in parallel; each row's result depends only on that row):
  1. Rounds: the gradient over all K concepts (K·|support| work: the rows of G on the support, read
     from G's int16 copy, with the entries near the threshold recomputed from the float64 G) finds
     the KKT violators. When P only grew since the last full gradient and the weights moved little,
     a bound on the change rules out all but a few concepts, and only those are recomputed. The
     worst violators (32 at w = 0, later half as many as the support holds, at least 16: larger
     blocks bring in redundant atoms that leave again) enter the passive set P as one block.
  2. Lawson–Hanson on P: solve the linear system on P exactly, and when a weight would turn
     negative step back to the boundary and drop it. The Cholesky factor of G_PP is kept and
     updated: an entering block is appended in one go (a triangular solve with the block as
     right-hand side and a Cholesky of its Schur complement, O(p²) per concept), a leaving concept
     is deleted with Givens rotations, so no step refactorises. An atom (numerically) in the span of
     P is not entered; if only such violators remain, one is swapped in along the null direction
     (K > d, duplicates).
  3. Repeat until no violator is left and the gradient on P (from the kept float64 G_PP) is zero
     to `tol`.
Warm starts (`warm_start`, `nonneg_lasso_path`) begin from a given support; a path keeps P and its
factor from one lam to the next. `nonneg_lasso_max_concepts` follows the path event by event
(a homotopy) to the first crossing of the count, then solves there exactly.
The result satisfies the KKT conditions over all K to `tol` (default 1e-10), and the weights on the
support come from a direct linear solve, so they are exact to rounding. No iteration counts to tune,
no randomness: the same input gives the same output.

The per-row kernel is compiled with numba (it is loop-heavy; numpy cannot batch it well). Without
numba the same code runs as plain Python: correct, but orders of magnitude slower.
"""

from __future__ import annotations

import warnings

import numpy as np

from clapdex.compiled import get_num_threads, njit, prange
from clapdex.errors import DecompositionError

DEFAULT_TOL = 1e-10
FIRST_WORKING_SET = 32   # concepts in the first working set (most rows need 10–40)
MIN_GROWTH = 16          # violators added per round, at least; else half as many as the support holds
MAX_ROUNDS = 200
DEFAULT_LAM_FLOOR = 1e-4  # target-sparsity mode: the path is followed down to this fraction of λ_max


def lambda_max(correlations: np.ndarray) -> np.ndarray:
    """Per row, the smallest lam for which w = 0 is optimal: max(max_k b_k, 0)."""
    b = np.atleast_2d(np.asarray(correlations, dtype=np.float64))
    if b.shape[1] == 0:
        return np.zeros(b.shape[0])
    return np.maximum(b.max(axis=1), 0.0)


def objective(gram: np.ndarray, correlations: np.ndarray, weights: np.ndarray, lam,
              z_sq_norm=1.0) -> np.ndarray:
    """½‖Cw − z‖² + lam‖w‖₁ per row, from G, b = Cᵀz and ‖z‖² (1 for unit z)."""
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    b = np.atleast_2d(np.asarray(correlations, dtype=np.float64))
    lam = np.broadcast_to(np.asarray(lam, dtype=np.float64), (w.shape[0],))
    quad = np.einsum("ij,ij->i", w @ _matrix(gram), w)
    return 0.5 * quad - np.einsum("ij,ij->i", b, w) + 0.5 * np.asarray(z_sq_norm) + lam * w.sum(axis=1)


def kkt_violation(gram: np.ndarray, correlations: np.ndarray, weights: np.ndarray, lam) -> np.ndarray:
    """Per row, the largest violation of the KKT conditions (0 at the exact optimum)."""
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    b = np.atleast_2d(np.asarray(correlations, dtype=np.float64))
    lam = np.broadcast_to(np.asarray(lam, dtype=np.float64), (w.shape[0],))
    grad = w @ _matrix(gram) - b + lam[:, None]
    on_support = np.where(w > 0, np.abs(grad), 0.0)
    off_support = np.where(w == 0, np.maximum(-grad, 0.0), 0.0)
    negative = np.maximum(-w, 0.0)
    return np.maximum(np.maximum(on_support, off_support), negative).max(axis=1, initial=0.0)


def nonneg_lasso(gram: np.ndarray, correlations: np.ndarray, lam, *, tol: float = DEFAULT_TOL,
                 warm_start: np.ndarray | None = None) -> np.ndarray:
    """Solve min_{w>=0} ½‖Cw − z‖² + lam‖w‖₁ for each row of `correlations` (= Z Cᵀ).

    gram: (K, K) = C Cᵀ for atoms as rows (symmetric). correlations: (n, K), or (K,) for one
    vector. lam: a number or one per row (n,). warm_start: optional (n, K) non-negative weights
    to start from (e.g. the solution for a nearby lam). Returns (n, K) float64 ((K,) for 1-d input).
    """
    single = np.ndim(correlations) == 1
    b = np.ascontiguousarray(np.atleast_2d(np.asarray(correlations, dtype=np.float64)))
    n, k = b.shape
    gram = _prepared(gram, k)
    lam = np.asarray(lam, dtype=np.float64)
    if lam.ndim == 0:
        lam = np.full(n, float(lam))
    if lam.shape != (n,):
        raise DecompositionError(f"lam must be a number or one value per row ({n}), got shape {lam.shape}")
    for name, arr in (("correlations", b), ("lam", lam)):
        if not np.all(np.isfinite(arr)):
            raise DecompositionError(f"{name} contains NaN or infinite values")
    if np.any(lam < 0):
        raise DecompositionError("lam must be >= 0")
    if warm_start is None:
        w = np.zeros((n, k))
    else:
        w = np.array(np.atleast_2d(warm_start), dtype=np.float64, order="C")
        if w.shape != (n, k) or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise DecompositionError("warm_start must be finite, non-negative and shaped like correlations")
    _solve_in_place(gram, b, lam, w, tol)
    return w[0] if single else w


def nonneg_lasso_path(gram: np.ndarray, correlations: np.ndarray, lams, *,
                      tol: float = DEFAULT_TOL) -> np.ndarray:
    """`nonneg_lasso` at several lam values: (len(lams), n, K), in the order of `lams`.

    Each row is solved from the largest lam down, each solve warm-started from the previous one with
    its support and Cholesky factor kept, so the whole sweep costs about one solve at the smallest
    lam. The results equal independent solves (same KKT tolerance). Memory is len(lams)·n·K floats:
    callers chunk the rows (decompose_path does).
    """
    b = np.ascontiguousarray(np.atleast_2d(np.asarray(correlations, dtype=np.float64)))
    n, k = b.shape
    gram = _prepared(gram, k)
    lams = np.asarray(lams, dtype=np.float64).ravel()
    if not np.all(np.isfinite(b)) or not np.all(np.isfinite(lams)):
        raise DecompositionError("correlations and lams must be finite")
    if lams.size == 0 or np.any(lams < 0):
        raise DecompositionError("lams must be one or more numbers >= 0")
    order = np.argsort(-lams, kind="stable")
    out = np.zeros((lams.size, n, k))
    if n and k:
        rounds = np.zeros(n, dtype=np.int64)
        _path_batch(gram.matrix, gram.screen, gram.scale, b,
                    np.ascontiguousarray(np.broadcast_to(lams[order], (n, lams.size))), out,
                    float(tol), FIRST_WORKING_SET, MIN_GROWTH, rounds, _chunk_bounds(n))
        _warn_unconverged(rounds, tol)
    result = np.empty_like(out)
    result[order] = out
    return result


class Gram:
    """The Gram matrix G = CᵀC (K, K) checked once (square, finite), with the int16 copy that the
    solver's screening gradient reads (G ≈ screen · scale/32767, to half a step). Build one per
    dictionary (ConceptDictionary.solver_gram() does) and pass it to every call: a plain array is
    checked and copied again on every call (at K = 10,000 that is ~0.1 s per call, which dominates
    single-query decompositions). The arrays must not be changed afterwards."""

    __slots__ = ("matrix", "screen", "scale")

    def __init__(self, matrix):
        g = np.ascontiguousarray(matrix, dtype=np.float64)
        if g.ndim != 2 or g.shape[0] != g.shape[1]:
            raise DecompositionError(f"Gram matrix must be square, got shape {g.shape}")
        if not np.all(np.isfinite(g)):
            raise DecompositionError("Gram matrix contains NaN or infinite values")
        self.scale = float(np.abs(g).max()) if g.size else 0.0
        if self.scale > np.finfo(np.float32).max / 2:
            raise DecompositionError(f"Gram matrix entries are too large ({self.scale:g})")
        self.matrix = g
        step = 32767.0 / self.scale if self.scale > 0 else 0.0
        self.screen = np.rint(g * step).astype(np.int16)

    @property
    def size(self) -> int:
        return self.matrix.shape[0]


def _prepared(gram, k: int) -> Gram:
    shape = gram.matrix.shape if isinstance(gram, Gram) else np.shape(gram)
    if shape != (k, k):
        raise DecompositionError(f"Gram matrix has shape {shape}, expected ({k}, {k})")
    return gram if isinstance(gram, Gram) else Gram(gram)


def _matrix(gram) -> np.ndarray:
    return gram.matrix if isinstance(gram, Gram) else np.asarray(gram, dtype=np.float64)


def _solve_in_place(gram: Gram, b, lam, w, tol) -> None:
    """The solver on a Gram and checked, contiguous float64 inputs; w (the warm start) becomes the
    solution."""
    n, k = b.shape
    if n and k:
        rounds = np.zeros(n, dtype=np.int64)
        _solve_batch(gram.matrix, gram.screen, gram.scale, b, lam, w, float(tol), FIRST_WORKING_SET,
                     MIN_GROWTH, rounds, _chunk_bounds(n))
        _warn_unconverged(rounds, tol)


def _warn_unconverged(rounds, tol) -> None:
    if np.any(rounds < 0):
        warnings.warn(f"nonneg_lasso: {int((rounds < 0).sum())} of {rounds.size} rows stopped before meeting "
                      f"the KKT tolerance {tol:g} (numerically ill-conditioned dictionary?)",
                      RuntimeWarning, stacklevel=4)


def nonneg_lasso_max_concepts(gram, correlations, max_concepts: int, *, tol: float = DEFAULT_TOL,
                              lam_floor: float = DEFAULT_LAM_FLOOR) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the exact solution at the first crossing of `max_concepts` non-zero weights.

    Going down the regularisation path from λ_max (where w = 0), the first crossing λ* is the largest
    lam at which a concept enters that would make the support exceed `max_concepts`. It is found
    exactly (to rounding) by following the path event by event (a homotopy: each concept entering or
    leaving costs one pass over the rows of G on the support). The lam returned is λ*·(1 + 1e-9)
    (inside the path's last segment above λ*, where the support is unambiguous: at λ* itself the
    entering concept's gradient is 0), and the weights are re-solved there with the exact solver, so
    KKT holds to `tol`. Guarantees: at most `max_concepts` non-zeros, at most that many at every larger
    lam, and more just below λ*. If the path never
    exceeds `max_concepts` above lam_floor·λ_max, the solution at lam_floor·λ_max is returned.
    Deterministic. Returns (weights (n, K), lam_used (n,)); lam_used is 0 for rows with λ_max = 0.
    """
    weights, lams = nonneg_lasso_max_concepts_path(gram, correlations, [max_concepts], tol=tol,
                                                   lam_floor=lam_floor)
    return weights[0], lams[0]


def nonneg_lasso_max_concepts_path(gram, correlations, counts, *, tol: float = DEFAULT_TOL,
                                   lam_floor: float = DEFAULT_LAM_FLOOR) -> tuple[np.ndarray, np.ndarray]:
    """`nonneg_lasso_max_concepts` for several counts at once: one walk down the path per row serves
    them all (it stops at the largest count's first crossing). Returns (weights (len(counts), n, K),
    lam_used (len(counts), n)), in the order of `counts`. Memory is len(counts)·n·K floats: callers
    chunk the rows."""
    counts = list(np.atleast_1d(np.asarray(counts, dtype=object)))
    if not counts or any(isinstance(c, bool) or not isinstance(c, (int, np.integer)) or c < 1 for c in counts):
        raise DecompositionError(f"max_concepts must be positive integers, got {counts!r}")
    if not 0 < lam_floor < 1:
        raise DecompositionError(f"lam_floor must lie strictly between 0 and 1, got {lam_floor!r}")
    b = np.ascontiguousarray(np.atleast_2d(np.asarray(correlations, dtype=np.float64)))
    n, k = b.shape
    gram = _prepared(gram, k)
    if not np.all(np.isfinite(b)):
        raise DecompositionError("correlations contains NaN or infinite values")
    counts = np.asarray(counts, dtype=np.int64)
    order = np.argsort(counts, kind="stable")
    weights = np.zeros((counts.size, n, k))
    lams = np.zeros((counts.size, n))
    if n and k:
        events = np.zeros(n, dtype=np.int64)
        _crossings_batch(gram.matrix, gram.screen, gram.scale, b, counts[order], float(lam_floor), weights, lams,
                         events)
        if np.any(events < 0):
            warnings.warn(f"nonneg_lasso_max_concepts: the path of {int((events < 0).sum())} of {n} rows did not "
                          f"reach the limit; their last point is used", RuntimeWarning, stacklevel=3)
        for t in range(counts.size):  # the exact solution at each crossing, from the path's weights
            _solve_in_place(gram, b, lams[t], weights[t], tol)
    result_w = np.empty_like(weights)
    result_l = np.empty_like(lams)
    result_w[order] = weights
    result_l[order] = lams
    return result_w, result_l


# --- compiled kernel -----------------------------------------------------------------------------
#
# Per row the state is the passive set P (the support, in the order it entered), the Cholesky factor
# R of G_PP = RᵀR (upper triangular, row-major: column r of R belongs to P[r]), G_PP itself (gpp,
# for the exact gradient on P), the weights x on P and y = R⁻ᵀ q_P. A block of entering concepts is
# appended in one go (one triangular solve with the block as right-hand side, then a Cholesky of the
# Schur complement: the same operations, in the same order, as appending them one at a time, but in
# loops that vectorise); a leaving concept is deleted with Givens rotations on rows (O(p·(p − r))); the
# weights come from one back solve. Every loop runs along rows (contiguous memory).
# The full-K gradient that finds violators is read from the int16 copy of G (a quarter of the memory
# traffic of float64; summed eight rows at a time in float32, which is what keeps it cheap) with a
# bound on its error; entries within the bound of the
# threshold are recomputed from the float64 G, so the KKT check stays exact.
# R is never refactorised except to repair rounding drift (not seen in practice, but checked).
# No fastmath: reassociated sums would depend on memory alignment, and a row must get the same
# weights alone or in any batch.

_DEPENDENT = 1e-12  # squared pivot / G_jj below this: the atom is in the span
# Error of the screening gradient per unit of Σ|w|·scale: half an int16 step (1/65534) plus the
# float32 products and sums of at most eight (under 2^-21), with room.
_SCREEN_EPS = 1.0 / 65000.0 + 2.0 ** -19
_SCREEN_FLOAT32_LIMIT = 1e30  # Σ|w| above this could overflow the float32 sums: use the float64 G
_PARTIAL_SHARE = 32  # a round recomputes at most K/32 concepts alone, else the full gradient
_CROSSING_CANDIDATES = 16  # max-concepts: more exact step recomputations than this, and g is refreshed
_ABOVE_CROSSING = 1e-9  # max-concepts: the lam returned lies this much (relative) above the crossing


def _chunk_bounds(n: int) -> np.ndarray:
    """Row ranges for the parallel loops: a few per thread (load balance), each with one state that
    its rows reuse (fresh (p, p) factors per row cost more than the arithmetic at large supports).
    Results do not depend on them."""
    chunks = max(1, min(n, 4 * get_num_threads()))
    return np.array([n * c // chunks for c in range(chunks + 1)], dtype=np.int64)


@njit(parallel=True, cache=True)
def _solve_batch(gram, screen, scale, b, lam, w, tol, first_size, min_growth, rounds, bounds):
    k = b.shape[1]
    for c in prange(bounds.size - 1):
        state = _new_state(k, 64)
        in_set = np.zeros(k, dtype=np.bool_)
        for i in range(bounds[c], bounds[c + 1]):
            rounds[i], state = _solve_row(gram, screen, scale, b[i], lam[i], w[i], tol, first_size, min_growth,
                                          state, in_set)


@njit(parallel=True, cache=True)
def _path_batch(gram, screen, scale, b, lams, out, tol, first_size, min_growth, rounds, bounds):
    """Row i solved at lams[i, 0], lams[i, 1], … in that order, the state kept between them."""
    k = b.shape[1]
    for c in prange(bounds.size - 1):
        members, chol, gpp, x, y = _new_state(k, 64)
        in_set = np.zeros(k, dtype=np.bool_)
        for i in range(bounds[c], bounds[c + 1]):
            p = 0
            for t in range(lams.shape[1]):
                r, p, members, chol, gpp, x, y = _solve_state(gram, screen, scale, b[i], lams[i, t], tol,
                                                              first_size, min_growth, members, chol, gpp, x, y,
                                                              p, in_set)
                if r < 0:
                    rounds[i] = -1
                for s in range(p):
                    out[t, i, members[s]] = x[s]
            for s in range(p):
                in_set[members[s]] = False


@njit(cache=True)
def _solve_row(gram, screen, scale, b, lam, w, tol, first_size, min_growth, state, in_set):
    """One row from the warm start w (updated in place to the solution), in `state` (any capacity;
    in_set all False, and left so). Returns (the rounds used, -1 if MAX_ROUNDS did not reach the
    tolerance; the state, grown if needed)."""
    k = b.shape[0]
    start = np.flatnonzero(w > 0)
    members, chol, gpp, x, y = _grow(state[0], state[1], state[2], state[3], state[4], 0, start.size, k)
    p = _append_block(gram, b, members, chol, gpp, y, 0, start, in_set)
    for s in range(p):
        x[s] = w[members[s]]
    r, p, members, chol, gpp, x, y = _solve_state(gram, screen, scale, b, lam, tol, first_size, min_growth,
                                                  members, chol, gpp, x, y, p, in_set)
    w[:] = 0.0
    for s in range(p):
        w[members[s]] = x[s]
        in_set[members[s]] = False
    return r, (members, chol, gpp, x, y)


@njit(cache=True)
def _new_state(k, cap):
    """Empty arrays: only what the kernels have written (the first p of each) is ever read."""
    cap = max(1, min(k, cap))
    return (np.empty(cap, dtype=np.int64), np.empty((cap, cap)), np.empty((cap, cap)), np.empty(cap),
            np.empty(cap))


@njit(cache=True)
def _grow(members, chol, gpp, x, y, p, need, k):
    cap = members.shape[0]
    if need <= cap:
        return members, chol, gpp, x, y
    members2, chol2, gpp2, x2, y2 = _new_state(k, max(need, 2 * cap))
    members2[:p] = members[:p]
    chol2[:p, :p] = chol[:p, :p]
    gpp2[:p, :p] = gpp[:p, :p]
    x2[:p] = x[:p]
    y2[:p] = y[:p]
    return members2, chol2, gpp2, x2, y2


@njit(cache=True)
def _solve_state(gram, screen, scale, b, lam, tol, first_size, min_growth, members, chol, gpp, x, y, p,
                 in_set):
    """Working-set rounds at one lam from a feasible state (x > 0 on P, R = chol(G_PP)).

    Each round: the gradient over all K (K·p work), then the worst violators enter as a block and the
    Lawson–Hanson step-back on P settles them. Returns (rounds or -1, p, members, chol, gpp, x, y)."""
    k = b.shape[0]
    q = b - lam
    grad = np.empty(k)
    work = np.empty(members.shape[0])
    _forward(chol, q, members, p, y)
    repairs = 0
    reference = np.empty(k)  # the last full gradient, at x_ref = x_at[:p_ref], with error <= ref_bound
    x_at = np.empty(k)
    p_ref = -1  # -1: no reference (none yet, or P lost a concept since)
    ref_bound = 0.0
    for round_ in range(MAX_ROUNDS):
        if work.shape[0] < members.shape[0]:
            work = np.empty(members.shape[0])
        before = p
        p = _settle(chol, gpp, x, y, p, members, in_set, work)
        if p < before:
            p_ref = -1
        if p_ref < 0 or not _screen_changed(gram, gpp, scale, q, members, x, p, x_at, p_ref, reference,
                                            ref_bound, in_set, tol, grad, work, k // _PARTIAL_SHARE):
            ref_bound = _screen_gradient(gram, screen, scale, q, members, x, p, in_set, tol, grad)
            reference[:] = grad
            x_at[:p] = x[:p]
            p_ref = p
        grow = first_size if p == 0 else max(min_growth, p // 2)
        picked = _most_negative(grad, in_set, -tol, grow)
        if picked.size == 0:
            if _support_gradient(gpp, q, members, x, p, work) <= tol:  # only needed at the end
                return round_, p, members, chol, gpp, x, y
            if repairs == 3:
                return -1, p, members, chol, gpp, x, y
            repairs += 1  # rounding drift in R: refactorise P from G and solve again
            p = _refactor(gram, q, members, chol, gpp, x, y, p, in_set)
            p_ref = -1
            continue
        members, chol, gpp, x, y = _grow(members, chol, gpp, x, y, p, p + picked.size, k)
        added = _append_block(gram, q, members, chol, gpp, y, p, picked, in_set)
        for s in range(p, p + added):
            x[s] = 0.0
        p += added
        if added == 0:
            # Every violator lies in the span of P (K > d, duplicated concepts): swap one in.
            if work.shape[0] < members.shape[0]:
                work = np.empty(members.shape[0])
            p, ok = _swap_in(gram, q, members, chol, gpp, x, y, p, picked[0], in_set, work)
            p_ref = -1
            if not ok:
                return -1, p, members, chol, gpp, x, y
    return -1, p, members, chol, gpp, x, y


@njit(cache=True)
def _append_block(gram, q, members, chol, gpp, y, p, block, in_set):
    """Append the concepts in `block` (in that order) to P, skipping any whose atom is numerically in
    the span of P and the block's earlier atoms. Returns how many were appended (at p, p+1, …).

    V = R⁻ᵀ G_P,B (all right-hand sides at once), S = G_BB − VᵀV, then a right-looking Cholesky of S
    that leaves out dependent pivots: per entry the same operations in the same order as appending
    one concept at a time, so the result does not depend on how concepts were grouped. Inner loops
    run over sliced rows from index 0 (no negative-index checks: they vectorise)."""
    m = block.size
    if m == 0:
        return 0
    gb = np.empty((m, p + m))  # the rows of G for the block, on P then on the block
    for a in range(m):
        row = gram[block[a]]
        ga = gb[a]
        for t in range(p):
            ga[t] = row[members[t]]
        gab = gb[a, p:]
        for c in range(m):
            gab[c] = row[block[c]]
    v = np.empty((p, m))
    for a in range(m):
        ga = gb[a]
        for t in range(p):
            v[t, a] = ga[t]
    gpb = v.copy()
    _solve_rt_block(chol, v, p)
    gbb = gb[:, p:]
    s = gbb.copy()  # upper triangle used
    _schur(v, s, p)
    yb = np.empty(m)  # q_B − Vᵀ y, t ascending per entry
    for a in range(m):
        yb[a] = q[block[a]]
    for t in range(p):
        yt = y[t]
        vt = v[t]
        for a in range(m):
            yb[a] -= vt[a] * yt
    keep = np.zeros(m, dtype=np.bool_)
    for a in range(m):  # right-looking Cholesky of S without the dependent pivots (and y on the block)
        d = s[a, a]
        if not d > _DEPENDENT * gbb[a, a]:
            continue
        keep[a] = True
        d = np.sqrt(d)
        n = m - a - 1
        sa = s[a, a + 1:]
        sa /= d
        s[a, a] = d
        ya = yb[a] / d
        yb[a] = ya
        for c in range(n):
            f = sa[c]
            yb[a + 1 + c] -= f * ya
            sc = s[a + 1 + c, a + 1 + c:]
            sac = sa[c:]
            for e in range(n - c):
                sc[e] -= f * sac[e]
    kept = np.flatnonzero(keep)
    nk = kept.size
    for t in range(p):  # the new columns of R and G_PP, row by row
        rt = chol[t, p:p + nk]
        gt = gpp[t, p:p + nk]
        vt = v[t]
        bt = gpb[t]
        for i in range(nk):
            rt[i] = vt[kept[i]]
            gt[i] = bt[kept[i]]
    for i in range(nk):
        a = kept[i]
        pa = p + i
        chol[pa, :pa] = 0.0
        ra = chol[pa, pa:p + nk]
        ga = gpp[pa]
        sa = s[a]
        gba = gb[a]
        for t in range(p):
            ga[t] = gba[t]
        for e in range(nk):
            ga[p + e] = gba[p + kept[e]]
        for e in range(nk - i):
            ra[e] = sa[kept[i + e]]
        y[pa] = yb[a]
        members[pa] = block[a]
        in_set[block[a]] = True
    return nk


@njit(cache=True)
def _solve_rt_block(chol, v, p):
    """V ← R⁻ᵀ V for a (p, m) block of right-hand sides. Column-oriented (rows of R and V are
    contiguous), eight rows of R at a time: each entry gets the same operations in the same order as
    `_solve_rt` on its column, with an eighth of the passes over V."""
    m = v.shape[1]
    for t0 in range(0, p, 8):
        t1 = min(t0 + 8, p)
        for t in range(t0, t1):  # finish rows t0..t1-1
            rt = chol[t]
            vt = v[t]
            piv = rt[t]
            for a in range(m):
                vt[a] = vt[a] / piv
            for u in range(t + 1, t1):
                c = rt[u]
                vu = v[u]
                for a in range(m):
                    vu[a] -= c * vt[a]
        if t1 - t0 < 8:
            continue  # the last rows: nothing below them
        r0, r1, r2, r3 = chol[t0], chol[t0 + 1], chol[t0 + 2], chol[t0 + 3]
        r4, r5, r6, r7 = chol[t0 + 4], chol[t0 + 5], chol[t0 + 6], chol[t0 + 7]
        v0, v1, v2, v3 = v[t0], v[t0 + 1], v[t0 + 2], v[t0 + 3]
        v4, v5, v6, v7 = v[t0 + 4], v[t0 + 5], v[t0 + 6], v[t0 + 7]
        for u in range(t1, p):
            c0, c1, c2, c3 = r0[u], r1[u], r2[u], r3[u]
            c4, c5, c6, c7 = r4[u], r5[u], r6[u], r7[u]
            vu = v[u]
            for a in range(m):
                vu[a] = (((((((vu[a] - c0 * v0[a]) - c1 * v1[a]) - c2 * v2[a]) - c3 * v3[a]) - c4 * v4[a])
                          - c5 * v5[a]) - c6 * v6[a]) - c7 * v7[a]


@njit(cache=True)
def _schur(v, s, p):
    """s ← s − VᵀV on the upper triangle, rows of V taken in order (eight at a time)."""
    m = v.shape[1]
    t = 0
    while t + 8 <= p:
        for a in range(m):
            a0, a1, a2, a3 = v[t, a], v[t + 1, a], v[t + 2, a], v[t + 3, a]
            a4, a5, a6, a7 = v[t + 4, a], v[t + 5, a], v[t + 6, a], v[t + 7, a]
            sa = s[a, a:]
            v0, v1, v2, v3 = v[t, a:], v[t + 1, a:], v[t + 2, a:], v[t + 3, a:]
            v4, v5, v6, v7 = v[t + 4, a:], v[t + 5, a:], v[t + 6, a:], v[t + 7, a:]
            for c in range(m - a):
                sa[c] = (((((((sa[c] - a0 * v0[c]) - a1 * v1[c]) - a2 * v2[c]) - a3 * v3[c]) - a4 * v4[c])
                          - a5 * v5[c]) - a6 * v6[c]) - a7 * v7[c]
        t += 8
    for t in range(t, p):
        for a in range(m):
            va = v[t, a]
            sa = s[a, a:]
            vt = v[t, a:]
            for c in range(m - a):
                sa[c] -= va * vt[c]


@njit(cache=True)
def _remove(members, chol, gpp, x, y, p, r, in_set):
    """Delete position r from P: drop column r of R, then Givens rotations on rows (i, i+1) restore
    the triangle (and are applied to y, so Rᵀ y = q_P still holds); drop row and column r of G_PP.
    Returns the new p. (Inner loops run over sliced rows from index 0: they vectorise.)"""
    in_set[members[r]] = False
    for i in range(r, p - 1):
        members[i] = members[i + 1]
        x[i] = x[i + 1]
    for t in range(p):  # shift the columns after r left (from the subdiagonal on in rows below r)
        lo = max(r, t - 1)
        _copy(chol[t, lo + 1:p], chol[t, lo:p - 1])
    for i in range(r, p - 1):
        ri = chol[i, i:p - 1]
        rn = chol[i + 1, i:p - 1]
        a = ri[0]
        e = rn[0]
        h = np.hypot(a, e)
        cs = a / h
        sn = e / h
        for c in range(p - 1 - i):
            u = ri[c]
            v = rn[c]
            ri[c] = cs * u + sn * v
            rn[c] = cs * v - sn * u
        rn[0] = 0.0
        u = y[i]
        v = y[i + 1]
        y[i] = cs * u + sn * v
        y[i + 1] = cs * v - sn * u
    for t in range(r):  # G_PP: drop column r, then row r
        _copy(gpp[t, r + 1:p], gpp[t, r:p - 1])
    for t in range(r, p - 1):
        _copy(gpp[t + 1, :r], gpp[t, :r])
        _copy(gpp[t + 1, r + 1:p], gpp[t, r:p - 1])
    return p - 1


@njit(cache=True)
def _copy(src, dst):
    """dst[:] = src element by element from the front: safe for a shift to the left within one row
    (src one ahead of dst), which a slice assignment would copy through a temporary."""
    for c in range(dst.shape[0]):
        dst[c] = src[c]


@njit(cache=True)
def _back(chol, y, p, s):
    """s = R⁻¹ y (row r of R is contiguous). Eight partial sums, in a fixed pattern, so that the dot
    products do not wait on one chain of additions (and stay independent of memory alignment)."""
    for r in range(p - 1, -1, -1):
        n = p - r - 1
        rr = chol[r, r + 1:p]
        ss = s[r + 1:p]
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
        c = 0
        while c + 8 <= n:
            a0 += rr[c] * ss[c]
            a1 += rr[c + 1] * ss[c + 1]
            a2 += rr[c + 2] * ss[c + 2]
            a3 += rr[c + 3] * ss[c + 3]
            a4 += rr[c + 4] * ss[c + 4]
            a5 += rr[c + 5] * ss[c + 5]
            a6 += rr[c + 6] * ss[c + 6]
            a7 += rr[c + 7] * ss[c + 7]
            c += 8
        while c < n:
            a0 += rr[c] * ss[c]
            c += 1
        s[r] = (y[r] - (((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7)))) / chol[r, r]


@njit(cache=True)
def _solve_rt(chol, v, p):
    """v ← R⁻ᵀ v, column-oriented so that it runs along rows of R."""
    for t in range(p):
        rt = chol[t]
        vt = v[t] / rt[t]
        v[t] = vt
        for u in range(t + 1, p):
            v[u] -= rt[u] * vt


@njit(cache=True)
def _forward(chol, q, members, p, y):
    """y = R⁻ᵀ q_P."""
    for r in range(p):
        y[r] = q[members[r]]
    _solve_rt(chol, y, p)


@njit(cache=True)
def _settle(chol, gpp, x, y, p, members, in_set, s):
    """Lawson–Hanson on P from the feasible x: move towards the least-squares solution s on P; when a
    weight would turn negative stop at the boundary and drop the weights that reached zero. Ends
    with x = s > 0 on the remaining P. Returns the new p."""
    ratio = np.empty(p)
    while p > 0:
        _back(chol, y, p, s)
        alpha = 1.0
        blocked = False
        for r in range(p):
            ratio[r] = np.inf
            if s[r] <= 0.0:
                blocked = True
                ratio[r] = x[r] / (x[r] - s[r]) if x[r] > 0.0 else 0.0
                alpha = min(alpha, ratio[r])
        if not blocked:
            for r in range(p):
                x[r] = s[r]
            return p
        for r in range(p):
            x[r] += alpha * (s[r] - x[r])
        for r in range(p - 1, -1, -1):  # from the end: earlier positions stay valid
            if ratio[r] <= alpha:
                p = _remove(members, chol, gpp, x, y, p, r, in_set)
    return p


@njit(cache=True)
def _support_gradient(gpp, q, members, x, p, acc):
    """max over P of |(G w − q)_j|, exactly (float64 G_PP)."""
    for t in range(p):
        acc[t] = -q[members[t]]
    for s in range(p):
        ws = x[s]
        row = gpp[s]
        for t in range(p):
            acc[t] += ws * row[t]
    worst = 0.0
    for t in range(p):
        worst = max(worst, abs(acc[t]))
    return worst


@njit(cache=True)
def _combine_rows(rows, members, x, p, out):
    """out = Σ_s x[s]·rows[members[s]] (K·p: the full-K gradients). Eight rows (then four, then one)
    per pass over out, in a fixed pattern: one row per pass loaded and stored out (float64) for every
    row entry read, more traffic than the rows themselves. The products and each pass's sum are in
    x's precision (float32 weights with int16 rows: the screening gradient), out in float64."""
    out[:] = 0.0
    s = 0
    while s + 8 <= p:
        w0, w1, w2, w3 = x[s], x[s + 1], x[s + 2], x[s + 3]
        w4, w5, w6, w7 = x[s + 4], x[s + 5], x[s + 6], x[s + 7]
        r0, r1, r2, r3 = rows[members[s]], rows[members[s + 1]], rows[members[s + 2]], rows[members[s + 3]]
        r4, r5, r6, r7 = rows[members[s + 4]], rows[members[s + 5]], rows[members[s + 6]], rows[members[s + 7]]
        for j in range(out.shape[0]):
            out[j] += ((w0 * r0[j] + w1 * r1[j]) + (w2 * r2[j] + w3 * r3[j])) + ((w4 * r4[j] + w5 * r5[j])
                                                                                + (w6 * r6[j] + w7 * r7[j]))
        s += 8
    while s + 4 <= p:
        w0, w1, w2, w3 = x[s], x[s + 1], x[s + 2], x[s + 3]
        r0, r1, r2, r3 = rows[members[s]], rows[members[s + 1]], rows[members[s + 2]], rows[members[s + 3]]
        for j in range(out.shape[0]):
            out[j] += (w0 * r0[j] + w1 * r1[j]) + (w2 * r2[j] + w3 * r3[j])
        s += 4
    for s in range(s, p):
        ws = x[s]
        row = rows[members[s]]
        for j in range(out.shape[0]):
            out[j] += ws * row[j]


@njit(cache=True)
def _screen_gradient(gram, screen, scale, q, members, x, p, in_set, tol, grad):
    """grad = G w − q over all K from the int16 copy of G (only the rows on P are read), with the
    entries outside P that lie within its error bound of −tol recomputed from the float64 G: so
    grad < −tol exactly where the true gradient is (the violators), up to float64 rounding. Returns
    the bound on the error of the other entries."""
    bound = _approx_product(gram, screen, scale, members, x, p, grad)
    grad -= q
    low = -tol - bound
    high = -tol + bound
    for j in range(grad.shape[0]):
        g = grad[j]
        if g < low or g >= high or in_set[j]:
            continue
        grad[j] = _exact_gradient(gram[j], q[j], members, x, p)
    return bound


@njit(cache=True)
def _approx_product(gram, screen, scale, members, v, p, out):
    """out ≈ Σ_s v[s]·G[members[s]] over all K, from the int16 copy of G (a quarter of the float64
    rows' memory traffic). Returns the bound on every entry's error; 0 when v is too large for float32
    sums and out came from the float64 G."""
    total = 0.0
    for s in range(p):
        total += abs(v[s])
    if total > _SCREEN_FLOAT32_LIMIT:
        _combine_rows(gram, members, v, p, out)
        return 0.0
    _combine_rows(screen, members, v[:p].astype(np.float32), p, out)
    unit = scale / 32767.0
    for j in range(out.shape[0]):
        out[j] *= unit
    return total * scale * _SCREEN_EPS


@njit(cache=True)
def _exact_gradient(row, qj, members, x, p):
    """(G w − q)_j from row j of the float64 G."""
    e = -qj
    for s in range(p):
        e += x[s] * row[members[s]]
    return e


@njit(cache=True)
def _screen_changed(gram, gpp, scale, q, members, x, p, x_at, p_ref, reference, ref_bound, in_set, tol,
                    grad, delta, limit):
    """grad from the last full gradient `reference` (at the weights x_at on the first p_ref of P, error
    <= ref_bound) when P has only grown since: with Δ = x − x_ref, |g_j − reference_j| <= ref_bound +
    ‖c_j‖·‖CΔ‖ (Cauchy–Schwarz; ‖CΔ‖² = Δᵀ G_PP Δ from the float64 G_PP, ‖c_j‖² <= scale), so only the
    concepts within that of −tol can be violators, and only they are recomputed, exactly. Near the end
    of a solve, when a round added a few concepts, that is a handful of K. Returns False (nothing
    done) if more than `limit` would need recomputing."""
    total = 0.0
    for s in range(p):
        delta[s] = x[s] - (x_at[s] if s < p_ref else 0.0)
        total += abs(delta[s])
    norm_sq = 0.0
    for s in range(p):
        row = gpp[s]
        acc = 0.0
        for t in range(p):
            acc += row[t] * delta[t]
        norm_sq += delta[s] * acc
    norm_sq = max(norm_sq, 0.0) + p * 2.0 ** -50 * total * total * scale  # + its rounding
    margin = -tol + ref_bound + np.sqrt(scale * norm_sq) * (1.0 + 1e-12)
    count = 0
    for j in range(reference.shape[0]):
        if reference[j] < margin and not in_set[j]:
            count += 1
    if count > limit:
        return False
    for j in range(reference.shape[0]):
        g = reference[j]
        if g < margin and not in_set[j]:
            g = _exact_gradient(gram[j], q[j], members, x, p)
        grad[j] = g  # the others are >= margin > −tol: not violators (or on P)
    return True


@njit(cache=True)
def _refactor(gram, q, members, chol, gpp, x, y, p, in_set):
    """Rebuild R from G for the current P (dropping atoms that are now numerically dependent)."""
    old = members[:p].copy()
    weights = np.zeros(in_set.shape[0])
    for t in range(p):
        weights[old[t]] = x[t]
        in_set[old[t]] = False
    n = _append_block(gram, q, members, chol, gpp, y, 0, old, in_set)
    for t in range(n):
        x[t] = weights[members[t]]
    return n


@njit(cache=True)
def _swap_in(gram, q, members, chol, gpp, x, y, p, new, in_set, work):
    """Enter `new`, whose atom is (numerically) Σ α_r c_{P[r]}: along e_new − α the fit does not change
    and the objective falls at the rate of new's (negative) gradient, so move until the first weight
    with α_r > 0 reaches zero and swap it out. Returns (p, False) if no such weight exists."""
    if p == 0:
        return p, False
    row = gram[new]
    tmp = np.empty(p)
    for r in range(p):  # α = G_PP⁻¹ G_P,new = R⁻¹ R⁻ᵀ G_P,new
        tmp[r] = row[members[r]]
    _solve_rt(chol, tmp, p)
    alpha = work
    _back(chol, tmp, p, alpha)
    step = np.inf
    out = -1
    for r in range(p):
        if alpha[r] > 0 and x[r] / alpha[r] < step:
            step = x[r] / alpha[r]
            out = r
    if out < 0:
        return p, False
    for r in range(p):
        x[r] -= step * alpha[r]
    x[out] = 0.0
    for r in range(p - 1, -1, -1):
        if x[r] <= 0.0:
            p = _remove(members, chol, gpp, x, y, p, r, in_set)
    one = np.full(1, new, dtype=np.int64)
    if _append_block(gram, q, members, chol, gpp, y, p, one, in_set) == 0:
        return p, False
    x[p] = step
    return p + 1, True


@njit(parallel=True, cache=True)
def _crossings_batch(gram, screen, scale, b, counts, floor_ratio, out_w, out_lam, events):
    for i in prange(b.shape[0]):
        events[i] = _crossings_row(gram, screen, scale, b[i], counts, floor_ratio, out_w[:, i], out_lam[:, i])


@njit(cache=True)
def _crossings_row(gram, screen, scale, b, counts, floor_ratio, out_w, out_lam):
    """Follow the path w(lam) from λ_max down, one event (a concept entering or leaving) at a time,
    and record for each count N in `counts` (ascending) the weights and lam at its first crossing:
    the event where an entering concept would make the support exceed N. Counts never exceeded
    above floor_ratio·λ_max get the weights there. Between events w_P moves along d = G_PP⁻¹·1
    (dw_P/d(−lam)), and the gradient g = G w − b + lam outside P along G d − 1, so concept j would
    enter after a step of g_j / (1 − (G d)_j). The weights w that g belongs to are the path's own, the
    sum of the steps along d (`path_w`); the weights x on P that give the leaving steps and the
    recorded points are recomputed from the factor at every event, so rounding does not build up (on
    near-parallel atoms the two differ, and g must come from the path's, or concepts enter early).
    Per event G d comes from one pass over the int16 rows of G on P, with an error bound; g is
    carried along with it, its error (`drift`) summed. The bounds give each concept's step an
    interval, and only the concepts whose interval reaches below the smallest upper end are
    recomputed from the float64 G: the event found is the exact one. When that would be many
    concepts, g is recomputed from the float64 G first (drift 0). The caller re-solves each recorded
    point exactly. Returns the number of events, -1 if it gave up."""
    k = b.shape[0]
    members, chol, gpp, x, y = _new_state(k, 64)
    in_set = np.zeros(k, dtype=np.bool_)
    blocked = np.zeros(k, dtype=np.bool_)
    lam = 0.0
    for j in range(k):
        lam = max(lam, b[j])
    floor = floor_ratio * lam
    grad = np.empty(k)
    for j in range(k):
        grad[j] = lam - b[j]
    drift = 0.0  # |grad − g| <= drift
    path = np.empty(k, dtype=np.int64)  # the concepts that have been in P, and their path weights
    path_w = np.zeros(k)
    slot = np.full(k, -1)
    n_path = 0
    gd = np.empty(k)
    d = np.empty(members.shape[0])
    ones = np.empty(members.shape[0])
    p = 0
    t = 0
    entered = -1  # the concept of the last event, kept from the opposite event for one step
    left = -1
    for event in range(50 * k + 100):
        if d.shape[0] < members.shape[0]:
            d = np.empty(members.shape[0])
            ones = np.empty(members.shape[0])
        for s in range(p):
            ones[s] = 1.0
        _solve_rt(chol, ones, p)
        _back(chol, ones, p, d)
        error_d = _approx_product(gram, screen, scale, members, d, p, gd)
        while True:
            reach = lam - floor  # the smallest upper end of a step's interval (or a leaving step)
            for s in range(p):
                if d[s] < 0.0 and members[s] != entered:
                    reach = min(reach, x[s] / -d[s])
            for j in range(k):
                slope_low = 1.0 - gd[j] - error_d
                high = max(grad[j] + drift, 0.0)
                if slope_low > 0.0 and high < reach * slope_low and not (in_set[j] or blocked[j] or j == left):
                    reach = high / slope_low
            reach *= 1.0 + 1e-9  # room for the rounding of the bounds themselves
            step = lam - floor
            kind = 0
            who = -1
            count = 0
            for j in range(k):
                slope_high = 1.0 - gd[j] + error_d
                if slope_high <= 0.0 or max(grad[j] - drift, 0.0) > reach * slope_high:
                    continue
                if in_set[j] or blocked[j] or j == left:
                    continue
                count += 1
                slope = 1.0 - _exact_gradient(gram[j], 0.0, members, d, p)
                if slope > 0.0:
                    dj = max(_exact_gradient(gram[j], b[j] - lam, path, path_w, n_path), 0.0) / slope
                    if dj < step:
                        step = dj
                        kind = 1
                        who = j
            if count <= _CROSSING_CANDIDATES or drift == 0.0:
                break
            _combine_rows(gram, path, path_w, n_path, grad)  # drift too large: g afresh from the float64 G
            for j in range(k):
                grad[j] += lam - b[j]
            drift = 0.0
        for s in range(p):
            if d[s] < 0.0 and members[s] != entered:
                ds = x[s] / -d[s]
                if ds < step:
                    step = ds
                    kind = 2
                    who = s
        step = max(step, 0.0)
        before = lam
        lam -= step
        for s in range(p):
            x[s] = max(x[s] + step * d[s], 0.0)
        for s in range(p):
            path_w[slot[members[s]]] += step * d[s]
        for j in range(k):
            grad[j] += step * (gd[j] - 1.0)
        drift += step * error_d
        # The first crossing of counts[t] (or the floor). At the crossing itself the entering concept's
        # gradient is 0, so a solver may give it a weight of 1e-17: record a point just above it
        # (1e-9 relative, inside the segment), where the support is unambiguous.
        back = 0.0 if kind == 0 else min(lam * _ABOVE_CROSSING, 0.5 * (before - lam))
        while t < counts.size and (kind == 0 or (kind == 1 and p + 1 > counts[t])):
            out_lam[t] = lam + back
            for s in range(p):
                out_w[t, members[s]] = max(x[s] - back * d[s], 0.0)
            t += 1
        if t == counts.size or kind == 0:
            return event + 1
        entered = -1
        left = -1
        if kind == 1:
            members, chol, gpp, x, y = _grow(members, chol, gpp, x, y, p, p + 1, k)
            one = np.full(1, who, dtype=np.int64)
            if _append_block(gram, b, members, chol, gpp, y, p, one, in_set) == 0:
                blocked[who] = True  # numerically in the span of P: enters only at lam = 0
                continue
            p += 1
            entered = who
            if slot[who] < 0:
                slot[who] = n_path
                path[n_path] = who
                n_path += 1
        else:
            left = members[who]
            p = _remove(members, chol, gpp, x, y, p, who, in_set)
        _forward(chol, b - lam, members, p, y)  # exact weights at this lam from the factor
        _back(chol, y, p, x)
        for s in range(p):
            if members[s] != entered:
                x[s] = max(x[s], 0.0)
        for s in range(p):
            if members[s] == entered:
                x[s] = 0.0
    return -1


@njit(cache=True)
def _most_negative(grad, in_set, threshold, count):
    """Indices (most negative first) of at most `count` entries outside P with grad < threshold."""
    vals = np.empty(count)
    idx = np.empty(count, dtype=np.int64)
    filled = 0
    for j in range(grad.shape[0]):
        g = grad[j]
        if in_set[j] or g >= threshold:
            continue
        if filled == count and g >= vals[filled - 1]:
            continue
        # insertion into the sorted buffer (ties keep the lower index first: deterministic)
        pos = filled if filled < count else count - 1
        while pos > 0 and vals[pos - 1] > g:
            if pos < count:
                vals[pos] = vals[pos - 1]
                idx[pos] = idx[pos - 1]
            pos -= 1
        vals[pos] = g
        idx[pos] = j
        if filled < count:
            filled += 1
    return idx[:filled].copy()
