"""Exact non-negative Lasso for many vectors that share one dictionary.

For every row z of a batch we solve

    w* = argmin_{w >= 0}  ½‖C w − z‖² + lam·‖w‖₁            (C is d × K: atoms c_k as columns)

which, with G = CᵀC and b = Cᵀz, is the quadratic program  min_{w>=0} ½wᵀGw − (b − lam)ᵀw.
Our lam is half of the λ in SpLiCE's code (which minimises ‖Cw − z‖² + λ‖w‖₁); see docs/method.md.

Optimality (KKT), with the gradient g = G w − b + lam:
    w_k > 0  ⇒  g_k = 0        and        w_k = 0  ⇒  g_k >= 0.

Method, per row (rows run in parallel; each row's result depends only on that row):
  1. A small working set: the current support plus the concepts with the most negative gradient
     (the worst KKT violators). At w = 0 these are the concepts with the largest b_k − lam.
  2. On the working set, a Lawson–Hanson active-set method: add the worst violator, solve the
     linear system on the support exactly (Cholesky), step back when a weight would go negative.
     It ends after finitely many steps at the exact optimum of the working-set problem.
  3. The gradient over all K concepts (K·|support| work with G) checks optimality; while there
     are violators, the working set grows and step 2 runs again from the current weights.
The result satisfies the KKT conditions over all K to `tol` (default 1e-10), and the weights on the
support come from a direct linear solve, so they are exact to rounding. No iteration counts to tune,
no randomness: the same input gives the same output.

The per-row kernel is compiled with numba (it is loop-heavy; numpy cannot batch it well). Without
numba the same code runs as plain Python: correct, but orders of magnitude slower.
"""

from __future__ import annotations

import warnings

import numpy as np

from clapdex.errors import DecompositionError

try:  # compiled kernel; the pure-Python fallback is only for environments without numba
    from numba import njit, prange
except ImportError:  # pragma: no cover
    prange = range

    def njit(*args, **kwargs):
        if args and callable(args[0]):
            return args[0]
        return lambda func: func

DEFAULT_TOL = 1e-10
FIRST_WORKING_SET = 32   # concepts in the first working set (most rows need 10–40)
MIN_GROWTH = 16          # violators added per round, at least; else as many as the support holds
MAX_ROUNDS = 200
DEFAULT_REL_PRECISION = 1e-3  # target-sparsity mode: neighbouring grid values of lam differ by 0.1 %
WALK_RATIO = 0.7              # target-sparsity mode: lam shrinks by about this factor per walk step


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
    quad = np.einsum("ij,ij->i", w @ gram, w)
    return 0.5 * quad - np.einsum("ij,ij->i", b, w) + 0.5 * np.asarray(z_sq_norm) + lam * w.sum(axis=1)


def kkt_violation(gram: np.ndarray, correlations: np.ndarray, weights: np.ndarray, lam) -> np.ndarray:
    """Per row, the largest violation of the KKT conditions (0 at the exact optimum)."""
    w = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    b = np.atleast_2d(np.asarray(correlations, dtype=np.float64))
    lam = np.broadcast_to(np.asarray(lam, dtype=np.float64), (w.shape[0],))
    grad = w @ gram - b + lam[:, None]
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
    gram = _checked_gram(gram, k)
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


def _checked_gram(gram, k: int) -> np.ndarray:
    gram = np.ascontiguousarray(gram, dtype=np.float64)
    if gram.shape != (k, k):
        raise DecompositionError(f"Gram matrix has shape {gram.shape}, expected ({k}, {k})")
    if not np.all(np.isfinite(gram)):
        raise DecompositionError("Gram matrix contains NaN or infinite values")
    return gram


def _solve_in_place(gram, b, lam, w, tol) -> None:
    """The solver on checked, contiguous float64 inputs; w (the warm start) becomes the solution."""
    n, k = b.shape
    if n and k:
        rounds = np.zeros(n, dtype=np.int64)
        _solve_batch(gram, b, lam, w, float(tol), FIRST_WORKING_SET, MIN_GROWTH, rounds)
        if np.any(rounds < 0):
            warnings.warn(f"nonneg_lasso: {int((rounds < 0).sum())} of {n} rows stopped before meeting "
                          f"the KKT tolerance {tol:g} (numerically ill-conditioned dictionary?)",
                          RuntimeWarning, stacklevel=3)


def lambda_on_grid(lam_max, steps, rel_precision: float = DEFAULT_REL_PRECISION) -> np.ndarray:
    """The target-sparsity grid: lam_max·(1 + rel_precision)^(−steps), elementwise."""
    return np.asarray(lam_max, dtype=np.float64) * np.exp(-np.asarray(steps) * np.log1p(rel_precision))


def nonneg_lasso_max_concepts(gram: np.ndarray, correlations: np.ndarray, max_concepts: int, *,
                              tol: float = DEFAULT_TOL, lam_floor: float = 1e-4,
                              rel_precision: float = DEFAULT_REL_PRECISION,
                              walk_ratio: float = WALK_RATIO) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the least-regularised solution with at most `max_concepts` non-zero weights.

    lam is searched on the geometric grid λ_j = λ_max·(1 + rel_precision)^(−j) (`lambda_on_grid`),
    from j = 0 (λ_max, where w = 0) down to the first grid point at or below lam_floor·λ_max:
      1. walk down the path in strides of about `walk_ratio`, each solve warm-started from the
         previous one, until a grid point gives more than `max_concepts` non-zeros;
      2. bisect on the grid between the last point that fits and that one, warm-started from the
         side that fits, until they are neighbours.
    The answer is the exact solution at the last point that fits, λ_j, and solving at the next grid
    point λ_{j+1} = λ_j/(1 + rel_precision) gives more than `max_concepts` non-zeros. If the walk
    reaches the floor and it still fits, the floor's solution is returned. Supports stay near
    `max_concepts` in every solve, so the mode costs a few fixed-lam solves, not one at the floor.
    Returns (weights (n, K), lam_used (n,)); lam_used is 0 for rows with λ_max = 0 (w = 0).
    """
    if isinstance(max_concepts, bool) or int(max_concepts) != max_concepts or max_concepts < 1:
        raise DecompositionError(f"max_concepts must be a positive integer, got {max_concepts!r}")
    if not (0 < lam_floor < 1 and 0 < rel_precision and 0 < walk_ratio < 1):
        raise DecompositionError("need 0 < lam_floor < 1, rel_precision > 0 and 0 < walk_ratio < 1")
    b = np.atleast_2d(np.asarray(correlations, dtype=np.float64))
    n, k = b.shape
    gram = _checked_gram(gram, k)
    if not np.all(np.isfinite(b)):
        raise DecompositionError("correlations contains NaN or infinite values")
    lmax = lambda_max(b)
    floor = int(np.ceil(np.log(1.0 / lam_floor) / np.log1p(rel_precision)))   # grid index of the floor
    stride = max(1, int(round(np.log(1.0 / walk_ratio) / np.log1p(rel_precision))))
    fit = np.zeros(n, dtype=np.int64)         # grid index of the smallest lam known to fit (0: λ_max)
    too_many = np.full(n, -1, dtype=np.int64)  # grid index known to give too many; -1: none yet
    lam_fit = lmax.copy()                     # λ at that index (0 where λ_max = 0)
    w_fit = np.zeros((n, k))                  # the exact solution at lam_fit

    def solve_and_sort(rows, steps):
        """Solve rows at grid indices `steps`; record each as fitting or as giving too many."""
        lam = lambda_on_grid(lmax[rows], steps, rel_precision)
        w = np.ascontiguousarray(w_fit[rows])  # warm start from the side that fits
        _solve_in_place(gram, np.ascontiguousarray(b[rows]), lam, w, tol)
        fits = np.count_nonzero(w, axis=1) <= max_concepts
        fit[rows[fits]] = steps[fits]
        lam_fit[rows[fits]] = lam[fits]
        w_fit[rows[fits]] = w[fits]
        too_many[rows[~fits]] = steps[~fits]
        return fits

    rows = np.flatnonzero(lmax > 0)
    while rows.size:  # 1. walk down the path
        steps = np.minimum(fit[rows] + stride, floor)
        fits = solve_and_sort(rows, steps)
        rows = rows[fits & (steps < floor)]
    rows = np.flatnonzero(too_many > fit + 1)
    while rows.size:  # 2. bisect on the grid until the bracket ends are neighbours
        solve_and_sort(rows, (fit[rows] + too_many[rows]) // 2)
        rows = rows[too_many[rows] > fit[rows] + 1]
    return w_fit, lam_fit


# --- compiled kernel -----------------------------------------------------------------------------

@njit(parallel=True, cache=True)
def _solve_batch(gram, b, lam, w, tol, first_size, min_growth, rounds):
    for i in prange(b.shape[0]):
        rounds[i] = _solve_row(gram, b[i], lam[i], w[i], tol, first_size, min_growth)


@njit(cache=True)
def _solve_row(gram, b, lam, w, tol, first_size, min_growth):
    """One row: working-set rounds until the KKT conditions hold over all K; w is updated in place.

    Returns the number of rounds used, or -1 if MAX_ROUNDS did not reach the tolerance."""
    k = b.shape[0]
    q = b - lam
    grad = np.empty(k)
    support = np.flatnonzero(w > 0)
    _full_gradient(gram, q, w, support, grad)
    for round_ in range(MAX_ROUNDS):
        # Worst violators outside the support, and the worst error on the support.
        worst_on_support = 0.0
        for s in support:
            worst_on_support = max(worst_on_support, abs(grad[s]))
        grow = first_size if (round_ == 0 and support.size == 0) else max(min_growth, support.size)
        picked = _most_negative(grad, w, -tol, grow)
        if picked.size == 0 and worst_on_support <= tol:
            return round_
        ws = np.concatenate((support, picked))
        m = ws.size
        g_ws = np.empty((m, m))
        for r in range(m):
            for c in range(m):
                g_ws[r, c] = gram[ws[r], ws[c]]
        q_ws = q[ws].copy()
        x = w[ws].copy()
        _active_set(g_ws, q_ws, x, tol)
        for r in range(m):
            w[ws[r]] = x[r]
        support = np.flatnonzero(w > 0)
        _full_gradient(gram, q, w, support, grad)
    return -1


@njit(cache=True)
def _full_gradient(gram, q, w, support, grad):
    """grad = G w − q, touching only the rows of G on the support (G is symmetric)."""
    grad[:] = -q
    for s in support:
        ws = w[s]
        row = gram[s]
        for j in range(grad.shape[0]):
            grad[j] += ws * row[j]


@njit(cache=True)
def _most_negative(grad, w, threshold, count):
    """Indices (most negative first) of at most `count` entries with w == 0 and grad < threshold."""
    vals = np.empty(count)
    idx = np.empty(count, dtype=np.int64)
    filled = 0
    for j in range(grad.shape[0]):
        g = grad[j]
        if w[j] != 0.0 or g >= threshold:
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


@njit(cache=True)
def _active_set(g, q, x, tol):
    """Lawson–Hanson for min_{x>=0} ½xᵀGx − qᵀx on a working set; x (feasible) is updated in place."""
    m = q.shape[0]
    passive = x > 0
    blocked = np.zeros(m, dtype=np.bool_)  # candidates that failed to enter through rounding
    if passive.any() and not _settle(g, q, x, passive, -1):
        x[:] = 0.0  # the warm start's support is numerically singular: start from zero
        passive[:] = False
    for _ in range(4 * m + 20):
        members = np.flatnonzero(passive)
        best = -tol
        j = -1
        for i in range(m):
            if passive[i] or blocked[i]:
                continue
            gi = -q[i]
            for p in members:
                gi += g[i, p] * x[p]
            if gi < best:
                best = gi
                j = i
        if j < 0:
            return
        passive[j] = True
        if _settle(g, q, x, passive, j):
            blocked[:] = False
        else:
            passive[j] = False
            blocked[j] = True


@njit(cache=True)
def _settle(g, q, x, passive, new):
    """Solve on the passive set; while a weight would go negative, step back and drop it.

    `new` is the index just added (-1 for none). Returns False, changing nothing, when the new
    index cannot enter (it would get a weight <= 0, or its column is numerically dependent).
    """
    first = True
    while True:
        members = np.flatnonzero(passive)
        p = members.size
        if p == 0:
            return True
        a = np.empty((p, p))
        rhs = np.empty(p)
        for r in range(p):
            rhs[r] = q[members[r]]
            for c in range(p):
                a[r, c] = g[members[r], members[c]]
        s = np.empty(p)
        if not _cholesky_solve(a, rhs, s):
            if first and new >= 0:
                # The new atom lies in the span of the support (K > d, or dependent concepts):
                # trade weight along the null direction instead, dropping one support member.
                if not _swap_in_dependent(g, q, x, passive, new):
                    return False
                first = False
                continue
            # After a step back the set is a subset of a positive-definite one, so this only
            # happens for an unusable warm start; keep the (feasible) point.
            return not first
        if first and new >= 0:
            for r in range(p):
                if members[r] == new and s[r] <= 0:
                    return False
        first = False
        # Step from x towards s until the first weight reaches zero; drop the weights that did.
        alpha = 1.0
        ratio = np.full(p, np.inf)
        for r in range(p):
            if s[r] <= 0:
                xr = x[members[r]]
                ratio[r] = xr / (xr - s[r])
                alpha = min(alpha, ratio[r])
        if alpha == 1.0 and np.all(s > 0):
            for r in range(p):
                x[members[r]] = s[r]
            return True
        for r in range(p):
            i = members[r]
            x[i] += alpha * (s[r] - x[i])
            if ratio[r] <= alpha or x[i] <= 0:
                x[i] = 0.0
                passive[i] = False


@njit(cache=True)
def _swap_in_dependent(g, q, x, passive, new):
    """Enter `new`, whose atom is (numerically) a combination Σ α_k c_k of the support's atoms.

    Along δ = e_new − α the fit does not change and the objective falls at the rate of new's
    (negative) gradient, so move until the first support weight with α_k > 0 reaches zero and
    swap it out. Returns False (nothing changed) if no such weight exists.
    """
    passive[new] = False
    members = np.flatnonzero(passive)
    p = members.size
    a = np.empty((p, p))
    col = np.empty(p)
    for r in range(p):
        col[r] = g[members[r], new]
        for c in range(p):
            a[r, c] = g[members[r], members[c]]
    alpha = np.empty(p)
    if p == 0 or not _cholesky_solve(a, col, alpha):
        return False
    step = np.inf
    out = -1
    for r in range(p):
        if alpha[r] > 0 and x[members[r]] / alpha[r] < step:
            step = x[members[r]] / alpha[r]
            out = r
    if out < 0:
        return False
    for r in range(p):
        x[members[r]] -= step * alpha[r]
        if x[members[r]] <= 0 or r == out:
            x[members[r]] = 0.0
            passive[members[r]] = False
    x[new] = step
    passive[new] = True
    return True


@njit(cache=True)
def _cholesky_solve(a, rhs, out):
    """Solve a·out = rhs for symmetric positive-definite a (overwritten). False if not PD."""
    p = a.shape[0]
    for j in range(p):
        d = a[j, j]
        for t in range(j):
            d -= a[j, t] * a[j, t]
        if not d > 1e-12 * max(a[j, j], 1e-300):
            return False
        d = np.sqrt(d)
        a[j, j] = d
        for r in range(j + 1, p):
            v = a[r, j]
            for t in range(j):
                v -= a[r, t] * a[j, t]
            a[r, j] = v / d
    for r in range(p):  # forward: L y = rhs
        v = rhs[r]
        for t in range(r):
            v -= a[r, t] * out[t]
        out[r] = v / a[r, r]
    for r in range(p - 1, -1, -1):  # backward: Lᵀ out = y
        v = out[r]
        for t in range(r + 1, p):
            v -= a[t, r] * out[t]
        out[r] = v / a[r, r]
    return True
