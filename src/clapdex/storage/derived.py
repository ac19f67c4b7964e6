"""The search state as derived, versioned, memory-mapped files in the index folder (`search/`).

The database stays the source of truth. What search needs per segment is kept in flat binary
arrays that a process maps instead of loading, so opening costs the same at 1k and 1M segments
and a query reads only the pages it touches (docs/indexing.md, "Derived search files"):

    per segment (row i, segments in id order, append-only between full rebuilds)
        segment_ids, seg_file_ids, starts, ends, fidelity    from the segments table
        row_scale = 1/(n·m), base_scale = 1/m                the exact-identity scalars
        csr_indptr / csr_indices / csr_data                  concept weights by segment (CSR)
        embeddings                                           unit embeddings, float32 (n × d)
    rewritten on every refresh
        csc_indptr / csc_indices / csc_data                  the same weights by concept (CSC):
                                                             a concept query reads its columns only
        file_index, files.json                               segment -> file, file ids and paths
    written at a full rebuild
        atoms, text_units (K × d, float64), concepts.json    the concept dictionary

`manifest.json` names the files of the current version with their dtype, shape and a checksum of
their first and last 64 KB, the database generation they reflect and the index's identity (the
settings row's build id, which a rebuild renews, and model), so files copied from another index (or
left from before a rebuild) are never trusted.
It is replaced atomically (temporary file, fsync, os.replace) after every data file is complete
and fsynced; a process that crashes half-way leaves the previous version readable.

Refresh (`open_state`): when the database's generation differs from the manifest's, the state is
extended when the database only gained segments (new ids above the last one, the old ones
unchanged: same count, same sums of fidelity and file ids, same settings and concepts), else rebuilt.
Either way the database is read in one snapshot, 20,000 segments at a time (bounded memory),
under an exclusive lock file so that two processes never write the same files. An index folder
that cannot be written gets its files in a temporary folder, removed at exit.
"""

from __future__ import annotations

import atexit
import fcntl
import hashlib
import json
import mmap
import os
import shutil
import tempfile
import zlib
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import String, Text, cast, func, select, type_coerce

from clapdex.fileio import atomic_path
from clapdex.storage.schema import ConceptRow, FileRow, IndexSettingsRow, PostingRow, SegmentRow

FORMAT = 1
FOLDER = "search"
MANIFEST = "manifest.json"
_CHUNK = 20_000          # segments read from the database at a time
_CHECK_BYTES = 1 << 16   # bytes at each end of a file covered by its manifest checksum
_ROW_ARRAYS = {          # name -> dtype of the per-segment, append-only arrays
    "segment_ids": "<i8", "seg_file_ids": "<i8", "starts": "<f8", "ends": "<f8",
    "fidelity": "<f8", "concept_fidelity": "<f8", "row_scale": "<f8", "base_scale": "<f8",
}


# Files read a row here and there (candidate re-scoring, explanations): the kernel's readahead
# would page in ~128 KB around every 4 KB row and fill memory with rows never used.
_RANDOM_ACCESS = {"embeddings", "csr_indices", "csr_data"}
_READ_ROWS = {"embeddings"}  # also readable with pread (DerivedState.rows)


class DerivedFileError(Exception):
    """Internal: a derived search file that cannot be trusted (it is rebuilt, never shown)."""


# ---- the database side -----------------------------------------------------------------------

def _read_generation(connection) -> int:
    """The database's generation (IndexStore.generation) read inside our snapshot."""
    return int(connection.execute(select(IndexSettingsRow.generation)
                                  .where(IndexSettingsRow.id == 1)).scalar_one())


@contextmanager
def _snapshot(store):
    """One read transaction: every read inside sees the same committed state. The store's engine
    begins every SQLite transaction with BEGIN (storage/engine.py); PostgreSQL needs REPEATABLE
    READ for one snapshot across statements (DIALECT SPOT)."""
    with store.engine.connect() as connection:
        if connection.dialect.name != "sqlite":
            connection.execution_options(isolation_level="REPEATABLE READ")
        with connection.begin():
            yield connection


def _identity(connection) -> str:
    """Which index (and which build of it) the files belong to: the settings row's build id, the
    one a rebuild renews and the FAISS file's stamp carries (an index from before build ids: its
    creation time, as stored text), and model. Files copied from another index carry another."""
    row = connection.execute(select(IndexSettingsRow.build_id,
                                    cast(IndexSettingsRow.created_at, String),
                                    IndexSettingsRow.encoder_fingerprint,
                                    IndexSettingsRow.dimension)).one()
    return f"{row[0] or row[1]}|{row[2]}|{row[3]}"


def _settings_key(connection) -> str:
    """What, when changed, changes every segment's derived values (λ, vocabulary, μ_A, ...)."""
    row = connection.execute(select(
        IndexSettingsRow.lam, IndexSettingsRow.max_concepts, IndexSettingsRow.vocabulary_hash,
        IndexSettingsRow.audio_mean, IndexSettingsRow.projection_hash,
        IndexSettingsRow.dimension)).one()
    names = connection.execute(select(func.count(), func.max(ConceptRow.id))).one()
    digest = hashlib.sha256(repr((row[0], row[1], row[2], row[4], row[5], tuple(names))).encode())
    digest.update(row[3] or b"")
    return digest.hexdigest()


def _prefix(connection, max_id: int) -> list:
    """Aggregates over the segments up to max_id: equal before and after means none of them was
    removed or re-decomposed (ids are never reused; a reindex rewrites every fidelity)."""
    row = connection.execute(select(func.count(), func.sum(SegmentRow.fidelity),
                                    func.sum(SegmentRow.file_id))
                             .where(SegmentRow.id <= max_id)).one()
    return [int(row[0] or 0), float(row[1] or 0.0), int(row[2] or 0)]


# ---- files -----------------------------------------------------------------------------------

def _checksum(path: Path) -> int:
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(_CHECK_BYTES)
        handle.seek(max(0, size - _CHECK_BYTES))
        tail = handle.read(_CHECK_BYTES)
    return zlib.crc32(tail, zlib.crc32(head)) ^ size


def _fsync(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def _write_json_atomic(path: Path, value) -> None:
    with atomic_path(path, fsync=True) as temporary:
        temporary.write_text(json.dumps(value, ensure_ascii=True), encoding="utf-8")


class _Writer:
    """Collects the files of one new version of the state (their names, dtypes, shapes)."""

    def __init__(self, folder: Path, tag: str):
        self.folder, self.tag = folder, tag
        self.arrays: dict[str, dict] = {}

    def path(self, name: str) -> Path:
        return self.folder / f"{name}.{self.tag}.bin"

    def write(self, name: str, array: np.ndarray, dtype: str) -> None:
        array = np.ascontiguousarray(array, dtype=dtype)
        path = self.path(name)
        with open(path, "wb") as handle:
            handle.write(array.tobytes())
        self.record(name, path, dtype, array.shape)

    def record(self, name: str, path: Path, dtype: str, shape) -> None:
        self.arrays[name] = {"file": path.name, "dtype": dtype, "shape": [int(s) for s in shape]}

    def append(self, name: str, array: np.ndarray, dtype: str) -> None:
        """Append to `name`'s file of this version (created empty on first use)."""
        array = np.ascontiguousarray(array, dtype=dtype)
        path = self.path(name)
        with open(path, "ab") as handle:
            handle.write(array.tobytes())
        old = self.arrays.get(name)
        rows = (old["shape"][0] if old else 0) + array.shape[0]
        self.record(name, path, dtype, (rows,) + array.shape[1:])

    def finish(self) -> dict:
        for entry in self.arrays.values():
            path = self.folder / entry["file"]
            _fsync(path)
            entry["check"] = _checksum(path)
        return self.arrays


# ---- the state -------------------------------------------------------------------------------

@dataclass
class DerivedState:
    """One version of the derived search files, mapped read-only."""

    folder: Path
    manifest: dict

    def __post_init__(self):
        # Map every file now (O(1) each): a later refresh may delete them from the folder, and a
        # mapped (or open) file stays readable after that.
        self._arrays: dict[str, np.ndarray] = {}
        for name, entry in self.manifest["arrays"].items():
            shape = tuple(entry["shape"])
            if int(np.prod(shape)) == 0:
                self._arrays[name] = np.zeros(shape, dtype=entry["dtype"])
            else:
                array = np.memmap(self.folder / entry["file"], dtype=entry["dtype"], mode="r",
                                  shape=shape)
                if name in _RANDOM_ACCESS:  # rows are gathered: no readahead around each one
                    array._mmap.madvise(mmap.MADV_RANDOM)
                # kept an np.memmap, not a plain view of it: scipy.sparse copies a slice of a
                # plain array much smaller than the array (a memmap's slice is its own base), so
                # concept mode's W·s would copy all of W on every query (SearchEngine._block)
                self._arrays[name] = array
        self._handles = {name: open(self.folder / file, "rb")
                         for name, file in self.manifest["json"].items()}
        self._json: dict[str, object] = {}
        # opened now, like the maps (a refresh may delete the files); closed when collected
        self._readers = {name: open(self.folder / self.manifest["arrays"][name]["file"], "rb",
                                    buffering=0)
                         for name in _READ_ROWS if self._arrays.get(name, np.zeros(0)).size}

    def rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        """array(name)[rows], read with pread instead of through the map. Gathering a few hundred
        scattered rows per query through the map leaves every page touched resident in this
        process (RSS grew by 4 KB per embedding ever gathered, GBs at 1M segments); read this way
        the pages stay in the OS's page cache only. Runs of consecutive rows are one read each."""
        array = self._arrays[name]
        rows = np.asarray(rows, dtype=np.int64).ravel()
        if len(rows) and (rows.min() < 0 or rows.max() >= len(array)):
            raise IndexError(f"row out of range for {name} ({len(array)} rows)")
        out = np.empty((len(rows),) + array.shape[1:], dtype=array.dtype)
        if not len(rows) or out.nbytes == 0:
            return out
        descriptor = self._readers[name].fileno()
        size = out.nbytes // len(rows)
        buffer = memoryview(out.reshape(-1).view(np.uint8))
        first = np.flatnonzero(np.diff(rows, prepend=rows[0] - 2) != 1).tolist()
        for a, b in zip(first, first[1:] + [len(rows)]):
            want = (b - a) * size
            if os.preadv(descriptor, [buffer[a * size:b * size]], int(rows[a]) * size) != want:
                raise DerivedFileError(f"{name} is shorter than its manifest says")
        return out

    @property
    def generation(self):
        return self.manifest["generation"]

    @property
    def n_segments(self) -> int:
        return int(self.manifest["n"])

    def array(self, name: str) -> np.ndarray:
        return self._arrays[name]

    def json(self, name: str):
        value = self._json.get(name)
        if value is None:
            handle = self._handles[name]
            handle.seek(0)
            value = self._json[name] = json.loads(handle.read().decode("utf-8"))
        return value

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        for handle in self._readers.values():
            handle.close()
        self._arrays = {}


def _validate(folder: Path, manifest: dict, identity: str | None) -> None:
    """Raise DerivedFileError unless every file the manifest names is there, of the right size,
    with the recorded checksum, and belongs to this index."""
    if manifest.get("format") != FORMAT:
        raise DerivedFileError("unknown format")
    if identity is not None and manifest.get("identity") != identity:
        raise DerivedFileError("files of another index")
    for entry in manifest["arrays"].values():
        path = folder / entry["file"]
        expected = int(np.prod(entry["shape"])) * np.dtype(entry["dtype"]).itemsize
        if not path.exists() or path.stat().st_size < expected:
            raise DerivedFileError(f"{entry['file']} is missing or short")
        if path.stat().st_size != expected:
            raise DerivedFileError(f"{entry['file']} has trailing bytes")
        if _checksum(path) != entry.get("check"):
            raise DerivedFileError(f"{entry['file']} fails its checksum")
    for name in manifest.get("json", {}).values():
        if not (folder / name).exists():
            raise DerivedFileError(f"{name} is missing")
    n, nnz = int(manifest["n"]), int(manifest["nnz"])
    if manifest["arrays"]["csr_indptr"]["shape"] != [n + 1] or \
            manifest["arrays"]["csr_data"]["shape"] != [nnz]:
        raise DerivedFileError("inconsistent shapes")


def _read_manifest(folder: Path) -> dict | None:
    try:
        with open(folder / MANIFEST, encoding="utf-8") as handle:
            manifest = json.load(handle)
        return manifest if isinstance(manifest, dict) else None
    except (OSError, ValueError):
        return None


_TEMPORARY: dict[str, Path] = {}


def _folder_for(store) -> Path:
    """search/ in the index folder, or a temporary folder when the index folder is read-only."""
    folder = Path(store.root) / FOLDER
    try:
        folder.mkdir(exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    except OSError:
        pass
    key = str(Path(store.root).absolute())
    if key not in _TEMPORARY:
        _TEMPORARY[key] = Path(tempfile.mkdtemp(prefix="clapdex-search-"))
        atexit.register(shutil.rmtree, _TEMPORARY[key], True)
    return _TEMPORARY[key]


@contextmanager
def locked(folder: Path):
    with open(folder / ".lock", "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def open_state(store, known: DerivedState | None = None) -> DerivedState:
    """The derived state matching the database's current generation, refreshed if needed.
    `known`: a state already open, returned as is when it is still current (one tiny query)."""
    generation = store.generation()
    if known is not None and known.generation == generation:
        return known
    folder = _folder_for(store)
    manifest = _read_manifest(folder)
    if manifest is not None and manifest.get("generation") == generation:
        try:
            with store.engine.connect() as connection:
                identity = _identity(connection)
            _validate(folder, manifest, identity)
            return DerivedState(folder, manifest)
        except (DerivedFileError, KeyError, TypeError, ValueError, OSError):
            pass  # replaced meanwhile, or not to be trusted: refreshed below
    with locked(folder):
        return DerivedState(folder, _refresh(store, folder))


def _refresh(store, folder: Path) -> dict:
    """Bring the files in line with the database (under the lock); returns the new manifest."""
    with _snapshot(store) as connection:
        generation = _read_generation(connection)
        identity = _identity(connection)
        old = _read_manifest(folder)
        if old is not None and old.get("generation") == generation:
            try:
                _validate(folder, old, identity)
                return old  # another process refreshed meanwhile
            except (DerivedFileError, KeyError, TypeError, ValueError):
                old = None
        settings_key = _settings_key(connection)
        extend = False
        if old is not None:
            try:
                _validate(folder, old, identity)
                extend = (old["settings"] == settings_key and
                          _prefix(connection, old["max_segment_id"]) == old["prefix"])
            except (DerivedFileError, KeyError, TypeError, ValueError):
                extend = False
        manifest = (_extend(store, connection, folder, old) if extend else
                    _rebuild(store, connection, folder, generation))
        manifest.update(generation=generation, identity=identity, settings=settings_key)
        manifest["prefix"] = _prefix(connection, manifest["max_segment_id"])
        manifest["json"]["files"] = _write_files(connection, folder, manifest, generation)
        _write_json_atomic(folder / MANIFEST, manifest)
    _remove_unlisted(folder, manifest)
    return manifest


def _tag(generation) -> str:
    return hashlib.sha1(f"{generation}|{os.getpid()}|{os.urandom(4).hex()}".encode()).hexdigest()[:12]


def _rebuild(store, connection, folder: Path, generation) -> dict:
    writer = _Writer(folder, _tag(generation))
    names = list(connection.execute(select(ConceptRow.name).order_by(ConceptRow.id)).scalars())
    blobs = connection.execute(select(ConceptRow.embedding).order_by(ConceptRow.id)).scalars().all()
    d = int(store.settings.dimension)  # (also checks the settings row)
    concepts = {"names": names}
    name = f"concepts.{writer.tag}.json"
    with open(folder / name, "w", encoding="utf-8") as handle:
        json.dump(concepts, handle)
    if names:
        from clapdex.concepts.dictionary import ConceptDictionary

        text = store._vectors(blobs, len(blobs[0]) // 4 or 1, "embedding of concept",
                              range(len(blobs)))
        dictionary = ConceptDictionary.from_text_embeddings(names, text)
        raw = text.astype(np.float64)
        units = raw / np.maximum(np.linalg.norm(raw, axis=1, keepdims=True), 1e-30)
        writer.write("atoms", dictionary.atoms, "<f8")
        writer.write("text_units", units, "<f8")
        writer.write("text_embeddings", text, "<f4")
    else:
        for key, dtype in (("atoms", "<f8"), ("text_units", "<f8"), ("text_embeddings", "<f4")):
            writer.write(key, np.zeros((0, d)), dtype)
    mean = connection.execute(select(IndexSettingsRow.audio_mean)).scalar()
    writer.write("audio_mean", np.zeros(0) if mean is None else np.frombuffer(mean, "<f4"), "<f8")
    for key, dtype in _ROW_ARRAYS.items():
        writer.write(key, np.zeros(0), dtype)
    writer.write("embeddings", np.zeros((0, d)), "<f4")
    writer.write("csr_indptr", np.zeros(1), "<i8")
    writer.write("csr_indices", np.zeros(0), "<i4")
    writer.write("csr_data", np.zeros(0), "<f8")
    manifest = {"format": FORMAT, "n": 0, "nnz": 0, "k": len(names), "d": d, "max_segment_id": 0,
                "tag": writer.tag, "json": {"concepts": name}}
    return _append_segments(store, connection, folder, writer, manifest, after=-1)


def _extend(store, connection, folder: Path, old: dict) -> dict:
    """Append the segments above the last one to the per-segment files (truncating anything a
    crashed refresh left beyond the manifest first)."""
    writer = _Writer(folder, old["tag"])
    writer.arrays = {k: dict(v) for k, v in old["arrays"].items()}
    for key in list(_ROW_ARRAYS) + ["embeddings", "csr_indptr", "csr_indices", "csr_data"]:
        entry = writer.arrays[key]
        size = int(np.prod(entry["shape"])) * np.dtype(entry["dtype"]).itemsize
        os.truncate(folder / entry["file"], size)
    manifest = {k: v for k, v in old.items() if k not in ("arrays",)}
    manifest["json"] = dict(old["json"])
    return _append_segments(store, connection, folder, writer, manifest,
                            after=int(old["max_segment_id"]))


def _append_segments(store, connection, folder: Path, writer: _Writer, manifest: dict,
                     after: int) -> dict:
    """Read the segments with id > after (in id order, chunk by chunk) and append them."""
    d = int(manifest["d"])
    nnz = int(manifest["nnz"])
    n = int(manifest["n"])
    last = after
    while True:
        rows = store._plain_rows(connection.execute(  # the driver's tuples: no Row objects
            select(SegmentRow.id, SegmentRow.file_id, SegmentRow.start, SegmentRow.end,
                   SegmentRow.fidelity, SegmentRow.recon_norm, SegmentRow.shift_norm,
                   SegmentRow.concept_fidelity, SegmentRow.embedding, SegmentRow.silent)
            .where(SegmentRow.id > last).order_by(SegmentRow.id).limit(_CHUNK)))
        if not rows:
            break
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        columns = [np.array([r[c] for r in rows], dtype=np.float64) for c in range(2, 8)]
        file_ids = np.fromiter((r[1] for r in rows), dtype=np.int64, count=len(rows))
        # (a blob of the wrong length is the store's one-line IndexDamagedError)
        embeddings = store._vectors([r[8] for r in rows], d, "embedding of segment", ids.tolist())
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
        units = embeddings / np.where(norms > 0, norms, 1.0)
        recon, shift = columns[3], columns[4]
        # decompose stores n = 1 for a segment without concepts; guard against zeros all the same
        recon = np.where(recon > 0, recon, 1.0)
        shift = np.where(shift > 0, shift, 1.0)
        postings = store._plain_rows(connection.execute(
            select(PostingRow.segment_id, PostingRow.concept_id, PostingRow.weight)
            .where(PostingRow.segment_id > last, PostingRow.segment_id <= int(ids[-1]))))
        table = np.array(postings, dtype=np.float64).reshape(-1, 3)
        p_seg = table[:, 0].astype(np.int64)
        p_con = table[:, 1].astype(np.int64)
        order = np.lexsort((p_con, p_seg))
        p_seg, p_con, p_w = p_seg[order], p_con[order], table[order, 2]
        p_row = np.searchsorted(ids, p_seg)
        counts = np.bincount(p_row, minlength=len(ids))
        writer.append("segment_ids", ids, "<i8")
        writer.append("seg_file_ids", file_ids, "<i8")
        writer.append("starts", columns[0], "<f8")
        writer.append("ends", columns[1], "<f8")
        writer.append("fidelity", columns[2], "<f8")
        writer.append("concept_fidelity", columns[5], "<f8")
        writer.append("row_scale", 1.0 / (recon * shift), "<f8")
        # A segment flagged silent has no reconstruction: no concept score, not even μ_A's part.
        silent = np.fromiter((bool(r[9]) for r in rows), dtype=bool, count=len(rows))
        writer.append("base_scale", np.where(silent, 0.0, 1.0 / shift), "<f8")
        writer.append("embeddings", units, "<f4")
        writer.append("csr_indptr", nnz + np.cumsum(counts), "<i8")
        writer.append("csr_indices", p_con, "<i4")
        writer.append("csr_data", p_w, "<f8")
        nnz += len(p_con)
        n += len(ids)
        last = int(ids[-1])
    manifest.update(n=n, nnz=nnz, max_segment_id=max(last, int(manifest["max_segment_id"])))
    _write_csc(folder, writer, manifest)
    manifest["arrays"] = writer.finish()
    return manifest


def _write_csc(folder: Path, writer: _Writer, manifest: dict) -> None:
    """The concept matrix by column, transposed from the CSR file chunk by chunk (rows within a
    column ascending)."""
    n, nnz, k = int(manifest["n"]), int(manifest["nnz"]), int(manifest["k"])
    indptr = np.memmap(writer.path("csr_indptr"), dtype="<i8", mode="r", shape=(n + 1,))
    indices = np.memmap(writer.path("csr_indices"), dtype="<i4", mode="r", shape=(nnz,)) \
        if nnz else np.zeros(0, np.int32)
    data = np.memmap(writer.path("csr_data"), dtype="<f8", mode="r", shape=(nnz,)) \
        if nnz else np.zeros(0)
    column_counts = np.zeros(k, dtype=np.int64)
    step = 4 * _CHUNK * 25  # postings per pass
    for lo in range(0, nnz, step):
        column_counts += np.bincount(indices[lo:lo + step], minlength=k)[:k]
    csc_indptr = np.zeros(k + 1, dtype=np.int64)
    np.cumsum(column_counts, out=csc_indptr[1:])
    # one csc file set per refresh (readers of the previous version keep theirs)
    out = _Writer(folder, f"{writer.tag}-{_tag(manifest['n'])}")
    rows_path, data_path = out.path("csc_indices"), out.path("csc_data")
    for path, dtype in ((rows_path, "<i4"), (data_path, "<f8")):
        with open(path, "wb") as handle:
            handle.truncate(nnz * np.dtype(dtype).itemsize)
    if nnz:
        csc_rows = np.memmap(rows_path, dtype="<i4", mode="r+", shape=(nnz,))
        csc_data = np.memmap(data_path, dtype="<f8", mode="r+", shape=(nnz,))
        cursor = csc_indptr[:-1].copy()
        for first in range(0, n, 4 * _CHUNK):
            end = min(n, first + 4 * _CHUNK)
            lo, hi = int(indptr[first]), int(indptr[end])
            if hi == lo:
                continue
            cols = np.asarray(indices[lo:hi], dtype=np.int64)
            rows = np.repeat(np.arange(first, end, dtype=np.int64), np.diff(indptr[first:end + 1]))
            order = np.argsort(cols, kind="stable")
            cols, rows = cols[order], rows[order]
            counts = np.bincount(cols, minlength=k)
            starts = np.repeat(cursor - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
            positions = starts + np.arange(len(cols))
            csc_rows[positions] = rows
            csc_data[positions] = np.asarray(data[lo:hi])[order]
            cursor += counts
        csc_rows.flush()
        csc_data.flush()
        del csc_rows, csc_data
    out.write("csc_indptr", csc_indptr, "<i8")
    out.record("csc_indices", rows_path, "<i4", (nnz,))
    out.record("csc_data", data_path, "<f8", (nnz,))
    writer.arrays.update(out.arrays)


def _write_files(connection, folder: Path, manifest: dict, generation) -> str:
    """files.json (ids and stored paths of the indexed files, by id) and file_index (segment ->
    file)."""
    # Paths in their stored form (a file under a root relative to it, storage/roots.py): the
    # reader resolves them (SearchEngine), so a root moved with $CLAPDEX_ROOT_<NAME> applies.
    files = connection.execute(select(FileRow.id, type_coerce(FileRow.path, Text()))
                               .where(FileRow.status == "indexed").order_by(FileRow.id)).all()
    file_ids = np.array([f[0] for f in files], dtype=np.int64)
    name = f"files.{_tag(generation)}.json"
    with open(folder / name, "w", encoding="utf-8") as handle:
        # ensure_ascii: a name that is not UTF-8 (surrogate-escaped, schema.OsText) round-trips
        json.dump({"ids": file_ids.tolist(), "paths": [f[1] for f in files]}, handle,
                  ensure_ascii=True)
        handle.flush()
        os.fsync(handle.fileno())
    n = int(manifest["n"])
    entry = manifest["arrays"]["seg_file_ids"]
    seg_files = np.memmap(folder / entry["file"], dtype="<i8", mode="r", shape=(n,)) if n else \
        np.zeros(0, np.int64)
    writer = _Writer(folder, _tag((generation, "files")))
    writer.write("file_index", np.searchsorted(file_ids, seg_files), "<i4")
    manifest["arrays"].update(writer.finish())
    return name


def _remove_unlisted(folder: Path, manifest: dict) -> None:
    """Delete files of older versions. A process still mapping one keeps reading it (POSIX)."""
    keep = {MANIFEST, ".lock"} | {e["file"] for e in manifest["arrays"].values()} | \
        set(manifest["json"].values())
    for path in folder.iterdir():
        if path.name not in keep and not path.name.startswith("."):
            try:
                path.unlink()
            except OSError:
                pass
