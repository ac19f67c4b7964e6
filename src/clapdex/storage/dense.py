"""The FAISS index of segment embeddings, derived from the database and always rebuildable from it.

Vectors are the L2-normalised segment embeddings, ids are segment ids, and the metric is the inner
product, so a search with unit query vectors returns cosine similarities.

Index types (a FAISS factory string, stored in the index settings):
- "auto" (the default of new indexes): chosen by size (choose_factory): "Flat" below FLAT_MAX
  segments, "IVF<nlist>,SQ8" beyond (nlist ≈ 2·sqrt(n), a power of two), trained on a sample of
  40·nlist unit embeddings; search re-scores the ANN's hits exactly from the unit embeddings. The
  type chosen and its recall@10 measured against exact search are kept in dense.json and shown by
  `clapdex status`.
- "Flat": `IndexIDMap2(IndexFlatIP)`. Exact; add and remove are cheap; a search scans
  every vector (about 4 KB per 1024-d segment in memory).
- Anything else FAISS's `index_factory` accepts, e.g. "HNSW32" or "IVF4096,Flat", wrapped in
  IDMap2. Approximate (results can miss true neighbours), faster for large collections. IVF
  types are trained on the stored embeddings when (re)built and need at least as many segments as
  lists; HNSW cannot remove vectors, so a removal rebuilds it from the database.
See docs/indexing.md for the trade-offs.

The file on disk (`dense.faiss`) is written atomically (temporary file, fsync, os.replace). After
a crash it may lag behind the database; `DenseIndex.open(store)` compares its ids with the
database's segment ids and brings it back in line (adding, removing or rebuilding). That is sound
because within one build of an index (IndexSettings.build_id: a rebuild makes a new one) a segment
id is never reused and its embedding never changes. Beside the file, `dense.faiss.stamp` says which
build and database generation it reflects: a file of another build is rebuilt, and a save never
replaces a file of the same build and a newer generation (a slow process finishing late).
"""

from __future__ import annotations

import json
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from clapdex.errors import DenseIndexError, DenseSaveError
from clapdex.fileio import atomic_path
from clapdex.vectors import unit_rows as vectors_unit_rows

if TYPE_CHECKING:  # pragma: no cover
    from clapdex.storage.database import IndexStore

DEFAULT_FACTORY = "auto"
AUTO = "auto"
FLAT_MAX = 50_000        # Flat scans 4 KB per segment per query: ~15 ms at 50k here
META_FILE = "dense.json"  # what search built (type, generation, measured recall)
RECALL_QUERIES = 100
RESCORE_FACTOR = 8        # search asks the ANN for 8·k hits and re-scores them exactly
IVF_NPROBE = 32        # lists searched per query for IVF types (FAISS's default of 1 misses a lot)
HNSW_EF_SEARCH = 128   # candidate list size per query for HNSW types (FAISS's default is 16)
_REBUILD_CHUNK = 20_000  # segments read from the database at a time while rebuilding


_TEMP_PREFIX = "."  # temporary files of a save: .dense.faiss.<pid>.tmp


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, float32 (zero rows stay zero)."""
    return np.ascontiguousarray(vectors_unit_rows(vectors, np.float32))


def _faiss_reason(error: RuntimeError) -> str:
    """FAISS's own explanation without the C++ location it is wrapped in ("Error in
    std::unique_ptr<faiss::Index> faiss::...(...) at .../index_factory.cpp:1228: could not parse
    index string X" -> "could not parse index string X"), on one line."""
    text = " ".join(str(error).split())
    text = re.sub(r"^Error in .*? at \S+:\d+: ", "", text)
    text = re.sub(r"^Error: '.*?' failed: ", "", text)  # the failed assertion's source text
    return text or type(error).__name__


def choose_factory(n_segments: int) -> str:
    """The FAISS type "auto" means for an index of n segments."""
    if n_segments < FLAT_MAX:
        return "Flat"
    nlist = int(2 ** round(np.log2(2 * np.sqrt(n_segments))))
    return f"IVF{nlist},SQ8"


def resolve_factory(factory: str, n_segments: int) -> str:
    return choose_factory(n_segments) if factory == AUTO else factory


def _make_faiss(dimension: int, factory: str, n_segments: int = 0) -> faiss.Index:
    factory = resolve_factory(factory, n_segments)
    description = "IDMap2,Flat" if factory == "Flat" else f"IDMap2,{factory}"
    try:
        index = faiss.index_factory(int(dimension), description, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as error:
        raise DenseIndexError(f"invalid FAISS factory string {factory!r} "
                              f"({_faiss_reason(error)})") from None
    _tune(index)
    return index


def _tune(index: faiss.Index) -> None:
    """Search-time parameters for approximate types (they are saved with the index)."""
    inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    if isinstance(inner, faiss.IndexIVF):
        inner.nprobe = min(IVF_NPROBE, inner.nlist)
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = HNSW_EF_SEARCH


def validate_factory(factory: str, dimension: int = 8) -> str:
    """Raise DenseIndexError if FAISS cannot build `factory`; returns it unchanged."""
    _make_faiss(dimension, factory)
    return factory


class DenseIndex:
    """An in-memory FAISS index over unit segment embeddings, keyed by segment id."""

    def __init__(self, index: faiss.Index, dimension: int, factory: str):
        self._index = index
        self.dimension = dimension
        self.factory = factory   # as requested (settings), "auto" included
        # (build id, generation) of the database state this index holds at least; None: unknown
        self.state: tuple[str | None, int] | None = None

    # ---- building --------------------------------------------------------------------------

    @classmethod
    def empty(cls, dimension: int, factory: str = DEFAULT_FACTORY,
              n_segments: int = 0) -> "DenseIndex":
        return cls(_make_faiss(dimension, factory, n_segments), dimension, factory)

    @classmethod
    def rebuild_from(cls, store: "IndexStore") -> "DenseIndex":
        """A fresh index holding every segment of the database (trained first where needed, on
        a sample: never every embedding at once)."""
        settings = store.settings
        state = store.state()  # read first: the contents are at least this new
        db_ids = store.segment_ids()
        dense = cls.empty(settings.dimension, settings.faiss_factory, len(db_ids))
        dense.state = state
        if not dense._index.is_trained:
            rng = np.random.default_rng(0)
            size = min(len(db_ids), _sample_size(dense._index))
            sample = np.sort(rng.choice(db_ids, size, replace=False)) if size else db_ids[:0]
            dense._train(store.segment_embeddings(sample)[1])
        for ids, embeddings in store.iter_segment_embeddings(_REBUILD_CHUNK):
            dense._add(ids, embeddings)
        return dense

    @classmethod
    def build_from_state(cls, state, factory: str) -> "DenseIndex":
        """A fresh index over the derived search files' unit embeddings (storage/derived.py),
        trained on a sample and filled chunk by chunk from the mapped file."""
        ids, embeddings = state.array("segment_ids"), state.array("embeddings")
        n, dimension = len(ids), int(state.manifest["d"])
        dense = cls.empty(dimension, factory, n)
        if not dense._index.is_trained and n:
            rng = np.random.default_rng(0)
            rows = np.sort(rng.choice(n, min(n, _sample_size(dense._index)), replace=False))
            dense._train(np.asarray(embeddings[rows]))
        for lo in range(0, n, _REBUILD_CHUNK):
            dense._add(np.asarray(ids[lo:lo + _REBUILD_CHUNK]),
                       np.asarray(embeddings[lo:lo + _REBUILD_CHUNK]))
        return dense

    def kind(self) -> str:
        """The FAISS type actually built ("Flat", "IVF2048,SQ8", "HNSW32", ...)."""
        inner = faiss.downcast_index(self._index.index)
        if isinstance(inner, faiss.IndexFlat):
            return "Flat"
        if isinstance(inner, faiss.IndexIVFScalarQuantizer):
            return f"IVF{inner.nlist},SQ8"
        if isinstance(inner, faiss.IndexIVFFlat):
            return f"IVF{inner.nlist},Flat"
        if isinstance(inner, faiss.IndexIVFPQ):
            return f"IVF{inner.nlist},PQ{inner.pq.M}"
        if isinstance(inner, faiss.IndexHNSW):
            return f"HNSW{inner.hnsw.nb_neighbors(0) // 2}"
        return type(inner).__name__

    def _train(self, embeddings: np.ndarray) -> None:
        if len(embeddings) == 0:
            return
        try:
            self._index.train(unit_rows(embeddings))
        except RuntimeError as error:
            raise DenseIndexError(
                f"cannot train FAISS index {self.factory!r} on {len(embeddings)} segments "
                f"({_faiss_reason(error)}); use --faiss Flat or fewer IVF lists"
            ) from None

    # ---- reading ---------------------------------------------------------------------------

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    def __len__(self) -> int:
        return self.ntotal

    def ids(self) -> np.ndarray:
        """Segment ids held, sorted (int64)."""
        return np.sort(faiss.vector_to_array(self._index.id_map).astype(np.int64))

    def search(self, query_unit_vectors: np.ndarray, k: int, nprobe: int | None = None
               ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k segments for each query: (scores float32 (q, k'), segment ids int64 (q, k')).

        k' = min(k, number of segments). Queries should be unit vectors; scores are then cosine
        similarities, best first. Approximate index types may return fewer than k' hits per
        query; missing hits have id -1 and score -inf. nprobe: IVF lists searched for this call
        (IVF types only; default: the index's own, IVF_NPROBE).
        """
        queries = np.ascontiguousarray(np.atleast_2d(query_unit_vectors), dtype=np.float32)
        if queries.shape[1] != self.dimension:
            raise ValueError(f"queries have dimension {queries.shape[1]}, index has {self.dimension}")
        k = min(int(k), self.ntotal)
        if k <= 0:
            return (np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64))
        params = None
        if nprobe is not None and isinstance(faiss.downcast_index(self._index.index),
                                             faiss.IndexIVF):
            params = faiss.SearchParametersIVF(nprobe=int(nprobe))
        scores, ids = self._index.search(queries, k, params=params)
        scores = np.where(ids < 0, -np.inf, scores).astype(np.float32)
        return scores, ids.astype(np.int64)

    def reconstruct(self, segment_id: int) -> np.ndarray:
        """The stored unit vector of one segment (float32)."""
        return self._index.reconstruct(int(segment_id))

    # ---- changing --------------------------------------------------------------------------

    def add(self, segment_ids: np.ndarray, embeddings: np.ndarray) -> None:
        """Add raw embeddings (they are normalised here). An untrained index (IVF, before the
        first rebuild) ignores them: `sync` then rebuilds it, trained on every stored segment."""
        segment_ids = np.asarray(segment_ids, dtype=np.int64)
        if len(segment_ids) != len(embeddings):
            raise ValueError("one id per embedding is required")
        if len(segment_ids) == 0 or not self._index.is_trained:
            return  # an untrained (IVF) index is trained on everything when sync() rebuilds it
        self._add(segment_ids, embeddings)

    def _add(self, segment_ids: np.ndarray, embeddings: np.ndarray) -> None:
        if len(segment_ids):
            self._index.add_with_ids(unit_rows(embeddings),
                                     np.ascontiguousarray(segment_ids, dtype=np.int64))

    def remove(self, segment_ids: np.ndarray) -> bool:
        """Remove segments. Returns False if this index type cannot remove (HNSW): rebuild then."""
        segment_ids = np.ascontiguousarray(segment_ids, dtype=np.int64)
        if len(segment_ids) == 0:
            return True
        try:
            self._index.remove_ids(segment_ids)
        except RuntimeError:
            return False
        return True

    def sync(self, store: "IndexStore") -> "DenseIndex":
        """Make this index hold exactly the database's segments. Returns the index to use
        (self, or a rebuilt one when this type cannot remove or the settings changed)."""
        settings = store.settings
        if self.dimension != settings.dimension or self.factory != settings.faiss_factory:
            return DenseIndex.rebuild_from(store)
        state = store.state()  # read first: the contents are at least this new
        if self.state is not None and self.state[0] != state[0]:
            return DenseIndex.rebuild_from(store)  # another build: its ids mean other vectors
        self.state = state
        db_ids = store.segment_ids()
        held = self.ids()
        extra = np.setdiff1d(held, db_ids, assume_unique=True)
        missing = np.setdiff1d(db_ids, held, assume_unique=True)
        if len(extra) and not self.remove(extra):
            return DenseIndex.rebuild_from(store)
        if len(missing):
            if not self._index.is_trained:
                return DenseIndex.rebuild_from(store)
            ids, embeddings = store.segment_embeddings(missing)
            self._add(ids, embeddings)
        return self

    # ---- disk ------------------------------------------------------------------------------

    def save(self, path: str | Path) -> bool:
        """Write atomically: a reader sees the old file or the new one, never a partial one. With
        a known `state`, its stamp is written after it, and a file on disk of the same build and
        a newer generation is kept instead (returns False)."""
        path = Path(path)
        with _save_lock(path):
            stamp = read_stamp(path)
            if (self.state is not None and stamp is not None and stamp[0] == self.state[0]
                    and stamp[1] > self.state[1] and path.exists()):
                return False
            self._write_checked(path)  # fsync: must survive a crash
            if self.state is not None:
                _write_stamp(path, self.state)
            else:
                _stamp_path(path).unlink(missing_ok=True)
        return True

    def _write_checked(self, path: Path) -> None:
        """Write the index file atomically. The bytes go through Python's file object, so a full
        disk raises (FAISS's own writer only prints "close error" and leaves a 0-byte file); the
        size is checked before the rename. On failure the old file stays (DenseSaveError)."""
        path = Path(path)
        temporary = path.with_name(f"{_TEMP_PREFIX}{path.name}.{os.getpid()}.tmp")
        written = 0
        try:
            with open(temporary, "wb") as handle:
                def write(chunk) -> int:
                    nonlocal written
                    handle.write(chunk)
                    written += len(chunk)
                    return len(chunk)

                faiss.write_index(self._index, faiss.PyCallbackIOWriter(write))
                handle.flush()
                os.fsync(handle.fileno())
            if written == 0 or temporary.stat().st_size != written:
                raise OSError(f"wrote {temporary.stat().st_size} of {written} bytes")
            os.replace(temporary, path)
        except (OSError, RuntimeError) as error:
            raise DenseSaveError(f"the FAISS file {path} could not be written "
                                 f"({getattr(error, 'strerror', None) or error}); the old one is "
                                 "kept") from None
        finally:
            if temporary.exists():
                temporary.unlink()

    @staticmethod
    def remove_stale_temporaries(path: str | Path) -> None:
        """Delete temporary files of saves that were killed (their process no longer runs)."""
        path = Path(path)
        for leftover in path.parent.glob(f"{_TEMP_PREFIX}{path.name}.*.tmp"):
            pid = leftover.name[len(_TEMP_PREFIX) + len(path.name) + 1:-len(".tmp")]
            if pid.isdigit() and int(pid) != os.getpid() and not _running(int(pid)):
                leftover.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | Path, dimension: int, factory: str, mmap: bool = False
             ) -> "DenseIndex":
        """Read a FAISS file. mmap: map it instead of reading it (IVF lists and flat codes are
        then paged in as searched; such an index cannot be changed)."""
        try:
            if not mmap:
                index = faiss.read_index(str(path))
            else:
                # IVF lists are mapped with IO_FLAG_MMAP (which refuses IO_FLAG_MMAP_IFC), flat
                # codes with IO_FLAG_MMAP_IFC (a Flat index is small: FLAT_MAX)
                index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP)
                inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
                if isinstance(inner, faiss.IndexFlat):
                    index = faiss.read_index(str(path), faiss.IO_FLAG_MMAP_IFC)
        except RuntimeError:  # FAISS's own text names its C++ internals, nothing a user can act on
            raise DenseIndexError(f"the FAISS file {path} is damaged (FAISS cannot read it)"
                                  ) from None
        if not isinstance(index, faiss.IndexIDMap2) or index.d != dimension:
            raise DenseIndexError(f"FAISS index {path} does not match this index's settings")
        return cls(index, dimension, factory)

    @classmethod
    def open(cls, store: "IndexStore", save: bool = True) -> "DenseIndex":
        """Load `store`'s FAISS file and bring it in line with the database (rebuilding it when it
        is missing, unreadable or disagrees); saves the result when anything changed."""
        settings = store.settings
        path = store.faiss_path
        if save:
            cls.remove_stale_temporaries(path)
        dense = None
        if path.exists():
            try:
                dense = cls.load(path, settings.dimension, settings.faiss_factory)
            except DenseIndexError:
                dense = None  # derived data: rebuild it from the database
            stamp = read_stamp(path)
            if dense is not None and stamp is not None and stamp[0] != store.state()[0]:
                dense = None  # of another build: its ids mean other vectors
            elif dense is not None:
                dense.state = stamp  # None (no stamp: an older clapdex) is brought in line by ids
        if dense is None:
            dense = cls.rebuild_from(store)
            changed = True
        else:
            before = dense.ids()
            synced = dense.sync(store)
            changed = synced is not dense or not np.array_equal(before, synced.ids())
            dense = synced
        if changed and save:
            try:
                dense.save(path)
            except DenseSaveError:
                pass  # derived data: this run uses it in memory, the next open tries again
        return dense


def _wanted(factory: str, n_segments: int, current: str | None) -> str:
    """The type search should have. "auto" keeps a built IVF until the index grows or shrinks
    16-fold past its list count (retraining costs minutes), and switches Flat <-> IVF at FLAT_MAX."""
    if factory != AUTO:
        return factory
    wanted = choose_factory(n_segments)
    if current is not None and current.startswith("IVF") and wanted.startswith("IVF"):
        have = int(re.match(r"IVF(\d+)", current).group(1))
        need = int(re.match(r"IVF(\d+)", wanted).group(1))
        if need // 4 <= have <= need * 4:
            return current
    return wanted


def for_search(store: "IndexStore", state) -> DenseIndex:
    """The FAISS index matching one version of the derived search files, memory-mapped.

    The file's stamp (build id, generation) is the one record of which database state it holds
    (whoever saved it: the indexer or search). When it is the state's, and dense.json (what search
    measured: type, recall) describes it, the file is mapped as it is (O(1)). Otherwise, under the
    derived files' lock, the file is read, compared with the state's segment ids and extended
    (added from the mapped unit embeddings), or rebuilt when it cannot remove, is unreadable or is
    not the wanted type, then saved and stamped (only stamped when its ids already agree), with
    dense.json (its recall@10 measured, for approximate types)."""
    from clapdex.storage.derived import locked

    settings = store.settings
    path = store.faiss_path
    dimension = int(state.manifest["d"])
    holds = (store.state()[0], int(state.generation))  # what the file must say it holds

    def current(meta):
        if meta and meta.get("factory") == settings.faiss_factory and path.exists() and \
                read_stamp(path) == holds:
            try:
                dense = DenseIndex.load(path, dimension, settings.faiss_factory, mmap=True)
            except DenseIndexError:
                return None
            if dense.ntotal == state.n_segments and meta.get("kind") == dense.kind():
                return dense
        return None

    dense = current(read_meta(store))
    if dense is not None:
        return dense
    with locked(state.folder):
        meta = read_meta(store)
        dense = current(meta)
        if dense is not None:
            return dense
        dense = None
        if path.exists():
            try:
                dense = DenseIndex.load(path, dimension, settings.faiss_factory)
            except DenseIndexError:
                dense = None
        ids = np.asarray(state.array("segment_ids"))
        wanted = _wanted(settings.faiss_factory, len(ids), dense.kind() if dense else None)
        recall = meta.get("recall_at_10") if meta and dense is not None and \
            meta.get("kind") == dense.kind() else None
        changed = True
        if dense is not None and resolve_factory(wanted, len(ids)) == dense.kind():
            held = dense.ids()
            extra = np.setdiff1d(held, ids, assume_unique=True)
            missing = np.setdiff1d(ids, held, assume_unique=True)
            changed = bool(len(extra) or len(missing))
            if (len(extra) and not dense.remove(extra)) or not dense._index.is_trained:
                dense = None
            elif len(missing):
                rows = np.searchsorted(ids, missing)
                for lo in range(0, len(rows), _REBUILD_CHUNK):
                    part = rows[lo:lo + _REBUILD_CHUNK]
                    dense._add(ids[part], np.asarray(state.array("embeddings")[part]))
        else:
            dense = None
        if dense is None:
            dense = DenseIndex.build_from_state(state, wanted)
            recall = None
        if recall is None:
            recall = 1.0 if dense.kind() == "Flat" else measure_recall(dense, state)
        dense.factory = settings.faiss_factory
        meta = {"factory": settings.faiss_factory, "kind": dense.kind(), "segments": dense.ntotal,
                "recall_at_10": recall, "recall_queries": RECALL_QUERIES}
        try:
            if changed:
                dense.state = holds
                dense.save(path)
            else:  # the ids agree (e.g. the indexer saved these segments): only say so
                _restamp(path, holds)
            with atomic_path(path.with_name(META_FILE)) as temporary:
                temporary.write_text(json.dumps(meta))
        except OSError:
            return dense  # a read-only index folder: this process keeps it in memory
        return DenseIndex.load(path, dimension, settings.faiss_factory, mmap=True)


def _sample_size(index: faiss.Index) -> int:
    """Training vectors for an untrained (IVF) index: 40 per list (FAISS warns below 39, and
    k-means on 2 cores costs about a minute at 2,048 lists and 80k vectors)."""
    inner = faiss.downcast_index(index.index) if hasattr(index, "index") else index
    return 40 * int(getattr(inner, "nlist", 1024)) if isinstance(inner, faiss.IndexIVF) else 65536


def read_meta(store: "IndexStore") -> dict | None:
    """dense.json: what search last built or checked (None: not yet)."""
    try:
        with open(Path(store.faiss_path).with_name(META_FILE), encoding="utf-8") as handle:
            meta = json.load(handle)
        return meta if isinstance(meta, dict) else None
    except (OSError, ValueError):
        return None


def measure_recall(dense: DenseIndex, state, queries: int = RECALL_QUERIES, k: int = 10) -> float:
    """Mean recall@k of dense search through `dense` (RESCORE_FACTOR·k hits re-scored exactly)
    against exact search over the unit embeddings, for queries near stored segments (a stored
    embedding plus noise of norm 0.5, as a query lands near a clip)."""
    embeddings = state.array("embeddings")
    ids = state.array("segment_ids")
    n = len(ids)
    if n == 0:
        return 1.0
    rng = np.random.default_rng(1)
    picks = np.sort(rng.choice(n, min(queries, n), replace=False))
    q = np.asarray(embeddings[picks], dtype=np.float32)
    q = unit_rows(q + 0.5 * rng.standard_normal(q.shape).astype(np.float32) / np.sqrt(q.shape[1]))
    k = min(k, n)
    best = np.full((len(q), k), -np.inf, dtype=np.float32)
    best_rows = np.zeros((len(q), k), dtype=np.int64)
    for lo in range(0, n, _REBUILD_CHUNK * 5):
        scores = q @ np.asarray(embeddings[lo:lo + _REBUILD_CHUNK * 5]).T
        rows = np.arange(lo, lo + scores.shape[1])[None, :].repeat(len(q), 0)
        scores = np.concatenate([best, scores], axis=1)
        rows = np.concatenate([best_rows, rows], axis=1)
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        best = np.take_along_axis(scores, top, 1)
        best_rows = np.take_along_axis(rows, top, 1)
    # as search uses it: RESCORE_FACTOR·k hits, re-scored exactly from the unit embeddings
    _scores, found = dense.search(q, RESCORE_FACTOR * k)
    hits = []
    for i in range(len(q)):
        rows = np.searchsorted(ids, found[i][found[i] >= 0])
        exact = np.asarray(embeddings[np.sort(rows)]) @ q[i]
        top = ids[np.sort(rows)][np.argsort(-exact)[:k]]
        hits.append(len(set(ids[best_rows[i]].tolist()) & set(top.tolist())))
    return float(np.mean(hits) / k)


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".stamp")


def _write_stamp(path: Path, state: tuple[str | None, int]) -> None:
    with atomic_path(_stamp_path(path), fsync=True) as temporary:
        temporary.write_text(json.dumps({"build_id": state[0], "generation": state[1]}))


def _restamp(path: Path, state: tuple[str | None, int]) -> None:
    """The file at `path` holds exactly `state`'s segments: stamp it so, unless its stamp already
    says a newer generation of the same build."""
    with _save_lock(path):
        stamp = read_stamp(path)
        if stamp is None or stamp[0] != state[0] or stamp[1] < state[1]:
            _write_stamp(path, state)


def read_stamp(path: str | Path) -> tuple[str | None, int] | None:
    """(build id, generation) the FAISS file at `path` says it reflects; None if it says nothing."""
    try:
        data = json.loads(_stamp_path(Path(path)).read_text())
        return data["build_id"], int(data["generation"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@contextmanager
def _save_lock(path: Path):
    """Processes saving the same FAISS file take turns (compare the stamp, then write)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    folder = os.open(path.parent, os.O_RDONLY)  # the folder itself: no lock file left behind
    try:
        fcntl.flock(folder, fcntl.LOCK_EX)
        yield
    finally:
        os.close(folder)  # releases the lock


VECTOR_SAMPLE = 256  # segments whose FAISS vector `agreement` compares with the stored embedding


def agreement(store: "IndexStore") -> dict:
    """Compare the FAISS file with the database without changing either (for `clapdex doctor`):
    the build it belongs to, its ids, and a sample of its vectors against the stored embeddings."""
    settings = store.settings
    db_ids = store.segment_ids()
    report = {"faiss_file": str(store.faiss_path), "database_segments": int(len(db_ids)),
              "faiss_segments": None, "missing_in_faiss": None, "extra_in_faiss": None,
              "vectors_checked": 0, "wrong_vectors": 0, "agree": False, "problem": None}
    if not store.faiss_path.exists():
        report["problem"] = "FAISS file is missing"
        return report
    try:
        dense = DenseIndex.load(store.faiss_path, settings.dimension, settings.faiss_factory)
    except DenseIndexError as error:
        report["problem"] = str(error)
        return report
    stamp = read_stamp(store.faiss_path)
    held = dense.ids()
    missing = np.setdiff1d(db_ids, held)
    extra = np.setdiff1d(held, db_ids)
    checked, wrong = _compare_vectors(dense, store, np.intersect1d(held, db_ids))
    report.update(faiss_segments=int(len(held)), missing_in_faiss=int(len(missing)),
                  extra_in_faiss=int(len(extra)), vectors_checked=checked, wrong_vectors=wrong)
    if stamp is not None and stamp[0] != store.state()[0]:
        report["problem"] = "FAISS file belongs to another build of the index"
    elif wrong:
        report["problem"] = (f"{wrong} of {checked} sampled FAISS vectors differ from the "
                             f"stored embeddings of their segments")
    elif len(missing) or len(extra) or len(held) != len(db_ids):
        report["problem"] = (f"FAISS holds {len(held)} segments, the database {len(db_ids)} "
                             f"({len(missing)} missing, {len(extra)} extra)")
    report["agree"] = report["problem"] is None
    return report


def _compare_vectors(dense: DenseIndex, store: "IndexStore", ids: np.ndarray) -> tuple[int, int]:
    """(sampled, wrong): FAISS vectors of up to VECTOR_SAMPLE of `ids` against the unit stored
    embeddings. Exact types must match to float precision; lossy ones (PQ, SQ...) roughly."""
    if len(ids) == 0:
        return 0, 0
    sample = np.random.default_rng(0).choice(ids, size=min(VECTOR_SAMPLE, len(ids)), replace=False)
    sample.sort()
    try:
        held = np.stack([dense.reconstruct(int(i)) for i in sample])
    except RuntimeError:  # this type cannot give vectors back (IVF without a direct map)
        return 0, 0
    _, stored = store.segment_embeddings(sample)
    expected = unit_rows(stored)
    exact = not any(tag in dense.factory for tag in ("PQ", "SQ", "LSH", "RaBitQ"))
    if exact:
        bad = np.abs(held - expected).max(axis=1) > 1e-4
    else:
        bad = np.einsum("ij,ij->i", unit_rows(held), expected) < 0.8
    return int(len(sample)), int(bad.sum())
