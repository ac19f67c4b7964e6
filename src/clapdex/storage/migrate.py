"""In-place upgrade of an index written by an older clapdex (schema version UPGRADABLE_FROM or later).

One transaction, all or nothing:
0. tables whose layout changed are rebuilt (RESHAPES: schema 6 clusters the postings by
   (concept, segment));
1. tables the current schema has and the database lacks are created (with their indexes);
2. columns the current schema has and a table lacks are added (ALTER TABLE ... ADD COLUMN), found
   by comparing the SQLAlchemy metadata with the database inspector, so a column any developer
   adds is upgraded without code here, provided it is nullable or has a server_default;
3. indexes the schema declares and the database lacks are created, and clapdex's own (ix_*) that
   it no longer declares are dropped (schema 5 replaced the postings' weight-ordered index);
4. columns computed from stored data are filled in (FILLERS: concept fidelity from the stored
   postings, embeddings, μ_A and concept embeddings; no audio is decoded or encoded);
5. the schema version is bumped.

Everything goes through SQLAlchemy Core, so it works on SQLite and PostgreSQL alike (both have
transactional DDL). Two processes upgrading at once: the second waits for the first's write
transaction, then finds the version current and does nothing.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

import numpy as np
from sqlalchemy import (Connection, Engine, MetaData, Table, bindparam, func, inspect, select,
                        update)
from sqlalchemy.schema import CreateColumn, CreateTable

from clapdex.storage.engine import WRITE_OPTION
from clapdex.storage.postings import postings_to_csr
from clapdex.storage.schema import (SCHEMA_VERSION, Base, ConceptRow, ConceptStatsRow,
                                    IndexSettingsRow, PostingRow, SegmentRow)

UPGRADABLE_FROM = 3  # older indexes are rebuilt (they predate the projection columns)
_CHUNK = 4096        # segments per fill step: bounds the (rows, d) embedding block


class SchemaRuleError(RuntimeError):
    """A programming error: a new column that an upgrade cannot add (not nullable, no default)."""


def upgrade(engine: Engine, announce: Callable[[int, str], None] | None = None) -> int | None:
    """Upgrade the database to SCHEMA_VERSION in one transaction. Returns the version it had, or
    None when it was already current (e.g. another process upgraded it meanwhile). `announce`
    is called with (the version, what is rebuilt) before a table is rebuilt: the slow part."""
    with engine.connect() as connection, _foreign_keys_unchecked(connection):
        # A writer's transaction (engine.py: SQLite BEGIN IMMEDIATE), and the settings row locked
        # (PostgreSQL), so a concurrent upgrader waits here and then sees the new version.
        connection.execution_options(**{WRITE_OPTION: True})
        _begin_write(connection)
        try:
            version = connection.scalar(select(IndexSettingsRow.schema_version)
                                        .where(IndexSettingsRow.id == 1).with_for_update())
            if version is None or version >= SCHEMA_VERSION:
                connection.rollback()
                return None
            for below, what, needed, reshape in RESHAPES:
                if version < below and needed(connection):
                    if announce is not None:
                        announce(int(version), what)
                    reshape(connection)
            added = add_missing(connection)
            for table, column in added:
                filler = FILLERS.get((table, column))
                if filler is not None:
                    filler(connection)
            connection.execute(update(IndexSettingsRow).where(IndexSettingsRow.id == 1)
                               .values(schema_version=SCHEMA_VERSION,  # and derived files rebuild:
                                       generation=IndexSettingsRow.generation + 1))
            connection.commit()
        except BaseException:
            connection.rollback()
            raise
    return int(version)


@contextmanager
def _foreign_keys_unchecked(connection: Connection) -> Iterator[None]:
    """DIALECT SPOT. SQLite checks every row a reshape copies against its parent rows (two
    look-ups per posting: 20 s instead of 1 s at 100k segments); the rows were checked when they
    were written. The pragma only takes effect outside a transaction, so it is set before the
    upgrade's begins, and restored for the pooled connection afterwards."""
    raw = connection.connection.dbapi_connection if connection.dialect.name == "sqlite" else None
    if raw is not None:
        raw.execute("PRAGMA foreign_keys=OFF")
    try:
        yield
    finally:
        if raw is not None:
            raw.execute("PRAGMA foreign_keys=ON")


def _begin_write(connection: Connection) -> None:
    """DIALECT SPOT. SQLite DDL must run inside the transaction (ALTER TABLE is transactional
    there). engine.py begins every transaction itself; this makes sure of it for an engine that
    leaves it to Python's sqlite3 driver, which begins none before DDL."""
    connection.execute(select(1))  # SQLAlchemy's autobegin (and any 'begin' hook) happens here
    if connection.dialect.name == "sqlite":
        raw = connection.connection.dbapi_connection
        if not raw.in_transaction:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


def missing_columns(connection: Connection, metadata: MetaData = Base.metadata
                    ) -> list[tuple[Table, object]]:
    """(table, column) for every schema column that an existing table of the database lacks."""
    inspector = inspect(connection)
    present = set(inspector.get_table_names())
    missing = []
    for table in metadata.sorted_tables:
        if table.name not in present:
            continue  # created whole by create_all
        have = {c["name"] for c in inspector.get_columns(table.name)}
        missing += [(table, column) for column in table.columns if column.name not in have]
    return missing


def add_missing(connection: Connection, metadata: MetaData = Base.metadata) -> list[tuple[str, str]]:
    """Create missing tables, add missing columns, create missing indexes. Returns the
    (table name, column name) pairs added to existing tables."""
    columns = missing_columns(connection, metadata)
    for table, column in columns:
        if column.primary_key or not (column.nullable or column.server_default is not None):
            raise SchemaRuleError(
                f"column {table.name}.{column.name} cannot be added to an existing index: new "
                f"columns must be nullable or have a server_default (storage/schema.py)")
    metadata.create_all(connection, checkfirst=True)  # new tables, with their indexes
    preparer = connection.dialect.identifier_preparer
    for table, column in columns:
        ddl = CreateColumn(column).compile(dialect=connection.dialect)
        connection.exec_driver_sql(f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {ddl}")
    inspector = inspect(connection)  # a fresh one: the old one caches what it has read
    for table in metadata.sorted_tables:
        have = {i["name"] for i in inspector.get_indexes(table.name)}
        declared = {index.name for index in table.indexes}
        for name in sorted(have - declared):
            if name.startswith("ix_"):  # ours (SQLite's autoindexes and PK indexes are not)
                connection.exec_driver_sql(f"DROP INDEX {preparer.quote(name)}")
        for index in table.indexes:
            if index.name not in have:
                index.create(connection)
    return [(table.name, column.name) for table, column in columns]


# ---- tables whose layout changed ---------------------------------------------------------------

def postings_need_reshape(connection: Connection) -> bool:
    """Whether the postings table still has its schema-5 layout. DIALECT SPOT."""
    if connection.dialect.name == "sqlite":
        declared = connection.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'postings'").scalar()
        return declared is not None and "WITHOUT ROWID" not in declared.upper()
    if connection.dialect.name == "postgresql":
        key = inspect(connection).get_pk_constraint("postings")
        return bool(key.get("name")) and \
            not key.get("dialect_options", {}).get("postgresql_include")
    return False


def reshape_postings(connection: Connection) -> None:
    """Schema 6: the postings clustered by (concept_id, segment_id), no second copy in concept
    order (schema.PostingRow). SQLite cannot change a table into WITHOUT ROWID: the rows are
    copied, in the new key's order (each insert appends), into a new table that replaces the old
    one (its indexes go with it); PostgreSQL's primary key is rebuilt to include the weight. The
    old indexes that remain are dropped and the new one built by add_missing. DIALECT SPOT."""
    if connection.dialect.name == "sqlite":
        staged = MetaData()  # with the tables its foreign keys name
        for parent in (ConceptRow, SegmentRow):
            parent.__table__.to_metadata(staged)
        staging = PostingRow.__table__.to_metadata(staged, name="postings_reshaped")
        connection.execute(CreateTable(staging))  # the table alone: its index is built after
        connection.exec_driver_sql(
            "INSERT INTO postings_reshaped (concept_id, segment_id, weight) SELECT concept_id, "
            "segment_id, weight FROM postings ORDER BY concept_id, segment_id")
        connection.exec_driver_sql("DROP TABLE postings")
        connection.exec_driver_sql("ALTER TABLE postings_reshaped RENAME TO postings")
    elif connection.dialect.name == "postgresql":
        key = inspect(connection).get_pk_constraint("postings")
        preparer = connection.dialect.identifier_preparer
        connection.exec_driver_sql(f"ALTER TABLE postings DROP CONSTRAINT "
                                   f"{preparer.quote(key['name'])}")
        connection.exec_driver_sql("ALTER TABLE postings ADD PRIMARY KEY (concept_id, segment_id) "
                                   "INCLUDE (weight)")


# (schema version, what is rebuilt, whether it still has to be, the rebuild): run for an index
# older than that version, before columns are added.
RESHAPES: list[tuple[int, str, Callable[[Connection], bool], Callable[[Connection], None]]] = [
    (6, "the postings table", postings_need_reshape, reshape_postings),
]


# ---- computed columns ---------------------------------------------------------------------------

def fill_concept_fidelity(connection: Connection) -> None:
    """segments.concept_fidelity = cos(Cw, z) from the stored weights, embeddings, μ_A and concept
    text embeddings: the same numbers a fresh index computes (decompose.concept_fidelity)."""
    from clapdex.concepts.decompose import concept_fidelity
    from clapdex.concepts.dictionary import ConceptDictionary

    settings = connection.execute(select(IndexSettingsRow.audio_mean, IndexSettingsRow.dimension)
                                  .where(IndexSettingsRow.id == 1)).one()
    concepts = connection.execute(select(ConceptRow.name, ConceptRow.embedding)
                                  .order_by(ConceptRow.id)).all()
    if settings.audio_mean is None or not concepts:
        return  # nothing was ever decomposed: no segment to fill
    mean = np.frombuffer(settings.audio_mean, dtype="<f4").astype(np.float64)
    dictionary = ConceptDictionary.from_text_embeddings(
        [c.name for c in concepts], np.stack([np.frombuffer(c.embedding, dtype="<f4")
                                              for c in concepts]))
    segments = SegmentRow.__table__
    last = -1
    while True:
        rows = connection.execute(select(segments.c.id, segments.c.embedding)
                                  .where(segments.c.id > last).order_by(segments.c.id)
                                  .limit(_CHUNK)).all()
        if not rows:
            return
        ids = np.array([r.id for r in rows], dtype=np.int64)
        embeddings = np.stack([np.frombuffer(r.embedding, dtype="<f4") for r in rows])
        postings = connection.execute(
            select(PostingRow.segment_id, PostingRow.concept_id, PostingRow.weight)
            .where(PostingRow.segment_id.between(int(ids[0]), int(ids[-1])))).all()
        weights = postings_to_csr(ids, postings, dictionary.size)
        values = concept_fidelity(weights, dictionary, embeddings, mean)
        connection.execute(update(segments).where(segments.c.id == bindparam("segment")), [
            {"segment": int(i), "concept_fidelity": float(v)} for i, v in zip(ids, values)])
        last = int(ids[-1])


def fill_max_weight(connection: Connection) -> None:
    """concept_stats.max_weight: each concept's largest posting weight (one pass per concept over
    its range of the postings index)."""
    largest = (select(func.max(PostingRow.weight))
               .where(PostingRow.concept_id == ConceptStatsRow.concept_id).scalar_subquery())
    connection.execute(update(ConceptStatsRow).values(max_weight=largest))


# (table, column) -> fills the column of every existing row, on the upgrade's connection.
FILLERS: dict[tuple[str, str], Callable[[Connection], None]] = {
    ("segments", "concept_fidelity"): fill_concept_fidelity,
    ("concept_stats", "max_weight"): fill_max_weight,
}


def read_only_message(root, version: int) -> str:
    return (f"index {root} was written by an older clapdex (schema version {version}, this one "
            f"uses {SCHEMA_VERSION}) and is read-only here")
