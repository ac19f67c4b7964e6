"""The FAISS index of segment embeddings, derived from the database and always rebuildable from it.

Vectors are the L2-normalised segment embeddings, ids are segment ids, and the metric is the inner
product, so a search with unit query vectors returns cosine similarities.

Index types (a FAISS factory string, stored in the index settings):
- "Flat" (default): `IndexIDMap2(IndexFlatIP)`. Exact; add and remove are cheap; a search scans
  every vector (about 4 KB per 1024-d segment in memory).
- Anything else FAISS's `index_factory` accepts, e.g. "HNSW32" or "IVF4096,Flat", wrapped in
  IDMap2. Approximate (results can miss true neighbours), faster for large collections. IVF
  types are trained on the stored embeddings when (re)built and need at least as many segments as
  lists; HNSW cannot remove vectors, so a removal rebuilds it from the database.
See docs/indexing.md for the trade-offs.

The file on disk (`dense.faiss`) is written atomically (temporary file, fsync, os.replace). After
a crash it may lag behind the database; `DenseIndex.open(store)` compares its ids with the
database's segment ids and brings it back in line (adding, removing or rebuilding).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import faiss
import numpy as np

from clapdex.errors import DenseIndexError
from clapdex.vectors import unit_rows as vectors_unit_rows

if TYPE_CHECKING:  # pragma: no cover
    from clapdex.storage.database import IndexStore

DEFAULT_FACTORY = "Flat"
IVF_NPROBE = 32        # lists searched per query for IVF types (FAISS's default of 1 misses a lot)
HNSW_EF_SEARCH = 128   # candidate list size per query for HNSW types (FAISS's default is 16)
_REBUILD_CHUNK = 20_000  # segments read from the database at a time while rebuilding


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


def _make_faiss(dimension: int, factory: str) -> faiss.Index:
    description = "IDMap2,Flat" if factory == DEFAULT_FACTORY else f"IDMap2,{factory}"
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
        self.factory = factory

    # ---- building --------------------------------------------------------------------------

    @classmethod
    def empty(cls, dimension: int, factory: str = DEFAULT_FACTORY) -> "DenseIndex":
        return cls(_make_faiss(dimension, factory), dimension, factory)

    @classmethod
    def rebuild_from(cls, store: "IndexStore") -> "DenseIndex":
        """A fresh index holding every segment of the database (trained first where needed)."""
        settings = store.settings
        dense = cls.empty(settings.dimension, settings.faiss_factory)
        if not dense._index.is_trained:
            ids, embeddings = store.segment_embeddings()
            dense._train(embeddings)
            dense._add(ids, embeddings)
            return dense
        for ids, embeddings in store.iter_segment_embeddings(_REBUILD_CHUNK):
            dense._add(ids, embeddings)
        return dense

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

    def search(self, query_unit_vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k segments for each query: (scores float32 (q, k'), segment ids int64 (q, k')).

        k' = min(k, number of segments). Queries should be unit vectors; scores are then cosine
        similarities, best first. Approximate index types may return fewer than k' hits per
        query; missing hits have id -1 and score -inf.
        """
        queries = np.ascontiguousarray(np.atleast_2d(query_unit_vectors), dtype=np.float32)
        if queries.shape[1] != self.dimension:
            raise ValueError(f"queries have dimension {queries.shape[1]}, index has {self.dimension}")
        k = min(int(k), self.ntotal)
        if k <= 0:
            return (np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64))
        scores, ids = self._index.search(queries, k)
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

    def save(self, path: str | Path) -> None:
        """Write atomically: a reader sees the old file or the new one, never a partial one."""
        path = Path(path)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            faiss.write_index(self._index, str(temporary))
            with open(temporary, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        finally:
            if temporary.exists():
                temporary.unlink()

    @classmethod
    def load(cls, path: str | Path, dimension: int, factory: str) -> "DenseIndex":
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as error:
            raise DenseIndexError(f"cannot read FAISS index {path} ({str(error).strip()[:120]})"
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
        dense = None
        if path.exists():
            try:
                dense = cls.load(path, settings.dimension, settings.faiss_factory)
            except DenseIndexError:
                dense = None  # derived data: rebuild it from the database
        if dense is None:
            dense = cls.rebuild_from(store)
            changed = True
        else:
            before = dense.ids()
            synced = dense.sync(store)
            changed = synced is not dense or not np.array_equal(before, synced.ids())
            dense = synced
        if changed and save:
            dense.save(path)
        return dense


def agreement(store: "IndexStore") -> dict:
    """Compare the FAISS file with the database without changing either (for `clapdex doctor`)."""
    settings = store.settings
    db_ids = store.segment_ids()
    report = {"faiss_file": str(store.faiss_path), "database_segments": int(len(db_ids)),
              "faiss_segments": None, "missing_in_faiss": None, "extra_in_faiss": None,
              "agree": False, "problem": None}
    if not store.faiss_path.exists():
        report["problem"] = "FAISS file is missing"
        return report
    try:
        dense = DenseIndex.load(store.faiss_path, settings.dimension, settings.faiss_factory)
    except DenseIndexError as error:
        report["problem"] = str(error)
        return report
    held = dense.ids()
    missing = np.setdiff1d(db_ids, held)
    extra = np.setdiff1d(held, db_ids)
    report.update(faiss_segments=int(len(held)), missing_in_faiss=int(len(missing)),
                  extra_in_faiss=int(len(extra)),
                  agree=bool(len(missing) == 0 and len(extra) == 0 and len(held) == len(db_ids)))
    if not report["agree"]:
        report["problem"] = (f"FAISS holds {len(held)} segments, the database {len(db_ids)} "
                             f"({len(missing)} missing, {len(extra)} extra)")
    return report

