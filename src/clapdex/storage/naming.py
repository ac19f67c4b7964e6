"""Which indexed file a user means: `clapdex show FILE`, search's --audio and `clapdex similar`.

A name is resolved in this order:
1. as a path: absolute after `~` expansion against the current folder, then with symlinks
   resolved, then exactly as given (an index that stored a relative path);
2. else, for a relative name without `..`, as the end of one indexed path on a path-component
   boundary: `kick.wav` or `drums/kick.wav` matches `/music/drums/kick.wav`, but `ick.wav` does
   not. Leading `./` prefixes are dropped first; `../x.wav` only ever means the file next to the
   current folder (step 1).
A file that was recorded but could not be indexed is reported with the reason its indexing failed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from clapdex.errors import AmbiguousFileError, FileNotInIndexError, FileNotIndexedError
from clapdex.printable import one_line
from clapdex.storage.schema import FileRow

_SHOWN_CANDIDATES = 3


@dataclass(frozen=True)
class IndexedFile:
    id: int
    path: str                 # as stored in the index (absolute for files indexed by clapdex)
    duration: float | None


def resolve_indexed_file(store, name: str) -> IndexedFile:
    """The indexed file that `name` designates (see the module docstring for the rules).

    Raises FileNotInIndexError, AmbiguousFileError or FileNotIndexedError (all QueryErrors)."""
    with store.session() as session:
        return find_indexed_file(session, name)


def find_indexed_file(session: Session, name: str) -> IndexedFile:
    """resolve_indexed_file inside an open session."""
    if not name or not name.strip():
        raise FileNotInIndexError("give a file name or path")
    row = _exact_match(session, name)
    if row is None:
        suffix = _suffix(name)
        if suffix is None:
            raise FileNotInIndexError(
                f"no indexed file at {one_line(os.path.abspath(os.path.expanduser(name)))}")
        rows = _suffix_matches(session, suffix)
        if not rows:
            raise FileNotInIndexError(f"no indexed file matches {name!r}")
        if len(rows) > 1:
            shown = ", ".join(one_line(r.path) for r in rows[:_SHOWN_CANDIDATES])
            more = ", ..." if len(rows) > _SHOWN_CANDIDATES else ""
            raise AmbiguousFileError(f"{name!r} matches {len(rows)} files ({shown}{more}); "
                                     "give more of the path")
        row = rows[0]
    if row.status != "indexed":
        raise FileNotIndexedError(row.path, row.status, row.error)
    return IndexedFile(int(row.id), row.path, None if row.duration is None else float(row.duration))


def _columns():
    return select(FileRow.id, FileRow.path, FileRow.duration, FileRow.status, FileRow.error)


def _exact_match(session: Session, name: str):
    expanded = os.path.expanduser(name)
    candidates = list(dict.fromkeys([os.path.abspath(expanded), os.path.realpath(expanded), name]))
    found = {r.path: r for r in session.execute(_columns().where(FileRow.path.in_(candidates)))}
    return next((found[c] for c in candidates if c in found), None)


def _suffix(name: str) -> str | None:
    """The name as '/'-separated path components to look for at the end of indexed paths, or
    None when it cannot be a suffix (absolute, or going up with '..')."""
    text = os.path.expanduser(name)
    if os.path.isabs(text):
        return None
    text = _slashes(text)
    while text.startswith("./"):
        text = text.removeprefix("./").lstrip("/")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _suffix_matches(session: Session, suffix: str) -> list:
    # LIKE narrows the rows on the file name (SQLite's LIKE ignores ASCII case); the exact
    # component-boundary check is done here.
    last = suffix.rsplit("/", 1)[-1]
    rows = session.execute(_columns().where(FileRow.path.endswith(last, autoescape=True))
                           .order_by(FileRow.path)).all()
    return [r for r in rows
            if _slashes(r.path) == suffix or _slashes(r.path).endswith("/" + suffix)]


def _slashes(path: str) -> str:
    """Windows separators as '/', so one suffix rule fits both (a backslash is a plain character
    in POSIX file names and is kept there)."""
    return path.replace(os.sep, "/") if os.sep != "/" else path
