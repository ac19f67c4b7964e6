"""Per-concept prevalence totals, kept up to date on every write (used by `clapdex concepts`).

Counting files, segments and covered time for every concept from the postings means reading every
posting (millions of rows). Instead IndexStore calls the hooks below inside its write transactions,
so the totals in `concept_stats` / `corpus_stats` (schema.py) change together with the postings:

- `on_files_added` (`on_file_added` for one) / `on_file_removed`: add or subtract the files'
  contributions. A file is written and removed as a whole, so its contribution is exact in both
  directions (only float sums can drift by rounding; a rebuild resets them).
- `invalidate`: writes that change many files at once (re-decomposition, a new vocabulary) mark the
  totals stale; the next reader rebuilds them from the postings in one pass (`ensure_fresh`), or,
  on a read-only index, computes them in memory for itself (nothing can be stored).

Definitions (docs/audit.md):
- a concept is *active* in a segment when the segment has a posting for it (weight > 0);
- *active seconds* of a concept: per file, the length of the union of the time ranges of the
  segments where it is active (overlapping windows count once), summed over files;
- *indexed seconds*: the same union over all segments of every file (with clapdex's windows, the
  indexed duration of the files);
- a file counts once it has at least one segment.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.sparse as sp
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from clapdex.storage.postings import postings_to_csr
from clapdex.storage.schema import ConceptStatsRow, CorpusStatsRow, PostingRow, SegmentRow


def union_lengths(group: np.ndarray, start: np.ndarray, end: np.ndarray, n_groups: int) -> np.ndarray:
    """Length of the union of the intervals [start, end) of each group, as an (n_groups,) array.

    Vectorised: sort by (group, start), shift each group onto its own stretch of the time axis so
    that one running maximum of the ends serves all groups, and start a new run wherever an
    interval begins after everything before it has ended.
    """
    total = np.zeros(n_groups, dtype=np.float64)
    if len(group) == 0:
        return total
    group = np.asarray(group, dtype=np.int64)
    start = np.asarray(start, dtype=np.float64)
    end = np.maximum(np.asarray(end, dtype=np.float64), start)
    order = np.lexsort((start, group))
    group, start, end = group[order], start[order], end[order]
    base = min(float(start.min()), 0.0)
    span = float(end.max()) - base + 1.0
    offset = (group - group.min()) * span - base  # every group lives in its own window of the axis
    shifted_start, shifted_end = start + offset, end + offset
    reach = np.maximum.accumulate(shifted_end)
    new_run = np.ones(len(group), dtype=bool)
    new_run[1:] = shifted_start[1:] > reach[:-1]
    run_first = np.flatnonzero(new_run)
    run_end = np.maximum.reduceat(shifted_end, run_first)
    np.add.at(total, group[run_first], run_end - shifted_start[run_first])
    return total


@dataclass
class Contribution:
    """What one file (or the whole corpus, in a rebuild) adds to the totals."""

    concept_ids: np.ndarray      # (m,) int64
    n_files: np.ndarray          # (m,) int64
    n_segments: np.ndarray       # (m,) int64
    active_seconds: np.ndarray   # (m,) float64
    weight_sum: np.ndarray       # (m,) float64
    max_weight: np.ndarray       # (m,) float64, the largest posting weight
    corpus_files: int
    corpus_segments: int
    corpus_seconds: float


def file_contribution(starts: np.ndarray, ends: np.ndarray, weights) -> Contribution:
    """One file's contribution from its segment times and its (n, K) concept weights."""
    weights = sp.csr_matrix(weights)
    weights.eliminate_zeros()
    n = weights.shape[0]
    coo = weights.tocoo()
    keep = coo.data > 0
    rows, cols, data = coo.row[keep], coo.col[keep], coo.data[keep]
    concept_ids, group = np.unique(cols, return_inverse=True)
    starts = np.asarray(starts, dtype=np.float64)
    ends = np.asarray(ends, dtype=np.float64)
    return Contribution(
        concept_ids=concept_ids.astype(np.int64),
        n_files=np.ones(len(concept_ids), dtype=np.int64),
        n_segments=np.bincount(group, minlength=len(concept_ids)).astype(np.int64),
        active_seconds=union_lengths(group, starts[rows], ends[rows], len(concept_ids)),
        weight_sum=np.bincount(group, weights=data, minlength=len(concept_ids)),
        max_weight=_group_max(group, data, len(concept_ids)),
        corpus_files=1 if n else 0,
        corpus_segments=n,
        corpus_seconds=float(union_lengths(np.zeros(n, np.int64), starts, ends, 1)[0]) if n else 0.0,
    )


# ---- hooks called by IndexStore inside its write transactions ------------------------------------

def initialize(session: Session) -> None:
    """A new, empty index: valid, all-zero totals."""
    session.execute(insert(CorpusStatsRow), [{"id": 1, "valid": True, "n_files": 0,
                                             "n_segments": 0, "indexed_seconds": 0.0}])


def invalidate(session: Session) -> None:
    """Many segments changed at once: the next reader rebuilds the totals."""
    session.execute(update(CorpusStatsRow).where(CorpusStatsRow.id == 1).values(valid=False))


def on_file_added(session: Session, starts, ends, weights) -> None:
    on_files_added(session, [(starts, ends, weights)])


def on_files_added(session: Session, files: Sequence[tuple]) -> None:
    """Add the contributions of newly stored files, given as (starts, ends, weights) per file,
    with one update for the whole batch: contributions are per-concept sums, so they add up
    over files (one update per file was half the bulk-import time)."""
    if not files or not _is_valid(session):
        return
    parts = [file_contribution(starts, ends, weights) for starts, ends, weights in files]
    _apply(session, parts[0] if len(parts) == 1 else _combined(parts), sign=+1)


def on_file_removed(session: Session, file_id: int) -> None:
    """Call before the file's segments and postings are deleted."""
    if not _is_valid(session):
        return
    segments = session.execute(select(SegmentRow.id, SegmentRow.start, SegmentRow.end)
                               .where(SegmentRow.file_id == file_id)
                               .order_by(SegmentRow.id)).all()
    if not segments:
        return
    ids = np.array([s[0] for s in segments], dtype=np.int64)
    postings = session.execute(select(PostingRow.segment_id, PostingRow.concept_id, PostingRow.weight)
                               .where(PostingRow.segment_id.in_(ids.tolist()))).all()
    matrix = postings_to_csr(ids, postings, n_concepts=None)  # the contribution needs no K
    _apply(session, file_contribution([s[1] for s in segments], [s[2] for s in segments], matrix),
           sign=-1)


# ---- readers -------------------------------------------------------------------------------------

def ensure_fresh(store) -> Contribution | None:
    """Rebuild the stored totals if they are stale (after a reindex or a vocabulary change).

    Returns None when the tables hold current totals. A read-only index (`store.read_only`)
    cannot store a rebuild: its stale totals are then computed in memory, the same way, and
    returned; the caller reads those instead of the tables.
    """
    with store.session() as session:
        if _is_valid(session):
            return None
        if store.read_only:
            return compute(session)
    with store.write() as session:
        if not _is_valid(session):  # unless someone else rebuilt meanwhile
            rebuild(session)
    return None


def rebuild(session: Session) -> None:
    """Recompute every total from the segments and postings and store them."""
    total = compute(session)
    session.execute(delete(ConceptStatsRow))
    session.execute(delete(CorpusStatsRow))
    session.execute(insert(CorpusStatsRow), [{"id": 1, "valid": True, "n_files": total.corpus_files,
                                             "n_segments": total.corpus_segments,
                                             "indexed_seconds": total.corpus_seconds}])
    rows = _rows(total)
    for first in range(0, len(rows), 20_000):
        session.execute(insert(ConceptStatsRow), rows[first:first + 20_000])


def compute(session: Session) -> Contribution:
    """Every total, from the segments and postings (one pass, vectorised; writes nothing)."""
    segments = session.execute(select(SegmentRow.id, SegmentRow.file_id, SegmentRow.start,
                                      SegmentRow.end).order_by(SegmentRow.id)).all()
    seg_ids, file_ids, starts, ends = (np.array(c) for c in zip(*segments)) if segments else (
        np.zeros(0, np.int64),) * 4
    file_rank = np.unique(file_ids, return_inverse=True)[1] if len(file_ids) else np.zeros(0, np.int64)
    n_files = int(file_rank.max()) + 1 if len(file_rank) else 0
    postings = session.execute(select(PostingRow.segment_id, PostingRow.concept_id,
                                      PostingRow.weight).where(PostingRow.weight > 0)).all()
    seg, con, weight = (np.array(c) for c in zip(*postings)) if postings else (np.zeros(0),) * 3
    row = np.searchsorted(seg_ids, seg.astype(np.int64))
    con = con.astype(np.int64)
    # One group per (file, concept) pair: the union of a concept's time is taken within each file.
    pair_keys, pair = np.unique(file_rank[row] * (int(con.max(initial=0)) + 1) + con,
                                return_inverse=True)
    pair_concept = pair_keys % (int(con.max(initial=0)) + 1)
    pair_seconds = union_lengths(pair, starts[row], ends[row], len(pair_keys))
    concept_ids, concept_of_pair = np.unique(pair_concept, return_inverse=True)
    _, concept_of_posting = np.unique(con, return_inverse=True)
    m = len(concept_ids)
    return Contribution(
        concept_ids=concept_ids,
        n_files=np.bincount(concept_of_pair, minlength=m).astype(np.int64),
        n_segments=np.bincount(concept_of_posting, minlength=m).astype(np.int64),
        active_seconds=np.bincount(concept_of_pair, weights=pair_seconds, minlength=m),
        weight_sum=np.bincount(concept_of_posting, weights=weight.astype(np.float64), minlength=m),
        max_weight=_group_max(concept_of_posting, weight, m),
        corpus_files=n_files,
        corpus_segments=len(seg_ids),
        corpus_seconds=float(union_lengths(file_rank, starts, ends, n_files).sum()),
    )


# ---- internals -----------------------------------------------------------------------------------

def _combined(parts: Sequence[Contribution]) -> Contribution:
    """The sum of several contributions (concepts merged)."""
    concept_ids, where = np.unique(np.concatenate([c.concept_ids for c in parts]),
                                   return_inverse=True)

    def total(name: str, dtype) -> np.ndarray:
        values = np.concatenate([getattr(c, name) for c in parts]).astype(dtype)
        return np.bincount(where, weights=values, minlength=len(concept_ids)).astype(dtype)

    return Contribution(
        concept_ids=concept_ids.astype(np.int64), n_files=total("n_files", np.int64),
        n_segments=total("n_segments", np.int64), active_seconds=total("active_seconds", np.float64),
        weight_sum=total("weight_sum", np.float64),
        max_weight=_group_max(where, np.concatenate([c.max_weight for c in parts]),
                              len(concept_ids)),
        corpus_files=sum(c.corpus_files for c in parts),
        corpus_segments=sum(c.corpus_segments for c in parts),
        corpus_seconds=float(sum(c.corpus_seconds for c in parts)))


def _group_max(group: np.ndarray, values: np.ndarray, n_groups: int) -> np.ndarray:
    largest = np.zeros(n_groups, dtype=np.float64)
    np.maximum.at(largest, np.asarray(group, dtype=np.int64), np.asarray(values, np.float64))
    return largest


def stored_counts(session: Session) -> tuple[int, int] | None:
    """(segments, postings) from the totals, None while they are stale. A posting is one segment
    of one concept, so the postings are the sum of the concepts' n_segments."""
    if not _is_valid(session):
        return None
    segments = session.scalar(select(CorpusStatsRow.n_segments).where(CorpusStatsRow.id == 1))
    postings = session.scalar(select(func.coalesce(func.sum(ConceptStatsRow.n_segments), 0)))
    return int(segments), int(postings)


def _is_valid(session: Session) -> bool:
    valid = session.scalar(select(CorpusStatsRow.valid).where(CorpusStatsRow.id == 1))
    return bool(valid)


def _rows(c: Contribution) -> list[dict]:
    return [{"concept_id": int(c.concept_ids[i]), "n_files": int(c.n_files[i]),
             "n_segments": int(c.n_segments[i]), "active_seconds": float(c.active_seconds[i]),
             "weight_sum": float(c.weight_sum[i]), "max_weight": float(c.max_weight[i])}
            for i in range(len(c.concept_ids))]


def _apply(session: Session, c: Contribution, sign: int) -> None:
    """Add (sign=+1) or subtract (sign=-1) a contribution; rows that reach zero segments go away."""
    session.execute(update(CorpusStatsRow).where(CorpusStatsRow.id == 1).values(
        n_files=CorpusStatsRow.n_files + sign * c.corpus_files,
        n_segments=CorpusStatsRow.n_segments + sign * c.corpus_segments,
        indexed_seconds=CorpusStatsRow.indexed_seconds + sign * c.corpus_seconds))
    if len(c.concept_ids) == 0:
        return
    ids = [int(i) for i in c.concept_ids]
    existing = {r.concept_id: r for r in session.execute(
        select(ConceptStatsRow.concept_id, ConceptStatsRow.n_files, ConceptStatsRow.n_segments,
               ConceptStatsRow.active_seconds, ConceptStatsRow.weight_sum,
               ConceptStatsRow.max_weight)
        .where(ConceptStatsRow.concept_id.in_(ids)))}
    updates, inserts, emptied = [], [], []
    for row in _rows(c):
        old = existing.get(row["concept_id"])
        if old is None:
            if sign > 0:
                inserts.append(row)
            continue
        new = {"concept_id": row["concept_id"],
               "n_files": old.n_files + sign * row["n_files"],
               "n_segments": old.n_segments + sign * row["n_segments"],
               "active_seconds": max(0.0, old.active_seconds + sign * row["active_seconds"]),
               "weight_sum": max(0.0, old.weight_sum + sign * row["weight_sum"]),
               # a removal that takes the largest weight leaves it unknown (NULL: looked up)
               "max_weight": None if old.max_weight is None or (
                   sign < 0 and row["max_weight"] >= old.max_weight) else
               max(old.max_weight, row["max_weight"]) if sign > 0 else old.max_weight}
        (emptied.append(new["concept_id"]) if new["n_segments"] <= 0 else updates.append(new))
    if updates:
        session.execute(update(ConceptStatsRow), updates)
    if inserts:
        session.execute(insert(ConceptStatsRow), inserts)
    if emptied:
        session.execute(delete(ConceptStatsRow).where(ConceptStatsRow.concept_id.in_(emptied)))
