"""clapdex's cache folder ($CLAPDEX_CACHE_DIR, else the user cache directory): what it holds
(`clapdex cache info`), emptying it (`clapdex cache clear`), and the size bound of the
concept-embedding cache.

Everything in it can be recomputed. Only the parts named in PARTS are ever counted or removed, so
a cache variable pointing at the wrong folder cannot make `clear` delete anything else.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from clapdex.errors import ClapdexError
from clapdex.fileio import cache_dir

PARTS = {
    "concepts": "concept text embeddings, per model and vocabulary",
    "embeddings": "audio embeddings of evaluation datasets",
    "audio_mean": "reference audio means of `clapdex explain`",
    "onnx": "ONNX exports of the audio encoder, per model fingerprint",
    "file-hashes.json": "content hashes of model weight files",
}
CONCEPT_CACHE_MAX_BYTES = 256 * 1024 * 1024  # ~16 model x vocabulary pairs of 10,000 concepts


def _size(path: Path) -> tuple[int, int]:
    """(files, bytes) under `path` (a file or a folder)."""
    if path.is_file():
        return 1, path.stat().st_size
    files = total = 0
    for root, _, names in os.walk(path):
        for name in names:
            try:
                total += os.stat(os.path.join(root, name)).st_size
                files += 1
            except OSError:
                continue
    return files, total


def cache_info() -> dict:
    """The cache folder and, per part, its description, file count and bytes."""
    root = cache_dir()
    parts = []
    for name, what in PARTS.items():
        files, total = _size(root / name) if (root / name).exists() else (0, 0)
        parts.append({"part": name, "description": what, "files": files, "bytes": total})
    return {"folder": str(root), "parts": parts, "bytes": sum(p["bytes"] for p in parts)}


def clear_cache(parts: list[str] | None = None) -> int:
    """Remove the given parts (default: all); returns the bytes freed."""
    unknown = [p for p in parts or [] if p not in PARTS]
    if unknown:
        raise ClapdexError(f"unknown cache part {unknown[0]!r}; parts: {', '.join(PARTS)}")
    root = cache_dir()
    freed = 0
    for name in parts or list(PARTS):
        path = root / name
        if not path.exists():
            continue
        freed += _size(path)[1]
        try:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        except OSError as error:
            raise ClapdexError(f"cannot remove {path}: {error.strerror or error}") from None
    return freed


def bound_folder(folder: Path, max_bytes: int, keep: Path | None = None) -> None:
    """Delete the least recently used files of `folder` (oldest mtime first; readers touch the
    files they use) until it holds at most `max_bytes`. `keep` is never deleted."""
    try:
        entries = [(entry.stat().st_mtime, entry.stat().st_size, Path(entry.path))
                   for entry in os.scandir(folder) if entry.is_file()]
    except OSError:
        return
    total = sum(size for _, size, _ in entries)
    for _, size, path in sorted(entries):
        if total <= max_bytes:
            return
        if keep is not None and path == keep:
            continue
        try:
            path.unlink()
            total -= size
        except OSError:
            continue
