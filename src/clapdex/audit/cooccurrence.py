"""Concept pairs that occur together in the same segment more often than chance.

For concepts a, b active in n_a and n_b of N segments and together in n_ab of them:
lift = n_ab · N / (n_a · n_b), the ratio of the observed co-occurrence to the one expected if the
two were independent. Pairs are listed when lift > 1 and n_ab >= min_count (rare pairs have
unstable lifts), highest lift first.

For one concept the counts come from SQL (the concept's segments via the (concept_id, weight)
index, their other postings via the segment_id index). Over all pairs, the segment × concept
incidence matrix X is loaded once and XᵀX gives every n_ab.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
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


def incidence(store, concept_ids: np.ndarray | None = None,
              n_concepts: int | None = None) -> sp.csr_matrix:
    """Binary (segments × K) matrix of active concepts (rows: segments with any posting)."""
    with store.session() as session:
        statement = select(PostingRow.segment_id, PostingRow.concept_id).where(PostingRow.weight > 0)
        if concept_ids is not None:
            statement = statement.where(PostingRow.concept_id.in_([int(c) for c in concept_ids]))
        rows = session.execute(statement).all()
    if n_concepts is None:
        n_concepts = max(ConceptLookup.load(store).names, default=-1) + 1
    if not rows:
        return sp.csr_matrix((0, n_concepts), dtype=np.float64)
    seg, con = (np.array(c, dtype=np.int64) for c in zip(*rows))
    _, row = np.unique(seg, return_inverse=True)
    return sp.csr_matrix((np.ones(len(seg)), (row, con)), shape=(int(row.max()) + 1, n_concepts))


def cooccurrence_counts(store, concept_ids) -> np.ndarray:
    """(m, m) matrix of segments where concepts i and j are both active (diagonal: n_i)."""
    ids = np.asarray(concept_ids, dtype=np.int64)
    x = incidence(store, ids)[:, ids]
    return np.asarray((x.T @ x).todense(), dtype=np.int64)


def all_pairs(store, min_count: int = 3, limit: int | None = 50) -> list[Pair]:
    """Every concept pair that co-occurs more than chance, over the whole index."""
    lookup = ConceptLookup.load(store)
    n_total = corpus_totals(store).segments
    x = incidence(store, n_concepts=max(lookup.names, default=-1) + 1)
    together = sp.triu(x.T @ x, k=1).tocoo()
    sizes = np.asarray(x.sum(axis=0)).ravel()
    keep = together.data >= min_count
    a, b, n = together.row[keep], together.col[keep], together.data[keep]
    lift = n * n_total / (sizes[a] * sizes[b])
    pairs = [Pair(lookup.name_of(a[i]), lookup.name_of(b[i]), int(n[i]), int(sizes[a[i]]),
                  int(sizes[b[i]]), float(lift[i])) for i in np.flatnonzero(lift > 1)]
    return _rank(pairs, limit)


def _rank(pairs: list[Pair], limit: int | None) -> list[Pair]:
    pairs = [p for p in pairs if p.lift > 1]
    pairs.sort(key=lambda p: (-p.lift, -p.count, p.concept_a, p.concept_b))
    return pairs[:limit] if limit else pairs
