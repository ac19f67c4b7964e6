"""Scoring and ranking over one index: dense, concept and hybrid scores, with exact explanations.

The engine reads one version of the derived search files (storage/derived.py), memory-mapped:
nothing is loaded when it is made, and a query reads the pages it touches.
- W, the segments' concept weights (CSR by segment, CSC by concept), and per segment the two
  scalars of the exact identity (design.md, "Exact explanations"): row_scale = 1/(n·m) and
  base_scale = 1/m, where n = ‖C w‖ and m = ‖Cw/‖Cw‖ + μ_A‖ are stored with each segment;
- the concept atoms C (K × d) and μ_A;
- the unit segment embeddings E (n × d, float32).

For a unit query q: s = C q (one K × d product), then
    concept = row_scale ⊙ (W s) + base_scale · ⟨μ_A, q⟩       (= ⟨r, q⟩ exactly)
    dense   = E q                                               (= cos(a, q))
    hybrid  = α · dense + (1 − α) · concept
Dense mode ranks through the FAISS index (storage/dense.py) and re-scores its hits exactly.
Concept-only queries read only their concepts' columns. Hybrid is exact over all segments up to
EXACT_HYBRID_MAX segments (rank_hybrid); beyond, it re-scores a bounded candidate set exactly
(rank_hybrid_candidates: the ANN's and the concept postings' best), see docs/search.md for the
recall it keeps.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from functools import cached_property
from typing import Sequence

import numpy as np
import scipy.sparse as sp

from clapdex.defaults import DEFAULT_ALPHA, MODES  # noqa: F401  (re-exported)
from clapdex.errors import IndexMismatchError, Remedy
from clapdex.search.query import ConceptNames, ConceptTermSpec, path_matcher, unit
from clapdex.search.results import (LOW_FIDELITY, ConceptTerm, ConceptWeight, Explanation,
                                    SearchResult, SharedConcept)

# Float32 embeddings and the stored fidelity agree to ~1e-7; the dense-score bound keeps a margin.
_DENSE_BOUND_SLACK = 1e-5
# Hybrid evaluates dense scores by bound for at most 1/_PRUNE_FRACTION of the segments before it
# computes all of them in one matrix-vector product.
_PRUNE_FRACTION = 16
# Above this many segments hybrid re-scores candidates instead of scoring every segment: a full
# pass over W and E costs ~10 ms per 20k segments on a busy 2-core machine (bench_scale.py).
EXACT_HYBRID_MAX = 20_000
# Candidates per source (ANN hits, concept postings): 20 per result asked for, at least 200. At 1M
# synthetic segments the exact top 10 all lay within the first 200 of the two sources together
# (docs/search.md); each candidate costs one embedding read.
HYBRID_CANDIDATES = 200
CANDIDATES_PER_RESULT = 20
HYBRID_CONCEPTS = 16       # the query's strongest concepts whose postings give candidates
# Hybrid's ANN searches half the IVF lists dense mode does (storage/dense.py IVF_NPROBE): the
# postings find what the narrower probe misses (the same recall at 1M, docs/search.md).
HYBRID_NPROBE = 16
_MATVEC_ROWS = 200_000     # rows of W per sparse product (int32 offsets, no copy of the map)


class SearchEngine:
    """Scoring state over one version of the derived files; immutable, so threads may share it.
    Searcher makes a new one when the database's generation moves on."""

    def __init__(self, store, state):
        self.store = store
        self.state = state
        self._dense_index = None
        self._dense_lock = threading.Lock()
        self._files = None
        self._roots = store.roots  # stored paths -> this process's paths (storage/roots.py)
        a = state.array
        self.segment_ids = a("segment_ids")
        self.starts, self.ends = a("starts"), a("ends")
        self.fidelity = a("fidelity")
        self.concept_fidelity = a("concept_fidelity")
        self.row_scale, self.base_scale = a("row_scale"), a("base_scale")
        self.file_index = a("file_index")
        self.embeddings = a("embeddings")      # unit rows, float32
        self.atoms = a("atoms")
        self.text_units = a("text_units")
        self._indptr, self._indices, self._data = a("csr_indptr"), a("csr_indices"), a("csr_data")
        self._csc = (a("csc_indptr"), a("csc_indices"), a("csc_data"))
        self.concept_names = state.json("concepts")["names"]
        mean = np.asarray(a("audio_mean"))
        self.audio_mean = mean if len(mean) else None
        if self.n_segments and self.audio_mean is None:
            raise IndexMismatchError(f"index {store.root} has segments but no audio mean",
                                     remedy=Remedy("rebuild", str(store.root)))

    @cached_property
    def concept_lookup(self) -> ConceptNames:
        """The concept names' lookups for resolving query terms, built on first use."""
        return ConceptNames(self.concept_names)

    @property
    def generation(self):
        return self.state.generation

    @property
    def n_segments(self) -> int:
        return len(self.segment_ids)

    def _file_table(self):
        if self._files is None:
            table = self.state.json("files")
            paths = [self._roots.from_db(stored) for stored in table["paths"]]
            self._files = (np.asarray(table["ids"], dtype=np.int64), paths,
                           {path: i for i, path in enumerate(paths)})
        return self._files

    @property
    def file_ids(self) -> np.ndarray:
        return self._file_table()[0]

    @property
    def file_paths(self) -> list[str]:
        return self._file_table()[1]

    @property
    def file_position(self) -> dict[str, int]:
        return self._file_table()[2]

    @property
    def weights(self) -> sp.csr_matrix:
        """The whole concept matrix (n × K) in memory: for tests and small indexes only."""
        return sp.csr_matrix((np.asarray(self._data), np.asarray(self._indices, dtype=np.int64),
                              np.asarray(self._indptr)), shape=(self.n_segments, len(self.concept_names)))

    @property
    def dictionary(self):
        from clapdex.concepts.dictionary import ConceptDictionary

        return ConceptDictionary(names=tuple(self.concept_names),
                                 text_embeddings=np.asarray(self.state.array("text_embeddings")),
                                 atoms=np.asarray(self.atoms))

    def dense_index(self):
        """The FAISS index (storage/dense.py) for this version of the state, opened on first use."""
        with self._dense_lock:
            if self._dense_index is None:
                from clapdex.storage.dense import for_search
                self._dense_index = for_search(self.store, self.state)
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
            return self.row_scale * self._weights_times(s) + self.base_scale * mean_dot
        rows = np.asarray(rows, dtype=np.int64)
        return self.row_scale[rows] * self._rows_times(rows, s) + self.base_scale[rows] * mean_dot

    def _weights_times(self, s: np.ndarray) -> np.ndarray:
        """W s over every row, a block of rows at a time (scipy over views of the mapped files)."""
        n = self.n_segments
        out = np.empty(n)
        for lo in range(0, n, _MATVEC_ROWS):
            hi = min(n, lo + _MATVEC_ROWS)
            out[lo:hi] = self._block(lo, hi) @ s
        return out

    def _block(self, lo: int, hi: int) -> sp.csr_matrix:
        """Rows lo..hi of W over the mapped files, not copied (state.array keeps np.memmap
        objects: scipy copies a slice of a plain array much smaller than its base)."""
        a, b = int(self._indptr[lo]), int(self._indptr[hi])
        indptr = (np.asarray(self._indptr[lo:hi + 1]) - a).astype(np.int32)
        return sp.csr_matrix((self._data[a:b], self._indices[a:b], indptr),
                             shape=(hi - lo, len(self.concept_names)), copy=False)

    def _rows_times(self, rows: np.ndarray, s: np.ndarray) -> np.ndarray:
        """(W s)[rows], reading only those rows."""
        if len(rows) == 0:
            return np.zeros(0)
        lo = np.asarray(self._indptr[rows])
        counts = np.asarray(self._indptr[rows + 1]) - lo
        total = int(counts.sum())
        if total == 0:
            return np.zeros(len(rows))
        starts = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        positions = starts + np.arange(total)
        products = self._data[positions] * s[self._indices[positions]]
        sums = np.add.reduceat(products, np.concatenate([[0], np.cumsum(counts)[:-1]]))
        return np.where(counts > 0, sums, 0.0)

    def dense_scores(self, query: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """cos(a_i, q) for all segments (or the given rows)."""
        q32 = query.astype(np.float32)
        if rows is None:
            n = self.n_segments
            out = np.empty(n)
            for lo in range(0, n, _MATVEC_ROWS):
                out[lo:lo + _MATVEC_ROWS] = self.embeddings[lo:lo + _MATVEC_ROWS] @ q32
            return out
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows)  # ascending reads of the file
        out = np.empty(len(rows))
        out[order] = self.embedding_rows(rows[order]) @ q32
        return out

    def embedding_rows(self, rows: np.ndarray) -> np.ndarray:
        """The unit embeddings of some rows, read without mapping their pages into this process
        (DerivedState.rows): a long-lived search process would otherwise hold every row it ever
        re-scored."""
        return self.state.rows("embeddings", rows)

    def concept_columns(self, concept_ids: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(rows, weights) of each concept: the inverted index, read column by column."""
        indptr, indices, data = self._csc
        out = []
        for c in concept_ids:
            lo, hi = int(indptr[c]), int(indptr[c + 1])
            out.append((np.asarray(indices[lo:hi], dtype=np.int64), np.asarray(data[lo:hi])))
        return out

    def concept_weight_scores(self, terms: list[ConceptTermSpec]) -> tuple[np.ndarray, np.ndarray]:
        """Concept-only queries: the segments that hold a positive term (rows, ascending) and
        Σ β_j w_ij for each of them. Reads the named concepts' columns only."""
        columns = self.concept_columns([t.concept_id for t in terms])
        positive = [rows for (rows, _), t in zip(columns, terms) if t.weight > 0]
        holders = np.unique(np.concatenate(positive)) if positive else np.zeros(0, np.int64)
        scores = np.zeros(len(holders))
        for (rows, weights), t in zip(columns, terms):
            where = np.searchsorted(holders, rows)
            where = np.minimum(where, max(len(holders) - 1, 0))
            hit = holders[where] == rows if len(holders) else np.zeros(len(rows), bool)
            np.add.at(scores, where[hit], t.weight * weights[hit])
        return holders, scores

    # ---- ranking ---------------------------------------------------------------------------

    def allowed_rows(self, path_globs: Sequence[str] = (), exclude_file: int | None = None
                     ) -> np.ndarray | None:
        """Boolean mask of segments whose file path matches one of the globs (query.path_matcher)
        and whose file is not `exclude_file` (a file position). None: all allowed."""
        if not path_globs and exclude_file is None:
            return None
        if path_globs:
            matches = path_matcher(path_globs)
            keep_file = np.array([matches(p) for p in self.file_paths], dtype=bool)
        else:
            keep_file = np.ones(len(self.file_paths), dtype=bool)
        if exclude_file is not None:
            keep_file[exclude_file] = False
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

    def rank_rows(self, rows: np.ndarray, scores: np.ndarray, need: int, per_file: bool,
                  allowed: np.ndarray | None, min_score: float | None) -> np.ndarray:
        """rank_array over some rows only (`scores` are theirs): the top `need`, best first."""
        if allowed is not None:
            keep = allowed[rows]
            rows, scores = rows[keep], scores[keep]
        order = np.lexsort((self.segment_ids[rows], -scores))
        picked, _ = self._walk(rows[order], scores[order], need, per_file, min_score)
        return picked

    def rank_hybrid_candidates(self, query: np.ndarray, projection: tuple[np.ndarray, float],
                               alpha: float, need: int, per_file: bool,
                               allowed: np.ndarray | None, min_score: float | None,
                               budget: int | None = None
                               ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Top rows by the fused score among a bounded candidate set, scored exactly: the ANN's
        `budget` best dense hits, and the `budget` best segments by the part of the concept score
        that the query's HYBRID_CONCEPTS strongest concepts give (read from their postings).
        Returns (rows, dense, concept) of the picked rows, or None when the candidates hold fewer
        than `need` results (the caller then scores every segment). Not exact in general: a segment
        outside both lists can be missed (docs/search.md gives the recall measured)."""
        budget = budget or candidate_budget(need)
        dense_rows = self._ann_rows(query, budget, HYBRID_NPROBE)
        held = self._posting_candidates(projection, budget)
        rows = np.union1d(dense_rows, held)
        if allowed is not None:
            rows = rows[allowed[rows]]
        dense = self.dense_scores(query, rows)
        concept = self.concept_scores(projection, rows)
        fused = alpha * dense + (1.0 - alpha) * concept
        order = np.lexsort((self.segment_ids[rows], -fused))
        picked, exhausted = self._walk(rows[order], fused[order], need, per_file, min_score)
        if len(picked) < need and not exhausted:
            return None
        where = np.searchsorted(rows, picked)
        return picked, dense[where], concept[where]

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
                   allowed: np.ndarray | None, min_score: float | None,
                   projection: tuple[np.ndarray, float] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
        """Top rows by dense score through the FAISS index, re-scored exactly, asking for more hits
        until enough distinct files (that pass the filters) are found. With an approximate index
        (IVF), the concept postings' best segments (given the query's `projection`) join the
        candidates: an IVF list missed by the probe often holds segments that share its concepts."""
        index = self.dense_index()
        n = self.n_segments
        extra = np.zeros(0, np.int64)
        if projection is not None and index.kind() != "Flat":
            # twice hybrid's: at 1M, 200 kept recall@10 0.998 of dense mode's, 400 1.000
            extra = self._posting_candidates(projection, 2 * candidate_budget(need))
        size = min(n, max(64, 8 * need))
        while True:
            rows = np.union1d(self._ann_rows(query, size), extra)
            if allowed is not None:
                rows = rows[allowed[rows]]
            # FAISS's scores are approximate for IVF types (and quantised for SQ8): re-score the
            # hits exactly from the unit embeddings
            scores = self.dense_scores(query, rows)
            order = np.lexsort((self.segment_ids[rows], -scores))
            picked, exhausted = self._walk(rows[order], scores[order], need, per_file, min_score)
            if len(picked) >= need or exhausted or size >= n:
                return picked, scores[np.searchsorted(rows, picked)]
            size = min(n, size * 4)

    def _ann_rows(self, query: np.ndarray, k: int, nprobe: int | None = None) -> np.ndarray:
        """Rows of the FAISS index's k best hits (ascending); nprobe: IVF lists searched (None:
        the index's own)."""
        with _faiss_single_thread():
            _scores, ids = self.dense_index().search(query.astype(np.float32)[None, :], k,
                                                     nprobe)
        ids = ids[0][ids[0] >= 0]
        n = self.n_segments
        rows = np.minimum(np.searchsorted(self.segment_ids, ids), max(n - 1, 0))
        return np.unique(rows[self.segment_ids[rows] == ids]) if n else np.zeros(0, np.int64)

    def _posting_candidates(self, projection: tuple[np.ndarray, float], budget: int) -> np.ndarray:
        """The `budget` best segments by the part of the concept score that the query's
        HYBRID_CONCEPTS strongest concepts give, read from their postings (columns) only."""
        s, mean_dot = projection
        strongest = np.argsort(-s)[:HYBRID_CONCEPTS]
        strongest = strongest[s[strongest] > 0]
        columns = self.concept_columns(strongest.tolist())
        col_rows = np.concatenate([r for r, _ in columns] + [np.zeros(0, np.int64)])
        if not len(col_rows):
            return col_rows
        col_vals = np.concatenate([w * s[c] for (_, w), c in zip(columns, strongest)])
        # Each column's rows ascend, so a stable sort (timsort: it merges the runs) costs about
        # half of np.unique's, and nothing here is proportional to the whole index.
        order = np.argsort(col_rows, kind="stable")
        col_rows = col_rows[order]
        first = np.flatnonzero(np.diff(col_rows, prepend=-1))
        held = col_rows[first]
        partial = np.add.reduceat(col_vals[order], first)
        partial = self.row_scale[held] * partial + self.base_scale[held] * mean_dot
        if len(held) > budget:
            held = np.sort(held[np.argpartition(-partial, budget - 1)[:budget]])
        return held

    # ---- explanations ----------------------------------------------------------------------

    def segment_concepts(self, row: int) -> list[ConceptWeight]:
        cols, vals = self._row(row)
        order = np.argsort(-vals, kind="stable")
        return [ConceptWeight(self.concept_names[cols[j]], float(vals[j])) for j in order]

    def _row(self, row: int) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = int(self._indptr[row]), int(self._indptr[row + 1])
        return np.asarray(self._indices[lo:hi], dtype=np.int64), np.asarray(self._data[lo:hi])

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


def candidate_budget(need: int) -> int:
    """Candidates taken from each source for a page of `need` results."""
    return max(HYBRID_CANDIDATES, CANDIDATES_PER_RESULT * int(need))


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
