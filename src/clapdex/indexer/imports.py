"""Indexing precomputed window embeddings (`clapdex import-embeddings`) and reading their manifest."""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from clapdex.errors import ClapdexError, IndexMismatchError
from clapdex.indexer.opening import check_roots, define_roots, open_existing, open_index
from clapdex.indexer.storing import IndexSummary, Work, Writer, save_dense
from clapdex.progress import Progress, ProgressCallback, reporter
from clapdex.sparsity import Sparsity
from clapdex.storage.database import FileMeta, IndexStore
from clapdex.storage.dense import DenseIndex, validate_factory

IMPORT_WINDOWS = 2048      # windows decomposed and stored per transaction while importing
                           # embeddings (fewer, larger commits than indexing audio: 1.7x faster)

MANIFEST_REQUIRED = ("path", "start", "end")
MANIFEST_OPTIONAL = ("size", "mtime_ns", "content_hash", "duration", "sample_rate", "channels")


@dataclass
class ManifestRow:
    path: str
    start: float
    end: float
    file_fields: dict  # the optional per-file columns present on this row


def read_manifest(path: str | os.PathLike) -> list[ManifestRow]:
    """Read FILES.csv: a header, then one row per embedding row (see docs/indexing.md).

    Required columns: path, start, end (seconds). Optional per-file columns: size, mtime_ns,
    content_hash (sha256 hex of the file), duration, sample_rate, channels. Relative paths are
    taken relative to the manifest's folder.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in MANIFEST_REQUIRED if c not in columns]
            if missing:
                raise ClapdexError(f"{path}: manifest lacks column(s) {', '.join(missing)} "
                                   f"(needs a header with {', '.join(MANIFEST_REQUIRED)})")
            rows = []
            for line, record in enumerate(reader, start=2):
                record = {k.strip(): (v or "").strip() for k, v in record.items() if k}
                try:
                    start, end = float(record["start"]), float(record["end"])
                    fields = {}
                    for name in MANIFEST_OPTIONAL:
                        value = record.get(name, "")
                        if value:
                            fields[name] = value if name == "content_hash" else (
                                float(value) if name == "duration" else int(value))
                except ValueError as error:
                    raise ClapdexError(f"{path}, line {line}: {error}") from None
                if not record["path"]:
                    raise ClapdexError(f"{path}, line {line}: empty path")
                if not (np.isfinite(start) and np.isfinite(end) and 0 <= start < end):
                    raise ClapdexError(f"{path}, line {line}: need 0 <= start < end, "
                                       f"got {start}, {end}")
                file_path = record["path"]
                if not os.path.isabs(file_path):
                    file_path = os.path.normpath(os.path.join(path.parent.absolute(), file_path))
                rows.append(ManifestRow(file_path, start, end, fields))
    except OSError as error:
        raise ClapdexError(f"{path}: cannot read manifest ({error.strerror or error})") from None
    except (csv.Error, UnicodeDecodeError) as error:
        raise ClapdexError(f"{path}: not a readable CSV file ({error})") from None
    return rows


def import_embeddings(index_path: str | os.PathLike, embeddings: np.ndarray,
                      manifest: Sequence[ManifestRow], *, fingerprint: str | None = None,
                      encoder=None, vocabulary: str | None = None,
                      sparsity: Sparsity = Sparsity(), hop_seconds: float | None = None,
                      faiss_factory: str | None = None,
                      roots: Sequence[str | os.PathLike] = (),
                      show_progress: bool | None = None,
                      progress: ProgressCallback | None = None) -> IndexSummary:
    """Index precomputed window embeddings (row i of `embeddings` is `manifest[i]`).

    The embeddings must come from the index's model: `fingerprint` (what that model reports) must
    equal the index's, or, if not given, the fingerprint of `encoder`. A new index needs `encoder`
    (its concepts are embedded with the model's text side). Checks: 2-d, one row per manifest row,
    the index's dimension, finite, no all-zero rows. Each file replaces any indexed file with the
    same path; files are decomposed and stored in batches, each batch in one transaction.
    `roots` ("NAME=PATH" or "PATH" each) defines named roots, or moves them, as `index_paths`
    does, before any file is stored: manifest paths under a root are stored relative to it.
    """

    began = time.perf_counter()
    checked_roots = check_roots(roots)  # before any work: a bad --root changes nothing
    summary = IndexSummary(index=str(index_path))
    matrix = np.asarray(embeddings)
    if matrix.ndim != 2:
        raise ClapdexError(f"embeddings must be a 2-d array (rows, dimension), got shape {matrix.shape}")
    if len(matrix) != len(manifest):
        raise ClapdexError(f"{len(matrix)} embedding rows but {len(manifest)} manifest rows; "
                           "they must correspond one to one")
    if fingerprint is None and encoder is None:
        raise ClapdexError("give the embeddings' fingerprint or the model options, so the model "
                           "can be checked")
    claimed = fingerprint if fingerprint is not None else encoder.fingerprint
    if encoder is not None and claimed != encoder.fingerprint:
        raise IndexMismatchError(f"the embeddings' fingerprint {claimed!r} is not the model's "
                                 f"{encoder.fingerprint!r}")
    if IndexStore.exists(index_path):
        if encoder is not None:
            store = open_index(index_path, encoder, vocabulary=vocabulary, sparsity=sparsity,
                               hop_seconds=hop_seconds, faiss_factory=faiss_factory)
        else:
            store = _open_by_fingerprint(index_path, claimed, vocabulary, sparsity, hop_seconds,
                                         faiss_factory)
    else:
        if encoder is None:
            raise ClapdexError(f"no index at {index_path}; creating one needs the model options "
                               "(its concepts are embedded with the model's text encoder)")
        store = open_index(index_path, encoder, vocabulary=vocabulary, sparsity=sparsity,
                           hop_seconds=hop_seconds, faiss_factory=faiss_factory)
    dense = None
    try:
        define_roots(store, checked_roots)
        dimension = store.settings.dimension
        if matrix.shape[1] != dimension:
            raise ClapdexError(f"embeddings have dimension {matrix.shape[1]}, the index {dimension}")
        groups: dict[str, list[int]] = {}
        for i, row in enumerate(manifest):
            groups.setdefault(row.path, []).append(i)
        summary.files_seen = len(groups)
        dense = DenseIndex.open(store)
        bar = Progress(reporter(progress, show_progress), total=len(groups),
                       desc="importing", unit="file")
        writer = Writer(store, dense, summary, bar, "importing", batch_windows=IMPORT_WINDOWS)
        try:
            for path, rows in groups.items():
                bar.set_item(path)
                rows.sort(key=lambda i: (manifest[i].start, i))
                part = np.asarray(matrix[rows], dtype=np.float32)  # reads only these rows (mmap)
                bad = _bad_rows(part)
                if bad:
                    raise ClapdexError(f"embedding row {rows[bad[0]]} ({path}) {bad[1]}")
                work = Work(_manifest_meta(path, [manifest[i] for i in rows]),
                             "updated" if store.file_by_path(path) else "added")
                work.starts = [manifest[i].start for i in rows]
                work.ends = [manifest[i].end for i in rows]
                writer.put(work, part)
            writer.finish()
        finally:
            writer.close()
            bar.close()
        summary.completed = True
    finally:
        save_dense(dense, store, summary, began)
    return summary


def _bad_rows(part: np.ndarray) -> tuple[int, str] | None:
    finite = np.isfinite(part).all(axis=1)
    if not finite.all():
        return int(np.flatnonzero(~finite)[0]), "contains NaN or infinite values"
    zero = ~part.any(axis=1)
    if zero.any():
        return int(np.flatnonzero(zero)[0]), "is all zeros"
    return None


def _manifest_meta(path: str, rows: list[ManifestRow]) -> FileMeta:
    fields: dict = {}
    for row in rows:
        for name, value in row.file_fields.items():
            fields.setdefault(name, value)
    size, mtime_ns = fields.get("size"), fields.get("mtime_ns")
    if (size is None or mtime_ns is None) and os.path.exists(path):
        stat = os.stat(path)
        size = stat.st_size if size is None else size
        mtime_ns = stat.st_mtime_ns if mtime_ns is None else mtime_ns
    return FileMeta(path=path, size=int(size or 0), mtime_ns=int(mtime_ns or 0),
                    content_hash=fields.get("content_hash"),
                    duration=fields.get("duration", max(r.end for r in rows)),
                    sample_rate=fields.get("sample_rate"), channels=fields.get("channels"))


def _open_by_fingerprint(index_path, fingerprint: str, vocabulary, sparsity: Sparsity,
                         hop_seconds, faiss_factory) -> IndexStore:
    """Open an existing index for embeddings whose model is known only by its fingerprint."""
    if faiss_factory is not None:
        validate_factory(faiss_factory)
    return open_existing(index_path, dict(encoder_fingerprint=fingerprint), vocabulary=vocabulary,
                         sparsity=sparsity, hop_seconds=hop_seconds, faiss_factory=faiss_factory)
