"""Files, one copy each: the cache folder, the sha256 of a file, atomic writes, CSV export.

CSV: a list of concepts ({"concept", "weight"} dicts) becomes one cell, "dog=0.41; bark=0.2". Text
cells that a spreadsheet would run as a formula get a leading ' (clapdex.printable.spreadsheet_safe).
File names that are not UTF-8 are written as their original bytes (lossless). An empty result
writes the header line only (no columns are known: an empty line)."""

from __future__ import annotations

import csv
import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator

from clapdex.errors import ClapdexError
from clapdex.printable import spreadsheet_safe

HASH_BLOCK = 1 << 20  # bytes read per step when hashing


def cache_dir(*parts: str) -> Path:
    """clapdex's cache folder ($CLAPDEX_CACHE_DIR, `~` expanded, else the user cache directory's
    clapdex), joined with `parts` (e.g. cache_dir("concepts"))."""
    env = os.environ.get("CLAPDEX_CACHE_DIR")
    if env:
        root = Path(env).expanduser()
    else:
        import platformdirs

        root = Path(platformdirs.user_cache_dir("clapdex"))
    return root.joinpath(*parts)


def sha256_file(path: str | os.PathLike, block: int = HASH_BLOCK) -> str:
    """sha256 hex digest of a file's bytes (OSError when it cannot be read)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(block), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextmanager
def atomic_path(path: str | os.PathLike, fsync: bool = False) -> Iterator[Path]:
    """A temporary path next to `path` to write to; when the block ends without an exception it
    replaces `path` in one step (readers see the old file or the new one, never half of one),
    else it is removed. The temporary name keeps `path`'s suffix (np.save adds ".npy" otherwise).
    `fsync`: flush it to disk first (for data that must survive a crash, not for caches)."""
    path = Path(path)
    temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield temporary
        if fsync:
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def write_csv(rows: Iterable[dict], path: str | Path) -> int:
    """Write rows (dicts with the same keys, new keys appended as columns) to `path`; returns count."""
    rows = list(rows)
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    try:
        with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)
    except OSError as error:
        raise ClapdexError(f"cannot write {path}: {error.strerror}") from None
    return len(rows)


def csv_cell(value):
    """A value as one CSV cell: concept lists joined as name=weight (full float precision), other
    lists (flags) joined by "; ", text that could start a formula prefixed with '."""
    if isinstance(value, list):
        value = "; ".join(f"{item['concept']}={item['weight']!r}" if isinstance(item, dict)
                          else str(item) for item in value)
    return spreadsheet_safe(value)
