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

from clapdex.audio import iter_windows
from clapdex.batching import batch_size, take_batch
from clapdex.encoder import mean_window_embedding
from clapdex.errors import AudioError
from clapdex.fileio import atomic_path, cache_dir, sha256_file
from clapdex.vectors import unit_rows

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


@dataclass
class _Pooling:
    """A file whose windows are on their way through the encoder."""

    content_hash: str
    total: np.ndarray          # sum of its unit window embeddings so far
    copies: list = field(default_factory=list)  # later files with the same content (their indices)
    windows: int = 0           # windows decoded
    waiting: int = 0           # of those, not embedded yet
    decoded: bool = False      # all its windows decoded


def embed_files(encoder, paths: Sequence[str | os.PathLike], cache_dir: str | os.PathLike | None = None,
                use_cache: bool = True,
                wrap: Callable | None = None) -> EmbeddedFiles:
    """Pooled embeddings of many files, from the cache where possible.

    The windows of the files to encode are embedded together in full batches across file
    boundaries (clapdex.batching, as the indexer does): a one-window file costs a share of a
    forward pass, not one of its own. Each file's embedding is what embed_file gives it.
    Unreadable files are skipped and listed with their reason (the run goes on). `wrap` wraps
    the iteration (e.g. a progress bar).
    """
    cache = EmbeddingCache(cache_dir or default_cache_dir(), encoder) if use_cache else None
    size = batch_size(encoder)
    found: dict[int, np.ndarray] = {}
    pending: dict[int, _Pooling] = {}
    buffer: list[tuple[int, np.ndarray]] = []   # decoded windows waiting for the encoder
    skipped: list[tuple[str, str]] = []

    def finish(i: int) -> None:
        pooled = pending.pop(i)
        found[i] = (pooled.total / pooled.windows).astype(np.float32)
        for copy in pooled.copies:
            found[copy] = found[i]
        if cache:
            cache.put(pooled.content_hash, found[i])

    def embed(final: bool = False) -> None:
        nonlocal buffer
        while buffer and (final or sum(len(x) for _, x in buffer) >= size):
            take, buffer = take_batch(buffer, size)
            rows = unit_rows(np.asarray(encoder.embed_audio(np.concatenate([x for _, x in take])),
                                        dtype=np.float64))
            first = 0
            for i, windows in take:
                pooled = pending[i]
                pooled.total += rows[first:first + len(windows)].sum(axis=0)
                pooled.waiting -= len(windows)
                first += len(windows)
                if pooled.decoded and not pooled.waiting:
                    finish(i)

    encoded = 0
    for i, path in (wrap(enumerate(paths)) if wrap else enumerate(paths)):
        try:
            content_hash = file_content_hash(path) if cache else ""
            embedding = cache.get(content_hash) if cache else None
            if embedding is not None:
                found[i] = embedding
                continue
            twin = next((p for p in pending.values() if cache and p.content_hash == content_hash),
                        None)
            if twin is not None:  # the same bytes are being encoded already
                twin.copies.append(i)
                continue
            pooled = pending[i] = _Pooling(content_hash, np.zeros(encoder.dimension))
            for windows, _times in iter_windows(path, encoder.sample_rate, encoder.window_seconds):
                buffer.append((i, windows))
                pooled.windows += len(windows)
                pooled.waiting += len(windows)
                embed()
            if not pooled.windows:
                raise AudioError(path, "no audio windows")
        except AudioError as error:  # windows it yielded before failing are dropped
            pending.pop(i, None)
            buffer = [(j, x) for j, x in buffer if j != i]
            skipped.append((str(path), error.reason))
            continue
        encoded += 1
        pooled.decoded = True
        if not pooled.waiting:
            finish(i)
    embed(final=True)
    kept = sorted(found)
    dimension = encoder.dimension
    matrix = (np.stack([found[i] for i in kept]).astype(np.float32) if kept
              else np.zeros((0, dimension), np.float32))
    return EmbeddedFiles(matrix, kept, skipped, encoded)
