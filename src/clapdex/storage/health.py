"""What `clapdex status` and `clapdex doctor` report about an index."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.exc import DBAPIError

from clapdex.errors import ClapdexError
from clapdex.storage.database import IndexStore
from clapdex.storage.dense import DenseIndex, agreement, read_meta
from clapdex.storage.roots import describe as describe_roots
from clapdex.storage.schema import Base, ConceptRow, PostingRow, SegmentRow

_DERIVED_TABLES = ("concept_stats", "corpus_stats")  # totals rebuilt from the postings on read


@dataclass
class IndexStatus:
    """What `clapdex status` shows (the JSON fields are these names, docs/output.md)."""

    index: str
    database: str             # where the data lives (the SQLite file or the URL, no password)
    settings: dict            # how the index was built (IndexSettings' scalar fields)
    counts: dict              # IndexStore.counts(): files, segments, postings, concepts, errors
    roots: list               # storage.roots.RootInfo of each named root
    errors: list              # files that could not be indexed: {"path", "error"}
    disk: dict                # IndexStore.disk_usage(): database_bytes, faiss_bytes
    # the FAISS type search built ("auto" picks it by size) and its recall@10 against exact
    # search, as measured when it was built (None: no dense search yet)
    ann: dict | None = None
    # truncated files, silent / clipped / never measured segments (docs/indexing.md "Damaged,
    # silent and clipped audio"), and the truncated files with their warnings: {"path", "warning"}
    flags: dict | None = None
    truncated: list = field(default_factory=list)


@dataclass
class DoctorReport:
    """What `clapdex doctor` found (and repaired); `ok` is False while a problem remains and
    `lines` is the human-readable report. Checks that could not run (a damaged database) are None."""

    index: str
    integrity: list           # problems of the database itself
    faiss: dict | None        # storage.dense.agreement: database and FAISS compared
    orphans: dict | None      # orphan rows by kind
    missing_files: list | None  # indexed files no longer on disk
    stale_segments: int | None  # segments decomposed under other settings
    repaired: list = field(default_factory=list)
    faiss_lags: bool = False  # FAISS only lacks segments: synced on the next open
    roots: list | None = None  # storage.roots.RootInfo of each named root
    unknown_roots: dict | None = None  # files stored under a root the index does not define
    ok: bool = False
    lines: list = field(default_factory=list)


def integrity(store: IndexStore) -> list[str]:
    """Problems of the database itself, [] when none: SQLite's quick_check (every page and index
    entry is well formed; linear in the file size, no cross-checks of index contents) and a cheap
    scan for rows that no reader could use (blobs of the wrong size, postings of unknown
    concepts, unreadable settings)."""
    problems: list[str] = []
    with store.engine.connect() as connection:
        if store.engine.dialect.name == "sqlite":
            try:
                found = connection.exec_driver_sql("PRAGMA quick_check(20)").scalars().all()
            except (ClapdexError, DBAPIError) as error:  # not even the schema can be read
                return [" ".join(str(error).split())[:300]]
            problems += [f"SQLite quick_check: {line}" for line in found if line != "ok"]
        if problems:
            return problems  # the scan below would only trip over the same damage
        try:
            dimension = store.settings.dimension
            bad_segments = connection.scalar(select(func.count()).select_from(SegmentRow).where(
                func.length(SegmentRow.embedding) != 4 * dimension))
            sizes = connection.execute(select(func.length(ConceptRow.embedding)).distinct()).all()
            n_concepts = connection.scalar(select(func.count()).select_from(ConceptRow))
            unknown = connection.scalar(select(func.count()).select_from(PostingRow).where(
                (PostingRow.concept_id < 0) | (PostingRow.concept_id >= n_concepts)))
            for table in _DERIVED_TABLES:
                connection.execute(text(f"SELECT count(*) FROM {table}")).scalar()
        except (ClapdexError, DBAPIError) as error:
            return [" ".join(str(error).split())[:300]]
    if bad_segments:
        problems.append(f"{bad_segments} segment embedding(s) of the wrong size (expected "
                        f"{dimension} values)")
    if len(sizes) > 1:
        problems.append("concept embeddings of different sizes")
    if unknown:
        problems.append(f"{unknown} posting(s) of concepts that do not exist")
    return problems


def _rebuild_derived(store: IndexStore) -> None:
    """Rebuild what is derived inside the database: the indexes and the audit totals (recreated
    empty and invalid, so the next reader recomputes them from the postings). On SQLite damaged
    pages cannot even be dropped (dropping reads them): the schema entries of the explicit
    indexes and of the totals are removed, VACUUM rewrites the file without their pages, and the
    indexes are created again from their saved definitions."""
    from clapdex.storage import concept_stats

    tables = [Base.metadata.tables[name] for name in _DERIVED_TABLES]
    if store.engine.dialect.name == "sqlite":
        # The driver's own connection, in autocommit: VACUUM cannot run inside a transaction.
        raw = store.engine.raw_connection()
        try:
            sqlite = raw.driver_connection
            names = ", ".join(f"'{name}'" for name in _DERIVED_TABLES)
            derived = f"type = 'index' AND sql IS NOT NULL OR tbl_name IN ({names})"
            indexes = [row[0] for row in sqlite.execute(
                f"SELECT sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL "
                f"AND tbl_name NOT IN ({names})")]
            sqlite.execute("PRAGMA writable_schema=ON")
            sqlite.execute(f"DELETE FROM sqlite_master WHERE {derived}")
            sqlite.execute("PRAGMA writable_schema=OFF")
            sqlite.execute("VACUUM")
            for statement in indexes:
                sqlite.execute(statement)
        finally:
            raw.close()
        store.engine.dispose()  # no pooled connection may keep the old schema
    else:
        with store.engine.begin() as connection:
            for table in tables:
                table.drop(connection, checkfirst=True)
    Base.metadata.create_all(store.engine, tables=tables)
    with store.session() as session, session.begin():
        concept_stats.initialize(session)
        concept_stats.invalidate(session)


def index_status(index_path: str | Path) -> IndexStatus:
    """Settings, counts, files that could not be indexed (with their errors), sizes on disk."""
    with IndexStore.open(index_path) as store:
        settings = store.settings
        return IndexStatus(
            index=str(index_path),
            database=store.location(),
            settings={
                "encoder_fingerprint": settings.encoder_fingerprint,
                "dimension": settings.dimension,
                "sample_rate": settings.sample_rate,
                "window_seconds": settings.window_seconds,
                "hop_seconds": settings.hop_seconds,
                "vocabulary_name": settings.vocabulary_name,
                "vocabulary_hash": settings.vocabulary_hash,
                "lam": settings.lam,
                "max_concepts": settings.max_concepts,
                "audio_mean_set": settings.audio_mean is not None,
                "faiss_factory": settings.faiss_factory,
            },
            counts=store.counts(),
            roots=describe_roots(store),
            errors=[{"path": row.path, "error": row.error} for row in store.files("error")],
            disk=store.disk_usage(),
            ann=read_meta(store),
            flags=store.flag_counts(),
            truncated=[{"path": row.path, "warning": row.warning}
                       for row in store.files("indexed", warned=True)],
        )


def doctor(index_path: str | Path, repair: bool = False) -> DoctorReport:
    """Check database↔FAISS agreement (build, ids, a sample of vectors), segments decomposed under
    other settings than the index's, indexed files missing on disk and orphan rows.

    `repair` re-decomposes those segments, rebuilds the FAISS file from the database and deletes
    orphan rows, each under the index's write lock; missing files are only reported (`clapdex
    index --prune PATH` removes them). `ok` is False while any problem remains; `lines` is the
    human-readable report. A FAISS file that only lacks segments (an interrupted run) is a
    warning, not a problem: every open of the index syncs it.
    """
    with IndexStore.open(index_path, write=repair) as store:
        damage = integrity(store)
        if damage and repair:
            try:
                _rebuild_derived(store)
            except Exception as error:  # the driver's own errors: damage beyond this repair
                damage.append(f"repair failed ({' '.join(str(error).split())[:200]})")
            else:
                damage = integrity(store)
            if not damage:
                store.close()  # the repaired file is read afresh below
                return _with_repair(doctor(index_path, repair=True),
                                    "rebuilt the database indexes and audit totals")
        if damage:
            return _damaged_report(index_path, damage)
        dense = agreement(store)
        orphans = store.orphans()
        stale = store.stale_segments()
        roots, unknown_roots = describe_roots(store), _unknown_roots(store)
        away = {info.name for info in roots if not info.exists}
        missing = [] if unknown_roots else [
            row.path for row in store.files("indexed")
            if not os.path.exists(row.path) and _root_name(store, row.path) not in away]
        repaired = []
        if repair:
            if len(stale):
                count = redecompose_stale(store)
                repaired.append(f"re-decomposed {count} segment(s) under the index's settings")
            if any(orphans.values()):
                store.delete_orphans()
                repaired.append("deleted orphan rows")
            if not dense["agree"]:
                DenseIndex.rebuild_from(store).save(store.faiss_path)
                repaired.append("rebuilt the FAISS index from the database")
            dense, orphans, stale = agreement(store), store.orphans(), store.stale_segments()
    lines = ["ok: the database is intact (quick check)"]
    # Only missing ids (no extra ones, right vectors): the next open adds them.
    faiss_lags = bool(not dense["agree"] and dense["faiss_segments"] is not None
                      and dense["extra_in_faiss"] == 0 and dense["wrong_vectors"] == 0
                      and dense["problem"].startswith("FAISS holds"))
    if dense["agree"]:
        lines.append(f"ok: FAISS and database agree ({dense['database_segments']} segments, "
                     f"{dense['vectors_checked']} vectors compared)")
    elif faiss_lags:
        lines.append(f"warning: FAISS lags the database ({dense['faiss_segments']} of "
                     f"{dense['database_segments']} segments); synced automatically on the next "
                     "search or index run")
    else:
        lines.append(f"problem: {dense['problem']}; clapdex doctor --repair rebuilds it from "
                     "the database")
    if len(stale):
        lines.append(f"problem: {len(stale)} segment(s) were decomposed under other settings "
                     "than the index's; run clapdex doctor --repair")
    else:
        lines.append("ok: every segment is decomposed under the index's settings")
    if any(orphans.values()):
        detail = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in orphans.items() if n)
        lines.append(f"problem: orphan rows ({detail}); run clapdex doctor --repair")
    else:
        lines.append("ok: no orphan rows")
    for info in roots:
        if not info.exists:
            fix = (f"correct ${info.env_var}" if info.from_env else
                   f"clapdex roots set {info.name}=PATH (or ${info.env_var})")
            lines.append(f"problem: root {info.name} is at {info.effective}, which is not a folder "
                         f"here ({info.files} file(s) under it); point it at the collection: "
                         f"{fix}")
    for name, count in unknown_roots.items():
        lines.append(f"problem: {count} file(s) are stored under root {name!r}, which the index "
                     f"does not define; give its location: clapdex roots set {name}=PATH")
    if missing:
        lines.append(f"problem: {len(missing)} indexed file(s) no longer exist; "
                     "run clapdex index --prune PATH to remove them")
        lines.extend(f"  missing: {path}" for path in missing)
    elif not away and not unknown_roots:
        lines.append("ok: every indexed file exists")
    lines.extend(f"repaired: {what}" for what in repaired)
    return DoctorReport(
        index=str(index_path), integrity=[], faiss=dense, orphans=orphans, missing_files=missing,
        stale_segments=int(len(stale)), repaired=repaired, faiss_lags=faiss_lags, roots=roots,
        unknown_roots=unknown_roots,
        ok=bool((dense["agree"] or faiss_lags) and not any(orphans.values())
                and not missing and not len(stale) and not away and not unknown_roots),
        lines=lines)


def _unknown_roots(store: IndexStore) -> dict[str, int]:
    """Files stored under a root name the index does not define, by name."""
    return {name: n for name, n in store.root_counts().items() if name not in store.settings.roots}


def _root_name(store: IndexStore, path: str) -> str | None:
    found = store.roots.split(path)
    return None if found is None else found[0].name


def redecompose_stale(store: IndexStore, chunk: int = 4096) -> int:
    """Re-decompose, under the write lock and the index's current settings, every segment that
    was decomposed under others. Returns how many."""
    from clapdex.concepts.decompose import decompose

    with store.write() as session:
        settings = store.settings
        ids = store.stale_segments()
        if not len(ids) or settings.audio_mean is None:
            return 0
        dictionary = store.dictionary()
        for first in range(0, len(ids), chunk):
            part, embeddings = store.segment_embeddings(ids[first:first + chunk])
            store.replace_postings(session, part, decompose(
                embeddings, dictionary, settings.audio_mean, sparsity=settings.sparsity,
                skip=store.silent_among(part)))
    return int(len(ids))


def _damaged_report(index_path, damage: list[str]) -> DoctorReport:
    lines = [f"problem: the database is damaged: {line}" for line in damage[:10]]
    lines.append("problem: run clapdex doctor --repair (it rebuilds indexes and totals); if that "
                 "is not enough, rebuild with clapdex index --rebuild")
    return DoctorReport(index=str(index_path), integrity=damage, faiss=None, orphans=None,
                        missing_files=None, stale_segments=None, lines=lines)


def _with_repair(report: DoctorReport, what: str) -> DoctorReport:
    report.repaired.insert(0, what)
    report.lines.append(f"repaired: {what}")
    return report
