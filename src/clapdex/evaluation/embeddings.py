"""File-level audio embeddings for evaluation, computed once and cached on disk.

Pooling: a file is cut into the encoder's windows (clapdex.audio, deterministic), each window is
embedded, and the file embedding is the mean of the L2-normalised window embeddings (returned raw,
i.e. not re-normalised; every consumer normalises). A file that fits in one window is that window's
unit embedding. Averaging unit vectors gives each window the same say, whatever its loudness.

Cache: `<cache_dir>/<settings key>/<sha256 of the file's bytes>.npy`; cache_dir defaults to
`$CLAPDEX_CACHE_DIR/embeddings`, else the user cache directory's `clapdex/embeddings`. The settings
key hashes the encoder fingerprint, sample rate, window length and the pooling rule. The same audio under
another name or path is a cache hit; a changed file or another model is a miss. So a sparsity sweep
or a second evaluation costs decompositions, not encodings.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from clapdex.encoder import mean_window_embedding
from clapdex.errors import AudioError
from clapdex.fileio import atomic_path, cache_dir, sha256_file

POOLING = "mean-of-unit-windows-v1"


def default_cache_dir() -> Path:
    """$CLAPDEX_CACHE_DIR/embeddings, else the user cache directory's clapdex/embeddings."""
    return cache_dir("embeddings")


def file_content_hash(path: str | os.PathLike) -> str:
    try:
        return sha256_file(path)
    except OSError as error:
        raise AudioError(path, error.strerror or str(error)) from None


class EmbeddingCache:
    """Pooled file embeddings on disk, for one encoder configuration."""

    def __init__(self, cache_dir: str | os.PathLike, encoder) -> None:
        key = f"{encoder.fingerprint}|sr={encoder.sample_rate}|w={encoder.window_seconds}|{POOLING}"
        self.folder = Path(cache_dir).expanduser() / hashlib.sha256(key.encode()).hexdigest()[:24]

    def _file(self, content_hash: str) -> Path:
        return self.folder / f"{content_hash}.npy"

    def get(self, content_hash: str) -> np.ndarray | None:
        try:
            return np.load(self._file(content_hash))
        except (OSError, ValueError):
            return None  # absent or unreadable (e.g. interrupted write): recompute

    def put(self, content_hash: str, embedding: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self._file(content_hash)
        with atomic_path(final) as partial:  # readers never see half a file
            np.save(partial, np.asarray(embedding, dtype=np.float32))


def embed_file(encoder, path: str | os.PathLike) -> np.ndarray:
    """Mean of the unit window embeddings of one file, float32 (d,). Raises AudioError."""
    mean, count = mean_window_embedding(encoder, path)
    if count == 0:
        raise AudioError(path, "no audio windows")
    return mean.astype(np.float32)


@dataclass
class EmbeddedFiles:
    """Embeddings of the files that could be read; `kept[i]` is the input index of row i."""

    embeddings: np.ndarray
    kept: list[int]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    encoded: int = 0  # files actually run through the encoder (cache misses)


def embed_files(encoder, paths: Sequence[str | os.PathLike], cache_dir: str | os.PathLike | None = None,
                use_cache: bool = True,
                wrap: Callable | None = None) -> EmbeddedFiles:
    """Pooled embeddings of many files, from the cache where possible.

    Unreadable files are skipped and listed with their reason (the run goes on). `wrap` wraps the
    iteration (e.g. a progress bar).
    """
    cache = EmbeddingCache(cache_dir or default_cache_dir(), encoder) if use_cache else None
    rows, kept, skipped, encoded = [], [], [], 0
    iterator = wrap(enumerate(paths)) if wrap else enumerate(paths)
    for i, path in iterator:
        try:
            content_hash = file_content_hash(path) if cache else ""
            embedding = cache.get(content_hash) if cache else None
            if embedding is None:
                embedding = embed_file(encoder, path)
                encoded += 1
                if cache:
                    cache.put(content_hash, embedding)
        except AudioError as error:
            skipped.append((str(path), error.reason))
            continue
        rows.append(embedding)
        kept.append(i)
    dimension = encoder.dimension
    matrix = np.stack(rows).astype(np.float32) if rows else np.zeros((0, dimension), np.float32)
    return EmbeddedFiles(matrix, kept, skipped, encoded)
