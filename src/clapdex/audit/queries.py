"""Segments matching a concept expression, low-fidelity segments, and one file's concept profile.

All queries are SQLAlchemy Core (portable: SQLite and PostgreSQL). A concept expression compiles
to set operations over per-concept posting lookups, each a range scan of the postings' (concept_id,
segment_id) key, which holds the weight: `concept_id = k AND weight >= w`. AND is INTERSECT, OR is UNION (the concepts named
directly under one OR share a single lookup, `concept_id IN (...)`), `A AND NOT B` is EXCEPT;
only an expression without any positive term (e.g. `NOT music`) starts from all segments.
Matches are evaluated per segment (docs/audit.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from sqlalchemy import (Select, and_, desc, distinct, except_, func, intersect, literal, or_,
                        select, union)
from sqlalchemy.orm import Session

from clapdex.audit.concepts import ConceptLookup, UnknownConceptError
from clapdex.audit.expression import (ExpressionError, Node, Not, Or, Term, parse,
                                      positive_terms, terms, to_text)
from clapdex.audit.files import find_indexed_file
from clapdex.defaults import FLAGS
from clapdex.errors import QueryError
from clapdex.storage.records import level_flags
from clapdex.storage.schema import FileRow, PostingRow, SegmentRow

_IN_CHUNK = 5_000  # ids per IN (...) list: well under every backend's bound-parameter limit
MAX_COMPOUND = 400  # members of one UNION / INTERSECT / EXCEPT (SQLite allows 500)


@dataclass
class SegmentMatch:
    """One matching segment: where it is, its score (sum of its weights on the expression's
    positive concepts) and those weights by concept name."""

    path: str
    segment_id: int
    start: float
    end: float
    score: float
    weights: dict[str, float] = field(default_factory=dict)
    file_id: int | None = None  # the file's id in the index (what the web app links to)

    def to_row(self) -> dict:
        return {"path": self.path, "file_id": self.file_id, "segment_id": self.segment_id,
                "start": self.start, "end": self.end, "score": self.score,
                "concepts": [{"concept": n, "weight": w} for n, w in self.weights.items()]}


@dataclass
class AuditResult:
    expression: str
    n_segments: int              # all matching segments (not just the rows returned)
    n_files: int
    matches: list[SegmentMatch]  # best first, at most `limit`

    def by_file(self) -> list[tuple[str, list[SegmentMatch]]]:
        """Matches grouped by file, files in the order of their best segment."""
        groups: dict[str, list[SegmentMatch]] = {}
        for match in self.matches:
            groups.setdefault(match.path, []).append(match)
        return list(groups.items())


# ---- concept expressions -------------------------------------------------------------------------

def compile_expression(node: Node, lookup: ConceptLookup) -> Select:
    """A SELECT of the matching segment ids (one column, `segment_id`)."""
    return _segments(node, lookup)


def _term_select(term: Term, lookup: ConceptLookup) -> Select:
    concept_id = lookup.id_of(term.name, term.position)
    statement = select(PostingRow.segment_id.label("segment_id")).where(
        PostingRow.concept_id == concept_id)
    # Postings exist only for weights > 0, so a bare name needs no weight condition.
    if term.min_weight is not None:
        statement = statement.where(PostingRow.weight >= float(term.min_weight))
    return statement


def _flat(statement) -> Select:
    """Wrap a compound select so it can be a member of another one (SQLite needs this)."""
    if isinstance(statement, Select):
        return statement
    sub = statement.subquery()
    return select(sub.c.segment_id.label("segment_id"))


def _all_segments() -> Select:
    return select(SegmentRow.id.label("segment_id"))


def _any_term(terms: list[Term], lookup: ConceptLookup) -> Select:
    """Segments with any of `terms`: one SELECT however many there are (a UNION per term would
    hit SQLite's limit of 500 members per compound SELECT)."""
    by_weight: dict[float | None, list[int]] = {}
    for term in terms:
        by_weight.setdefault(term.min_weight, []).append(lookup.id_of(term.name, term.position))
    conditions = [PostingRow.concept_id.in_(ids) if weight is None else
                  and_(PostingRow.concept_id.in_(ids), PostingRow.weight >= float(weight))
                  for weight, ids in by_weight.items()]
    return select(PostingRow.segment_id.label("segment_id")).where(or_(*conditions)).distinct()


def _compound_members(members: list, node: Node) -> list:
    if len(members) > MAX_COMPOUND:
        raise QueryError(f"the expression {to_text(node)[:80]}... combines {len(members)} parts "
                         f"with AND; at most {MAX_COMPOUND} (group them with OR or parentheses)")
    return members


def _segments(node: Node, lookup: ConceptLookup) -> Select:
    if isinstance(node, Term):
        return _term_select(node, lookup)
    if isinstance(node, Not):
        return _flat(except_(_all_segments(), _segments(node.child, lookup)))
    if isinstance(node, Or):
        named = [child for child in node.children if isinstance(child, Term)]
        parts = [_segments(child, lookup) for child in node.children
                 if not isinstance(child, Term)] + ([_any_term(named, lookup)] if named else [])
        if len(parts) == 1:
            return parts[0]
        if len(parts) > MAX_COMPOUND:  # OR of many groups: nest the UNIONs
            parts = [_flat(union(*parts[i:i + MAX_COMPOUND]))
                     for i in range(0, len(parts), MAX_COMPOUND)]
        return _flat(union(*parts))
    # AND: intersect the positive children, then take away the negated ones.
    _compound_members(node.children, node)
    positives = [c for c in node.children if not isinstance(c, Not)]
    negatives = [c.child for c in node.children if isinstance(c, Not)]
    parts = [_segments(child, lookup) for child in positives]
    base = parts[0] if len(parts) == 1 else (_flat(intersect(*parts)) if parts else _all_segments())
    if not negatives:
        return base
    removed = [_segments(child, lookup) for child in negatives]
    return _flat(except_(base, *removed))


@dataclass
class AuditPlan:
    """The SQL an audit runs (the benchmark prints their plans).

    `rows`: the best `limit` matches with a positive score, each row also carrying the total
    counts, so the expression is evaluated once (a common table expression shared by the ranking
    and the counts). `count`: the counts alone (for --count, or when no row scores above 0).
    `unscored`: matches without any positive concept (score 0), which follow the scored ones."""

    count: Select
    rows: Select
    unscored: Select | None
    positive_ids: list[int]


def plan_audit(lookup: ConceptLookup, expression: str, limit: int | None = 100) -> AuditPlan:
    try:
        return _plan_audit(lookup, expression, limit)
    except QueryError as error:  # e.g. `rock and roll`, read as rock AND roll
        name = expression.strip()
        if isinstance(error, (ExpressionError, UnknownConceptError)) and _is_concept(lookup, name):
            raise QueryError(f"{error}; the whole expression is the concept {name!r}: put it in "
                             f"quotes to search for it (\"{name}\")") from None
        raise


def _is_concept(lookup: ConceptLookup, name: str) -> bool:
    try:
        lookup.id_of(name)
    except UnknownConceptError:
        return False
    return True


def _plan_audit(lookup: ConceptLookup, expression: str, limit: int | None) -> AuditPlan:
    node = parse(expression)
    lookup.prefetch([t.name for t in terms(node)])
    matched = compile_expression(node, lookup).cte("matched")
    matched_ids = select(matched.c.segment_id)
    positive_ids = sorted({lookup.id_of(t.name, t.position) for t in positive_terms(node)})
    # `id IN (...)`: the segment rows are then visited in id order (far fewer page reads than a
    # join in posting order; segment rows are large, they hold the embedding).
    n_segments = select(func.count()).select_from(matched)
    n_files = select(func.count(distinct(SegmentRow.file_id))).where(SegmentRow.id.in_(matched_ids))
    count = select(n_segments.scalar_subquery(), n_files.scalar_subquery())

    def with_counts(statement: Select) -> Select:
        return statement.add_columns(n_segments.scalar_subquery().label("n_segments"),
                                     n_files.scalar_subquery().label("n_files"))

    if isinstance(node, Term):
        return AuditPlan(count, with_counts(_strongest_of_term(node, lookup, limit)), None,
                         positive_ids)
    # Matches without any positive concept (e.g. `a OR NOT b`) score 0; they come last, in
    # segment order.
    unscored = select(SegmentRow.id.label("segment_id"), literal(0.0).label("score")).where(
        SegmentRow.id.in_(matched_ids))
    if not positive_ids:
        unscored = unscored.order_by(SegmentRow.id)
        return AuditPlan(count, with_counts(_with_location(
            (unscored.limit(limit) if limit else unscored).subquery("ranked"))), None, positive_ids)
    unscored = unscored.where(SegmentRow.id.not_in(
        select(PostingRow.segment_id).where(PostingRow.concept_id.in_(positive_ids)))
    ).order_by(SegmentRow.id)
    # Only segments with a positive-concept posting can score above 0: rank those from the
    # postings of the positive concepts alone.
    score = func.sum(PostingRow.weight).label("score")
    scored = (select(PostingRow.segment_id.label("segment_id"), score)
              .where(PostingRow.concept_id.in_(positive_ids), PostingRow.segment_id.in_(matched_ids))
              .group_by(PostingRow.segment_id)
              .order_by(desc("score"), PostingRow.segment_id))
    scored = _with_location((scored.limit(limit) if limit else scored).subquery("ranked"))
    return AuditPlan(count, with_counts(scored), unscored, positive_ids)


def audit(store, expression: str, limit: int | None = 100) -> AuditResult:
    """Segments matching `expression`, best first: by score (the sum of the segment's weights on
    the expression's non-negated concepts), then by segment id (indexing order)."""
    lookup = ConceptLookup.load(store)
    plan = plan_audit(lookup, expression, limit)
    with store.session() as session:
        rows = session.execute(plan.rows).all()
        if rows:
            n_segments, n_files = rows[0].n_segments, rows[0].n_files
        else:
            n_segments, n_files = session.execute(plan.count).one()
        missing = None if limit is None else limit - len(rows)
        if plan.unscored is not None and len(rows) < n_segments and (missing is None or missing > 0):
            rest = plan.unscored if missing is None else plan.unscored.limit(missing)
            rows += session.execute(_with_location(rest.subquery("ranked"))).all()
        weights = _weights_of(session, [r.segment_id for r in rows], plan.positive_ids)
    matches = [SegmentMatch(path=r.path, file_id=int(r.file_id), segment_id=int(r.segment_id), start=float(r.start),
                            end=float(r.end), score=float(r.score),
                            weights={lookup.name_of(c): w
                                     for c, w in weights.get(int(r.segment_id), [])})
               for r in rows]
    return AuditResult(expression, int(n_segments), int(n_files), matches)


def _with_location(ranked) -> Select:
    """Add each ranked segment's file and time range (joins for the returned rows only)."""
    return (select(ranked.c.segment_id, FileRow.path, SegmentRow.file_id, SegmentRow.start,
                   SegmentRow.end, ranked.c.score)
            .select_from(ranked)
            .join(SegmentRow, SegmentRow.id == ranked.c.segment_id)
            .join(FileRow, FileRow.id == SegmentRow.file_id)
            .order_by(desc(ranked.c.score), ranked.c.segment_id))


def _strongest_of_term(term: Term, lookup: ConceptLookup, limit: int | None) -> Select:
    """One concept: its strongest postings (a top-k sort of its range of the postings index)."""
    strongest = (_term_select(term, lookup).add_columns(PostingRow.weight.label("score"))
                 .order_by(PostingRow.weight.desc(), PostingRow.segment_id))
    return _with_location((strongest.limit(limit) if limit else strongest).subquery("ranked"))


def _weights_of(session: Session, segment_ids: list[int], concept_ids: list[int]) -> dict:
    """{segment id: [(concept id, weight), ...] strongest first} for the given concepts."""
    out: dict[int, list[tuple[int, float]]] = {}
    if not segment_ids:
        return out
    for first in range(0, len(segment_ids), _IN_CHUNK):
        statement = select(PostingRow.segment_id, PostingRow.concept_id, PostingRow.weight).where(
            PostingRow.segment_id.in_(segment_ids[first:first + _IN_CHUNK]))
        if concept_ids is not None:
            statement = statement.where(PostingRow.concept_id.in_(concept_ids))
        for seg, con, weight in session.execute(statement):
            out.setdefault(int(seg), []).append((int(con), float(weight)))
    for pairs in out.values():
        pairs.sort(key=lambda p: (-p[1], p[0]))
    return out


def count_matches(store, expression: str) -> tuple[int, int]:
    """(matching segments, files with a matching segment), without ranking any rows."""
    plan = plan_audit(ConceptLookup.load(store), expression, limit=1)
    with store.session() as session:
        n_segments, n_files = session.execute(plan.count).one()
    return int(n_segments), int(n_files)


# ---- low fidelity --------------------------------------------------------------------------------

@dataclass
class PoorlyExplained:
    """A segment the vocabulary describes badly, with the concepts its decomposition did use."""

    path: str
    segment_id: int
    start: float
    end: float
    concept_fidelity: float   # cos(Cw, z): what the listing is sorted and filtered by
    fidelity: float           # reconstruction fidelity cos(r, â), for reference
    concepts: list[tuple[str, float]]
    file_id: int | None = None

    def to_row(self) -> dict:
        return {"path": self.path, "file_id": self.file_id, "segment_id": self.segment_id,
                "start": self.start,
                "end": self.end, "concept_fidelity": self.concept_fidelity,
                "fidelity": self.fidelity,
                "concepts": [{"concept": n, "weight": w} for n, w in self.concepts]}


def poorly_explained(store, below: float = 0.5, limit: int | None = 50,
                     n_concepts: int = 3) -> tuple[int, list[PoorlyExplained]]:
    """(count of segments with concept fidelity < below, the lowest ones first). Concept
    fidelity, not reconstruction fidelity: a window no concept explains (an off-vocabulary
    sound) has concept fidelity 0 but a reconstruction fidelity near ‖μ_A‖. Segments flagged
    silent are left out: they have no concept by design (`flagged(store, "silent")`)."""
    lookup = ConceptLookup.load(store)
    # Silent segments have no concept on purpose: `audit --flag silent` lists them, not this.
    poor = and_(SegmentRow.concept_fidelity < below, SegmentRow.silent.is_not(True))
    with store.session() as session:
        total = session.scalar(select(func.count()).select_from(SegmentRow).where(poor))
        statement = (select(SegmentRow.id, FileRow.path, SegmentRow.file_id, SegmentRow.start,
                            SegmentRow.end, SegmentRow.concept_fidelity, SegmentRow.fidelity)
                     .join(FileRow, FileRow.id == SegmentRow.file_id)
                     .where(poor)
                     .order_by(SegmentRow.concept_fidelity, SegmentRow.id))
        rows = session.execute(statement.limit(limit) if limit else statement).all()
        weights = _weights_of(session, [r.id for r in rows], None)
    lookup.preload(c for pairs in weights.values() for c, _ in pairs[:n_concepts])
    return int(total or 0), [
        PoorlyExplained(r.path, int(r.id), float(r.start), float(r.end),
                        float(r.concept_fidelity), float(r.fidelity),
                        [(lookup.name_of(c), w) for c, w in weights.get(int(r.id), [])[:n_concepts]],
                        int(r.file_id))
        for r in rows]


# ---- one file ------------------------------------------------------------------------------------

@dataclass
class SegmentProfile:
    start: float
    end: float
    fidelity: float
    concepts: list[tuple[str, float]]  # strongest first
    concept_fidelity: float = 0.0
    segment_id: int | None = None
    flags: list[str] | None = None     # "silent", "clipped"; None: not measured
    level_db: float | None = None      # RMS level of the window's audio, dBFS
    clipped_fraction: float | None = None

    def to_row(self) -> dict:
        return {"segment_id": self.segment_id, "start": self.start, "end": self.end,
                "concept_fidelity": self.concept_fidelity,
                "fidelity": self.fidelity,
                "concepts": [{"concept": n, "weight": w} for n, w in self.concepts],
                "flags": self.flags, "level_db": self.level_db,
                "clipped_fraction": self.clipped_fraction}


@dataclass
class FileProfile:
    path: str
    duration: float | None
    segments: list[SegmentProfile]
    file_id: int | None = None
    missing: bool = False           # the file is no longer on disk (its concepts are still indexed)
    warning: str | None = None      # truncated: "header says 12.0 s, decoded 6.0 s"

    def rows(self) -> list[dict]:
        """One segment record per segment (docs/output.md), in time order."""
        return [{"path": self.path, "file_id": self.file_id, "warning": self.warning,
                 **s.to_row(), "missing": self.missing} for s in self.segments]


def file_profile(store, name: str, top: int = 5) -> FileProfile:
    """Per-segment top concepts of one file, in time order (`name`: see resolve_indexed_file)."""
    lookup = ConceptLookup.load(store)
    with store.session() as session:
        indexed = find_indexed_file(session, name)
        warning = session.scalar(select(FileRow.warning).where(FileRow.id == indexed.id))
        segments = session.execute(select(SegmentRow.id, SegmentRow.start, SegmentRow.end,
                                          SegmentRow.fidelity, SegmentRow.concept_fidelity,
                                          *_LEVELS)
                                   .where(SegmentRow.file_id == indexed.id)
                                   .order_by(SegmentRow.start, SegmentRow.id)).all()
        weights = _weights_of(session, [s.id for s in segments], None)
    lookup.preload(c for pairs in weights.values() for c, _ in pairs[:top])
    return FileProfile(indexed.path, indexed.duration, [
        SegmentProfile(float(s.start), float(s.end), float(s.fidelity),
                       [(lookup.name_of(c), w) for c, w in weights.get(int(s.id), [])[:top]],
                       float(s.concept_fidelity), int(s.id), *_levels_of(s))
        for s in segments], int(indexed.id), not os.path.exists(indexed.path), warning)


# ---- damaged, silent and clipped audio -----------------------------------------------------------

_LEVELS = (SegmentRow.silent, SegmentRow.clipped, SegmentRow.level_db, SegmentRow.clipped_fraction)


def _levels_of(row) -> tuple:
    """(flags, level_db, clipped_fraction) of a row holding the _LEVELS columns; flags are None
    for a segment never measured (indexed before schema 5, or imported embeddings)."""
    return (level_flags(row.silent, row.clipped),
            None if row.level_db is None else float(row.level_db),
            None if row.clipped_fraction is None else float(row.clipped_fraction))


@dataclass
class FlaggedFile:
    """A file indexed with what decoded of it: `warning` says what its header claimed."""

    path: str
    file_id: int
    duration: float | None
    warning: str

    def to_row(self) -> dict:
        return {"path": self.path, "file_id": self.file_id, "duration": self.duration,
                "flags": ["truncated"], "warning": self.warning}


@dataclass
class FlaggedSegment:
    """A segment flagged silent or clipped, with its measures and (clipped) its concepts."""

    path: str
    file_id: int
    segment_id: int
    start: float
    end: float
    flags: list[str]
    level_db: float | None
    clipped_fraction: float | None
    concepts: list[tuple[str, float]]

    def to_row(self) -> dict:
        return {"path": self.path, "file_id": self.file_id, "segment_id": self.segment_id,
                "start": self.start, "end": self.end, "flags": self.flags,
                "level_db": self.level_db, "clipped_fraction": self.clipped_fraction,
                "concepts": [{"concept": n, "weight": w} for n, w in self.concepts]}


def flagged(store, flag: str, limit: int | None = 100,
            n_concepts: int = 3) -> tuple[int, int, list]:
    """(count, files, rows): the files flagged "truncated" (FlaggedFile) or the segments flagged
    "silent" / "clipped" (FlaggedSegment), in path and time order, at most `limit` rows."""
    if flag not in FLAGS:
        raise QueryError(f"unknown flag {flag!r}; flags: {', '.join(FLAGS)}")
    with store.session() as session:
        if flag == "truncated":
            where = and_(FileRow.status == "indexed", FileRow.warning.is_not(None))
            total = session.scalar(select(func.count()).select_from(FileRow).where(where)) or 0
            statement = (select(FileRow.path, FileRow.id, FileRow.duration, FileRow.warning)
                         .where(where).order_by(FileRow.path))
            rows = session.execute(statement.limit(limit) if limit else statement).all()
            return int(total), int(total), [FlaggedFile(r.path, int(r.id), r.duration, r.warning)
                                            for r in rows]
        where = getattr(SegmentRow, flag).is_(True)
        total, files = session.execute(select(func.count(), func.count(distinct(SegmentRow.file_id)))
                                       .where(where)).one()
        statement = (select(FileRow.path, SegmentRow.file_id, SegmentRow.id, SegmentRow.start,
                            SegmentRow.end, *_LEVELS)
                     .join(FileRow, FileRow.id == SegmentRow.file_id).where(where)
                     .order_by(FileRow.path, SegmentRow.start, SegmentRow.id))
        rows = session.execute(statement.limit(limit) if limit else statement).all()
        weights = _weights_of(session, [r.id for r in rows], None)
    lookup = ConceptLookup.load(store)
    lookup.preload(c for pairs in weights.values() for c, _ in pairs[:n_concepts])
    return int(total or 0), int(files or 0), [
        FlaggedSegment(r.path, int(r.file_id), int(r.id), float(r.start), float(r.end),
                       *_levels_of(r),
                       [(lookup.name_of(c), w) for c, w in weights.get(int(r.id), [])[:n_concepts]])
        for r in rows]

