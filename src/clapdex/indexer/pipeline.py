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
and listed in the summary; the run goes on. So is what the walk could not use (folders it cannot
list, broken symlinks, FIFOs and devices); an error row under the walked paths that the walk no
longer meets is dropped. `--prune` never removes what sits in a folder that could not be listed.

The audio mean μ_A (design.md) is set once, when the index receives its first embeddings: the
mean of the L2-normalised embeddings of the first MEAN_WINDOWS (storing.py) windows (or of all
windows of the first run if it has fewer). Those windows are embedded before any of them is
decomposed; μ_A is stored in the settings in the same transaction as the first files, and never
changes afterwards unless `clapdex reindex --recompute-mean` re-estimates it from every stored
segment.

The FAISS file is derived data: it is synced with the database when opened (after a crash it may
lag behind) and saved atomically at the end of every run, also an interrupted one.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Sequence

import numpy as np

from clapdex.batching import batch_size, take_batch
from clapdex.errors import AudioError, ClapdexError
from clapdex.indexer.incremental import plan, record, reuse
from clapdex.indexer.opening import check_roots, define_roots, open_index
from clapdex.indexer.parts import PART_WINDOWS, Parts
from clapdex.indexer.storing import IndexSummary, Work, Writer, save_dense
from clapdex.indexer.walk import UNLISTED, find_audio_files
from clapdex.printable import one_line
from clapdex.progress import AUDIO_SECONDS, Progress, ProgressCallback, duration_words, reporter
from clapdex.sparsity import Sparsity
from clapdex.storage.database import FileMeta, IndexSettings, SegmentLevels
from clapdex.storage.dense import DenseIndex

DECODE_WORKERS = 2         # decoding (and hashing) threads
QUEUE_BATCHES = 4          # decoded batches buffered per file in flight (bounds memory)


class _DecodeAhead:
    """Decodes files in worker threads, a few files ahead of the consumer, in bounded memory.

    Iterating yields (file position, message) in file order; messages are ("info", AudioInfo),
    ("windows", array, [Window]) ..., then ("end", warning or None, SegmentLevels of every
    window) or ("error", reason).
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
        from clapdex.audio import DecodeReport, iter_windows, probe

        sample_rate, window_seconds, hop_seconds, batch = self.args
        report, every = DecodeReport(), []
        try:
            self._put(channel, ("info", probe(path)))
            for windows, times in iter_windows(path, sample_rate, window_seconds, hop_seconds,
                                               batch, report):
                every.extend(times)
                if not self._put(channel, ("windows", windows, times)):
                    return
            self._put(channel, ("end", report.warning, SegmentLevels.of(report.levels(every))))
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


def _probe_seconds(works: list[Work], workers: int) -> None:
    """Each file's length from its header (the progress bar's total; 0 if it cannot be read:
    decoding then records why)."""
    from clapdex.audio import probe

    def seconds(work: Work) -> float:
        try:
            return float(probe(work.meta.path).duration)
        except Exception:
            return 0.0

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="clapdex-probe") as pool:
        for work, length in zip(works, pool.map(seconds, works)):
            work.seconds = length


def _encode_files(works: list[Work], encoder, settings: IndexSettings, writer: Writer,
                  summary: IndexSummary, workers: int, parts: Parts, bar: Progress) -> None:
    """Decode (threads) -> encode full batches -> hand finished files to the writer. Windows
    whose embeddings a parts file holds (indexer/parts.py) are not encoded again. `bar` counts
    seconds of audio embedded (or taken from a parts file) and names the file being read."""
    batch = batch_size(encoder)
    saved = {id(work): parts.load(work.meta.content_hash) for work in works}
    decoder = _DecodeAhead([w.meta.path for w in works], settings.sample_rate,
                           settings.window_seconds, settings.hop_seconds, batch, workers)
    buffer: list[tuple[Work, np.ndarray]] = []   # decoded windows waiting for the encoder

    def advance(work: Work, whole: bool = False) -> None:
        """Report the seconds of `work` embedded so far (all of it once it is done with)."""
        if whole:
            covered = work.seconds
        else:
            covered = min(work.ends[work.embedded - 1], work.seconds) if work.embedded else 0.0
        if covered > work.counted:
            bar.update(covered - work.counted)
            work.counted = covered

    def encode_buffer(final: bool = False) -> None:
        """Embed the buffered windows in batches of exactly `batch` (the rest waits, unless
        final): the encoder's forward passes are then the same as embedding the windows alone."""
        nonlocal buffer
        buffer = [(w, x) for w, x in buffer if not w.failed]
        while buffer and (final or sum(len(x) for _, x in buffer) >= batch):
            take, buffer = take_batch(buffer, batch)
            embeddings = np.asarray(encoder.embed_audio(np.concatenate([x for _, x in take])),
                                    dtype=np.float32)
            first = 0
            for work, windows in take:
                work.parts.append(embeddings[first:first + len(windows)])
                before = work.embedded
                work.embedded += len(windows)
                first += len(windows)
                advance(work, whole=work.complete)
                if work.complete:
                    writer.put(work, np.concatenate(work.parts))
                    work.parts = []
                elif work.embedded // PART_WINDOWS > before // PART_WINDOWS:
                    save_parts(work)

    def save_parts(work: Work) -> bool:
        work.parts = [np.concatenate(work.parts)] if work.parts else []
        return bool(work.parts) and parts.save(work.meta.content_hash, work.parts[0], work.starts)

    def from_parts(work: Work, windows: np.ndarray, times) -> np.ndarray:
        """Take the windows a parts file holds; returns those still to encode."""
        held = saved.get(id(work))
        if held is None or work.embedded >= len(held[0]) or work.embedded != work.decoded:
            return windows
        embeddings, starts = held
        n = min(len(windows), len(embeddings) - work.embedded)
        here = slice(work.embedded, work.embedded + n)
        if not np.allclose(starts[here], [t.start for t in times[:n]]):
            saved[id(work)] = None  # another windowing: encode everything from here on
            return windows
        work.parts.append(embeddings[here])
        work.embedded += n
        return windows[n:]

    try:
        for position, message in decoder:
            work = works[position]
            kind = message[0]
            if kind == "info":
                info = message[1]
                work.meta.sample_rate, work.meta.channels = info.sample_rate, info.channels
                bar.set_item(work.meta.path)
            elif kind == "windows":
                windows, times = message[1], message[2]
                rest = from_parts(work, windows, times)
                work.starts.extend(t.start for t in times)
                work.ends.extend(t.end for t in times)
                work.decoded += len(windows)
                advance(work)
                if len(rest):
                    buffer.append((work, rest))
                if sum(len(x) for _, x in buffer) >= batch:
                    encode_buffer()
            elif kind == "end":
                work.meta.warning, work.levels = message[1], message[2]
                work.finished = True
                work.meta.duration = max(work.ends) if work.ends else 0.0
                if work.complete:  # everything was embedded already
                    advance(work, whole=True)
                    writer.put(work, np.concatenate(work.parts))
                    work.parts = []
            else:  # error
                work.failed = True
                work.parts = []
                advance(work, whole=True)
                writer.record_error(work.meta, message[1])
        encode_buffer(final=True)
        writer.finish()
    except KeyboardInterrupt as interrupt:  # also SIGTERM: keep what was encoded for the next run
        partial = [work for work in works if work.embedded and not work.failed
                   and not work.complete and save_parts(work)]
        waiting = [work for work, embeddings in writer.pending  # embedded, never stored
                   if parts.save(work.meta.content_hash, embeddings, work.starts)]
        decoder.close()
        writer.close()  # the batches already handed over are stored
        note = _kept_note(summary, waiting, partial)
        if note:
            interrupt.add_note(note)
        raise
    finally:
        decoder.close()
        writer.close()


def _kept_note(summary: IndexSummary, waiting: list[Work], partial: list[Work]) -> str:
    """What an interrupted run kept: "kept 312 files (4 h 10 min of audio); 1 file part-done
    (45 min of 1 h); index the same paths again to resume" ("" when it kept nothing)."""
    files = summary.added + summary.updated + len(waiting)
    seconds = summary.audio_seconds + sum(work.meta.duration or 0.0 for work in waiting)
    pieces = []
    if files:
        pieces.append(f"kept {files} file{'s' if files != 1 else ''} "
                      f"({duration_words(seconds)} of audio)")
    if partial:
        done = sum(work.ends[work.embedded - 1] for work in partial)
        length = sum(max(work.seconds, work.ends[work.embedded - 1]) for work in partial)
        pieces.append(f"{len(partial)} file{'s' if len(partial) != 1 else ''} part-done "
                      f"({duration_words(done)} of {duration_words(length)})")
    if not pieces:
        return ""
    return "; ".join(pieces + ["index the same paths again to resume"])


def _under(path: str, roots: Sequence[str]) -> bool:
    return any(path == root or path.startswith(root.rstrip(os.sep) + os.sep) for root in roots)


def _twin_failed(store, meta: FileMeta, twin: str) -> str:
    """Why a file with the same content as a file that failed is not indexed either."""
    if meta.size == 0:
        return "empty file (0 bytes)"
    row = store.file_by_path(twin)
    reason = row.error if row is not None and row.error else "it could not be indexed"
    return f"same content as {one_line(twin)}, which could not be indexed: {reason}"


def _gone(path: str) -> bool:
    """Whether the file certainly no longer exists (a folder we may not enter does not count)."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return True
    except OSError:
        return False
    return False


def _forget_stale_errors(store, files: list[str], walk_errors: list[tuple[str, str]],
                         roots: Sequence[str], unlisted: Sequence[str]) -> None:
    """Error rows under the walked roots for paths this walk neither found nor reported: the file
    is gone or its problem is (e.g. a FIFO replaced, a folder readable again)."""
    current = set(files) | {path for path, _ in walk_errors}
    for row in store.files("error"):
        if (row.path not in current and _under(row.path, roots)
                and not _under(row.path, unlisted)):
            store.remove_file(row.path)


def index_paths(paths: Sequence[str | os.PathLike], encoder, index_path: str | os.PathLike, *,
                vocabulary: str | None = None, sparsity: Sparsity = Sparsity(),
                hop_seconds: float | None = None,
                prune: bool = False, rebuild: bool = False, faiss_factory: str | None = None,
                workers: int = DECODE_WORKERS, show_progress: bool | None = None,
                progress: ProgressCallback | None = None,
                database_url: str | None = None,
                roots: Sequence[str | os.PathLike] = ()) -> IndexSummary:
    """Index (or update the index of) the audio files under `paths`. See the module docstring.

    `roots` ("NAME=PATH" or "PATH" each) defines named roots, or moves them, before anything is
    looked up: files under a root are stored relative to it (storage/roots.py).

    Raises PathNotFoundError for a missing path and IndexMismatchError for an index built with
    other settings; bad files are not errors (they are in `summary.skipped`).
    """

    began = time.perf_counter()
    checked_roots = check_roots(roots)  # before any work: a bad --root changes nothing
    summary = IndexSummary(index=str(index_path))
    walk_errors: list[tuple[str, str]] = []   # recorded once the index is open (`status` lists them)
    files = find_audio_files(paths, on_error=lambda path, reason: walk_errors.append((path, reason)))
    walked = [os.path.abspath(os.fspath(p)) for p in paths]
    unlisted = [path for path, reason in walk_errors if reason.startswith(UNLISTED)]
    summary.files_seen = len(files)
    store = open_index(index_path, encoder, vocabulary=vocabulary, sparsity=sparsity,
                       hop_seconds=hop_seconds, faiss_factory=faiss_factory, rebuild=rebuild,
                       database_url=database_url)
    try:
        define_roots(store, checked_roots)
    except BaseException:
        store.close()
        raise
    dense = None
    parts = Parts(index_path, store.settings)
    callback = reporter(progress, show_progress)
    bar = Progress(callback, total=len(files), desc="checking", unit="file")
    try:
        dense = DenseIndex.open(store)
        _forget_stale_errors(store, files, walk_errors, walked, unlisted)
        for path, reason in walk_errors:
            record(store, summary, FileMeta(path, 0, 0), reason)
        to_encode, duplicates = plan(files, store, summary, bar, workers)
        bar.close()
        # The long part counts seconds of audio, so that a 1-hour file moves the bar too.
        _probe_seconds(to_encode, workers)
        bar = Progress(callback, total=sum(work.seconds for work in to_encode), desc="indexing",
                       unit=AUDIO_SECONDS)
        writer = Writer(store, dense, summary, bar, "indexing", count_files=False)
        _encode_files(to_encode, encoder, store.settings, writer, summary, workers, parts, bar)
        twins = {work.meta.content_hash: work.meta.path for work in to_encode}
        for meta in duplicates:  # their twins are stored now: copy them
            if not reuse(store, summary, meta):
                record(store, summary, meta, _twin_failed(store, meta, twins[meta.content_hash]))
        found = set(files)
        # Indexed files under `paths` that are gone (--prune removes them, else the summary
        # counts them); never under what could not be listed: an unreadable folder is not empty.
        gone = [row.path for row in store.files() if row.path not in found
                and _under(row.path, walked) and not _under(row.path, unlisted) and _gone(row.path)]
        for path in gone if prune else ():
            store.remove_file(path)
        summary.removed, summary.missing = (len(gone), 0) if prune else (0, len(gone))
        summary.completed = True
    finally:
        bar.close()
        try:
            parts.clean(store)
        except (OSError, ClapdexError):
            pass  # leftovers are cleaned by the next run
        save_dense(dense, store, summary, began)
    return summary
