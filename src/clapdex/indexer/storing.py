"""The storing stage shared by indexing and import-embeddings: finished files are decomposed in
batches and each batch is stored in one transaction (`Writer`); `IndexSummary` counts what a run
did; `save_dense` saves the FAISS file at the end of a run."""

from __future__ import annotations

import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from clapdex.storage.database import (FileMeta, IndexChangedError, IndexStore, NewFile,
                                     SegmentLevels)
from clapdex.storage.dense import DenseIndex, DenseSaveError

MEAN_WINDOWS = 512         # windows that estimate μ_A when an index receives its first audio
                           # (docs/indexing.md: enough for the shared direction; nothing is stored
                           # before them, so more would risk more work lost to an early Ctrl-C)
DECOMPOSE_WINDOWS = 512    # windows decomposed and stored per transaction while indexing audio
MEAN_LABEL = "estimating audio mean"  # the progress bar's description until μ_A is known
STORE_AHEAD = 2            # batches queued for the storing thread


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
    missing: int = 0        # without --prune: indexed files under the paths that no longer exist
    segments_added: int = 0
    audio_seconds: float = 0.0   # seconds of audio of the files added or updated
    skipped: list[dict] = field(default_factory=list)   # {"path": ..., "error": ...}
    seconds: float = 0.0
    completed: bool = False
    warnings: list[str] = field(default_factory=list)   # one line each (e.g. FAISS file not saved)
    truncated: list[dict] = field(default_factory=list)  # {"path", "warning"}: indexed as decoded

    def skip(self, path: str, error: str) -> None:
        self.skipped.append({"path": path, "error": error})



@dataclass
class _Rows:
    """A slice of a Decomposition: the fields IndexStore stores."""

    weights: object
    fidelity: np.ndarray
    concept_fidelity: np.ndarray
    recon_norm: np.ndarray
    shift_norm: np.ndarray


@dataclass
class Work:
    """One file on its way through the pipeline."""

    meta: FileMeta
    kind: str                                        # "added" | "updated" (summary counter)
    starts: list = field(default_factory=list)
    ends: list = field(default_factory=list)
    parts: list = field(default_factory=list)        # embedded batches, in window order
    decoded: int = 0
    embedded: int = 0
    seconds: float = 0.0                             # its length as probed (the progress total)
    counted: float = 0.0                             # seconds of it reported to the progress bar
    finished: bool = False                           # all windows decoded
    failed: bool = False
    levels: SegmentLevels | None = None              # per window, known when finished

    def silent(self) -> np.ndarray:
        """Which windows are flagged silent (they get no concepts, nor a say in μ_A)."""
        if self.levels is None:
            return np.zeros(len(self.starts), bool)
        return np.array([bool(flag) for flag in self.levels.silent], bool)

    @property
    def complete(self) -> bool:
        return self.finished and not self.failed and self.embedded == self.decoded


class Writer:
    """Decomposes finished files in batches and stores each batch in one transaction.

    The work runs on one background thread (in submission order, at most STORE_AHEAD batches
    queued), so storing overlaps the encoder; a failure there is raised in the caller at its next
    call. All database writes of a run go through here once encoding starts, so they stay ordered.
    """

    def __init__(self, store: IndexStore, dense: DenseIndex, summary: IndexSummary, bar,
                 label: str, batch_windows: int | None = None, count_files: bool = True):
        """`bar` (a clapdex.progress.Progress) is described as `label`, or as MEAN_LABEL while
        the first windows wait for μ_A (nothing is stored meanwhile); it counts stored files
        unless `count_files` is False (indexing counts seconds of audio as they are encoded)."""
        self.store = store
        self.dense = dense
        self.summary = summary
        self.bar = bar
        self.count_files = count_files
        self.label = self._shown = label
        self.batch_windows = batch_windows or DECOMPOSE_WINDOWS
        self.dictionary = None  # built by the first job, off the encoder's path (K x K Gram)
        self.settings = store.settings
        self.mean = self.settings.audio_mean  # decided here (caller's thread), stored by the job
        self.pending: list[tuple[Work, np.ndarray]] = []
        self.pending_windows = 0
        if self.mean is None:  # the first windows of a new index estimate it: say so from the start
            self._describe(MEAN_LABEL)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="clapdex-store")
        self._inflight: deque = deque()
        self._submit(self._prepare_dictionary)

    def put(self, work: Work, embeddings: np.ndarray) -> None:
        if not np.isfinite(embeddings).all():
            self.record_error(work.meta, "the encoder returned NaN or infinite embeddings")
            return
        self.pending.append((work, embeddings))
        self.pending_windows += len(embeddings)
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
            embeddings = np.concatenate([e for _, e in self.pending])
            sounding = ~np.concatenate([work.silent() for work, _ in self.pending])
            self.mean = new_mean = audio_mean(embeddings[sounding] if sounding.any() else embeddings)
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
        self.dictionary.solver_gram()  # cached on the dictionary; decompose reuses it

    def _record_error(self, meta: FileMeta, error: str) -> None:
        self.store.record_error(meta, error)
        self.summary.skip(meta.path, error)
        if self.count_files:
            self.bar.update(1)

    def _decompose(self, embeddings: np.ndarray, silent: np.ndarray):
        from clapdex.concepts.decompose import decompose

        return decompose(embeddings, self.dictionary, self.mean, sparsity=self.settings.sparsity,
                         skip=silent)

    def _adopt_stored_settings(self) -> None:
        """Inside the write lock: the stored settings differ from those this batch was decomposed
        under (another writer set μ_A first, a reindex changed λ or the vocabulary). Take them."""
        stored = self.store.settings
        if stored.vocabulary_hash != self.settings.vocabulary_hash:
            self._prepare_dictionary()
        self.settings = stored
        self.mean = stored.audio_mean

    def _store_batch(self, pending: list[tuple[Work, np.ndarray]], new_mean) -> None:
        embeddings = np.concatenate([e for _, e in pending])
        silent = np.concatenate([work.silent() for work, _ in pending])
        decomposition = self._decompose(embeddings, silent)  # outside the lock: usually it stands
        with self.store.write() as session:  # the write lock; settings re-read under it
            if self.store.settings.build_id != self.settings.build_id:
                raise IndexChangedError(
                    f"index {self.store.root} was rebuilt by another process during this run; "
                    "what this run stored before is gone: run it again")
            if new_mean is not None and self.store.settings.audio_mean is None:
                self.store.set_audio_mean(session, new_mean)  # μ_A: with the first files
                self.settings = self.store.settings
            if self.store.settings.settings_version != self.settings.settings_version:
                self._adopt_stored_settings()
                decomposition = self._decompose(embeddings, silent)
            stored = self.store.add_files(self._files(pending, decomposition), session=session)
        segment_ids = np.concatenate([ids for _, ids in stored])
        self.dense.add(segment_ids, embeddings)
        for work, _ in pending:
            setattr(self.summary, work.kind, getattr(self.summary, work.kind) + 1)
            if work.meta.warning:
                self.summary.truncated.append({"path": work.meta.path,
                                               "warning": work.meta.warning})
        self.summary.segments_added += len(segment_ids)
        self.summary.audio_seconds += sum(work.meta.duration or 0.0 for work, _ in pending)
        if self.count_files:
            self.bar.update(len(pending))

    @staticmethod
    def _files(pending: list[tuple[Work, np.ndarray]], decomposition) -> list[NewFile]:
        files, first = [], 0
        for work, part in pending:
            n = len(part)
            rows = _Rows(decomposition.weights[first:first + n],
                         np.asarray(decomposition.fidelity)[first:first + n],
                         np.asarray(decomposition.concept_fidelity)[first:first + n],
                         np.asarray(decomposition.recon_norm)[first:first + n],
                         np.asarray(decomposition.shift_norm)[first:first + n])
            files.append(NewFile(work.meta, np.asarray(work.starts), np.asarray(work.ends), part, rows,
                                 work.levels))
            first += n
        return files



def save_dense(dense: DenseIndex | None, store: IndexStore, summary: IndexSummary,
               began: float) -> None:
    """Sync and save the FAISS file, also after Ctrl-C; close the store. If the run failed, a
    failure here must not hide the original error (the file is re-synced when next opened). A
    file that cannot be written (disk full) is a warning: the database, the source of truth,
    holds everything, and the old FAISS file is kept and brought up to date on the next open."""
    try:
        if dense is not None:
            dense.sync(store).save(store.faiss_path)
    except DenseSaveError as error:
        summary.warnings.append(f"{error}; every stored file is in the database and the FAISS "
                                "file will be rebuilt from it when the index is next opened")
    except Exception:
        if summary.completed:
            raise
    finally:
        store.close()
        summary.seconds = time.perf_counter() - began
