"""What `clapdex status` and `clapdex doctor` report about an index."""

from __future__ import annotations

import os
from pathlib import Path

from clapdex.storage.database import IndexStore
from clapdex.storage.dense import DenseIndex, agreement, read_meta


def index_status(index_path: str | Path) -> dict:
    """Settings, counts, files that could not be indexed (with their errors), sizes on disk."""
    with IndexStore.open(index_path) as store:
        settings = store.settings
        return {
            "index": str(index_path),
            "database": store.location(),
            "settings": {
                "encoder_fingerprint": settings.encoder_fingerprint,
                "dimension": settings.dimension,
                "sample_rate": settings.sample_rate,
                "window_seconds": settings.window_seconds,
                "hop_seconds": settings.hop_seconds,
                "vocabulary_name": settings.vocabulary_name,
                "vocabulary_hash": settings.vocabulary_hash,
                "lam": settings.lam,
                "max_concepts": settings.max_concepts,
                "audio_mean_set": settings.audio_mean is not None,
                "faiss_factory": settings.faiss_factory,
            },
            "counts": store.counts(),
            "errors": [{"path": row.path, "error": row.error} for row in store.files("error")],
            "disk": store.disk_usage(),
            # the FAISS type search built ("auto" picks it by size) and its recall@10 against
            # exact search, as measured when it was built (None: no dense search yet)
            "ann": read_meta(store),
        }


def doctor(index_path: str | Path, repair: bool = False) -> dict:
    """Check database↔FAISS agreement (build, ids, a sample of vectors), segments decomposed under
    other settings than the index's, indexed files missing on disk and orphan rows.

    `repair` re-decomposes those segments, rebuilds the FAISS file from the database and deletes
    orphan rows, each under the index's write lock; missing files are only reported (`clapdex
    index --prune PATH` removes them). `ok` is False while any problem remains; `lines` is the
    human-readable report. A FAISS file that only lacks segments (an interrupted run) is a
    warning, not a problem: every open of the index syncs it.
    """
    with IndexStore.open(index_path, write=repair) as store:
        dense = agreement(store)
        orphans = store.orphans()
        stale = store.stale_segments()
        missing = [row.path for row in store.files("indexed") if not os.path.exists(row.path)]
        repaired = []
        if repair:
            if len(stale):
                count = redecompose_stale(store)
                repaired.append(f"re-decomposed {count} segment(s) under the index's settings")
            if any(orphans.values()):
                store.delete_orphans()
                repaired.append("deleted orphan rows")
            if not dense["agree"]:
                DenseIndex.rebuild_from(store).save(store.faiss_path)
                repaired.append("rebuilt the FAISS index from the database")
            dense, orphans, stale = agreement(store), store.orphans(), store.stale_segments()
    lines = []
    # Only missing ids (no extra ones, right vectors): the next open adds them.
    faiss_lags = bool(not dense["agree"] and dense["faiss_segments"] is not None
                      and dense["extra_in_faiss"] == 0 and dense["wrong_vectors"] == 0
                      and dense["problem"].startswith("FAISS holds"))
    if dense["agree"]:
        lines.append(f"ok: FAISS and database agree ({dense['database_segments']} segments, "
                     f"{dense['vectors_checked']} vectors compared)")
    elif faiss_lags:
        lines.append(f"warning: FAISS lags the database ({dense['faiss_segments']} of "
                     f"{dense['database_segments']} segments); synced automatically on the next "
                     "search or index run")
    else:
        lines.append(f"problem: {dense['problem']}; run clapdex doctor --repair")
    if len(stale):
        lines.append(f"problem: {len(stale)} segment(s) were decomposed under other settings "
                     "than the index's; run clapdex doctor --repair")
    else:
        lines.append("ok: every segment is decomposed under the index's settings")
    if any(orphans.values()):
        detail = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in orphans.items() if n)
        lines.append(f"problem: orphan rows ({detail}); run clapdex doctor --repair")
    else:
        lines.append("ok: no orphan rows")
    if missing:
        lines.append(f"problem: {len(missing)} indexed file(s) no longer exist; "
                     "run clapdex index --prune PATH to remove them")
        lines.extend(f"  missing: {path}" for path in missing)
    else:
        lines.append("ok: every indexed file exists")
    lines.extend(f"repaired: {what}" for what in repaired)
    return {"index": str(index_path), "faiss": dense, "orphans": orphans, "missing_files": missing,
            "stale_segments": int(len(stale)), "repaired": repaired, "faiss_lags": faiss_lags,
            "ok": bool((dense["agree"] or faiss_lags) and not any(orphans.values())
                       and not missing and not len(stale)),
            "lines": lines}


def redecompose_stale(store: IndexStore, chunk: int = 4096) -> int:
    """Re-decompose, under the write lock and the index's current settings, every segment that
    was decomposed under others. Returns how many."""
    from clapdex.concepts.decompose import decompose

    with store.write() as session:
        settings = store.settings
        ids = store.stale_segments()
        if not len(ids) or settings.audio_mean is None:
            return 0
        dictionary = store.dictionary()
        for first in range(0, len(ids), chunk):
            part, embeddings = store.segment_embeddings(ids[first:first + chunk])
            store.replace_postings(session, part, decompose(
                embeddings, dictionary, settings.audio_mean, lam=settings.lam,
                max_concepts=settings.max_concepts))
    return int(len(ids))
