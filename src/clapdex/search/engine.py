"""Scoring and ranking over one index: dense, concept and hybrid scores, with exact explanations.

The engine loads, once, what scoring needs into memory and keeps it for its lifetime:
- W, the segments' concept weights (csr, n × K), and per segment the two scalars of the exact
  identity (design.md, "Exact explanations"): row_scale = 1/(n·m) and base_scale = 1/m, where
  n = ‖C w‖ and m = ‖Cw/‖Cw‖ + μ_A‖ are stored with each segment;
- the concept atoms C (K × d) and μ_A;
- (lazily, for hybrid and for reporting dense scores) the unit segment embeddings E (n × d).

For a unit query q: s = C q (one K × d product), then for all segments at once
    concept = row_scale ⊙ (W s) + base_scale · ⟨μ_A, q⟩       (= ⟨r, q⟩ exactly)
    dense   = E q                                               (= cos(a, q))
    hybrid  = α · dense + (1 − α) · concept
Dense mode ranks through the FAISS index (storage/dense.py). Hybrid is exact over all segments
(not a re-ranking of one list's top hits), but computes dense scores only for the segments whose
bound (rank_hybrid) says they can still make the top results.
"""

from __future__ import annotations

import fnmatch
from contextlib import contextmanager

import numpy as np
import scipy.sparse as sp
from sqlalchemy import select

from clapdex.defaults import DEFAULT_ALPHA, MODES  # noqa: F401  (re-exported)
from clapdex.errors import IndexMismatchError
from clapdex.search.query import ConceptTermSpec, unit
from clapdex.search.results import (LOW_FIDELITY, ConceptTerm, ConceptWeight, Explanation,
                                    SearchResult, SharedConcept)
from clapdex.storage.schema import FileRow, SegmentRow

# Float32 embeddings and the stored fidelity agree to ~1e-7; the dense-score bound keeps a margin.
_DENSE_BOUND_SLACK = 1e-5
# Hybrid evaluates dense scores by bound for at most 1/_PRUNE_FRACTION of the segments before it
# computes all of them in one matrix-vector product.
_PRUNE_FRACTION = 16


class _ChangedWhileReading(Exception):
    """Two reads of the database saw different segments (a writer committed in between)."""


class SearchEngine:
    """In-memory scoring state for one open IndexStore. Reopen the index to see later changes."""

    def __init__(self, store, dense_index=None):
        self.store = store
        self._dense_index = dense_index   # a storage.dense index, opened lazily when None
        self._embeddings: np.ndarray | None = None
        self._weights_csc: sp.csc_matrix | None = None
        for attempt in range(3):  # an indexer writing meanwhile can make two reads disagree
            try:
                self._load()
                break
            except _ChangedWhileReading:
                if attempt == 2:
                    raise IndexMismatchError(
                        f"index {store.root} kept changing while it was being read; retry") from None

    # ---- loading ---------------------------------------------------------------------------

    def _load(self) -> None:
        store = self.store
        settings = store.settings
        with store.session() as session:
            files = session.execute(select(FileRow.id, FileRow.path)
                                    .where(FileRow.status == "indexed").order_by(FileRow.id)).all()
            segments = session.execute(
                select(SegmentRow.id, SegmentRow.file_id, SegmentRow.start, SegmentRow.end,
                       SegmentRow.fidelity, SegmentRow.recon_norm, SegmentRow.shift_norm,
                       SegmentRow.concept_fidelity)
                .order_by(SegmentRow.id)).all()
        self.file_ids = np.array([f[0] for f in files], dtype=np.int64)
        self.file_paths = [f[1] for f in files]
        self.file_position = {path: i for i, path in enumerate(self.file_paths)}
        columns = list(zip(*segments)) if segments else [()] * 8
        self.segment_ids = np.asarray(columns[0], dtype=np.int64)
        self.file_index = np.searchsorted(self.file_ids, np.asarray(columns[1], dtype=np.int64))
        self.starts = np.asarray(columns[2], dtype=np.float64)
        self.ends = np.asarray(columns[3], dtype=np.float64)
        self.fidelity = np.asarray(columns[4], dtype=np.float64)
        recon_norm = np.asarray(columns[5], dtype=np.float64)
        shift_norm = np.asarray(columns[6], dtype=np.float64)
        self.concept_fidelity = np.asarray(columns[7], dtype=np.float64)

        ids, weights = store.concept_matrix()
        if not np.array_equal(ids, self.segment_ids):
            raise _ChangedWhileReading()
        self.weights = sp.csr_matrix(weights, dtype=np.float64)
        self.weights.sort_indices()
        self.dictionary = store.dictionary()
        self.concept_names = list(self.dictionary.names)
        self.atoms = np.asarray(self.dictionary.atoms, dtype=np.float64)
        text = self.dictionary.text_embeddings.astype(np.float64)
        self.text_units = text / np.maximum(np.linalg.norm(text, axis=1, keepdims=True), 1e-30)

        self.audio_mean = None if settings.audio_mean is None else \
            np.asarray(settings.audio_mean, dtype=np.float64)
        if self.n_segments and self.audio_mean is None:
            raise IndexMismatchError(f"index {store.root} has segments but no audio mean; "
                                     f"rebuild it with: clapdex index --rebuild")
        # Exact-identity scalars. decompose stores n = 1 for a segment without concepts (r is then
        # normalize(μ_A) and its concept sum is empty); guard against zeros all the same.
        n = np.where(recon_norm > 0, recon_norm, 1.0)
        m = np.where(shift_norm > 0, shift_norm, 1.0)
        self.row_scale = 1.0 / (n * m)
        self.base_scale = 1.0 / m

    @property
    def n_segments(self) -> int:
        return len(self.segment_ids)

    @property
    def embeddings(self) -> np.ndarray:
        """Unit segment embeddings (n × d, float32), loaded from the database on first use."""
        if self._embeddings is None:
            ids, matrix = self.store.segment_embeddings()
            if not np.array_equal(ids, self.segment_ids):
                raise IndexMismatchError(f"index {self.store.root} changed while it was being read; retry")
            norms = np.linalg.norm(matrix, axis=1, keepdims=True)
            matrix /= np.where(norms > 0, norms, 1.0)
            self._embeddings = matrix
        return self._embeddings

    def dense_index(self):
        """The FAISS index (storage/dense.py), brought in line with the database on first use."""
        if self._dense_index is None:
            from clapdex.storage.dense import DenseIndex
            try:
                self._dense_index = DenseIndex.open(self.store)
            except OSError:  # a read-only index folder: sync in memory only
                self._dense_index = DenseIndex.open(self.store, save=False)
        return self._dense_index

    # ---- scores ----------------------------------------------------------------------------

    def concept_projection(self, query: np.ndarray) -> tuple[np.ndarray, float]:
        """s = C q (K,) and ⟨μ_A, q⟩."""
        return self.atoms @ query, float(self.audio_mean @ query)

    def concept_scores(self, projection: tuple[np.ndarray, float],
                       rows: np.ndarray | None = None) -> np.ndarray:
        """Exact ⟨r_i, q⟩ for all segments (or the given rows), from concept_projection(q)."""
        s, mean_dot = projection
        if rows is None:
            return self.row_scale * (self.weights @ s) + self.base_scale * mean_dot
        return self.row_scale[rows] * (self.weights[rows] @ s) + self.base_scale[rows] * mean_dot

    def dense_scores(self, query: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """cos(a_i, q) for all segments (or the given rows)."""
        q32 = query.astype(np.float32)
        matrix = self.embeddings if rows is None else self.embeddings[rows]
        return (matrix @ q32).astype(np.float64)

    def concept_weight_scores(self, terms: list[ConceptTermSpec]) -> tuple[np.ndarray, np.ndarray]:
        """Concept-only queries: Σ β_j w_ij for every segment, and which segments hold a positive term."""
        if self._weights_csc is None:  # column access: the inverted index, built once
            self._weights_csc = self.weights.tocsc()
        ids = [t.concept_id for t in terms]
        betas = np.array([t.weight for t in terms])
        columns = self._weights_csc[:, ids]
        scores = np.asarray(columns @ betas).ravel()
        positive = [j for j, t in enumerate(terms) if t.weight > 0]
        holds = np.asarray((columns[:, positive] > 0).sum(axis=1)).ravel() > 0
        return scores, holds

    # ---- ranking ---------------------------------------------------------------------------

    def allowed_rows(self, path_glob: str | None) -> np.ndarray | None:
        """Boolean mask of segments whose file path matches the glob (None: all allowed).

        A pattern that starts with neither '/' nor '*' is matched against the end of the path
        ('dogs/*.wav' matches '/data/dogs/a.wav'); '*' also matches '/'.
        """
        if not path_glob:
            return None
        pattern = path_glob if path_glob.startswith(("/", "*")) else "*/" + path_glob
        keep_file = np.array([fnmatch.fnmatchcase(p, pattern) or fnmatch.fnmatchcase(p, path_glob)
                              for p in self.file_paths], dtype=bool)
        return keep_file[self.file_index] if self.n_segments else np.zeros(0, dtype=bool)

    def rank_array(self, scores: np.ndarray, need: int, per_file: bool,
                   allowed: np.ndarray | None, min_score: float | None) -> np.ndarray:
        """Rows of the top `need` files (best segment each) or segments, best first.

        Sorts only a growing top slice of the scores, not all of them.
        """
        scores = np.where(allowed, scores, -np.inf) if allowed is not None else scores
        n = len(scores)
        size = min(n, max(64, 8 * need))
        while True:
            if size < n:
                top = np.argpartition(-scores, size - 1)[:size]
            else:
                top = np.arange(n)
            top = top[np.lexsort((self.segment_ids[top], -scores[top]))]
            picked, exhausted = self._walk(top, scores[top], need, per_file, min_score)
            if len(picked) >= need or exhausted or size >= n:
                return picked
            size = min(n, size * 4)

    def rank_hybrid(self, query: np.ndarray, concept: np.ndarray, alpha: float, need: int,
                    per_file: bool, allowed: np.ndarray | None, min_score: float | None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top rows by α·dense + (1 − α)·concept, computing dense scores only where needed.

        Each segment's dense score is bounded by its concept score c and its fidelity f: writing
        â = f·r + e with e ⟂ r, ‖e‖ = sqrt(1 − f²), and q's part orthogonal to r having length
        sqrt(1 − c²), cos(a, q) ≤ f·c + sqrt(1 − f²)·sqrt(1 − c²). Segments are evaluated in order
        of that upper bound on the fused score until no unevaluated segment can enter the top
        `need`. When that would touch more than 1/16 of the index (the weakest result so far is
        below the bound of the segment at that depth), all dense scores are computed at once
        instead (one matrix-vector product). Either way the result is exact.
        Returns (rows, dense scores of those rows).
        """
        n = self.n_segments
        f = np.clip(self.fidelity, -1.0, 1.0)
        c = np.clip(concept, -1.0, 1.0)
        bound = f * c + np.sqrt(1.0 - f * f) * np.sqrt(1.0 - c * c) + _DENSE_BOUND_SLACK
        upper = alpha * bound + (1.0 - alpha) * concept
        if allowed is not None:
            upper = np.where(allowed, upper, -np.inf)
        floor = -np.inf if min_score is None else min_score
        budget = n // _PRUNE_FRACTION
        size = max(256, 16 * need)
        if size < budget:
            # The best `budget` segments by bound, sorted once; evaluate growing prefixes of them.
            part = np.argpartition(-upper, budget)
            candidates = part[:budget][np.argsort(-upper[part[:budget]], kind="stable")]
            beyond = upper[part[budget]]  # no segment outside the candidates has a higher bound
            dense = np.empty(0)
            while True:
                rows = candidates[:size]
                dense = np.concatenate([dense, self.dense_scores(query, rows[len(dense):])])
                threshold = upper[candidates[size]] if size < budget else beyond
                fused = alpha * dense + (1.0 - alpha) * concept[rows]
                if allowed is not None:  # filtered-out rows stay candidates but never rank
                    fused = np.where(allowed[rows], fused, -np.inf)
                order = np.lexsort((self.segment_ids[rows], -fused))
                picked, _ = self._walk(rows[order], fused[order], need, per_file, min_score)
                where = {r: i for i, r in enumerate(rows.tolist())}
                last = fused[where[int(picked[-1])]] if len(picked) else np.inf
                if (len(picked) == need and last >= threshold) or threshold < floor \
                        or threshold == -np.inf:
                    return picked, dense[[where[r] for r in picked.tolist()]]
                if size == budget or last < beyond:
                    break  # more evaluation cannot pay off: the bound is too loose for this query
                size = min(budget, size * 4)
        dense = self.dense_scores(query)
        fused = alpha * dense + (1.0 - alpha) * concept
        picked = self.rank_array(fused, need, per_file, allowed, min_score)
        return picked, dense[picked]

    def _walk(self, rows: np.ndarray, scores: np.ndarray, need: int, per_file: bool,
              min_score: float | None) -> tuple[np.ndarray, bool]:
        """Take rows in order, one per file unless per_file is False. exhausted: a score fell below
        the floor, so later rows cannot qualify either."""
        floor = -np.inf if min_score is None else min_score
        picked: list[int] = []
        seen: set[int] = set()
        for row, score in zip(rows.tolist(), scores.tolist()):
            if not score >= floor or score == -np.inf:
                return np.array(picked, dtype=np.int64), True
            if per_file:
                f = int(self.file_index[row])
                if f in seen:
                    continue
                seen.add(f)
            picked.append(row)
            if len(picked) >= need:
                break
        return np.array(picked, dtype=np.int64), False

    def rank_dense(self, query: np.ndarray, need: int, per_file: bool,
                   allowed: np.ndarray | None, min_score: float | None) -> tuple[np.ndarray, np.ndarray]:
        """Top rows by dense score through the FAISS index, with FAISS's scores, asking for more hits until enough
        distinct files (that pass the filters) are found."""
        index = self.dense_index()
        n = self.n_segments
        size = min(n, max(64, 8 * need))
        while True:
            with _faiss_single_thread():
                scores, ids = index.search(query.astype(np.float32)[None, :], size)
            ids, scores = ids[0], scores[0].astype(np.float64)
            keep = ids >= 0
            ids, scores = ids[keep], scores[keep]
            rows = np.searchsorted(self.segment_ids, ids)
            rows = np.minimum(rows, max(n - 1, 0))
            known = self.segment_ids[rows] == ids if n else np.zeros(0, dtype=bool)
            rows, scores = rows[known], scores[known]
            if allowed is not None:
                ok = allowed[rows]
                rows, scores = rows[ok], scores[ok]
            order = np.lexsort((self.segment_ids[rows], -scores))
            picked, exhausted = self._walk(rows[order], scores[order], need, per_file, min_score)
            if len(picked) >= need or exhausted or size >= n:
                score_of = dict(zip(rows.tolist(), scores.tolist()))
                return picked, np.array([score_of[r] for r in picked.tolist()], dtype=np.float64)
            size = min(n, size * 4)

    # ---- explanations ----------------------------------------------------------------------

    def segment_concepts(self, row: int) -> list[ConceptWeight]:
        cols, vals = self._row(row)
        order = np.argsort(-vals, kind="stable")
        return [ConceptWeight(self.concept_names[cols[j]], float(vals[j])) for j in order]

    def _row(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = self.weights.indptr[row], self.weights.indptr[row + 1]
        return self.weights.indices[lo:hi], self.weights.data[lo:hi]

    def explain_vector(self, row: int, s: np.ndarray, mean_dot: float) -> tuple[list[ConceptTerm], float]:
        """Per-concept contributions w_k s_k/(n·m) and the baseline ⟨μ_A, q⟩/m of one segment."""
        cols, vals = self._row(row)
        contributions = vals * s[cols] * self.row_scale[row]
        order = np.argsort(-np.abs(contributions), kind="stable")
        terms = [ConceptTerm(self.concept_names[cols[j]], float(vals[j]), float(contributions[j]))
                 for j in order]
        return terms, float(self.base_scale[row] * mean_dot)

    def explain_terms(self, row: int, terms: list[ConceptTermSpec]) -> list[ConceptTerm]:
        """Concept-only queries: contribution β_j w_j of each named concept the segment holds."""
        cols, vals = self._row(row)
        weight_of = dict(zip(cols.tolist(), vals.tolist()))
        out = [ConceptTerm(t.name, weight_of[t.concept_id], t.weight * weight_of[t.concept_id])
               for t in terms if t.concept_id in weight_of]
        return sorted(out, key=lambda term: -abs(term.contribution))

    def shared_concepts(self, row: int, query_weights: dict[int, float]) -> list[SharedConcept]:
        cols, vals = self._row(row)
        shared = [SharedConcept(self.concept_names[c], query_weights[c], float(v))
                  for c, v in zip(cols.tolist(), vals.tolist()) if c in query_weights]
        return sorted(shared, key=lambda x: -min(x.query_weight, x.result_weight))

    def result(self, rank: int, row: int, fused: float, dense: float, concept: float,
               contributions: list[ConceptTerm], baseline: float,
               shared: list[SharedConcept] | None) -> SearchResult:
        concept_fidelity = float(self.concept_fidelity[row])
        explanation = Explanation(contributions=contributions, baseline=baseline,
                                  concepts=self.segment_concepts(row),
                                  fidelity=float(self.fidelity[row]),
                                  low_fidelity=concept_fidelity < LOW_FIDELITY, shared=shared,
                                  concept_fidelity=concept_fidelity)
        return SearchResult(rank=rank, path=self.file_paths[int(self.file_index[row])],
                            file_id=int(self.file_ids[int(self.file_index[row])]),
                            segment_id=int(self.segment_ids[row]), start=float(self.starts[row]),
                            end=float(self.ends[row]), score=float(fused), dense=float(dense),
                            concept=float(concept), explanation=explanation)


@contextmanager
def _faiss_single_thread():
    """One query is a memory-bound scan: FAISS's OpenMP threads only add synchronisation, which
    on a busy 2-core machine made a 10k-segment search 46 ms instead of 2.6 ms (measured)."""
    import faiss

    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


def concept_text_direction(engine: SearchEngine, terms: list[ConceptTermSpec]) -> np.ndarray:
    """normalize(Σ β_j t̂_j): the concepts' own (uncentred) text directions, what a text query naming
    them would look like. Used to report a dense score for concept-only queries."""
    vector = sum(t.weight * engine.text_units[t.concept_id] for t in terms)
    return unit(vector, "concept query")
