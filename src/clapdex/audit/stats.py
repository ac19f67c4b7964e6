"""Concept prevalence (`clapdex concepts`): how much of the collection each concept covers.

Reads the per-concept totals that IndexStore keeps up to date on every write
(storage/concept_stats.py), so listing the top concepts reads K small rows, not every posting.
Definitions (docs/audit.md): a concept is active in a segment that has a posting for it;
`time_share` = seconds covered by its active segments (overlaps counted once, per file) / indexed
seconds; `mean_weight` is over its active segments; `max_weight` comes from the (concept_id,
weight) index. On a read-only index whose stored totals are stale (it was reindexed, then made
read-only) the totals are computed in memory instead (concept_stats.ensure_fresh).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from sqlalchemy import Select, desc, func, select

from clapdex.errors import QueryError
from clapdex.storage import concept_stats
from clapdex.storage.schema import ConceptRow, ConceptStatsRow, CorpusStatsRow, PostingRow

SORT_KEYS = ("files", "segments", "time", "weight")


@dataclass
class ConceptPrevalence:
    concept: str
    concept_id: int
    files: int
    segments: int
    active_seconds: float
    time_share: float
    mean_weight: float
    max_weight: float

    def to_row(self) -> dict:
        return {"concept": self.concept, "concept_id": self.concept_id, "files": self.files,
                "segments": self.segments, "active_seconds": self.active_seconds,
                "time_share": self.time_share, "mean_weight": self.mean_weight,
                "max_weight": self.max_weight}


@dataclass
class CorpusTotals:
    files: int
    segments: int
    indexed_seconds: float


def corpus_totals(store) -> CorpusTotals:
    return _corpus_totals(store, concept_stats.ensure_fresh(store))


def _corpus_totals(store, computed: concept_stats.Contribution | None) -> CorpusTotals:
    """From the stored totals, or from `computed` (what ensure_fresh returned, if anything)."""
    if computed is not None:
        return CorpusTotals(computed.corpus_files, computed.corpus_segments, computed.corpus_seconds)
    with store.session() as session:
        row = session.execute(select(CorpusStatsRow.n_files, CorpusStatsRow.n_segments,
                                     CorpusStatsRow.indexed_seconds)
                              .where(CorpusStatsRow.id == 1)).one()
    return CorpusTotals(int(row[0]), int(row[1]), float(row[2]))


def prevalence_statement(sort: str = "files", top: int | None = None) -> Select:
    """The SQL behind `clapdex concepts` (also printed with its plan by the benchmark)."""
    if sort not in SORT_KEYS:
        raise QueryError(f"unknown sort {sort!r}; use one of: {', '.join(SORT_KEYS)}")
    mean = (ConceptStatsRow.weight_sum / ConceptStatsRow.n_segments).label("mean_weight")
    # The kept largest weight; where a removal left it unknown, looked up in the concept's range
    # of the postings index (COALESCE evaluates the lookup only for those).
    largest = func.coalesce(ConceptStatsRow.max_weight,
                            select(func.max(PostingRow.weight))
                            .where(PostingRow.concept_id == ConceptStatsRow.concept_id)
                            .scalar_subquery()).label("max_weight")
    keys = {"files": [ConceptStatsRow.n_files, ConceptStatsRow.n_segments],
            "segments": [ConceptStatsRow.n_segments, ConceptStatsRow.n_files],
            "time": [ConceptStatsRow.active_seconds, ConceptStatsRow.n_segments],
            "weight": [mean, ConceptStatsRow.n_segments]}[sort]
    statement = (select(ConceptStatsRow.concept_id, ConceptRow.name, ConceptStatsRow.n_files,
                        ConceptStatsRow.n_segments, ConceptStatsRow.active_seconds, mean, largest)
                 .join(ConceptRow, ConceptRow.id == ConceptStatsRow.concept_id)
                 .where(ConceptStatsRow.n_segments > 0)
                 .order_by(*[desc(k) for k in keys], ConceptRow.name))
    return statement.limit(top) if top else statement


def prevalence(store, top: int | None = None, sort: str = "files") -> list[ConceptPrevalence]:
    """Active concepts, most prevalent first by `sort` (files | segments | time | weight)."""
    statement = prevalence_statement(sort, top)
    computed = concept_stats.ensure_fresh(store)
    totals = _corpus_totals(store, computed)
    if computed is None:
        with store.session() as session:
            rows = session.execute(statement).all()
    else:
        rows = _rows_in_memory(store, computed, sort, top)
    seconds = totals.indexed_seconds
    return [ConceptPrevalence(concept=r.name, concept_id=int(r.concept_id), files=int(r.n_files),
                              segments=int(r.n_segments), active_seconds=float(r.active_seconds),
                              time_share=float(r.active_seconds) / seconds if seconds > 0 else 0.0,
                              mean_weight=float(r.mean_weight), max_weight=float(r.max_weight or 0))
            for r in rows]


class _Row(NamedTuple):
    """One row of prevalence_statement's result."""

    concept_id: int
    name: str
    n_files: int
    n_segments: int
    active_seconds: float
    mean_weight: float
    max_weight: float


def _rows_in_memory(store, computed: concept_stats.Contribution, sort: str,
                    top: int | None) -> list[_Row]:
    """What prevalence_statement returns, from totals computed in memory (a read-only index whose
    stored totals are stale): same columns, same order."""
    with store.session() as session:
        names = dict(session.execute(select(ConceptRow.id, ConceptRow.name)).all())
    rows = [_Row(int(k), names[int(k)], int(files), int(segments), float(seconds),
                 float(weights) / int(segments), float(largest))
            for k, files, segments, seconds, weights, largest in zip(
                computed.concept_ids, computed.n_files, computed.n_segments,
                computed.active_seconds, computed.weight_sum, computed.max_weight) if segments > 0]
    keys = {"files": ("n_files", "n_segments"), "segments": ("n_segments", "n_files"),
            "time": ("active_seconds", "n_segments"), "weight": ("mean_weight", "n_segments")}[sort]
    rows.sort(key=lambda r: (-getattr(r, keys[0]), -getattr(r, keys[1]), r.name))
    return rows[:top] if top else rows
