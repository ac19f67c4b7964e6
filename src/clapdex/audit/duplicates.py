"""Duplicate files in an index: exact copies and near-duplicates.

- Exact copies have the same content hash (sha256, which the indexer records for every file).
- Near-duplicates are the same audio in another format, at another level or trimmed a little:
  their file vectors (the unit mean of the file's unit window embeddings, the vector an audio
  query uses) have a cosine of at least `threshold`. The pairs come from one FAISS range search
  over the file vectors, so the cost grows with the number of files, not with their square.

Every duplicate is reported as a pair: a file and the one it duplicates (for exact copies, the
first path of its group in sort order; for near-duplicates, the first of the two in sort order).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import select

from clapdex.errors import QueryError
from clapdex.storage.schema import FileRow, SegmentRow
from clapdex.vectors import unit_rows

DEFAULT_THRESHOLD = 0.98  # cosine of file vectors; re-encodings of one recording score ~0.99+


@dataclass
class Duplicate:
    """`path` duplicates `duplicate_of`: an exact copy (same content) or a near-duplicate."""

    kind: str            # "exact" | "near"
    similarity: float    # cosine of the two file vectors (1.0 for exact copies)
    path: str
    file_id: int
    duplicate_of: str
    duplicate_of_id: int


def find_duplicates(store, threshold: float = DEFAULT_THRESHOLD, near: bool = True) -> list[Duplicate]:
    """Exact copies, then (with `near`) near-duplicates with file-vector cosine ≥ `threshold`,
    most similar first. Pairs of exact copies are not repeated as near-duplicates."""
    if not -1.0 <= threshold <= 1.0:
        raise QueryError("the similarity threshold must lie in [-1, 1]")
    with store.session() as session:
        files = session.execute(select(FileRow.id, FileRow.path, FileRow.content_hash)
                                .where(FileRow.status == "indexed").order_by(FileRow.path)).all()
    found = _exact(files)
    if near and len(files) > 1:
        same_content = {(d.duplicate_of_id, d.file_id) for d in found}
        found += [d for d in _near(store, files, threshold)
                  if (d.duplicate_of_id, d.file_id) not in same_content
                  and not _same_group(d, found)]
    return found


def _exact(files) -> list[Duplicate]:
    groups: dict[str, list] = {}
    for file_id, path, content_hash in files:  # in path order, so the first is the original
        if content_hash:
            groups.setdefault(content_hash, []).append((file_id, path))
    out = []
    for members in groups.values():
        (first_id, first_path), rest = members[0], members[1:]
        out += [Duplicate("exact", 1.0, path, int(file_id), first_path, int(first_id))
                for file_id, path in rest]
    return out


def _same_group(duplicate: Duplicate, exact: list[Duplicate]) -> bool:
    """Whether two files are copies of one original (both exact copies of the same file)."""
    originals = {d.file_id: d.duplicate_of_id for d in exact}
    a = originals.get(duplicate.file_id, duplicate.file_id)
    b = originals.get(duplicate.duplicate_of_id, duplicate.duplicate_of_id)
    return a == b


def _near(store, files, threshold: float) -> list[Duplicate]:
    import faiss

    vectors, order = _file_vectors(store, [f[0] for f in files])
    index = faiss.IndexFlatIP(vectors.shape[1])
    index.add(vectors)
    limits, scores, neighbours = index.range_search(vectors, float(threshold) - 1e-6)
    out = []
    for i in range(len(vectors)):
        for score, j in zip(scores[limits[i]:limits[i + 1]], neighbours[limits[i]:limits[i + 1]]):
            if j > i:  # each pair once; files are in path order, so i's path sorts first
                a, b = files[order[i]], files[order[j]]
                out.append(Duplicate("near", float(min(score, 1.0)), b[1], int(b[0]), a[1],
                                     int(a[0])))
    out.sort(key=lambda d: (-d.similarity, d.duplicate_of, d.path))
    return out


def _file_vectors(store, file_ids: list[int]) -> tuple[np.ndarray, list[int]]:
    """(unit file vectors float32 (n, d), position in `file_ids` of each row), reading the
    segment embeddings in chunks (bounded memory: one vector per file is kept)."""
    position = {file_id: i for i, file_id in enumerate(file_ids)}
    with store.session() as session:
        owners = dict(session.execute(select(SegmentRow.id, SegmentRow.file_id)).all())
    sums = np.zeros((len(file_ids), store.settings.dimension), dtype=np.float64)
    for ids, embeddings in store.iter_segment_embeddings():
        rows = [position.get(owners.get(int(s)), -1) for s in ids]
        keep = np.array([r >= 0 for r in rows], dtype=bool)
        np.add.at(sums, np.array(rows)[keep], unit_rows(embeddings)[keep])
    present = np.flatnonzero(np.linalg.norm(sums, axis=1) > 0)
    return np.ascontiguousarray(unit_rows(sums[present]), dtype=np.float32), present.tolist()
