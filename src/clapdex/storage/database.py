"""IndexStore: one index folder, its database, its settings, and bulk reads and writes.

Layout of an index folder:
    clapdex.sqlite   the database (SQLite, the embedded default), or
    database.url     one line holding an SQLAlchemy URL (e.g. postgresql+psycopg://...) instead
    dense.faiss      the FAISS index of segment embeddings, always rebuildable from the database

Every change goes through `IndexStore.write()`: one transaction that holds the index's write lock
(SQLite: BEGIN IMMEDIATE; PostgreSQL: the settings row locked FOR UPDATE) from its first statement
to its commit, re-reads the settings under that lock, and moves the database's generation on. A
second writer waits for the lock. Every write that makes a file visible (its row, segments and
postings) is one such transaction, so an interrupted run never leaves a half-indexed file behind.
"""

from __future__ import annotations

import dataclasses
import os
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import scipy.sparse as sp
from sqlalchemy import Text, bindparam, delete, func, insert, select, type_coerce, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DatabaseError
from sqlalchemy.orm import Session, sessionmaker

from clapdex.errors import (ClapdexError, IndexChangedError,  # noqa: F401 (re-exported)
                            IndexDamagedError, IndexMismatchError, IndexNotFoundError,
                            ReadOnlyIndexError, Remedy, RootError)
from clapdex.storage import concept_stats  # audit totals, kept in step with every write
from clapdex.storage.engine import (DB_FILE, LOCK_WAIT_SECONDS, URL_FILE, WRITE_OPTION, damaged,
                                    index_error, index_url, insert_rows, is_writable,
                                    make_engine,
                                    open_error, read_only_sqlite_url, reason, shown_url)
from clapdex.printable import one_line
from clapdex.storage.postings import postings_to_csr
from clapdex.storage.roots import Root, Roots, check_name, location_of, nested
from clapdex.storage.schema import (ROOT_MARK, SCHEMA_VERSION, Base, ConceptRow, FileRow,
                                    IndexSettingsRow, OsText, PostingRow, SegmentRow,
                                    parse_root_form, to_blob, utcnow)
from clapdex.storage.settings import IndexSettings, settings_from_row, settings_to_columns

FAISS_FILE = "dense.faiss"
_CHUNK = 20_000  # rows per bulk statement


@dataclass
class FileMeta:
    """What the indexer knows about a file before storing it."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str | None = None
    duration: float | None = None
    sample_rate: int | None = None
    channels: int | None = None
    warning: str | None = None   # damaged or cut short: what was decoded (audio.DecodeReport)


class IndexStore:
    """An open index. Use `create` or `open`, then `close` (or use it as a context manager)."""

    def __init__(self, root: Path, engine: Engine, read_only: bool = False):
        self.root = root
        self.engine = engine
        self.read_only = read_only  # the folder cannot be written: opened read-only, without WAL
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._settings: IndexSettings | None = None
        self._roots: tuple[IndexSettings, Roots] | None = None
        # schema.FilePath translates files.path through the roots of this index (storage/roots.py).
        engine.dialect.clapdex_paths = lambda: self.roots

    # ---- lifecycle -------------------------------------------------------------------------

    @staticmethod
    def exists(root: str | Path) -> bool:
        root = Path(root)
        return (root / DB_FILE).exists() or (root / URL_FILE).exists()

    @staticmethod
    def require_writable(root: str | Path) -> None:
        """Raise a one-line ClapdexError unless an index can be created or changed at `root`.
        Commands that write call this before any work."""
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise ClapdexError(f"{root} is a file, not an index folder")
        if (root / URL_FILE).exists():
            return  # a database server decides who may write
        if root.is_dir():
            if not is_writable(root):
                raise ReadOnlyIndexError(f"index {root} is read-only (its folder or database "
                                         f"cannot be written); this command changes the index")
            return
        parent = root.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise ClapdexError(f"cannot create index folder {root}: {parent} is a file")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise ReadOnlyIndexError(f"cannot create index folder {root}: permission denied")

    @staticmethod
    def check_location(root: str | Path, database_url: str) -> None:
        """Raise IndexMismatchError unless the existing index at `root` keeps its data in the
        database `database_url` names."""
        root = Path(root)
        stored = index_url(root)
        if isinstance(stored, str) and stored == database_url.strip():
            return
        where = shown_url(stored) if isinstance(stored, str) else f"its SQLite file {root / DB_FILE}"
        raise IndexMismatchError(f"index {root} keeps its data in {where}, not in "
                                 f"{shown_url(database_url)}")

    @classmethod
    def create(cls, root: str | Path, settings: IndexSettings, concept_names: Sequence[str],
               concept_embeddings: np.ndarray, database_url: str | None = None) -> "IndexStore":
        """Create a new, empty index. Refuses to overwrite an existing one."""
        root = Path(root)
        if cls.exists(root):
            raise ClapdexError(f"an index already exists at {root}")
        if len(concept_names) != len(concept_embeddings):
            raise ValueError("one embedding per concept name is required")
        cls.require_writable(root)
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise ClapdexError(f"cannot create index folder {root}: "
                               f"{(error.strerror or str(error)).lower()}") from None
        settings = dataclasses.replace(settings, settings_version=0, build_id=_new_build_id())
        if database_url:
            make_engine(database_url, root).dispose()  # a bad URL: one line, nothing written
            (root / URL_FILE).write_text(database_url + "\n")
        engine = make_engine(index_url(root), root)
        store = cls(root, engine)
        try:
            Base.metadata.create_all(engine)
            with store._transaction() as session:
                if session.get(IndexSettingsRow, 1) is not None:
                    raise ClapdexError(f"the database {store.location()} already holds an index; "
                                       "give an empty database")
                session.execute(insert(IndexSettingsRow), [dict(
                    id=1, schema_version=SCHEMA_VERSION, **settings_to_columns(settings))])
                store._insert_concepts(session, concept_names, concept_embeddings)
                concept_stats.initialize(session)
        except BaseException as error:
            store.close()
            if database_url:
                (root / URL_FILE).unlink(missing_ok=True)
            if isinstance(error, DatabaseError):
                raise ClapdexError(f"cannot create index {root} in {shown_url(database_url)} "
                                   f"({reason(error)})") from None
            raise
        store._settings = settings
        return store

    @classmethod
    def rebuild(cls, root: str | Path, settings: IndexSettings, concept_names: Sequence[str],
                concept_embeddings: np.ndarray) -> "IndexStore":
        """Empty the index at `root` and give it new settings and concepts (`clapdex index
        --rebuild`). One write transaction: a writer running meanwhile waits for it, then finds a
        new build (IndexChangedError) instead of writing into it. Segment ids go on from where
        they were (never reused), a database.url is kept. An index that cannot be opened (damaged,
        another schema version) is deleted and created afresh."""
        root = Path(root)
        try:
            store = cls.open(root, write=True)
        except (IndexDamagedError, IndexMismatchError):
            cls.destroy(root)
            return cls.create(root, settings, concept_names, concept_embeddings)
        try:
            with store.write() as session:
                for table in reversed(Base.metadata.sorted_tables):
                    if table is not IndexSettingsRow.__table__:
                        session.execute(delete(table))
                new = dataclasses.replace(settings, build_id=_new_build_id(),
                                          settings_version=store.settings.settings_version + 1,
                                          roots=store.settings.roots)  # where the files are
                session.execute(update(IndexSettingsRow).where(IndexSettingsRow.id == 1).values(
                    schema_version=SCHEMA_VERSION, created_at=utcnow(), updated_at=utcnow(),
                    **settings_to_columns(new)))
                store._insert_concepts(session, concept_names, concept_embeddings)
                concept_stats.initialize(session)
            store._settings = new
            (root / FAISS_FILE).unlink(missing_ok=True)  # of the old build: rebuilt when opened
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    def open(cls, root: str | Path, write: bool = False) -> "IndexStore":
        """Open an existing index. A folder that cannot be written is opened read-only (every
        read works, a write raises ReadOnlyIndexError); `write` refuses such a folder up front.
        A damaged database raises IndexDamagedError naming the rebuild command."""
        root = Path(root)
        if root.exists() and not root.is_dir():
            raise IndexNotFoundError(f"{root} is a file, not an index folder")
        if not cls.exists(root):
            raise IndexNotFoundError(f"no index at {root}", remedy=Remedy("create", str(root)))
        if write:
            cls.require_writable(root)
        read_only = not (root / URL_FILE).exists() and not is_writable(root)
        url = read_only_sqlite_url(root) if read_only else index_url(root)
        store = cls(root, make_engine(url, root, read_only), read_only)
        try:
            version = store._schema_version()
        except DatabaseError as error:
            store.close()
            raise open_error(root, error) from None
        except BaseException:
            store.close()
            raise
        if version != SCHEMA_VERSION:
            store._upgrade(version)
        try:
            store.roots  # a damaged roots setting or nesting $CLAPDEX_ROOT_ values: one line now
        except BaseException:
            store.close()
            raise
        return store

    def _upgrade(self, version: int) -> None:
        """An older index is upgraded in place when it can be written (storage/migrate.py); a
        newer one, one too old to upgrade, or a read-only one is refused with what to do."""
        from clapdex.notices import notify
        from clapdex.storage import migrate

        root = self.root
        if not (migrate.UPGRADABLE_FROM <= version < SCHEMA_VERSION):
            self.close()
            raise IndexMismatchError(
                f"index {root} has schema version {version}, this clapdex needs {SCHEMA_VERSION}",
                remedy=Remedy("rebuild", str(root)))
        if self.read_only:
            self.close()
            raise ReadOnlyIndexError(migrate.read_only_message(root, version),
                                     remedy=Remedy("open-writable", str(root)))
        def announce(version: int, rebuilt: str) -> None:  # minutes at scale: say so before
            notify(f"upgrading index {root} from schema version {version} to {SCHEMA_VERSION}: "
                   f"rebuilding {rebuilt} (minutes at a million segments)")

        try:
            upgraded = migrate.upgrade(self.engine, announce)
        except BaseException:
            self.close()
            raise
        self._settings = None
        if upgraded is not None:
            notify(f"upgraded index {root} from schema version {upgraded} to {SCHEMA_VERSION} "
                   f"in place (new columns filled from the stored data; nothing was re-encoded)")

    @classmethod
    def destroy(cls, root: str | Path) -> None:
        """Delete an index's data (database tables or SQLite files, and the FAISS file), keeping
        the folder and a database.url. Used by `clapdex index --rebuild`."""
        root = Path(root)
        if (root / URL_FILE).exists():
            engine = make_engine(index_url(root), root)
            try:
                Base.metadata.drop_all(engine)
            finally:
                engine.dispose()
        for name in (DB_FILE, DB_FILE + "-wal", DB_FILE + "-shm", FAISS_FILE):
            (root / name).unlink(missing_ok=True)

    def disk_usage(self) -> dict:
        """Bytes used: the database (SQLite: the file with its WAL; a server: the database's size
        as the server reports it) and the FAISS file (None if absent)."""
        def size(*names):
            paths = [self.root / n for n in names if (self.root / n).exists()]
            return sum(p.stat().st_size for p in paths) if paths else None
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect() as connection:
                database = connection.exec_driver_sql(
                    "SELECT pg_database_size(current_database())").scalar()
        else:
            database = size(DB_FILE, DB_FILE + "-wal", DB_FILE + "-shm")
        return {"database_bytes": database, "faiss_bytes": size(FAISS_FILE)}

    def location(self) -> str:
        """Where the data lives: the SQLite file, or the server URL without its password."""
        return str(self.root / DB_FILE) if self.engine.dialect.name == "sqlite" else \
            shown_url(self.engine.url)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> "IndexStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session for reading. Changes go through `write`."""
        with self._sessions() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction holding the index's write lock until it commits (or rolls back).

        Waits while another process holds the lock (engine.LOCK_WAIT_SECONDS at most). Inside,
        `self.settings` are the stored ones, read under the lock, so no other writer can change
        them before the commit; the generation is moved on. Never nest: a second `write` in the
        same process waits for the first one until it gives up.
        """
        try:
            with self._transaction() as session:
                # PostgreSQL: the row lock is the write lock; SQLite took it with BEGIN IMMEDIATE.
                row = session.scalars(select(IndexSettingsRow).where(IndexSettingsRow.id == 1)
                                      .with_for_update()).first()
                if row is None:
                    raise damaged(self.root, "no settings row")
                self._settings = settings_from_row(row)
                session.execute(update(IndexSettingsRow).where(IndexSettingsRow.id == 1)
                                .values(generation=IndexSettingsRow.generation + 1))
                yield session
        except BaseException:
            self._settings = None  # rolled back: read the stored settings again
            raise

    @contextmanager
    def _transaction(self) -> Iterator[Session]:
        """A transaction begun as a writer's (SQLite: BEGIN IMMEDIATE), committed at the end."""
        with self.engine.connect() as connection:
            connection.execution_options(**{WRITE_OPTION: True})
            with connection.begin():
                if connection.dialect.name == "postgresql":
                    connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_WAIT_SECONDS}s'")
                with Session(bind=connection, expire_on_commit=False) as session:
                    yield session
                    session.flush()

    def generation(self) -> int:
        """The database's generation: it moves on with every write transaction, so a file derived
        from the database can say which state it reflects (0 for a new index)."""
        return self.state()[1]

    def state(self) -> tuple[str | None, int]:
        """(build id, generation), read now. Segment ids are never reused within a build, so a
        derived file of the same build can be brought up to date by ids; of another build, not."""
        with self.session() as session:
            row = session.execute(select(IndexSettingsRow.build_id, IndexSettingsRow.generation)
                                  .where(IndexSettingsRow.id == 1)).first()
        if row is None:
            raise damaged(self.root, "no settings row")
        return row[0], int(row[1])

    @property
    def faiss_path(self) -> Path:
        return self.root / FAISS_FILE

    # ---- settings --------------------------------------------------------------------------

    def _schema_version(self) -> int:
        """The stored schema version, read alone: an older index lacks newer settings columns."""
        with self.session() as session:
            version = session.scalar(select(IndexSettingsRow.schema_version)
                                     .where(IndexSettingsRow.id == 1))
        if version is None:
            raise damaged(self.root, "no settings row")
        return int(version)

    def _settings_row(self) -> IndexSettingsRow:
        try:
            with self.session() as session:
                row = session.get(IndexSettingsRow, 1)
        except (ValueError, TypeError, OverflowError) as error:  # e.g. a zeroed date column
            raise damaged(self.root, f"settings row unreadable: {reason(error)}") from None
        if row is None:
            raise damaged(self.root, "no settings row")
        if not isinstance(row.dimension, int) or not 0 < row.dimension <= 1 << 16:
            raise damaged(self.root, f"implausible embedding dimension {row.dimension!r}")
        for blob, size, what in ((row.audio_mean, row.dimension, "audio mean"),
                                 (row.projection, row.dimension ** 2, "projection")):
            if blob is not None:
                self._vectors([blob], size, what)
        return row

    def _vectors(self, blobs: Sequence[bytes], size: int, what: str,
                 ids: Sequence[int] | None = None) -> np.ndarray:
        """Stacked float32 vectors of `size` values; a blob of another length (a tampered or
        damaged row) is a one-line IndexDamagedError, not a numpy ValueError."""
        blobs = [bytes(b) if isinstance(b, (bytearray, memoryview)) else b for b in blobs]
        for position, blob in enumerate(blobs):
            if not isinstance(blob, bytes) or len(blob) != 4 * size:
                held = f"{len(blob) / 4:g} values" if isinstance(blob, bytes) else "no vector"
                label = f"{what} {ids[position]}" if ids is not None else what
                raise damaged(self.root, f"{label} holds {held}, expected {size}")
        if not blobs:
            return np.zeros((0, size), np.float32)
        return np.frombuffer(b"".join(blobs), dtype="<f4").astype(np.float32).reshape(-1, size)

    @property
    def settings(self) -> IndexSettings:
        if self._settings is None:
            self._settings = settings_from_row(self._settings_row())
        return self._settings

    @property
    def roots(self) -> Roots:
        """The index's roots for this process: the stored locations, $CLAPDEX_ROOT_<NAME>."""
        settings = self._settings or self.settings
        if self._roots is None or self._roots[0] is not settings:
            self._roots = (settings, Roots(settings.roots, str(self.root)))
        return self._roots[1]

    def set_root(self, name: str, location: str | os.PathLike) -> Root:
        """Define the root `name` at `location` (an existing folder), or move it there: its files'
        rows are relative to it and stay as they are. Files stored with absolute paths under the
        location become relative to the root (a file indexed both ways keeps the root's row).
        One write transaction. RootError for a bad name, a missing folder, roots that would nest,
        or a root whose location this process takes from $CLAPDEX_ROOT_<NAME>."""
        name, location = check_name(name), location_of(location)
        with self.write() as session:
            roots = dict(self.settings.roots)
            current = self.roots.roots
            clash = next((other for other in roots if other.upper() == name.upper()
                          and other != name), None)
            if clash is not None:
                raise RootError(f"index {self.root} has a root named {clash!r}; root names "
                                "that differ only in case would share one environment variable")
            if name in current and current[name].from_env:
                raise RootError(f"root {name!r} is at {one_line(current[name].effective)} by "
                                f"${current[name].env_var} in this environment; unset it to "
                                "change the stored location")
            for other in current.values():
                if other.name != name and (nested(location, other.location)
                                           or nested(location, other.effective)):
                    raise RootError(f"root {name!r} at {one_line(location)} and root "
                                    f"{other.name!r} at {one_line(other.effective)} would nest; "
                                    "roots must not nest")
            if roots.get(name) == location:
                return current[name]
            absolute = session.execute(select(FileRow.id, FileRow.path).where(
                type_coerce(FileRow.path, OsText()).startswith(location.rstrip(os.sep) + os.sep,
                                                               autoescape=True))).all()
            roots[name] = location
            self.update_settings(session, roots=roots)
            self._restore_paths(session, absolute)
        return self.roots.roots[name]

    def remove_root(self, name: str) -> int:
        """Forget the root `name`: its files get their absolute paths (under its location for this
        process). One write transaction. Returns how many files it held."""
        with self.write() as session:
            if name not in self.settings.roots:
                raise RootError(f"index {self.root} has no root named {one_line(repr(name))}")
            rows = session.execute(select(FileRow.id, FileRow.path).where(
                type_coerce(FileRow.path, Text()).startswith(f"{ROOT_MARK}{name}/",
                                                             autoescape=True))).all()
            roots = dict(self.settings.roots)
            del roots[name]
            self.update_settings(session, roots=roots)
            self._restore_paths(session, rows)
        return len(rows)

    def _restore_paths(self, session: Session, rows) -> None:
        """Store each (file id, OS path) again under the current roots, in bulk. A file whose new
        stored form another row already has (the same file, indexed both with and without a
        root) is dropped: that row keeps it."""
        raw = type_coerce(FileRow.path, Text())
        new = {int(file_id): self.roots.to_db(path) for file_id, path in rows}
        forms = list(new.values())
        holders: dict[str, int] = {}
        for start in range(0, len(forms), _CHUNK):
            holders.update(session.execute(select(raw, FileRow.id).where(
                raw.in_(forms[start:start + _CHUNK]))).all())
        dropped = [file_id for file_id, form in new.items() if holders.get(form, file_id) != file_id]
        for file_id in dropped:
            self._delete_id(session, file_id)
        table = FileRow.__table__
        changes = [{"file_id": file_id, "stored": form} for file_id, form in new.items()
                   if form not in holders]
        if changes:
            session.execute(update(table).where(table.c.id == bindparam("file_id"))
                            .values(path=bindparam("stored", type_=Text())), changes)
        if dropped:
            from clapdex.notices import notify

            notify(f"{len(dropped)} file(s) were indexed both with and without a root; "
                   "kept the root's rows")

    def root_counts(self) -> dict[str, int]:
        """Files stored under each root, by name (a name the index does not define included)."""
        marked = type_coerce(FileRow.path, Text())
        with self.session() as session:
            counts = {name: session.scalar(select(func.count()).where(
                marked.startswith(f"{ROOT_MARK}{name}/", autoescape=True))) or 0
                for name in self.settings.roots}
            if session.scalar(select(func.count()).where(marked.startswith(ROOT_MARK))) \
                    > sum(counts.values()):
                for stored in session.scalars(select(marked).where(
                        marked.startswith(ROOT_MARK))):
                    name = parse_root_form(stored)[0]
                    if name not in self.settings.roots:
                        counts[name] = counts.get(name, 0) + 1
        return counts

    def update_settings(self, session: Session | None = None, **changes) -> None:
        """Change stored settings (e.g. lam after a reindex). A change of what decompositions
        depend on moves settings_version on. Pass the session of a `write` transaction."""
        new = self.settings.changed(**changes)
        values = settings_to_columns(new)
        values["updated_at"] = utcnow()
        statement = update(IndexSettingsRow).where(IndexSettingsRow.id == 1).values(**values)
        if session is None:
            with self.write() as own:
                own.execute(statement)
        else:
            session.execute(statement)
        self._settings = new

    def set_audio_mean(self, session: Session, mean: np.ndarray) -> bool:
        """Store μ_A if the index has none yet (inside a `write` transaction); returns whether it
        was stored. It is set exactly once: a later writer uses the stored one."""
        new = self.settings.changed(audio_mean=np.asarray(mean))
        result = session.execute(
            update(IndexSettingsRow).where(IndexSettingsRow.id == 1,
                                           IndexSettingsRow.audio_mean.is_(None))
            .values(audio_mean=to_blob(mean), settings_version=new.settings_version,
                    updated_at=utcnow()))
        if result.rowcount != 1:
            return False
        self._settings = new
        return True

    # ---- concepts --------------------------------------------------------------------------

    @staticmethod
    def _insert_concepts(session: Session, names: Sequence[str], embeddings: np.ndarray) -> None:
        rows = [{"id": i, "name": name, "embedding": to_blob(embeddings[i])}
                for i, name in enumerate(names)]
        for start in range(0, len(rows), _CHUNK):
            session.execute(insert(ConceptRow), rows[start:start + _CHUNK])

    def concept_count(self) -> int:
        """K, the number of concepts (columns of the concept matrix)."""
        with self.session() as session:
            return _count_concepts(session)

    def concept_names(self) -> list[str]:
        with self.session() as session:
            return list(session.scalars(select(ConceptRow.name).order_by(ConceptRow.id)))

    def concept_embeddings(self) -> np.ndarray:
        with self.session() as session:
            blobs = session.scalars(select(ConceptRow.embedding).order_by(ConceptRow.id)).all()
        if not blobs:
            return np.zeros((0, 0), np.float32)
        return self._vectors(blobs, len(blobs[0]) // 4 or 1, "embedding of concept",
                             range(len(blobs)))

    def dictionary(self):
        """The stored concepts as a ConceptDictionary (no text encoding needed)."""
        from clapdex.concepts.dictionary import ConceptDictionary

        return ConceptDictionary.from_text_embeddings(self.concept_names(), self.concept_embeddings())

    def replace_concepts(self, session: Session, names: Sequence[str], embeddings: np.ndarray) -> None:
        """New vocabulary: drops every posting and concept. Call inside a transaction."""
        session.execute(delete(PostingRow))
        session.execute(delete(ConceptRow))
        self._insert_concepts(session, names, embeddings)
        concept_stats.invalidate(session)

    # ---- files and segments ----------------------------------------------------------------

    def file_by_path(self, path: str) -> FileRow | None:
        with self.session() as session:
            return session.scalars(select(FileRow).where(FileRow.path == path)).first()

    def files_by_hash(self, content_hash: str) -> list[FileRow]:
        with self.session() as session:
            return list(session.scalars(
                select(FileRow).where(FileRow.content_hash == content_hash,
                                      FileRow.status == "indexed")))

    def add_file(self, meta: FileMeta, starts: np.ndarray, ends: np.ndarray,
                 embeddings: np.ndarray, decomposition) -> tuple[int, np.ndarray]:
        """Store one file with its segments and postings in one transaction.

        `decomposition` has `weights` (csr, n x K), `fidelity`, `concept_fidelity`, `recon_norm`,
        `shift_norm` (n,).
        An existing row for the same path (older version, or an error) is replaced.
        Returns (file id, segment ids in window order).
        """
        return self.add_files([NewFile(meta, starts, ends, embeddings, decomposition)])[0]

    def add_files(self, files: Sequence["NewFile"], session: Session | None = None
                  ) -> list[tuple[int, np.ndarray]]:
        """Store several files in one transaction (bulk statements; all of them or none).

        Each file replaces any existing row for its path. Pass `session` to join a transaction
        the caller has begun (e.g. to set the audio mean together with the first files).
        Returns (file id, segment ids in window order) per file.
        """
        for item in files:
            n = len(item.starts)
            if not (len(item.ends) == len(item.embeddings) == item.decomposition.weights.shape[0] == n):
                raise ValueError("starts, ends, embeddings and weights must have one row per segment")
        if not files:
            return []
        if session is None:
            with self.write() as own:
                return self._add_files(own, files)
        return self._add_files(session, files)

    def _add_files(self, session: Session, files: Sequence["NewFile"]) -> list[tuple[int, np.ndarray]]:
        paths = [item.meta.path for item in files]
        if len(set(paths)) != len(paths):
            raise ValueError("add_files got the same path twice")
        for start in range(0, len(paths), _CHUNK):
            existing = session.scalars(select(FileRow.path).where(
                FileRow.path.in_(paths[start:start + _CHUNK]))).all()
            for path in existing:
                self._delete_path(session, path)
        file_ids = np.fromiter(session.execute(
            insert(FileRow).returning(FileRow.id, sort_by_parameter_order=True),
            [_file_values(item.meta, status="indexed", error=None) for item in files]).scalars(),
            dtype=np.int64, count=len(files))
        counts = [len(item.starts) for item in files]
        owners = np.repeat(file_ids, counts)
        starts = np.concatenate([np.asarray(item.starts, np.float64) for item in files])
        ends = np.concatenate([np.asarray(item.ends, np.float64) for item in files])
        embeddings = [item.embeddings for item in files if len(item.starts)]
        weights = sp.vstack([sp.csr_matrix(item.decomposition.weights) for item in files],
                            format="csr")
        joined = _JoinedDecomposition(
            weights=weights,
            fidelity=np.concatenate([np.asarray(i.decomposition.fidelity) for i in files]),
            concept_fidelity=np.concatenate([np.asarray(i.decomposition.concept_fidelity)
                                             for i in files]),
            recon_norm=np.concatenate([np.asarray(i.decomposition.recon_norm) for i in files]),
            shift_norm=np.concatenate([np.asarray(i.decomposition.shift_norm) for i in files]),
            settings_version=np.concatenate([_versions(i.decomposition, self.settings)
                                             for i in files]))
        segment_ids = self._insert_segments(
            session, owners, starts, ends,
            np.concatenate(embeddings) if embeddings else np.zeros((0, 0), np.float32), joined,
            SegmentLevels.join(files))
        results, first = [], 0
        for file_id, item, n in zip(file_ids, files, counts):
            results.append((int(file_id), segment_ids[first:first + n]))
            first += n
        concept_stats.on_files_added(
            session, [(item.starts, item.ends, item.decomposition.weights) for item in files])
        return results

    def _insert_segments(self, session: Session, file_ids, starts, ends, embeddings,
                         decomposition, levels: "SegmentLevels") -> np.ndarray:
        """Segment rows (file_ids: one id, or one per segment) and their postings."""
        weights = sp.csr_matrix(decomposition.weights)
        n = len(starts)
        if n == 0:
            return np.zeros(0, dtype=np.int64)
        owners = np.broadcast_to(np.asarray(file_ids, dtype=np.int64), (n,)).tolist()
        n_concepts = np.diff(weights.indptr).tolist()
        blobs = _blobs(embeddings)
        starts, ends = np.asarray(starts, np.float64).tolist(), np.asarray(ends, np.float64).tolist()
        fidelity = np.asarray(decomposition.fidelity, np.float64).tolist()
        concept_fidelity = np.asarray(decomposition.concept_fidelity, np.float64).tolist()
        recon = np.asarray(decomposition.recon_norm, np.float64).tolist()
        shift = np.asarray(decomposition.shift_norm, np.float64).tolist()
        versions = _versions(decomposition, self.settings).tolist()
        measured = levels.rows()
        rows = [{"file_id": owners[i], "start": starts[i], "end": ends[i], "embedding": blobs[i],
                 "fidelity": fidelity[i], "concept_fidelity": concept_fidelity[i],
                 "n_concepts": n_concepts[i], "recon_norm": recon[i],
                 "shift_norm": shift[i], "settings_version": versions[i], **measured[i]}
                for i in range(n)]
        table = SegmentRow.__table__  # Core insert: the ORM bulk path costs ~3x more per row
        result = session.execute(
            insert(table).returning(table.c.id, sort_by_parameter_order=True), rows)
        segment_ids = np.fromiter(result.scalars(), dtype=np.int64, count=n)
        self._insert_postings(session, segment_ids, weights)
        return segment_ids

    @staticmethod
    def _insert_postings(session: Session, segment_ids: np.ndarray, weights: sp.csr_matrix) -> None:
        """In (concept, segment) order, the order of the postings' indexes: each insert lands
        next to the previous one (the pages of a concept's range stay in the cache)."""
        csc = sp.csc_matrix(weights)
        csc.sort_indices()
        keep = csc.data > 0
        concepts = np.repeat(np.arange(csc.shape[1]), np.diff(csc.indptr))[keep].tolist()
        segments = np.asarray(segment_ids, dtype=np.int64)[csc.indices[keep]].tolist()
        values = csc.data[keep].astype(np.float64).tolist()
        insert_rows(session.connection(), PostingRow.__tablename__,
                    ("concept_id", "segment_id", "weight"), zip(concepts, segments, values))

    def record_error(self, meta: FileMeta, error: str) -> None:
        """Remember a file that could not be indexed (replacing any older row for its path)."""
        with self.write() as session:
            self._delete_path(session, meta.path)
            session.execute(insert(FileRow), [_file_values(meta, status="error", error=error)])

    def remove_file(self, path: str) -> bool:
        """Delete a file with its segments and postings. Returns whether it existed."""
        with self.write() as session:
            return self._delete_path(session, path)

    def update_file_stat(self, path: str, size: int, mtime_ns: int) -> None:
        """A file was touched but its content is unchanged: remember its new size and mtime."""
        with self.write() as session:
            session.execute(update(FileRow).where(FileRow.path == path).values(
                size=size, mtime_ns=mtime_ns))

    def move_file(self, source_path: str, meta: FileMeta) -> int:
        """The file at `source_path` now lives at `meta.path` (same content): rename its row in
        one transaction, keeping its segments (and so their FAISS ids). Returns the file id."""
        with self.write() as session:
            file_id = session.scalar(select(FileRow.id).where(FileRow.path == source_path))
            if file_id is None:
                raise ValueError(f"no indexed file at {source_path}")
            if meta.path != source_path:
                self._delete_path(session, meta.path)
            session.execute(update(FileRow).where(FileRow.id == file_id).values(
                path=meta.path, size=meta.size, mtime_ns=meta.mtime_ns,
                content_hash=meta.content_hash or FileRow.content_hash))
        return int(file_id)

    def copy_file(self, source_path: str, meta: FileMeta) -> tuple[int, np.ndarray]:
        """Index `meta.path` as a copy of the indexed file at `source_path` (same content):
        its segments' embeddings and postings are copied, nothing is decoded or encoded.
        One transaction. Returns (file id, new segment ids in window order)."""
        with self.write() as session:
            source = session.scalars(select(FileRow).where(FileRow.path == source_path)).first()
            if source is None or source.status != "indexed":
                raise ValueError(f"no indexed file at {source_path}")
            rows = session.execute(
                select(SegmentRow.id, SegmentRow.start, SegmentRow.end, SegmentRow.embedding,
                       SegmentRow.fidelity, SegmentRow.recon_norm, SegmentRow.shift_norm,
                       SegmentRow.concept_fidelity, SegmentRow.settings_version,
                       *_LEVEL_COLUMNS)
                .where(SegmentRow.file_id == source.id).order_by(SegmentRow.id)).all()
            old_ids = np.array([r[0] for r in rows], dtype=np.int64)
            postings = session.execute(
                select(PostingRow.segment_id, PostingRow.concept_id, PostingRow.weight)
                .where(PostingRow.segment_id.in_(old_ids.tolist()))).all() if rows else []
            weights = postings_to_csr(old_ids, postings, _count_concepts(session))
            copied = dataclasses.replace(meta, duration=meta.duration or source.duration,
                                         sample_rate=meta.sample_rate or source.sample_rate,
                                         channels=meta.channels or source.channels,
                                         warning=source.warning)
            embeddings = self._vectors([r[3] for r in rows], self.settings.dimension,
                                       "embedding of segment", [r[0] for r in rows])
            item = NewFile(copied, np.array([r[1] for r in rows]), np.array([r[2] for r in rows]),
                           embeddings, _JoinedDecomposition(
                               weights=weights, fidelity=np.array([r[4] for r in rows]),
                               concept_fidelity=np.array([r[7] for r in rows], np.float64),
                               recon_norm=np.array([r[5] for r in rows]),
                               shift_norm=np.array([r[6] for r in rows]),
                               settings_version=np.array([r[8] for r in rows], np.int64)),
                           SegmentLevels(*(np.array([r[9 + i] for r in rows], object)
                                           for i in range(4))))
            return self._add_files(session, [item])[0]

    def files(self, status: str | None = None, warned: bool = False) -> list[FileRow]:
        """All file rows (optionally only "indexed" or "error"; `warned`: only those indexed with
        a warning, i.e. truncated), ordered by path."""
        statement = select(FileRow).order_by(FileRow.path)
        if status is not None:
            statement = statement.where(FileRow.status == status)
        if warned:
            statement = statement.where(FileRow.warning.is_not(None))
        with self.session() as session:
            return list(session.scalars(statement))

    @classmethod
    def _delete_path(cls, session: Session, path: str) -> bool:
        file_id = session.scalar(select(FileRow.id).where(FileRow.path == path))
        if file_id is None:
            return False
        cls._delete_id(session, file_id)
        return True

    @staticmethod
    def _delete_id(session: Session, file_id: int) -> None:
        concept_stats.on_file_removed(session, file_id)
        segment_ids = select(SegmentRow.id).where(SegmentRow.file_id == file_id)
        # Explicit deletes rather than relying on ON DELETE CASCADE, which not every backend honours.
        session.execute(delete(PostingRow).where(PostingRow.segment_id.in_(segment_ids)))
        session.execute(delete(SegmentRow).where(SegmentRow.file_id == file_id))
        session.execute(delete(FileRow).where(FileRow.id == file_id))

    def replace_postings(self, session: Session, segment_ids: np.ndarray, decomposition) -> None:
        """Re-decomposition (reindex, doctor --repair): new weights and per-segment terms, same
        segments, decomposed under the current settings (set them first)."""
        weights = sp.csr_matrix(decomposition.weights)
        for start in range(0, len(segment_ids), _CHUNK):
            chunk = [int(s) for s in segment_ids[start:start + _CHUNK]]
            session.execute(delete(PostingRow).where(PostingRow.segment_id.in_(chunk)))
        version = self.settings.settings_version
        session.execute(update(SegmentRow), [
            {"id": int(segment_ids[i]), "fidelity": float(decomposition.fidelity[i]),
             "concept_fidelity": float(decomposition.concept_fidelity[i]),
             "n_concepts": int(weights.indptr[i + 1] - weights.indptr[i]),
             "recon_norm": float(decomposition.recon_norm[i]),
             "shift_norm": float(decomposition.shift_norm[i]), "settings_version": version}
            for i in range(len(segment_ids))])
        self._insert_postings(session, segment_ids, weights)
        concept_stats.invalidate(session)

    # ---- bulk reads ------------------------------------------------------------------------

    def segment_ids(self) -> np.ndarray:
        """All segment ids, sorted (int64)."""
        with self.session() as session:
            return np.fromiter(session.scalars(select(SegmentRow.id).order_by(SegmentRow.id)),
                               dtype=np.int64)

    def segment_embeddings(self, segment_ids: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(ids int64 (n,), embeddings float32 (n, d)), ordered by segment id."""
        if segment_ids is not None and len(segment_ids) > _CHUNK:
            parts = [self.segment_embeddings(segment_ids[i:i + _CHUNK])
                     for i in range(0, len(segment_ids), _CHUNK)]
            ids = np.concatenate([p[0] for p in parts])
            order = np.argsort(ids, kind="stable")
            return ids[order], np.concatenate([p[1] for p in parts])[order]
        statement = select(SegmentRow.id, SegmentRow.embedding).order_by(SegmentRow.id)
        if segment_ids is not None:
            statement = statement.where(SegmentRow.id.in_([int(s) for s in segment_ids]))
        with self.session() as session:
            rows = session.execute(statement).all()
        return self._embedding_rows(rows)

    def iter_segment_embeddings(self, chunk: int = _CHUNK) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every segment's (ids, embeddings) in id order, `chunk` rows at a time (bounded memory)."""
        last = -1
        while True:
            with self.session() as session:
                rows = session.execute(select(SegmentRow.id, SegmentRow.embedding)
                                       .where(SegmentRow.id > last).order_by(SegmentRow.id)
                                       .limit(chunk)).all()
            if not rows:
                return
            yield self._embedding_rows(rows)
            last = rows[-1][0]

    def _embedding_rows(self, rows) -> tuple[np.ndarray, np.ndarray]:
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        return ids, self._vectors([r[1] for r in rows], self.settings.dimension,
                                  "embedding of segment", ids.tolist())

    def concept_matrix(self) -> tuple[np.ndarray, sp.csr_matrix]:
        """All postings as (segment ids (n,), csr (n, K)); row i belongs to segment ids[i].

        What opening an index for search costs most: millions of postings. They are read with a
        Core select as the driver's plain tuples (a SQLAlchemy Row per posting cost more than the
        query itself) in segment order (the order of the postings' segment index, which covers
        them), so the CSR needs no sort.
        """
        with self.engine.connect() as connection:
            ids = np.fromiter(connection.execute(
                select(SegmentRow.id).order_by(SegmentRow.id)).scalars(), dtype=np.int64)
            n_concepts = _count_concepts(connection)
            postings = self._plain_rows(connection.execute(
                select(PostingRow.segment_id, PostingRow.concept_id, PostingRow.weight)
                .order_by(PostingRow.segment_id, PostingRow.concept_id)))
        return ids, postings_to_csr(ids, postings, n_concepts)

    def _plain_rows(self, result) -> list[tuple]:
        """Every row of a Core result, fetched from the DBAPI cursor as plain tuples. The fetch
        bypasses SQLAlchemy's error handling, so driver errors are translated here."""
        try:
            return result.cursor.fetchall()
        except self.engine.dialect.loaded_dbapi.Error as error:
            raise (index_error(self.root, error) or
                   ClapdexError(f"cannot read index {self.root} ({reason(error)})")) from None
        finally:
            result.close()

    def orphans(self) -> dict:
        """Rows whose parent is gone (possible only if foreign keys were off): counts per kind.
        NOT EXISTS, not NOT IN: PostgreSQL plans NOT IN (subquery) row by row at scale."""
        with self.session() as session:
            return {kind: session.scalar(select(func.count()).select_from(child).where(condition))
                    or 0 for kind, (child, condition) in _orphan_conditions().items()}

    def delete_orphans(self) -> dict:
        """Delete the rows `orphans` counts, in one transaction. Returns what was deleted."""
        found = self.orphans()
        if any(found.values()):
            with self.write() as session:
                conditions = _orphan_conditions()
                for kind in ("segments_without_file", "postings_without_segment",
                             "postings_without_concept"):
                    child, condition = conditions[kind]
                    session.execute(delete(child).where(condition))
                concept_stats.invalidate(session)
        return found

    def silent_among(self, segment_ids: np.ndarray) -> np.ndarray:
        """Which of the given segments are flagged silent (bool, in the order given)."""
        ids = [int(i) for i in segment_ids]
        found: set[int] = set()
        with self.session() as session:
            for start in range(0, len(ids), _CHUNK):
                found.update(session.scalars(select(SegmentRow.id).where(
                    SegmentRow.id.in_(ids[start:start + _CHUNK]), SegmentRow.silent.is_(True))))
        return np.array([i in found for i in ids], dtype=bool)

    def stale_segments(self) -> np.ndarray:
        """Ids of the segments decomposed under other settings than the current ones (sorted)."""
        with self.session() as session:
            current = session.scalar(select(IndexSettingsRow.settings_version).where(
                IndexSettingsRow.id == 1))
            return np.fromiter(session.scalars(
                select(SegmentRow.id).where(SegmentRow.settings_version != current)
                .order_by(SegmentRow.id)), dtype=np.int64)

    def flag_counts(self) -> dict:
        """Files flagged truncated (indexed with a warning), segments flagged silent / clipped,
        and segments never measured (indexed before schema 5, or imported embeddings)."""
        with self.session() as session:
            return {"truncated": _count(session, FileRow, FileRow.status == "indexed",
                                        FileRow.warning.is_not(None)),
                    "silent": _count(session, SegmentRow, SegmentRow.silent.is_(True)),
                    "clipped": _count(session, SegmentRow, SegmentRow.clipped.is_(True)),
                    "unmeasured": _count(session, SegmentRow, SegmentRow.silent.is_(None))}

    def counts(self) -> dict:
        """Rows per kind. Segments and postings come from the totals every write keeps
        (concept_stats) while they are valid: counting 25 M postings takes seconds."""
        with self.session() as session:
            kept = concept_stats.stored_counts(session)
            segments, postings = kept if kept else (_count(session, SegmentRow),
                                                    _count(session, PostingRow))
            return {
                "files": _count(session, FileRow, FileRow.status == "indexed"),
                "errors": _count(session, FileRow, FileRow.status == "error"),
                "segments": segments,
                "concepts": _count(session, ConceptRow),
                "postings": postings,
            }


def _count(session: Session, model, *where) -> int:
    """Rows of `model` matching `where`."""
    return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def _orphan_conditions() -> dict:
    """kind -> (child table, the condition that its parent row is gone)."""
    def gone(parent, key, reference):
        return ~select(parent.id).where(key == reference).exists()
    return {
        "postings_without_segment": (PostingRow, gone(SegmentRow, SegmentRow.id,
                                                      PostingRow.segment_id)),
        "postings_without_concept": (PostingRow, gone(ConceptRow, ConceptRow.id,
                                                      PostingRow.concept_id)),
        "segments_without_file": (SegmentRow, gone(FileRow, FileRow.id, SegmentRow.file_id)),
    }


def _new_build_id() -> str:
    return uuid.uuid4().hex


def _count_concepts(connection: Session | Connection) -> int:
    return connection.scalar(select(func.count()).select_from(ConceptRow)) or 0


def _file_values(meta: FileMeta, status: str, error: str | None) -> dict:
    values = dataclasses.asdict(meta)
    values.update(status=status, error=error, indexed_at=utcnow())
    return values


@dataclass
class NewFile:
    """One file to store: its metadata, segment times, raw embeddings and decomposition, and what
    its windows' audio measured (None: not measured, e.g. imported embeddings)."""

    meta: FileMeta
    starts: np.ndarray
    ends: np.ndarray
    embeddings: np.ndarray
    decomposition: object  # weights (csr n x K), fidelity, concept_fidelity, recon_norm, shift_norm
    levels: "SegmentLevels | None" = None


_LEVEL_COLUMNS = (SegmentRow.level_db, SegmentRow.clipped_fraction, SegmentRow.silent,
                  SegmentRow.clipped)


@dataclass
class SegmentLevels:
    """Per segment (arrays of one length): level in dBFS, clipped fraction, the silent and clipped
    flags (audio.WindowLevels as measured; None entries: not measured)."""

    level_db: np.ndarray
    clipped_fraction: np.ndarray
    silent: np.ndarray
    clipped: np.ndarray

    @classmethod
    def of(cls, levels) -> "SegmentLevels":
        """From an audio.WindowLevels (the flags under today's thresholds)."""
        return cls(levels.level_db, levels.clipped_fraction, levels.silent, levels.clipped)

    @classmethod
    def join(cls, files: Sequence[NewFile]) -> "SegmentLevels":
        parts = [item.levels or cls(*([None] * len(item.starts),) * 4) for item in files]
        return cls(*(np.concatenate([np.asarray(getattr(p, name), object) for p in parts])
                     if parts else np.zeros(0, object)
                     for name in ("level_db", "clipped_fraction", "silent", "clipped")))

    def rows(self) -> list[dict]:
        def plain(value, kind):
            return None if value is None else kind(value)
        return [{"level_db": plain(a, float), "clipped_fraction": plain(b, float),
                 "silent": plain(c, bool), "clipped": plain(d, bool)}
                for a, b, c, d in zip(self.level_db, self.clipped_fraction, self.silent,
                                      self.clipped)]


@dataclass
class _JoinedDecomposition:
    """The decomposition fields of several files stacked (what _insert_segments reads)."""

    weights: sp.csr_matrix
    fidelity: np.ndarray
    concept_fidelity: np.ndarray
    recon_norm: np.ndarray
    shift_norm: np.ndarray
    settings_version: np.ndarray | None = None  # per segment; None: the current settings'


def _versions(decomposition, settings: IndexSettings) -> np.ndarray:
    """The settings version of each segment of a decomposition: its own (a copy's source's), or
    the current settings' (a decomposition has just been made under them)."""
    own = getattr(decomposition, "settings_version", None)
    if own is not None:
        return np.asarray(own, np.int64)
    return np.full(np.asarray(decomposition.fidelity).shape[0], settings.settings_version, np.int64)


def _blobs(embeddings: np.ndarray) -> list[bytes]:
    """float32 little-endian bytes of each row, in one conversion."""
    matrix = np.ascontiguousarray(embeddings, dtype="<f4")
    raw = matrix.tobytes()
    step = matrix.shape[1] * 4 if matrix.ndim == 2 else 0
    return [raw[i * step:(i + 1) * step] for i in range(len(matrix))]
