"""Which indexed file a user means: `clapdex show FILE`, search's --audio and `clapdex similar`.

A name is resolved in this order:
1. as a path: absolute after `~` expansion against the current folder, then with symlinks
   resolved, then exactly as given (an index that stored a relative path);
2. else, for a relative name without `..`, as the end of one indexed path on a path-component
   boundary: `kick.wav` or `drums/kick.wav` matches `/music/drums/kick.wav`, but `ick.wav` does
   not. Leading `./` prefixes are dropped first; `../x.wav` only ever means the file next to the
   current folder (step 1).
Each step compares the name exactly as typed first, and only when nothing matches that way after
Unicode normalisation (NFC) of both sides: `café.wav` typed in NFD (as macOS types it) finds
`café.wav` stored in NFC, and the other way round. Two indexed files whose names differ only in
normalisation stay two files: each is found by its own exact name, and another form of the name
matches both (an AmbiguousFileError). Non-UTF-8 names (lone surrogates) are left as they are.
A file that was recorded but could not be indexed is reported with the reason its indexing failed.
"""

from __future__ import annotations

import os
import unicodedata
from dataclasses import dataclass

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from clapdex.errors import AmbiguousFileError, FileNotInIndexError, FileNotIndexedError
from clapdex.printable import one_line
from clapdex.storage.schema import FileRow

_SHOWN_CANDIDATES = 3


def nfc(text: str) -> str:
    """`text` in Unicode normal form C: how a name typed on one system (macOS types NFD) is
    compared with a name stored from another. Lone surrogates (names that are not UTF-8) pass
    through unchanged."""
    return unicodedata.normalize("NFC", text)


def folded(text: str) -> str:
    """`text` for case-insensitive, normalisation-insensitive matching (path globs)."""
    return nfc(text.casefold())


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
            raise _ambiguous(name, rows)
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
    row = next((found[c] for c in candidates if c in found), None)
    if row is not None or all(_one_form(c) for c in candidates):
        return row
    wanted = {nfc(c) for c in candidates}
    rows = [r for r in _ending_with(session, {os.path.basename(c) for c in candidates})
            if nfc(r.path) in wanted]
    if len(rows) > 1:
        raise _ambiguous(name, rows)
    return rows[0] if rows else None


def _one_form(text: str) -> bool:
    """Whether no other Unicode normalisation of `text` exists (e.g. plain ASCII)."""
    return nfc(text) == text == unicodedata.normalize("NFD", text)


def _ending_with(session: Session, names) -> list:
    """Rows whose path ends with one of `names`, in any of its normalisations. SQLite's LIKE
    ignores ASCII case, so callers check the match exactly."""
    forms = {form for n in names if n for form in (n, nfc(n), unicodedata.normalize("NFD", n))}
    if not forms:
        return []
    return session.execute(_columns().where(or_(*(FileRow.path.endswith(f, autoescape=True)
                                                   for f in sorted(forms))))
                           .order_by(FileRow.path)).all()


def _ambiguous(name: str, rows) -> AmbiguousFileError:
    shown = ", ".join(one_line(r.path) for r in rows[:_SHOWN_CANDIDATES])
    more = ", ..." if len(rows) > _SHOWN_CANDIDATES else ""
    return AmbiguousFileError(f"{name!r} matches {len(rows)} files ({shown}{more}); "
                              "give more of the path")


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
    """Indexed paths that end with `suffix` on a component boundary: exactly as typed if any
    does, else after Unicode normalisation (NFC) of both."""
    rows = _ending_with(session, {suffix.rsplit("/", 1)[-1]})
    for form in (lambda text: text, nfc):
        wanted = form(suffix)
        matches = [r for r in rows if (path := form(_slashes(r.path))) == wanted
                   or path.endswith("/" + wanted)]
        if matches:
            return matches
    return []


def _slashes(path: str) -> str:
    """Windows separators as '/', so one suffix rule fits both (a backslash is a plain character
    in POSIX file names and is kept there)."""
    return path.replace(os.sep, "/") if os.sep != "/" else path
