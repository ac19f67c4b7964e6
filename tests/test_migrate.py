"""In-place upgrade of an older index (storage/migrate.py).

The schema-3 fixture is made the way the brief allows: index a folder with the current code
(spectral TEST DOUBLE, not CLAP), then downgrade the database to what schema 3 had: no
segments.concept_fidelity (nor its index), no index_settings.generation (the storage developer's
column, with a server default), schema_version 3. files.channels is dropped as well, as a stand-in
for any other nullable column: the upgrade must add each generically.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
import soundfile
from sqlalchemy import inspect, select

from clapdex.errors import IndexMismatchError, ReadOnlyIndexError, Remedy
from clapdex.indexer import index_paths
from clapdex.notices import set_handler
from clapdex.storage import migrate
from clapdex.storage.database import DB_FILE, IndexStore
from clapdex.storage.schema import (SCHEMA_VERSION, ConceptStatsRow, FileRow, IndexSettingsRow,
                                    SegmentRow)
from tests.doubles import SpectralTestEncoder, sine


def _concept_fidelity(store) -> dict[int, float]:
    with store.session() as session:
        return dict(session.execute(select(SegmentRow.id, SegmentRow.concept_fidelity)).all())


def downgrade_to_v3(root) -> None:
    connection = sqlite3.connect(root / DB_FILE)
    with connection:
        connection.execute("DROP INDEX ix_segments_concept_fidelity")
        connection.execute("ALTER TABLE segments DROP COLUMN concept_fidelity")
        connection.execute("ALTER TABLE files DROP COLUMN channels")
        connection.execute("ALTER TABLE index_settings DROP COLUMN generation")
        connection.execute("ALTER TABLE index_settings DROP COLUMN alpha")
        connection.execute("UPDATE index_settings SET schema_version = 3")
    connection.close()


@pytest.fixture
def fresh(tmp_path):
    """An index (the current schema) of tones, chords, silence and an off-vocabulary whistle."""
    audio = tmp_path / "audio"
    audio.mkdir()
    sr = 8000
    for f in (200, 440, 1000):
        soundfile.write(audio / f"tone_{f}.wav", sine(f, 5.0, sr), sr)
        soundfile.write(audio / f"chord_{f}.wav", sine(f, 3.0, sr) + sine(1.5 * f, 3.0, sr, 0.3), sr)
    soundfile.write(audio / "silence.wav", np.zeros(3 * sr, np.float32), sr)
    soundfile.write(audio / "whistle.wav", sine(3500, 3.0, sr), sr)
    vocab = tmp_path / "tones.txt"
    vocab.write_text("".join(f"a {f} hz tone\n" for f in (200, 300, 440, 660, 1000, 1500, 3000)))
    root = tmp_path / "index"
    index_paths([audio], SpectralTestEncoder(), root, vocabulary=str(vocab), show_progress=False)
    with IndexStore.open(root) as store:
        expected = _concept_fidelity(store)
    assert len(expected) >= 10 and all(v is not None for v in expected.values())
    return root, expected


@pytest.fixture
def notes():
    seen: list[str] = []
    set_handler(seen.append)
    yield seen
    set_handler(None)


def test_upgrade_fills_concept_fidelity_like_a_fresh_index(fresh, notes):
    root, expected = fresh
    downgrade_to_v3(root)
    with IndexStore.open(root) as store:
        columns = {c["name"] for c in inspect(store.engine).get_columns("segments")}
        assert "concept_fidelity" in columns
        upgraded = _concept_fidelity(store)
        assert upgraded.keys() == expected.keys()
        for segment, value in expected.items():
            # to float32 rounding: the first batch of a fresh index is decomposed with the
            # float64 μ_A, which is then stored as float32
            assert upgraded[segment] == pytest.approx(value, abs=1e-6)
        indexes = {i["name"] for i in inspect(store.engine).get_indexes("segments")}
        assert "ix_segments_concept_fidelity" in indexes
        with store.session() as session:
            assert session.scalar(select(IndexSettingsRow.schema_version)) == SCHEMA_VERSION
            # the generic part: a nullable column the database lacked is back, NULL
            assert set(session.scalars(select(FileRow.channels))) == {None}
            assert session.scalar(select(IndexSettingsRow.generation)) == 1  # default 0, + upgrade
            assert session.scalar(select(IndexSettingsRow.alpha)) is None
        assert store.settings.lam is not None  # the settings read as a whole again
    # its postings already have schema 6's layout: nothing is rebuilt, nothing announced
    assert len(notes) == 1 and "upgraded index" in notes[0] and "from schema version 3" in notes[0]
    with IndexStore.open(root):
        pass
    assert len(notes) == 1  # once


def test_upgraded_index_lists_the_same_poorly_explained_segments(fresh, notes):
    from clapdex.audit.queries import poorly_explained

    root, _ = fresh
    with IndexStore.open(root) as store:
        before = poorly_explained(store, limit=None)
    downgrade_to_v3(root)
    with IndexStore.open(root) as store:
        after = poorly_explained(store, limit=None)
    assert before[0] == after[0] >= 1
    assert {r.segment_id for r in before[1]} == {r.segment_id for r in after[1]}
    # silence.wav is flagged silent (schema 5), so `audit --flag silent` lists it, not this
    assert {r.path.rsplit("/", 1)[-1] for r in after[1]} == {"whistle.wav"}


def test_a_failed_upgrade_changes_nothing(fresh, notes, monkeypatch):
    root, _ = fresh
    downgrade_to_v3(root)

    def broken(connection):
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(migrate.FILLERS, ("segments", "concept_fidelity"), broken)
    with pytest.raises(RuntimeError, match="disk on fire"):
        IndexStore.open(root)
    connection = sqlite3.connect(root / DB_FILE)
    columns = {row[1] for row in connection.execute("PRAGMA table_info(segments)")}
    version = connection.execute("SELECT schema_version FROM index_settings").fetchone()[0]
    connection.close()
    assert "concept_fidelity" not in columns and version == 3  # the DDL was rolled back too
    assert not [n for n in notes if "upgraded index" in n]  # only the "upgrading" one
    monkeypatch.undo()
    with IndexStore.open(root) as store:
        assert None not in _concept_fidelity(store).values()


def test_read_only_old_index_says_to_open_it_writable(fresh, monkeypatch):
    import clapdex.storage.database as database

    root, _ = fresh
    downgrade_to_v3(root)
    monkeypatch.setattr(database, "is_writable", lambda folder: False)  # as for a read-only folder
    with pytest.raises(ReadOnlyIndexError, match="is read-only here") as error:
        IndexStore.open(root)
    assert error.value.remedy == Remedy("open-writable", str(root))  # the CLI words it
    from clapdex.cli.common import remedy_text
    assert "open it once where it can be written" in remedy_text(error.value.remedy)


@pytest.mark.parametrize("version", [2, SCHEMA_VERSION + 1])
def test_too_old_or_newer_index_is_refused(fresh, version):
    root, _ = fresh
    connection = sqlite3.connect(root / DB_FILE)
    with connection:
        connection.execute("UPDATE index_settings SET schema_version = ?", (version,))
    connection.close()
    with pytest.raises(IndexMismatchError, match=f"schema version {version}"):
        IndexStore.open(root)


def test_columns_are_added_generically_and_the_rule_is_enforced(tmp_path):
    """Any nullable or server-defaulted column a schema adds is added; a NOT NULL column without
    a server default is refused before anything changes."""
    from sqlalchemy import Column, Float, Integer, MetaData, String, Table, create_engine, text

    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE things (id INTEGER PRIMARY KEY, name VARCHAR(10))"))
        connection.execute(text("INSERT INTO things (id, name) VALUES (1, 'a'), (2, 'b')"))
    newer = MetaData()
    Table("things", newer, Column("id", Integer, primary_key=True), Column("name", String(10)),
          Column("score", Float, nullable=True, index=True),
          Column("kind", String(8), nullable=False, server_default="plain"))
    Table("extras", newer, Column("id", Integer, primary_key=True))
    with engine.begin() as connection:
        assert migrate.add_missing(connection, newer) == [("things", "score"), ("things", "kind")]
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT id, name, score, kind FROM things ORDER BY id")).all()
        assert [tuple(r) for r in rows] == [(1, "a", None, "plain"), (2, "b", None, "plain")]
        inspector = inspect(connection)
        assert "extras" in inspector.get_table_names()
        assert "ix_things_score" in {i["name"] for i in inspector.get_indexes("things")}
    strict = MetaData()
    Table("things", strict, Column("id", Integer, primary_key=True), Column("name", String(10)),
          Column("count", Integer, nullable=False))
    with engine.begin() as connection, pytest.raises(migrate.SchemaRuleError, match="things.count"):
        migrate.add_missing(connection, strict)
    engine.dispose()


def test_every_column_of_the_schema_could_be_added_by_an_upgrade():
    """schema.py's rule, checked for columns added from version 4 on (older ones are grandfathered:
    indexes older than UPGRADABLE_FROM are rebuilt, not upgraded)."""
    from clapdex.storage.schema import Base

    added_since_3 = {("segments", "concept_fidelity"), ("index_settings", "alpha"),
                     ("index_settings", "generation"), ("files", "warning"),
                     ("segments", "level_db"), ("segments", "clipped_fraction"),
                     ("segments", "silent"), ("segments", "clipped")}
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            if (table.name, column.name) in added_since_3:
                assert column.nullable or column.server_default is not None


# ---- PostgreSQL ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def postgres():
    import os

    from tests.postgres import REQUIRE_ENV, PostgresServer, PostgresUnavailable

    try:
        server = PostgresServer()
    except (PostgresUnavailable, OSError) as error:
        if os.environ.get(REQUIRE_ENV) == "1":
            raise
        pytest.skip(f"no PostgreSQL here: {error}")
    yield server
    server.stop()


def test_upgrade_on_postgresql(tmp_path, postgres, notes):
    """The same upgrade on a PostgreSQL index: columns added, concept fidelity filled, generation
    defaulted, the postings' primary key made covering (schema 6), version bumped, all in one
    transaction."""
    from sqlalchemy import create_engine, text

    from clapdex.concepts.decompose import audio_mean, decompose
    from clapdex.concepts.dictionary import ConceptDictionary
    from clapdex.storage.database import FileMeta, IndexSettings

    encoder = SpectralTestEncoder()
    names = [f"a {f} hz tone" for f in (200, 440, 1000, 3000)]
    text_embeddings = encoder.embed_text(names)
    dictionary = ConceptDictionary.from_text_embeddings(names, text_embeddings)
    windows = {"tone": np.stack([sine(440, 2.0, 8000)] * 2),
               "chord": (sine(200, 2.0, 8000) + sine(1000, 2.0, 8000, 0.3))[None, :],
               "silence": np.zeros((2, 16000), np.float32)}
    embeddings = {k: encoder.embed_audio(v) for k, v in windows.items()}
    mean = audio_mean(np.concatenate(list(embeddings.values()))).astype(np.float32)
    settings = IndexSettings(encoder_fingerprint=encoder.fingerprint, dimension=64,
                             sample_rate=8000, window_seconds=2.0, hop_seconds=2.0,
                             vocabulary_name="tones", vocabulary_hash="tones", lam=0.05,
                             audio_mean=mean)
    url = postgres.new_database_url()
    root = tmp_path / "pg-index"
    with IndexStore.create(root, settings, names, text_embeddings, database_url=url) as store:
        for name, emb in embeddings.items():
            starts = np.arange(len(emb)) * 2.0
            store.add_file(FileMeta(f"/audio/{name}.wav", size=1, mtime_ns=1), starts, starts + 2,
                           emb, decompose(emb, dictionary, mean.astype(np.float64), lam=0.05))
        expected = _concept_fidelity(store)
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("ALTER TABLE segments DROP COLUMN concept_fidelity"))
        connection.execute(text("ALTER TABLE index_settings DROP COLUMN generation"))
        connection.execute(text("ALTER TABLE index_settings DROP COLUMN alpha"))
        connection.execute(text("UPDATE index_settings SET schema_version = 3"))
        # the postings as schema 5 had them: a plain primary key and two more indexes
        postings = connection.execute(text("SELECT concept_id, segment_id, weight FROM postings "
                                           "ORDER BY 1, 2")).all()
        connection.execute(text("ALTER TABLE postings DROP CONSTRAINT postings_pkey"))
        connection.execute(text("ALTER TABLE postings ADD PRIMARY KEY (concept_id, segment_id)"))
        connection.execute(text("DROP INDEX ix_postings_segment_concept_weight"))
        connection.execute(text("CREATE INDEX ix_postings_segment ON postings (segment_id)"))
        connection.execute(text("CREATE INDEX ix_postings_concept_segment_weight "
                                "ON postings (concept_id, segment_id, weight)"))
    engine.dispose()
    assert len(postings) > 3
    with IndexStore.open(root) as store:
        key = inspect(store.engine).get_pk_constraint("postings")
        assert key["constrained_columns"] == ["concept_id", "segment_id"]
        assert key["dialect_options"]["postgresql_include"] == ["weight"]
        assert {i["name"] for i in inspect(store.engine).get_indexes("postings")} == \
            {"ix_postings_segment_concept_weight"}
        with store.engine.connect() as connection:
            assert connection.execute(text("SELECT concept_id, segment_id, weight FROM postings "
                                           "ORDER BY 1, 2")).all() == postings
        upgraded = _concept_fidelity(store)
        assert upgraded.keys() == expected.keys()
        for segment, value in expected.items():
            assert upgraded[segment] == pytest.approx(value, abs=1e-9)
        assert min(upgraded.values()) < 0.5 < max(upgraded.values())  # silence vs the tone
        assert store.generation() == 1
        indexes = {i["name"] for i in inspect(store.engine).get_indexes("segments")}
        assert "ix_segments_concept_fidelity" in indexes
    assert len(notes) == 2 and "from schema version 3" in notes[1]


EXPRESSIONS = ("a 440 hz tone", "a 200 hz tone OR a 440 hz tone", "a 440 hz tone AND NOT a 300 hz tone")


# What postings looked like up to schema 5: a rowid table, its primary key's index and two more.
_V5_POSTINGS = """CREATE TABLE postings (concept_id INTEGER NOT NULL, segment_id INTEGER NOT NULL,
    weight FLOAT NOT NULL, PRIMARY KEY (concept_id, segment_id),
    FOREIGN KEY(concept_id) REFERENCES concepts (id),
    FOREIGN KEY(segment_id) REFERENCES segments (id) ON DELETE CASCADE)"""


def downgrade_postings_to_v5(connection: sqlite3.Connection) -> None:
    connection.execute("CREATE TABLE old_postings AS SELECT * FROM postings")
    connection.execute("DROP TABLE postings")
    connection.execute(_V5_POSTINGS)
    connection.execute("INSERT INTO postings SELECT * FROM old_postings ORDER BY segment_id")
    connection.execute("DROP TABLE old_postings")
    connection.execute("CREATE INDEX ix_postings_segment ON postings (segment_id)")
    connection.execute("CREATE INDEX ix_postings_concept_segment_weight "
                       "ON postings (concept_id, segment_id, weight)")


def _postings_layout(connection: sqlite3.Connection) -> tuple:
    """(WITHOUT ROWID?, primary key, foreign keys, {index: columns}) of the postings table."""
    table = connection.execute("SELECT sql FROM sqlite_master WHERE type = 'table' "
                               "AND name = 'postings'").fetchone()[0]
    key = [r[1] for r in sorted(connection.execute("PRAGMA table_info(postings)"),
                                key=lambda r: r[5]) if r[5]]
    foreign = {(r[2], r[3], r[4], r[6]) for r in connection.execute(
        "PRAGMA foreign_key_list(postings)")}
    indexes = {name: [r[2] for r in connection.execute(f"PRAGMA index_info({name})")]
               for (name,) in connection.execute(
                   "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'postings' "
                   "AND sql IS NOT NULL")}
    return "WITHOUT ROWID" in table.upper(), key, foreign, indexes


def test_a_v4_index_trades_the_weight_ordered_postings_index_for_the_appending_one(fresh, notes):
    """Schema 5 replaced ix_postings_concept_weight (concept, weight, segment): the upgrade drops
    it (and, since schema 6, the whole old postings table); audit answers stay the same."""
    from clapdex.audit.queries import audit

    root, _ = fresh
    with IndexStore.open(root) as store:
        before = [audit(store, e, limit=None) for e in EXPRESSIONS]
    connection = sqlite3.connect(root / DB_FILE)
    with connection:
        downgrade_postings_to_v5(connection)
        connection.execute("DROP INDEX ix_postings_concept_segment_weight")
        connection.execute("CREATE INDEX ix_postings_concept_weight "
                           "ON postings (concept_id, weight, segment_id)")
        connection.execute("ALTER TABLE concept_stats DROP COLUMN max_weight")
        connection.execute("UPDATE index_settings SET schema_version = 4")
        exact = dict(connection.execute("SELECT concept_id, max(weight) FROM postings "
                                        "GROUP BY concept_id"))
    connection.close()
    with IndexStore.open(root) as store:
        with store.session() as session:  # filled by the upgrade, from the postings
            assert dict(session.execute(select(ConceptStatsRow.concept_id,
                                               ConceptStatsRow.max_weight)).all()) == exact
        indexes = {i["name"] for i in inspect(store.engine).get_indexes("postings")}
        assert indexes == {"ix_postings_segment_concept_weight"}
        after = [audit(store, e, limit=None) for e in EXPRESSIONS]
        with store.session() as session:
            assert session.scalar(select(IndexSettingsRow.schema_version)) == SCHEMA_VERSION == 6
    assert before == after and before[0].n_segments > 0
    assert len(notes) == 2 and "from schema version 4" in notes[1]


def test_a_v5_index_gets_its_postings_clustered_by_concept(fresh, notes):
    """Schema 6: the postings table becomes the (concept, segment) B-tree itself (WITHOUT ROWID)
    with one covering segment index; every posting, audit answer, search file and foreign key
    survives the copy, and the index goes on taking writes."""
    from clapdex.audit.queries import audit

    root, _ = fresh
    connection = sqlite3.connect(root / DB_FILE)
    fresh_layout = _postings_layout(connection)
    rows = sorted(connection.execute("SELECT concept_id, segment_id, weight FROM postings"))
    connection.close()
    with IndexStore.open(root) as store:
        before = [audit(store, e, limit=None) for e in EXPRESSIONS]
        _, matrix_before = store.concept_matrix()
    assert fresh_layout[0] and len(rows) > 10
    connection = sqlite3.connect(root / DB_FILE)
    with connection:
        downgrade_postings_to_v5(connection)
        connection.execute("UPDATE index_settings SET schema_version = 5")
    assert not _postings_layout(connection)[0]
    connection.close()
    with IndexStore.open(root) as store:
        assert [audit(store, e, limit=None) for e in EXPRESSIONS] == before
        _, matrix_after = store.concept_matrix()
        assert (matrix_after != matrix_before).nnz == 0
        with store.engine.connect() as c:  # foreign keys are checked again on the pooled connection
            assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        store.remove_file(store.files()[0].path)  # a write after the upgrade
    connection = sqlite3.connect(root / DB_FILE)
    upgraded_layout = _postings_layout(connection)
    left = connection.execute("SELECT count(*) FROM postings").fetchone()[0]
    assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert connection.execute("PRAGMA foreign_key_check").fetchall() == []
    connection.close()
    assert upgraded_layout == fresh_layout  # the same table and index as a new index's
    assert 0 < left < len(rows)
    assert len(notes) == 2 and "from schema version 5" in notes[1]
    assert notes[0].startswith(f"upgrading index {root} from schema version 5 to 6: rebuilding "
                               "the postings table")


def test_a_failed_reshape_keeps_the_old_postings(fresh, notes, monkeypatch):
    root, _ = fresh
    connection = sqlite3.connect(root / DB_FILE)
    with connection:
        downgrade_postings_to_v5(connection)
        connection.execute("UPDATE index_settings SET schema_version = 5")
    before = _postings_layout(connection)
    connection.close()

    def broken(connection):
        raise RuntimeError("disk on fire")

    monkeypatch.setitem(migrate.FILLERS, ("segments", "concept_fidelity"), broken)
    monkeypatch.setattr(migrate, "add_missing", lambda connection: [("segments", "concept_fidelity")])
    with pytest.raises(RuntimeError, match="disk on fire"):
        IndexStore.open(root)
    connection = sqlite3.connect(root / DB_FILE)
    assert _postings_layout(connection) == before  # the copy and the DROP TABLE rolled back
    assert len(notes) == 1 and "upgrading index" in notes[0]  # said before, never "upgraded"
    assert connection.execute("SELECT schema_version FROM index_settings").fetchone()[0] == 5
    connection.close()
