"""The database connection of an index: its URL, the SQLite pragmas, how a write transaction takes
the index's write lock, and the driver errors that become one-line ClapdexErrors.

Every dialect-specific line of the storage layer is here (DIALECT SPOT).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Sequence
from urllib.request import pathname2url

from sqlalchemy import create_engine, event
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DatabaseError, NoSuchModuleError

from clapdex.errors import ClapdexError, IndexDamagedError, ReadOnlyIndexError, Remedy

DB_FILE = "clapdex.sqlite"
URL_FILE = "database.url"
WRITE_OPTION = "clapdex_write"  # execution option of a connection whose transaction writes
LOCK_WAIT_SECONDS = 3600  # how long a writer waits for another one's write lock before giving up


def index_url(root: Path) -> str | URL:
    url_file = root / URL_FILE
    if url_file.exists():
        return url_file.read_text().strip()
    # Built, not formatted: a "?" or "#" in the folder name must not start a URL query.
    return URL.create("sqlite", database=str(root / DB_FILE))


def is_server(root: Path) -> bool:
    """Whether the index's data lives in a database server (a database.url file) rather than in
    the SQLite file of its folder."""
    return (root / URL_FILE).exists()


def shown_url(url: str | URL) -> str:
    """A URL as it may be printed: without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a database URL)"


def is_writable(root: Path) -> bool:
    """Whether SQLite can write the index in `root`: its folder (the -wal, -shm and journal files
    live beside the database) and the database file itself."""
    database = root / DB_FILE
    return os.access(root, os.W_OK) and (not database.exists() or os.access(database, os.W_OK))


def read_only_sqlite_url(root: Path) -> URL:
    """The index's SQLite database opened read-only. In a folder we cannot write and without a
    leftover -wal file it is opened immutable: SQLite cannot otherwise open a WAL-mode database
    there (it would create the -shm file). A -wal file holds committed pages, so it is read."""
    path = root / DB_FILE
    query = {"mode": "ro", "uri": "true"}
    if not os.access(root, os.W_OK) and not Path(f"{path}-wal").exists():
        query["immutable"] = "1"
    return URL.create("sqlite", database="file:" + pathname2url(str(path.absolute())), query=query)


def make_engine(url: str | URL, root: Path, read_only: bool = False) -> Engine:
    """An engine for the index at `root`. A URL that is not one, or whose driver is not installed,
    is a one-line ClapdexError."""
    try:
        engine = create_engine(url, future=True)
    except NoSuchModuleError as error:
        raise ClapdexError(f"index {root}: no SQLAlchemy dialect for {shown_url(url)} "
                           f"({reason(error)})") from None
    except ModuleNotFoundError as error:
        extra = " (pip install 'clapdex[postgres]')" if "psycopg" in str(error) else ""
        raise ClapdexError(f"index {root}: the database driver for {shown_url(url)} is not "
                           f"installed: {error}{extra}") from None
    except (ArgumentError, ValueError) as error:
        raise ClapdexError(f"index {root}: not a usable database URL ({reason(error)})") from None
    if engine.dialect.name == "sqlite":
        _configure_sqlite(engine, read_only)
    _translate_errors(engine, root)
    return engine


def _configure_sqlite(engine: Engine, read_only: bool = False) -> None:
    """The only SQLite-specific settings. WAL for concurrent readers, FKs on. A read-only index
    keeps its journal mode: switching to WAL creates files beside the database.

    pysqlite's own transaction handling is switched off (it would BEGIN late and deferred), and
    every transaction starts with our BEGIN: BEGIN IMMEDIATE for a write transaction, which takes
    SQLite's write lock at once, so two writers never both read settings and then write."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):  # pragma: no cover - trivial
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not read_only:
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={LOCK_WAIT_SECONDS * 1000}")
        cursor.execute("PRAGMA cache_size=-65536")  # 64 MB: bulk inserts into the postings B-trees
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection):  # pragma: no cover - trivial
        write = connection.get_execution_options().get(WRITE_OPTION)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def insert_rows(connection: Connection, table: str, columns: Sequence[str],
                rows: Iterable[tuple]) -> None:
    """Bulk INSERT of plain tuples, bypassing SQLAlchemy's per-row parameter processing (most of
    the cost of storing postings): PostgreSQL COPY, SQLite one prepared executemany. The values
    must already be of the columns' plain Python types (int, float)."""
    rows = list(rows)
    if not rows:
        return
    if connection.dialect.name == "postgresql":
        with connection.connection.dbapi_connection.cursor() as cursor, \
                cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
        return
    connection.exec_driver_sql(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
        rows)


def reason(error: BaseException) -> str:
    """The driver's own message of a database error, on one line (no SQL, no links)."""
    original = getattr(error, "orig", None) or error
    return " ".join(str(original).split()) or type(original).__name__


def damaged(root: Path, why: str) -> IndexDamagedError:
    return IndexDamagedError(f"index {root} is damaged ({why})",
                             remedy=Remedy("rebuild", str(root)))


def _translate_errors(engine: Engine, root: Path) -> None:
    """SQLite errors that mean the index cannot be used as it is (a corrupt file, a write to a
    read-only index) become one-line ClapdexErrors, wherever in a command they surface."""

    @event.listens_for(engine, "handle_error")
    def _on_error(context):
        error = index_error(root, context.original_exception)
        if error is not None:
            raise error


def index_error(root: Path, original: BaseException) -> ClapdexError | None:
    """The one-line error for a driver error that means the index cannot be used as it is."""
    name = getattr(original, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")):
        return damaged(root, reason(original))
    if name.startswith("SQLITE_BUSY") or getattr(original, "sqlstate", None) == "55P03":
        return ClapdexError(f"index {root} is busy: another process has held its write lock for "
                            f"over {LOCK_WAIT_SECONDS} s ({reason(original)})")
    if name.startswith("SQLITE_READONLY"):
        return ReadOnlyIndexError(f"index {root} is read-only and this command needs to change "
                                  f"it ({reason(original)}); make its folder writable or use a "
                                  f"writable copy")
    return None


def open_error(root: Path, error: DatabaseError) -> ClapdexError:
    """Why an existing index could not be opened, as a one-line error."""
    name = getattr(error.orig, "sqlite_errorname", None)
    if name is None or name.startswith(("SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH",
                                        "SQLITE_IOERR", "SQLITE_BUSY", "SQLITE_LOCKED")):
        return ClapdexError(f"cannot open index {root} ({reason(error)})")
    return damaged(root, reason(error))  # not a database, no tables, a malformed file
