"""Indexing: walk -> decode (threads) -> encode (batches) -> decompose (batches) -> store.

`index_paths` is what `clapdex index` calls. A run has three steps:

1. Walk the given files and folders (recursive, sorted, symlinks followed with loops cut, hidden
   names skipped, each file once) and stat every file. A file whose indexed row has the same size
   and mtime is unchanged and skipped.
2. Hash the other files (sha256 of the content, in worker threads). Same hash as the path's row:
   only the mtime changed ("touched"). A hash that another indexed file has: the file was moved
   (the old path is gone: its row is renamed, segment ids and FAISS entries kept) or copied (its
   segments' embeddings and postings are copied). Nothing is decoded or encoded for these.
3. The rest is decoded in worker threads (`audio.iter_windows`, bounded queues, files consumed in
   walk order so ids are deterministic) while the main thread encodes full batches of windows,
   decomposes finished files in batches and stores each batch in one transaction
   (`IndexStore.add_files`): a file becomes visible with all its segments and postings or not at
   all. A killed run leaves only whole files behind; re-running skips them and finishes the rest.

Files that cannot be used are recorded with their error (`clapdex status` lists them), skipped,
and listed in the summary; the run goes on.

The audio mean μ_A (design.md) is set once, when the index receives its first embeddings: the
mean of the L2-normalised embeddings of the first MEAN_WINDOWS windows (or of all windows of the
first run if it has fewer). Those windows are embedded before any of them is decomposed; μ_A is
stored in the settings in the same transaction as the first files, and never changes afterwards
unless `clapdex reindex --recompute-mean` re-estimates it from every stored segment.

The FAISS file is derived data: it is synced with the database when opened (after a crash it may
lag behind) and saved atomically at the end of every run, also an interrupted one.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from clapdex.errors import AudioError, ClapdexError, IndexMismatchError
from clapdex.storage.database import FileMeta, IndexSettings, IndexStore, NewFile
from clapdex.storage.dense import DEFAULT_FACTORY, DenseIndex, validate_factory

MEAN_WINDOWS = 512         # windows that estimate μ_A when an index receives its first audio
                           # (docs/indexing.md: enough for the shared direction; nothing is stored
                           # before them, so more would risk more work lost to an early Ctrl-C)
DECOMPOSE_WINDOWS = 512    # windows decomposed and stored per transaction while indexing audio
IMPORT_WINDOWS = 2048      # ... and while importing embeddings (fewer, larger commits: 1.7x faster)
MEAN_LABEL = "estimating audio mean"  # the progress bar's description until μ_A is known
STORE_AHEAD = 2            # batches queued for the storing thread
DECODE_WORKERS = 2         # decoding (and hashing) threads
QUEUE_BATCHES = 4          # decoded batches buffered per file in flight (bounds memory)
HASH_BLOCK = 1 << 20


class PathNotFoundError(ClapdexError):
    """A file or folder given on the command line does not exist."""


@dataclass
class IndexSummary:
    """What one run did. `skipped` lists the files that could not be indexed, with the reason."""

    index: str
    files_seen: int = 0
    added: int = 0          # new content, decoded and encoded
    updated: int = 0        # changed content at a known path, re-encoded
    unchanged: int = 0      # same size and mtime
    touched: int = 0        # new mtime, same content: metadata updated only
    moved: int = 0          # same content as a vanished indexed file: its row was renamed
    copied: int = 0         # same content as another indexed file: segments copied
    removed: int = 0        # --prune: indexed files that no longer exist
    segments_added: int = 0
    skipped: list[dict] = field(default_factory=list)   # {"path": ..., "error": ...}
    seconds: float = 0.0
    completed: bool = False

    def skip(self, path: str, error: str) -> None:
        self.skipped.append({"path": path, "error": error})


# ---- walking and hashing ---------------------------------------------------------------------

def find_audio_files(paths: Iterable[str | os.PathLike],
                     on_error: Callable[[str, str], None] | None = None) -> list[str]:
    """Absolute paths of the audio files under `paths`, in a deterministic order.

    Folders are walked recursively in sorted name order; only files with an audio extension
    (audio.AUDIO_EXTENSIONS) are taken, names starting with "." are skipped (hidden files, macOS
    "._" companions). Files named directly are taken whatever their extension. Symlinks are
    followed; a folder already visited (a symlink loop) is not entered twice, and a file reached
    twice is listed once. A path that does not exist raises PathNotFoundError; an unreadable
    folder, and a symlink with an audio name that leads nowhere, are reported through
    `on_error(path, reason)` and skipped.
    """
    from clapdex.audio import AUDIO_EXTENSIONS

    given = [os.path.abspath(os.fspath(p)) for p in paths]
    for path in given:
        if not os.path.exists(path):
            raise PathNotFoundError(f"{path}: no such file or folder")
    found: list[str] = []
    seen_files: set[tuple[int, int]] = set()
    seen_dirs: set[tuple[int, int]] = set()

    def take(path: str) -> None:
        try:
            stat = os.stat(path)
        except OSError:
            return
        key = (stat.st_dev, stat.st_ino)
        if key not in seen_files:
            seen_files.add(key)
            found.append(path)

    for path in given:
        if not os.path.isdir(path):
            take(path)
            continue
        stack = [path]
        while stack:
            folder = stack.pop()
            try:
                stat = os.stat(folder)
                if (stat.st_dev, stat.st_ino) in seen_dirs:
                    continue
                seen_dirs.add((stat.st_dev, stat.st_ino))
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError as error:
                if on_error:
                    on_error(folder, f"cannot list folder ({error.strerror or error})")
                continue
            subfolders = []
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                is_audio_name = os.path.splitext(entry.name)[1].lower() in AUDIO_EXTENSIONS
                try:
                    if is_audio_name and entry.is_symlink() and not os.path.exists(entry.path):
                        if on_error:  # dangling, or a loop: say so rather than drop it silently
                            on_error(entry.path, "broken symlink")
                    elif entry.is_dir(follow_symlinks=True):
                        subfolders.append(entry.path)
                    elif entry.is_file(follow_symlinks=True) and is_audio_name:
                        take(entry.path)
                except OSError:
                    continue
            stack.extend(reversed(subfolders))  # pop() then visits them in sorted order
    return found


def content_hash(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's bytes (what the manifest's content_hash column holds)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(HASH_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _hash_or_error(path: str) -> tuple[str | None, str | None]:
    try:
        return content_hash(path), None
    except OSError as error:
        return None, f"cannot read file ({error.strerror or error})"


# ---- opening an index with the requested settings --------------------------------------------

def _decomposition_mode(lam: float | None, max_concepts: int | None) -> tuple[float | None, int | None]:
    if lam is not None and max_concepts is not None:
        raise ClapdexError("give either --lambda or --max-concepts, not both")
    if lam is not None and not (np.isfinite(lam) and lam >= 0):
        raise ClapdexError(f"--lambda must be a finite number >= 0, got {lam}")
    if max_concepts is not None and max_concepts < 1:
        raise ClapdexError(f"--max-concepts must be at least 1, got {max_concepts}")
    return lam, max_concepts


def open_index(index_path: str | os.PathLike, encoder, *, vocabulary: str | None = None,
               lam: float | None = None, max_concepts: int | None = None,
               hop_seconds: float | None = None, faiss_factory: str | None = None,
               rebuild: bool = False) -> IndexStore:
    """Open the index at `index_path` for adding audio embedded by `encoder`, creating it if needed.

    A new index takes the given vocabulary (default "default"), λ or max-concepts (default
    DEFAULT_LAMBDA), hop (default: the window) and FAISS factory (default "Flat"). An existing
    index must match the encoder and every option given explicitly, else IndexMismatchError names
    the differences and the rebuild command. `rebuild` deletes the index's data first. A changed
    --faiss only rebuilds the FAISS file (it is derived data). An `encoder` that is a
    ProjectedEncoder makes a new index store its projection (see cli.common.index_encoder, which
    gives an existing index's stored projection back).
    """
    from clapdex.concepts.decompose import DEFAULT_LAMBDA
    from clapdex.concepts.dictionary import build_dictionary
    from clapdex.concepts.vocabulary import load_vocabulary
    from clapdex.evaluation.projection import ProjectedEncoder

    root = Path(index_path)
    projection = encoder.projection if isinstance(encoder, ProjectedEncoder) else None
    lam, max_concepts = _decomposition_mode(lam, max_concepts)
    if faiss_factory is not None:
        validate_factory(faiss_factory)
    if hop_seconds is not None and not (0 < hop_seconds <= encoder.window_seconds):
        raise ClapdexError(f"--hop must be > 0 and at most the window ({encoder.window_seconds} s)")
    IndexStore.require_writable(root)  # before any work: a read-only index or a file at root
    if rebuild and IndexStore.exists(root):
        IndexStore.destroy(root)

    if not IndexStore.exists(root):
        vocab = load_vocabulary(vocabulary or "default")
        dictionary = build_dictionary(encoder, vocab)
        if lam is None and max_concepts is None:
            lam = DEFAULT_LAMBDA
        settings = IndexSettings(
            encoder_fingerprint=encoder.fingerprint, dimension=int(encoder.dimension),
            sample_rate=int(encoder.sample_rate), window_seconds=float(encoder.window_seconds),
            hop_seconds=float(hop_seconds or encoder.window_seconds),
            vocabulary_name=vocab.name, vocabulary_hash=vocab.content_hash, lam=lam,
            max_concepts=max_concepts, faiss_factory=faiss_factory or DEFAULT_FACTORY,
            projection=None if projection is None else projection.matrix,
            projection_hash=None if projection is None else projection.content_hash)
        return IndexStore.create(root, settings, dictionary.names, dictionary.text_embeddings)

    model = dict(encoder_fingerprint=encoder.fingerprint, dimension=int(encoder.dimension),
                 sample_rate=int(encoder.sample_rate), window_seconds=float(encoder.window_seconds),
                 projection_hash=None if projection is None else projection.content_hash)
    return _open_existing(root, model, vocabulary=vocabulary, lam=lam, max_concepts=max_concepts,
                          hop_seconds=hop_seconds, faiss_factory=faiss_factory)


def _open_existing(root: str | os.PathLike, model: dict, *, vocabulary: str | None,
                   lam: float | None, max_concepts: int | None, hop_seconds: float | None,
                   faiss_factory: str | None) -> IndexStore:
    """Open an existing index for writing, refusing (IndexMismatchError) any requested setting that
    differs from the stored one. `model` holds the settings the embeddings' model fixes (at least
    its fingerprint); options left at None mean "what the index has". A new --faiss is stored
    (the FAISS file is derived data: it is rebuilt when opened). Validate the options first."""
    from clapdex.concepts.vocabulary import load_vocabulary

    store = IndexStore.open(root, write=True)
    try:
        stored = store.settings
        requested = dataclasses.replace(stored, **model)
        requested_concepts = None
        if hop_seconds is not None:
            requested.hop_seconds = float(hop_seconds)
        if vocabulary is not None:
            vocab = load_vocabulary(vocabulary)
            requested.vocabulary_name, requested.vocabulary_hash = vocab.name, vocab.content_hash
            requested_concepts = len(vocab)
        if lam is not None or max_concepts is not None:
            requested.lam, requested.max_concepts = lam, max_concepts
        stored.check_compatible(requested, root, concepts=store.concept_count(),
                                requested_concepts=requested_concepts)
        if faiss_factory is not None and faiss_factory != stored.faiss_factory:
            store.update_settings(faiss_factory=faiss_factory)
    except BaseException:
        store.close()
        raise
    return store


# ---- the pipeline ----------------------------------------------------------------------------

@dataclass
class _Rows:
    """A slice of a Decomposition: the fields IndexStore stores."""

    weights: object
    fidelity: np.ndarray
    recon_norm: np.ndarray
    shift_norm: np.ndarray


@dataclass
class _Work:
    """One file on its way through the pipeline."""

    meta: FileMeta
    kind: str                                        # "added" | "updated" (summary counter)
    starts: list = field(default_factory=list)
    ends: list = field(default_factory=list)
    parts: list = field(default_factory=list)        # embedded batches, in window order
    decoded: int = 0
    embedded: int = 0
    finished: bool = False                           # all windows decoded
    failed: bool = False

    @property
    def complete(self) -> bool:
        return self.finished and not self.failed and self.embedded == self.decoded


class _Writer:
    """Decomposes finished files in batches and stores each batch in one transaction.

    The work runs on one background thread (in submission order, at most STORE_AHEAD batches
    queued), so storing overlaps the encoder; a failure there is raised in the caller at its next
    call. All database writes of a run go through here once encoding starts, so they stay ordered.
    """

    def __init__(self, store: IndexStore, dense: DenseIndex, summary: IndexSummary, bar,
                 label: str, batch_windows: int | None = None):
        """`bar` (a cli.common.progress bar) counts stored files under `label`, or under
        MEAN_LABEL while the first windows wait for μ_A (nothing is stored meanwhile)."""
        self.store = store
        self.dense = dense
        self.summary = summary
        self.bar = bar
        self.label = self._shown = label
        self.batch_windows = batch_windows or DECOMPOSE_WINDOWS
        self.dictionary = None  # built by the first job, off the encoder's path (K x K Gram)
        self.settings = store.settings
        self.mean = self.settings.audio_mean  # decided here (caller's thread), stored by the job
        self.pending: list[tuple[_Work, np.ndarray]] = []
        self.pending_windows = 0
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="clapdex-store")
        self._inflight: deque = deque()
        self._submit(self._prepare_dictionary)

    def put(self, work: _Work, embeddings: np.ndarray) -> None:
        if not np.isfinite(embeddings).all():
            self.record_error(work.meta, "the encoder returned NaN or infinite embeddings")
            return
        self.pending.append((work, embeddings))
        self.pending_windows += len(embeddings)
        if self.mean is None:
            self._describe(MEAN_LABEL)
        threshold = self.batch_windows if self.mean is not None else MEAN_WINDOWS
        if self.pending_windows >= threshold:
            self.flush()

    def record_error(self, meta: FileMeta, error: str) -> None:
        self._submit(self._record_error, meta, error)

    def flush(self) -> None:
        from clapdex.concepts.decompose import audio_mean

        if not self.pending:
            return
        new_mean = None
        if self.mean is None:
            self.mean = new_mean = audio_mean(np.concatenate([e for _, e in self.pending]))
            self._describe(self.label)
        self._submit(self._store_batch, self.pending, new_mean)
        self.pending, self.pending_windows = [], 0

    def finish(self) -> None:
        """Store what is pending and wait for everything (raises a background failure)."""
        self.flush()
        while self._inflight:
            self._inflight.popleft().result()

    def close(self) -> None:
        """Wait for the jobs already submitted (each is a whole transaction) and stop."""
        self._pool.shutdown(wait=True)

    def _describe(self, text: str) -> None:
        if text != self._shown:
            self._shown = text
            self.bar.set_description_str(text)

    def _submit(self, job, *args) -> None:
        self._inflight.append(self._pool.submit(job, *args))
        while self._inflight and (len(self._inflight) > STORE_AHEAD or self._inflight[0].done()):
            self._inflight.popleft().result()

    # ---- jobs (background thread) ----

    def _prepare_dictionary(self) -> None:
        self.dictionary = self.store.dictionary()
        self.dictionary.gram()  # cached on the dictionary; decompose reuses it

    def _record_error(self, meta: FileMeta, error: str) -> None:
        self.store.record_error(meta, error)
        self.summary.skip(meta.path, error)
        self.bar.update(1)

    def _store_batch(self, pending: list[tuple[_Work, np.ndarray]], new_mean) -> None:
        from clapdex.concepts.decompose import decompose

        embeddings = np.concatenate([e for _, e in pending])
        decomposition = decompose(embeddings, self.dictionary, self.mean, lam=self.settings.lam,
                                  max_concepts=self.settings.max_concepts)
        files, first = [], 0
        for work, part in pending:
            n = len(part)
            rows = _Rows(decomposition.weights[first:first + n],
                         np.asarray(decomposition.fidelity)[first:first + n],
                         np.asarray(decomposition.recon_norm)[first:first + n],
                         np.asarray(decomposition.shift_norm)[first:first + n])
            files.append(NewFile(work.meta, np.asarray(work.starts), np.asarray(work.ends), part, rows))
            first += n
        with self.store.session() as session, session.begin():
            if new_mean is not None:  # μ_A becomes visible together with the first files
                self.store.update_settings(session, audio_mean=new_mean)
            stored = self.store.add_files(files, session=session)
        segment_ids = np.concatenate([ids for _, ids in stored])
        self.dense.add(segment_ids, embeddings)
        for work, _ in pending:
            setattr(self.summary, work.kind, getattr(self.summary, work.kind) + 1)
        self.summary.segments_added += len(segment_ids)
        self.bar.update(len(pending))


class _DecodeAhead:
    """Decodes files in worker threads, a few files ahead of the consumer, in bounded memory.

    Iterating yields (file position, message) in file order; messages are ("info", AudioInfo),
    ("windows", array, [Window]) ..., then ("end",) or ("error", reason).
    """

    def __init__(self, paths: Sequence[str], sample_rate: int, window_seconds: float,
                 hop_seconds: float, batch: int, workers: int):
        self.paths = paths
        self.args = (sample_rate, window_seconds, hop_seconds, batch)
        self.workers = max(1, workers)
        self.stop = threading.Event()
        self.executor = ThreadPoolExecutor(self.workers, thread_name_prefix="clapdex-decode")
        self.queues: deque[queue.Queue] = deque()

    def __iter__(self) -> Iterator[tuple[int, tuple]]:
        upcoming = iter(range(len(self.paths)))
        for _ in range(self.workers):
            self._submit(next(upcoming, None))
        for position in range(len(self.paths)):
            channel = self.queues.popleft()
            self._submit(next(upcoming, None))
            while True:
                message = channel.get()
                yield position, message
                if message[0] in ("end", "error"):
                    break

    def _submit(self, position: int | None) -> None:
        if position is None:
            return
        channel: queue.Queue = queue.Queue(maxsize=QUEUE_BATCHES)
        self.queues.append(channel)
        self.executor.submit(self._decode, self.paths[position], channel)

    def _decode(self, path: str, channel: queue.Queue) -> None:
        from clapdex.audio import iter_windows, probe

        sample_rate, window_seconds, hop_seconds, batch = self.args
        try:
            self._put(channel, ("info", probe(path)))
            for windows, times in iter_windows(path, sample_rate, window_seconds, hop_seconds, batch):
                if not self._put(channel, ("windows", windows, times)):
                    return
            self._put(channel, ("end",))
        except AudioError as error:
            self._put(channel, ("error", error.reason))
        except Exception as error:  # a decoder bug must not stop the run: record it on the file
            self._put(channel, ("error", f"{type(error).__name__}: {error}"))

    def _put(self, channel: queue.Queue, message: tuple) -> bool:
        while not self.stop.is_set():
            try:
                channel.put(message, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def close(self) -> None:
        self.stop.set()
        self.executor.shutdown(wait=True, cancel_futures=True)


def _encode_files(works: list[_Work], encoder, settings: IndexSettings, writer: _Writer,
                  summary: IndexSummary, workers: int) -> None:
    """Decode (threads) -> encode full batches -> hand finished files to the writer."""
    batch = max(1, int(getattr(encoder, "batch_size", 16)))
    decoder = _DecodeAhead([w.meta.path for w in works], settings.sample_rate,
                           settings.window_seconds, settings.hop_seconds, batch, workers)
    buffer: list[tuple[_Work, np.ndarray]] = []   # decoded windows waiting for the encoder

    def encode_buffer(final: bool = False) -> None:
        """Embed the buffered windows in batches of exactly `batch` (the rest waits, unless
        final): the encoder's forward passes are then the same as embedding the windows alone."""
        nonlocal buffer
        buffer = [(w, x) for w, x in buffer if not w.failed]
        while buffer and (final or sum(len(x) for _, x in buffer) >= batch):
            take, rest, room = [], [], batch
            for work, windows in buffer:
                if room >= len(windows):
                    take.append((work, windows))
                    room -= len(windows)
                elif room > 0:
                    take.append((work, windows[:room]))
                    rest.append((work, windows[room:]))
                    room = 0
                else:
                    rest.append((work, windows))
            buffer = rest
            embeddings = np.asarray(encoder.embed_audio(np.concatenate([x for _, x in take])),
                                    dtype=np.float32)
            first = 0
            for work, windows in take:
                work.parts.append(embeddings[first:first + len(windows)])
                work.embedded += len(windows)
                first += len(windows)
                if work.complete:
                    writer.put(work, np.concatenate(work.parts))
                    work.parts = []

    try:
        for position, message in decoder:
            work = works[position]
            kind = message[0]
            if kind == "info":
                info = message[1]
                work.meta.sample_rate, work.meta.channels = info.sample_rate, info.channels
            elif kind == "windows":
                windows, times = message[1], message[2]
                work.starts.extend(t.start for t in times)
                work.ends.extend(t.end for t in times)
                work.decoded += len(windows)
                buffer.append((work, windows))
                if sum(len(x) for _, x in buffer) >= batch:
                    encode_buffer()
            elif kind == "end":
                work.finished = True
                work.meta.duration = max(work.ends) if work.ends else 0.0
                if work.complete:  # everything was embedded already
                    writer.put(work, np.concatenate(work.parts))
                    work.parts = []
            else:  # error
                work.failed = True
                work.parts = []
                writer.record_error(work.meta, message[1])
        encode_buffer(final=True)
        writer.finish()
    finally:
        decoder.close()
        writer.close()


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def index_paths(paths: Sequence[str | os.PathLike], encoder, index_path: str | os.PathLike, *,
                vocabulary: str | None = None, lam: float | None = None,
                max_concepts: int | None = None, hop_seconds: float | None = None,
                prune: bool = False, rebuild: bool = False, faiss_factory: str | None = None,
                workers: int = DECODE_WORKERS, show_progress: bool | None = None) -> IndexSummary:
    """Index (or update the index of) the audio files under `paths`. See the module docstring.

    Raises PathNotFoundError for a missing path and IndexMismatchError for an index built with
    other settings; bad files are not errors (they are in `summary.skipped`).
    """
    from clapdex.cli.common import progress

    began = time.perf_counter()
    summary = IndexSummary(index=str(index_path))
    files = find_audio_files(paths, on_error=summary.skip)
    roots = [os.path.abspath(os.fspath(p)) for p in paths]
    summary.files_seen = len(files)
    store = open_index(index_path, encoder, vocabulary=vocabulary, lam=lam,
                       max_concepts=max_concepts, hop_seconds=hop_seconds,
                       faiss_factory=faiss_factory, rebuild=rebuild)
    dense = None
    bar = progress(total=len(files), desc="indexing", unit="file", show=show_progress)
    try:
        dense = DenseIndex.open(store)
        writer = _Writer(store, dense, summary, bar, "indexing")
        to_encode, duplicates = _plan(files, store, summary, bar, workers)
        _encode_files(to_encode, encoder, store.settings, writer, summary, workers)
        for meta in duplicates:  # their twins are stored now: copy them
            if not _reuse(store, summary, meta):
                _record(store, summary, meta, "same content as a file that could not be indexed")
            bar.update(1)
        if prune:
            for row in store.files():
                if _under(row.path, roots) and not os.path.exists(row.path):
                    store.remove_file(row.path)
                    summary.removed += 1
        summary.completed = True
    finally:
        bar.close()
        _save_dense(dense, store, summary, began)
    return summary


def _save_dense(dense: DenseIndex | None, store: IndexStore, summary: IndexSummary,
                began: float) -> None:
    """Sync and save the FAISS file, also after Ctrl-C; close the store. If the run failed, a
    failure here must not hide the original error (the file is re-synced when next opened)."""
    try:
        if dense is not None:
            dense.sync(store).save(store.faiss_path)
    except Exception:
        if summary.completed:
            raise
    finally:
        store.close()
        summary.seconds = time.perf_counter() - began


def _plan(files: list[str], store: IndexStore, summary: IndexSummary, bar,
          workers: int) -> tuple[list[_Work], list[FileMeta]]:
    """Steps 1 and 2 of the module docstring. Returns the files that must be encoded, and those
    with the same content as one of them (copied once it is stored)."""
    known = {row.path: row for row in store.files()}
    candidates: list[tuple[str, os.stat_result]] = []
    for path in files:
        try:
            stat = os.stat(path)
        except OSError as error:
            _record(store, summary, FileMeta(path, 0, 0), f"cannot read file ({error.strerror})")
            bar.update(1)
            continue
        row = known.get(path)
        if (row is not None and row.status == "indexed" and row.size == stat.st_size
                and row.mtime_ns == stat.st_mtime_ns):
            summary.unchanged += 1
            bar.update(1)
        else:
            candidates.append((path, stat))

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="clapdex-hash") as pool:
        hashes = list(pool.map(_hash_or_error, [path for path, _ in candidates]))

    to_encode: list[_Work] = []
    queued_hashes: set[str] = set()
    duplicates: list[FileMeta] = []
    for (path, stat), (digest, error) in zip(candidates, hashes):
        meta = FileMeta(path, stat.st_size, stat.st_mtime_ns, digest)
        row = known.get(path)
        if error:
            _record(store, summary, meta, error)
            bar.update(1)
        elif row is not None and row.status == "indexed" and row.content_hash == digest:
            store.update_file_stat(path, meta.size, meta.mtime_ns)
            summary.touched += 1
            bar.update(1)
        elif digest in queued_hashes:
            duplicates.append(meta)
        elif _reuse(store, summary, meta):
            bar.update(1)
        else:
            indexed_before = row is not None and row.status == "indexed"
            to_encode.append(_Work(meta, "updated" if indexed_before else "added"))
            queued_hashes.add(digest)
    return to_encode, duplicates


def _reuse(store: IndexStore, summary: IndexSummary, meta: FileMeta) -> bool:
    """Index `meta` from an indexed file with the same content, if there is one (move or copy)."""
    sources = [row for row in store.files_by_hash(meta.content_hash) if row.path != meta.path]
    if not sources:
        return False
    vanished = [row for row in sources if not os.path.exists(row.path)]
    if vanished:
        store.move_file(vanished[0].path, meta)
        summary.moved += 1
    else:
        _, segment_ids = store.copy_file(sources[0].path, meta)
        summary.copied += 1
        summary.segments_added += len(segment_ids)
    return True


def _record(store: IndexStore, summary: IndexSummary, meta: FileMeta, error: str) -> None:
    store.record_error(meta, error)
    summary.skip(meta.path, error)


# ---- re-decomposition from stored embeddings ---------------------------------------------------

@dataclass
class ReindexSummary:
    index: str
    segments: int
    lam: float | None
    max_concepts: int | None
    vocabulary: str
    concepts: int
    postings_before: int
    postings_after: int
    mean_recomputed: bool
    seconds: float


def reindex(index_path: str | os.PathLike, *, lam: float | None = None,
            max_concepts: int | None = None, vocabulary: str | None = None, encoder=None,
            recompute_mean: bool = False, show_progress: bool | None = None) -> ReindexSummary:
    """Re-decompose every stored segment from its stored embedding (no audio is decoded or encoded).

    New λ / max-concepts / vocabulary replace the stored ones; without any, the stored settings are
    applied again. A new vocabulary needs `encoder` (the index's model) for the concept text
    embeddings. Everything happens in one transaction: an interrupted reindex changes nothing.
    """
    from clapdex.cli.common import progress
    from clapdex.concepts.decompose import audio_mean, decompose
    from clapdex.concepts.dictionary import build_dictionary
    from clapdex.concepts.vocabulary import load_vocabulary

    began = time.perf_counter()
    lam, max_concepts = _decomposition_mode(lam, max_concepts)
    with IndexStore.open(index_path, write=True) as store:
        settings = store.settings
        if lam is None and max_concepts is None:
            lam, max_concepts = settings.lam, settings.max_concepts
        vocab = None
        if vocabulary is not None:
            vocab = load_vocabulary(vocabulary)
            if vocab.content_hash == settings.vocabulary_hash:
                vocab = None  # same concepts: keep the stored embeddings
        if vocab is not None:
            if encoder is None:
                raise ClapdexError("a new vocabulary needs the model to embed its concepts")
            if encoder.fingerprint != settings.encoder_fingerprint:
                raise IndexMismatchError(
                    f"index {index_path} was built with model {settings.encoder_fingerprint!r}, "
                    f"the given model is {encoder.fingerprint!r}; pass the index's model options")
            dictionary = build_dictionary(encoder, vocab)
        else:
            dictionary = store.dictionary()
        mean = settings.audio_mean
        if recompute_mean or mean is None:
            mean = _corpus_mean(store)
        before = store.counts()
        bar = progress(total=before["segments"], desc="reindexing", unit="segment",
                       show=show_progress)
        try:
            with store.session() as session, session.begin():
                if vocab is not None:
                    store.replace_concepts(session, dictionary.names, dictionary.text_embeddings)
                for ids, embeddings in store.iter_segment_embeddings(DECOMPOSE_WINDOWS * 8):
                    result = decompose(embeddings, dictionary, mean, lam=lam,
                                       max_concepts=max_concepts)
                    store.replace_postings(session, ids, result)
                    bar.update(len(ids))
                changes = dict(lam=lam, max_concepts=max_concepts,
                               audio_mean=None if mean is None else np.asarray(mean))
                if vocab is not None:
                    changes.update(vocabulary_name=vocab.name, vocabulary_hash=vocab.content_hash)
                store.update_settings(session, **changes)
        except BaseException:
            store._settings = None  # the transaction rolled back: reread the stored settings
            raise
        finally:
            bar.close()
        after = store.counts()
        return ReindexSummary(
            index=str(index_path), segments=after["segments"], lam=lam, max_concepts=max_concepts,
            vocabulary=store.settings.vocabulary_name, concepts=after["concepts"],
            postings_before=before["postings"], postings_after=after["postings"],
            mean_recomputed=bool(recompute_mean or settings.audio_mean is None),
            seconds=time.perf_counter() - began)


def _corpus_mean(store: IndexStore) -> np.ndarray | None:
    """Mean of the L2-normalised embeddings of every stored segment (streamed in chunks)."""
    total, count = None, 0
    for _, embeddings in store.iter_segment_embeddings():
        rows = embeddings.astype(np.float64)
        rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-30)
        total = rows.sum(axis=0) if total is None else total + rows.sum(axis=0)
        count += len(rows)
    return None if count == 0 else total / count


# ---- precomputed embeddings --------------------------------------------------------------------

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
                      encoder=None, vocabulary: str | None = None, lam: float | None = None,
                      max_concepts: int | None = None, hop_seconds: float | None = None,
                      faiss_factory: str | None = None,
                      show_progress: bool | None = None) -> IndexSummary:
    """Index precomputed window embeddings (row i of `embeddings` is `manifest[i]`).

    The embeddings must come from the index's model: `fingerprint` (what that model reports) must
    equal the index's, or, if not given, the fingerprint of `encoder`. A new index needs `encoder`
    (its concepts are embedded with the model's text side). Checks: 2-d, one row per manifest row,
    the index's dimension, finite, no all-zero rows. Each file replaces any indexed file with the
    same path; files are decomposed and stored in batches, each batch in one transaction.
    """
    from clapdex.cli.common import progress

    began = time.perf_counter()
    summary = IndexSummary(index=str(index_path))
    matrix = np.asarray(embeddings)
    if matrix.ndim != 2:
        raise ClapdexError(f"embeddings must be a 2-d array (rows, dimension), got shape {matrix.shape}")
    if len(matrix) != len(manifest):
        raise ClapdexError(f"{len(matrix)} embedding rows but {len(manifest)} manifest rows; "
                           "they must correspond one to one")
    if fingerprint is None and encoder is None:
        raise ClapdexError("give --fingerprint or the model options, so the model can be checked")
    claimed = fingerprint if fingerprint is not None else encoder.fingerprint
    if encoder is not None and claimed != encoder.fingerprint:
        raise IndexMismatchError(f"the embeddings' fingerprint {claimed!r} is not the model's "
                                 f"{encoder.fingerprint!r}")
    if IndexStore.exists(index_path):
        if encoder is not None:
            store = open_index(index_path, encoder, vocabulary=vocabulary, lam=lam,
                               max_concepts=max_concepts, hop_seconds=hop_seconds,
                               faiss_factory=faiss_factory)
        else:
            store = _open_by_fingerprint(index_path, claimed, vocabulary, lam, max_concepts,
                                         hop_seconds, faiss_factory)
    else:
        if encoder is None:
            raise ClapdexError(f"no index at {index_path}; creating one needs the model options "
                               "(its concepts are embedded with the model's text encoder)")
        store = open_index(index_path, encoder, vocabulary=vocabulary, lam=lam,
                           max_concepts=max_concepts, hop_seconds=hop_seconds,
                           faiss_factory=faiss_factory)
    dense = None
    try:
        dimension = store.settings.dimension
        if matrix.shape[1] != dimension:
            raise ClapdexError(f"embeddings have dimension {matrix.shape[1]}, the index {dimension}")
        groups: dict[str, list[int]] = {}
        for i, row in enumerate(manifest):
            groups.setdefault(row.path, []).append(i)
        summary.files_seen = len(groups)
        dense = DenseIndex.open(store)
        bar = progress(total=len(groups), desc="importing", unit="file", show=show_progress)
        writer = _Writer(store, dense, summary, bar, "importing", batch_windows=IMPORT_WINDOWS)
        try:
            for path, rows in groups.items():
                rows.sort(key=lambda i: (manifest[i].start, i))
                part = np.asarray(matrix[rows], dtype=np.float32)  # reads only these rows (mmap)
                bad = _bad_rows(part)
                if bad:
                    raise ClapdexError(f"embedding row {rows[bad[0]]} ({path}) {bad[1]}")
                work = _Work(_manifest_meta(path, [manifest[i] for i in rows]),
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
        _save_dense(dense, store, summary, began)
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


def _open_by_fingerprint(index_path, fingerprint: str, vocabulary, lam, max_concepts, hop_seconds,
                         faiss_factory) -> IndexStore:
    """Open an existing index for embeddings whose model is known only by its fingerprint."""
    lam, max_concepts = _decomposition_mode(lam, max_concepts)
    if faiss_factory is not None:
        validate_factory(faiss_factory)
    return _open_existing(index_path, dict(encoder_fingerprint=fingerprint), vocabulary=vocabulary,
                          lam=lam, max_concepts=max_concepts, hop_seconds=hop_seconds,
                          faiss_factory=faiss_factory)
