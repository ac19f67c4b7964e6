"""Concept pairs that occur together in the same segment more often than chance.

For concepts a, b active in n_a and n_b of N segments and together in n_ab of them:
lift = n_ab · N / (n_a · n_b), the ratio of the observed co-occurrence to the one expected if the
two were independent. Pairs are listed when lift > 1 and n_ab >= min_count (rare pairs have
unstable lifts), highest lift first.

For one concept the counts come from SQL (the concept's segments from its range of the postings'
(concept_id, segment_id) key, their other postings via the (segment_id, concept_id, weight)
index). Over all pairs (and for the report's heatmap), XᵀX of the segment × concept incidence
matrix X gives every n_ab, counted from the memory-mapped concept matrix of the derived search
files (storage/derived.py): memory is the K × K matrix, at any number of segments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import func, select

from clapdex.audit.concepts import ConceptLookup
from clapdex.audit.stats import corpus_totals
from clapdex.storage import concept_stats
from clapdex.storage.schema import ConceptStatsRow, PostingRow


@dataclass
class Pair:
    concept_a: str
    concept_b: str
    count: int    # segments where both are active
    count_a: int  # segments where a is active
    count_b: int
    lift: float

    def to_row(self) -> dict:
        return {"concept_a": self.concept_a, "concept_b": self.concept_b, "count": self.count,
                "count_a": self.count_a, "count_b": self.count_b, "lift": self.lift}


def _segment_counts(session, concept_ids, computed: concept_stats.Contribution | None) -> dict[int, int]:
    """Segments per concept: from the stored totals, or from `computed` (stale read-only index)."""
    if computed is not None:
        counts = dict(zip(computed.concept_ids.tolist(), computed.n_segments.tolist()))
        return {int(c): counts.get(int(c), 0) for c in concept_ids}
    statement = select(ConceptStatsRow.concept_id, ConceptStatsRow.n_segments)
    if concept_ids is not None:
        statement = statement.where(ConceptStatsRow.concept_id.in_([int(c) for c in concept_ids]))
    return {int(c): int(n) for c, n in session.execute(statement)}


def partners(store, concept: str, min_count: int = 3, limit: int | None = 50) -> list[Pair]:
    """Concepts that co-occur with `concept` more than chance."""
    lookup = ConceptLookup.load(store)
    concept_id = lookup.id_of(concept)
    computed = concept_stats.ensure_fresh(store)
    n_total = corpus_totals(store).segments
    with store.session() as session:
        own = select(PostingRow.segment_id).where(PostingRow.concept_id == concept_id)
        counts = session.execute(
            select(PostingRow.concept_id, func.count().label("n"))
            .where(PostingRow.segment_id.in_(own), PostingRow.concept_id != concept_id)
            .group_by(PostingRow.concept_id)
            .having(func.count() >= min_count)).all()
        sizes = _segment_counts(session, [concept_id] + [c for c, _ in counts], computed)
    lookup.preload(c for c, _ in counts)
    n_a = sizes.get(concept_id, 0)
    pairs = [Pair(lookup.name_of(concept_id), lookup.name_of(c), int(n), n_a, sizes[int(c)],
                  int(n) * n_total / (n_a * sizes[int(c)]))
             for c, n in counts if sizes.get(int(c))]
    return _rank(pairs, limit)


def cooccurrence_counts(store, concept_ids=None) -> np.ndarray:
    """(m, m) matrix of segments where concepts i and j are both active (diagonal: n_i): XᵀX
    (int64) over the given concepts (all when None), in the order given, counted
    from the memory-mapped CSR of the derived search files (audit/cooccurrence_kernel.py): every
    segment's pairs of concepts, in cache-sized blocks of the matrix (at 1M segments 3.6× faster
    than gathering each concept's segments' rows and counting them with np.bincount, which
    missed the cache on every row). Stored postings have weights > 0, so every entry counts."""
    from clapdex.audit.cooccurrence_kernel import cooccurrence_upper
    from clapdex.storage.derived import open_state

    state = open_state(store)
    k = int(state.manifest["k"])
    ids = np.arange(k) if concept_ids is None else np.asarray(concept_ids, dtype=np.int64)
    unique = np.unique(ids)  # sorted: positions grow with the concept id, as the kernel needs
    position = np.full(k, -1, dtype=np.int64)
    position[unique] = np.arange(len(unique))
    upper = np.zeros((len(unique), len(unique)), dtype=np.int32)
    if len(unique):
        cooccurrence_upper(np.asarray(state.array("csr_indptr")), np.asarray(state.array("csr_indices")),
                           position, len(unique), upper)
    gram = upper.astype(np.int64)
    gram += np.triu(gram, 1).T
    return gram[np.ix_(position[ids], position[ids])] if concept_ids is not None else gram


def all_pairs(store, min_count: int = 3, limit: int | None = 50, counts: np.ndarray | None = None
              ) -> list[Pair]:
    """Every concept pair that co-occurs more than chance, over the whole index. counts: the
    matrix of cooccurrence_counts(store) when the caller has it already (the report)."""
    lookup = ConceptLookup.load(store)
    n_total = corpus_totals(store).segments
    gram = cooccurrence_counts(store) if counts is None else counts
    sizes = np.diag(gram).copy()
    a, b = np.nonzero(np.triu(gram >= min_count, k=1))
    n = gram[a, b]
    lift = n * n_total / (sizes[a] * sizes[b])
    chosen = np.flatnonzero(lift > 1)
    if limit is not None and len(chosen) > limit:
        # only the pairs that can make the first `limit` (ties on lift and count included): a
        # million Pair objects would cost more than the counting. A partition finds the limit-th
        # highest lift; only the pairs at or above it are sorted.
        floor = np.partition(lift[chosen], len(chosen) - limit)[len(chosen) - limit]
        chosen = chosen[lift[chosen] >= floor]
        order = chosen[np.lexsort((-n[chosen], -lift[chosen]))]
        cut = order[limit - 1]
        chosen = chosen[(lift[chosen] > lift[cut]) |
                        ((lift[chosen] == lift[cut]) & (n[chosen] >= n[cut]))]
    pairs = [Pair(lookup.name_of(a[i]), lookup.name_of(b[i]), int(n[i]), int(sizes[a[i]]),
                  int(sizes[b[i]]), float(lift[i])) for i in chosen]
    return _rank(pairs, limit)


def _rank(pairs: list[Pair], limit: int | None) -> list[Pair]:
    pairs = [p for p in pairs if p.lift > 1]
    pairs.sort(key=lambda p: (-p.lift, -p.count, p.concept_a, p.concept_b))
    return pairs[:limit] if limit else pairs
