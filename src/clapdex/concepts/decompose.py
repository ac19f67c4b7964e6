"""Concept decomposition of audio embeddings: audio mean, decompose / recompose, fidelity, explanations.

For a window embedding a (raw, as the encoder returns it), with the dictionary atoms c_k (rows of C)
and the audio mean μ_A:

    x = normalize(a);   z = normalize(x − μ_A)
    w = argmin_{w>=0} ½‖Cw − z‖² + lam‖w‖₁            (solver.nonneg_lasso; lam is half SpLiCE's λ)
    u = Σ_k w_k c_k;   n = ‖u‖;   m = ‖u/n + μ_A‖;   r = (u/n + μ_A) / m;   fidelity = ⟨r, x⟩
    concept fidelity = ⟨u, z⟩ / ‖u‖  (0 when w = 0)

Two quality numbers, for two questions (docs/method.md, "Two fidelities"): `fidelity` says how close
the recomposed embedding r is to the window, and is dominated by μ_A (a window with no concept at
all scores about ‖μ_A‖); `concept_fidelity` says how much of what is distinctive about the window
(its centred direction z) the named concepts explain, and is what flags poorly explained audio.

For any unit query q this gives the exact explanation (design.md "Exact explanations"):

    ⟨r, q⟩ = Σ_k w_k ⟨c_k, q⟩ / (n·m)  +  ⟨μ_A, q⟩ / m.

When w = 0 (the window is explained by the audio mean alone) u = 0 and normalize(u) = 0, so
r = normalize(μ_A). We then store recon_norm n = 1 (not ‖u‖ = 0) so that every formula above stays
finite and still holds: the concept sum is empty and m = ‖μ_A‖. If also μ_A = 0, r = 0, the
fidelity is 0 and we store shift_norm m = 1 (all terms are 0).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from clapdex.concepts.dictionary import ConceptDictionary, normalize_rows
from clapdex.concepts.solver import (nonneg_lasso, nonneg_lasso_max_concepts, nonneg_lasso_max_concepts_path,
                                    nonneg_lasso_path)
from clapdex.errors import DecompositionError
from clapdex.sparsity import Sparsity
from clapdex.vectors import mean_of_unit_rows

# In our convention (½‖Cw − z‖² + lam‖w‖₁; SpLiCE's λ = 2·lam). A concept can only get weight if
# its atom correlates with the centred window by more than lam, so lam is a threshold on cosines.
# With the default vocabulary (K = 3,957) 0.05 gave a mean of 18.6 concepts per window on real
# windows and 32 on synthetic mixtures, 11–46 in all (docs/method.md); tune it per corpus or use
# max_concepts.
DEFAULT_LAMBDA = 0.05

# Below this lam most windows get hundreds of concepts, up to the embedding dimension d, and solving
# slows down with the support size (measured at K = 4,000, d = 1,024, one thread, 2026-12-03: 3 ms
# per window at ~300 concepts, 37 ms at lam = 0.01 (~620), 0.13 s at 0.005 (~810), 0.35 s at 0.0025
# (~915), 0.74 s at 0.001 (~980)): see docs/method.md.
SLOW_LAMBDA = 0.01

_CHUNK = 4096  # rows per solver call: bounds the (rows, K) correlation matrix


class SlowDecompositionWarning(UserWarning):
    """A lam so small that decomposing is slow and the weights are poorly determined."""


def _warn_if_slow(lam: float) -> None:
    if lam < SLOW_LAMBDA:
        warnings.warn(f"lambda {lam:g} is below {SLOW_LAMBDA:g}: most windows will get hundreds of concepts "
                      f"(up to the embedding dimension), each solve costs about the cube of that number "
                      f"(0.04–0.7 s per window with 4,000 concepts), and as the support nears the dimension its "
                      f"Gram block becomes ill-conditioned, so the weights are poorly determined; use a larger "
                      f"lambda or max_concepts", SlowDecompositionWarning, stacklevel=3)


@dataclass
class Decomposition:
    """Sparse concept weights of n windows and the numbers needed to explain them exactly."""

    weights: sp.csr_matrix   # (n, K) float64, non-negative
    fidelity: np.ndarray     # (n,) cos(r, normalize(a)): reconstruction fidelity
    concept_fidelity: np.ndarray  # (n,) cos(Cw, z) on the centred window, 0 where w = 0
    recon_norm: np.ndarray   # (n,) ‖Cw‖, or 1 where w = 0
    shift_norm: np.ndarray   # (n,) ‖Cw/recon_norm + μ_A‖, or 1 where that is 0
    lam: np.ndarray          # (n,) the lam each row was solved with

    def __len__(self) -> int:
        return self.weights.shape[0]


def _as_embeddings(embeddings, what: str = "embeddings") -> np.ndarray:
    arr = np.asarray(embeddings)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2:
        raise DecompositionError(f"{what} must be a (n, d) array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise DecompositionError(f"{what} must be numeric, got {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise DecompositionError(f"{what} contain NaN or infinite values")
    if arr.shape[0] and np.any(np.linalg.norm(arr, axis=1) == 0):
        raise DecompositionError(f"{what} contain an all-zero row (it has no direction)")
    return arr


def audio_mean(embeddings) -> np.ndarray:
    """μ_A: the mean of the L2-normalised rows, (d,) float64."""
    arr = _as_embeddings(embeddings, "audio embeddings")
    if arr.shape[0] == 0:
        raise DecompositionError("cannot compute an audio mean from zero embeddings")
    return mean_of_unit_rows(arr)


def _check_mean(mean, d: int) -> np.ndarray:
    mu = np.asarray(mean, dtype=np.float64)
    if mu.shape != (d,):
        raise DecompositionError(f"audio mean has shape {mu.shape}, expected ({d},)")
    if not np.all(np.isfinite(mu)):
        raise DecompositionError("audio mean contains NaN or infinite values")
    return mu


def decompose(embeddings, dictionary: ConceptDictionary, audio_mean, lam: float | None = None,
              max_concepts: int | None = None, *, sparsity: Sparsity | None = None,
              skip=None) -> Decomposition:
    """Decompose raw embeddings (n, d) into sparse non-negative concept weights.

    Give `lam` (default DEFAULT_LAMBDA) or `max_concepts` (per row the exact solution at the first
    crossing: the largest lam below which the support would exceed that many concepts; every larger
    lam has at most that many; see solver.nonneg_lasso_max_concepts and docs/method.md), not both.
    A lam below SLOW_LAMBDA warns (SlowDecompositionWarning): slow and poorly conditioned.
    `sparsity` (a checked Sparsity) may be given instead of the pair.
    Rows where the boolean mask `skip` is true (silent windows) are not decomposed: no concept
    (w = 0, the answer for a target with no correlation) and no reconstruction either (fidelity
    0: search gives them no concept score, not even the μ_A baseline; docs/search.md).
    """
    if sparsity is None:
        sparsity = Sparsity(lam, max_concepts)  # the one check of the pair
    lam, max_concepts = sparsity.lam, sparsity.max_concepts
    if max_concepts is None:
        lam = DEFAULT_LAMBDA if lam is None else lam
        _warn_if_slow(lam)
    x, z, mu = _targets(embeddings, dictionary, audio_mean)
    gram = dictionary.solver_gram()
    blocks, lams = [], []
    for start in range(0, x.shape[0], _CHUNK):
        b = dictionary.correlations(z[start:start + _CHUNK])
        if skip is not None:
            b[np.asarray(skip, bool)[start:start + _CHUNK]] = 0.0
        if max_concepts is None:
            w = nonneg_lasso(gram, b, lam)
            lam_used = np.full(b.shape[0], float(lam))
        else:
            w, lam_used = nonneg_lasso_max_concepts(gram, b, max_concepts)
        blocks.append(sp.csr_matrix(w))
        lams.append(lam_used)
    result = _result(blocks, lams, dictionary, mu, x, z)
    if skip is not None:
        result.fidelity[np.asarray(skip, bool)] = 0.0
    return result


def decompose_path(embeddings, dictionary: ConceptDictionary, audio_mean, lams) -> list[Decomposition]:
    """`decompose` at several lam values, one Decomposition per lam in the order given.

    Each row is solved from the largest lam down, warm-started, with its support's Cholesky factor
    kept (solver.nonneg_lasso_path): the whole sweep costs about one solve at the smallest lam, and
    the results equal separate `decompose` calls."""
    lams = [float(v) for v in np.atleast_1d(np.asarray(lams, dtype=np.float64))]
    if not lams or not all(np.isfinite(v) and v >= 0 for v in lams):
        raise DecompositionError(f"lambdas must be finite numbers >= 0, got {lams!r}")
    _warn_if_slow(min(lams))
    x, z, mu = _targets(embeddings, dictionary, audio_mean)
    gram = dictionary.solver_gram()
    chunk = max(1, _CHUNK // len(lams))  # bounds the (lams, rows, K) path array
    blocks = [[] for _ in lams]
    for start in range(0, x.shape[0], chunk):
        path = nonneg_lasso_path(gram, dictionary.correlations(z[start:start + chunk]), lams)
        for t in range(len(lams)):
            blocks[t].append(sp.csr_matrix(path[t]))
    return [_result(blocks[t], [np.full(x.shape[0], lam)], dictionary, mu, x, z) for t, lam in enumerate(lams)]


def decompose_max_concepts_path(embeddings, dictionary: ConceptDictionary, audio_mean,
                                counts) -> list[Decomposition]:
    """`decompose(max_concepts=N)` for several N, one Decomposition per N in the order given: one walk
    down each row's path serves them all (solver.nonneg_lasso_max_concepts_path); the results equal
    separate `decompose` calls."""
    counts = list(np.atleast_1d(np.asarray(counts, dtype=object)))
    for n_max in counts:
        Sparsity(None, n_max)  # the one check of a count
    x, z, mu = _targets(embeddings, dictionary, audio_mean)
    gram = dictionary.solver_gram()
    chunk = max(1, _CHUNK // len(counts))  # bounds the (counts, rows, K) array
    blocks = [[] for _ in counts]
    lams = [[] for _ in counts]
    for start in range(0, x.shape[0], chunk):
        weights, lam_used = nonneg_lasso_max_concepts_path(
            gram, dictionary.correlations(z[start:start + chunk]), counts)
        for t in range(len(counts)):
            blocks[t].append(sp.csr_matrix(weights[t]))
            lams[t].append(lam_used[t])
    return [_result(blocks[t], lams[t], dictionary, mu, x, z) for t in range(len(counts))]


def _targets(embeddings, dictionary: ConceptDictionary, audio_mean):
    """(x = normalize(a), z = normalize(x − μ_A), μ_A) for raw embeddings, checked."""
    a = _as_embeddings(embeddings)
    d = dictionary.dimension
    if a.shape[1] != d:
        raise DecompositionError(f"embeddings have dimension {a.shape[1]}, the dictionary has {d}")
    mu = _check_mean(audio_mean, d)
    x = normalize_rows(a)
    return x, normalize_rows(x - mu), mu


def _result(blocks, lams, dictionary: ConceptDictionary, mu, x, z) -> Decomposition:
    k = dictionary.size
    weights = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, k))
    lam_all = np.concatenate(lams) if lams else np.zeros(0)
    r, recon_norm, shift_norm, u = _recompose(weights, dictionary, mu)
    fidelity = np.einsum("ij,ij->i", r, x)
    return Decomposition(weights=weights, fidelity=fidelity,
                         concept_fidelity=_concept_fidelity(u, recon_norm, z),
                         recon_norm=recon_norm, shift_norm=shift_norm, lam=lam_all)


def _concept_fidelity(u: np.ndarray, recon_norm: np.ndarray, z: np.ndarray) -> np.ndarray:
    """cos(u, z) per row, with u = Cw; 0 where u = 0 (recon_norm is then 1 and u·z = 0)."""
    return np.einsum("ij,ij->i", u, z) / recon_norm


def concept_fidelity(weights, dictionary: ConceptDictionary, embeddings, audio_mean) -> np.ndarray:
    """cos(Cw, z) for stored weights (n, K) and the raw embeddings (n, d) they were solved for
    (z = normalize(normalize(a) − μ_A)); 0 for a row without concepts. What an index upgrade uses
    to fill in concept fidelity without re-encoding or re-solving anything."""
    a = _as_embeddings(embeddings)
    mu = _check_mean(audio_mean, dictionary.dimension)
    if a.shape[1] != dictionary.dimension:
        raise DecompositionError(f"embeddings have dimension {a.shape[1]}, "
                                 f"the dictionary has {dictionary.dimension}")
    z = normalize_rows(normalize_rows(a) - mu)
    _, recon_norm, _, u = _recompose(weights, dictionary, mu)
    if u.shape[0] != z.shape[0]:
        raise DecompositionError(f"{u.shape[0]} weight rows for {z.shape[0]} embeddings")
    return _concept_fidelity(u, recon_norm, z)


def _recompose(weights, dictionary: ConceptDictionary, mu: np.ndarray):
    w = sp.csr_matrix(weights, dtype=np.float64)
    if w.shape[1] != dictionary.size:
        raise DecompositionError(f"weights have {w.shape[1]} columns, the dictionary has {dictionary.size}")
    if w.nnz and (not np.all(np.isfinite(w.data)) or np.any(w.data < 0)):
        raise DecompositionError("weights must be finite and non-negative")
    u = np.asarray(w @ dictionary.atoms)
    recon_norm = np.linalg.norm(u, axis=1)
    recon_norm[recon_norm == 0] = 1.0  # w = 0: no concept part (see the module docstring)
    shifted = u / recon_norm[:, None] + mu
    shift_norm = np.linalg.norm(shifted, axis=1)
    shift_norm[shift_norm == 0] = 1.0
    return shifted / shift_norm[:, None], recon_norm, shift_norm, u


def recompose(weights, dictionary: ConceptDictionary, audio_mean) -> np.ndarray:
    """r = normalize(normalize(Cw) + μ_A) for each row of `weights` (n, K) -> (n, d) float64."""
    mu = _check_mean(audio_mean, dictionary.dimension)
    return _recompose(weights, dictionary, mu)[0]


def explain_terms(weights_row, concept_scores, recon_norm: float, shift_norm: float,
                  mu_dot_q: float) -> tuple[np.ndarray, float]:
    """Split ⟨r, q⟩ into per-concept contributions and one baseline term.

    weights_row: (K,) or a (1, K) sparse row; concept_scores: s_k = ⟨c_k, q⟩ (K,);
    mu_dot_q = ⟨μ_A, q⟩. Returns (contributions (K,) = w_k·s_k/(n·m), baseline = ⟨μ_A, q⟩/m);
    contributions.sum() + baseline == ⟨r, q⟩.
    """
    if sp.issparse(weights_row):
        w = np.asarray(weights_row.toarray(), dtype=np.float64).ravel()
    else:
        w = np.asarray(weights_row, dtype=np.float64).ravel()
    s = np.asarray(concept_scores, dtype=np.float64).ravel()
    if w.shape != s.shape:
        raise DecompositionError(f"weights ({w.size}) and concept scores ({s.size}) differ in length")
    n, m, mq = float(recon_norm), float(shift_norm), float(mu_dot_q)
    if not (np.all(np.isfinite(w)) and np.all(np.isfinite(s)) and np.isfinite(n) and np.isfinite(m)
            and np.isfinite(mq)):
        raise DecompositionError("explanation inputs contain NaN or infinite values")
    if n <= 0 or m <= 0:
        raise DecompositionError("recon_norm and shift_norm must be positive")
    return w * s / (n * m), mq / m
