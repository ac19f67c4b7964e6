"""Files, one copy each: the cache folder, the sha256 of a file, atomic writes."""

from __future__ import annotations

import hashlib
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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
