"""Content hashes of large files (model weights), cached so that asking twice is cheap.

Hashing a 700 MB weights file takes a second or two, and every CLI call needs the model fingerprint.
So a file's sha256 is remembered by (absolute path, size, mtime): in memory for this process and in
a small JSON file in the user cache folder ($CLAPDEX_CACHE_DIR, else the platformdirs cache dir) for
later ones. A file that changes gets a new size or mtime and is hashed again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from clapdex.fileio import atomic_path, cache_dir, sha256_file

_CACHE_FILE_NAME = "file-hashes.json"
_memory: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of the file's content (cached by path, size and mtime)."""
    resolved = Path(path).expanduser().resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    if key in _memory:
        return _memory[key]
    disk_key = f"{key[0]}|{key[1]}|{key[2]}"
    stored = _read_disk_cache()
    digest = stored.get(disk_key)
    if digest is None:
        digest = sha256_file(resolved)
        stored[disk_key] = digest
        _write_disk_cache(stored)
    _memory[key] = digest
    return digest


def _read_disk_cache() -> dict[str, str]:
    try:
        data = json.loads((cache_dir() / _CACHE_FILE_NAME).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_disk_cache(entries: dict[str, str]) -> None:
    # Best effort: a read-only or missing cache folder only costs a re-hash next time.
    # Entries for files that no longer exist are dropped so the file stays small.
    kept = {k: v for k, v in entries.items() if Path(k.rsplit("|", 2)[0]).exists()}
    target = cache_dir() / _CACHE_FILE_NAME
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as temporary:
            temporary.write_text(json.dumps(kept, indent=0, sort_keys=True))
    except OSError:
        pass
