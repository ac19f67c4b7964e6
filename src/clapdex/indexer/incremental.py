"""Incremental runs: which files need encoding, and which can be indexed without it (unchanged,
touched, moved or copied: steps 1 and 2 of clapdex.indexer.pipeline's docstring)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from clapdex.indexer.storing import IndexSummary, Work
from clapdex.indexer.walk import hash_or_error
from clapdex.storage.database import FileMeta, IndexStore


def plan(files: list[str], store: IndexStore, summary: IndexSummary, bar,
         workers: int) -> tuple[list[Work], list[FileMeta]]:
    """Steps 1 and 2 of clapdex.indexer.pipeline's docstring. Returns the files that must be encoded, and those
    with the same content as one of them (copied once it is stored). `bar` counts every file
    once: when its stat shows it unchanged (or unreadable), else once it is hashed."""
    known = {row.path: row for row in store.files()}
    candidates: list[tuple[str, os.stat_result]] = []
    for path in files:
        try:
            stat = os.stat(path)
        except OSError as error:
            record(store, summary, FileMeta(path, 0, 0), f"cannot read file ({error.strerror})")
            bar.update(1)
            continue
        row = known.get(path)
        if (row is not None and row.status == "indexed" and row.size == stat.st_size
                and row.mtime_ns == stat.st_mtime_ns):
            summary.unchanged += 1
            bar.update(1)
        else:
            candidates.append((path, stat))

    hashes = []
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="clapdex-hash") as pool:
        for (path, _), result in zip(candidates, pool.map(hash_or_error, [p for p, _ in candidates])):
            hashes.append(result)
            bar.set_item(path)
            bar.update(1)

    to_encode: list[Work] = []
    queued_hashes: set[str] = set()
    duplicates: list[FileMeta] = []
    for (path, stat), (digest, error) in zip(candidates, hashes):
        meta = FileMeta(path, stat.st_size, stat.st_mtime_ns, digest)
        row = known.get(path)
        if error:
            record(store, summary, meta, error)
        elif row is not None and row.status == "indexed" and row.content_hash == digest:
            store.update_file_stat(path, meta.size, meta.mtime_ns)
            summary.touched += 1
        elif digest in queued_hashes:
            duplicates.append(meta)
        elif not reuse(store, summary, meta):
            indexed_before = row is not None and row.status == "indexed"
            to_encode.append(Work(meta, "updated" if indexed_before else "added"))
            queued_hashes.add(digest)
    return to_encode, duplicates


def reuse(store: IndexStore, summary: IndexSummary, meta: FileMeta) -> bool:
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


def record(store: IndexStore, summary: IndexSummary, meta: FileMeta, error: str) -> None:
    store.record_error(meta, error)
    summary.skip(meta.path, error)
