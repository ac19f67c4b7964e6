"""Re-decomposition of every stored segment from its stored embedding (`clapdex reindex`)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import numpy as np

from clapdex.errors import ClapdexError
from clapdex.indexer.storing import DECOMPOSE_WINDOWS
from clapdex.progress import Progress, ProgressCallback, reporter
from clapdex.sparsity import Sparsity
from clapdex.storage.database import IndexChangedError, IndexStore
from clapdex.vectors import unit_rows


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


def reindex(index_path: str | os.PathLike, *, sparsity: Sparsity = Sparsity(),
            vocabulary: str | None = None, encoder=None,
            recompute_mean: bool = False, show_progress: bool | None = None,
            progress: ProgressCallback | None = None) -> ReindexSummary:
    """Re-decompose every stored segment from its stored embedding (no audio is decoded or encoded).

    A new sparsity (λ / max-concepts) or vocabulary replaces the stored one; without any, the stored settings are
    applied again. A new vocabulary needs `encoder` (the index's model) for the concept text
    embeddings. Everything happens in one transaction: an interrupted reindex changes nothing.
    """
    from clapdex.concepts.decompose import decompose
    from clapdex.concepts.dictionary import build_dictionary
    from clapdex.concepts.vocabulary import load_vocabulary

    began = time.perf_counter()
    with IndexStore.open(index_path, write=True) as store:
        settings = store.settings
        vocab = dictionary = None
        if vocabulary is not None:
            vocab = load_vocabulary(vocabulary)
            if vocab.content_hash == settings.vocabulary_hash:
                vocab = None  # same concepts: keep the stored embeddings
        if vocab is not None:
            if encoder is None:
                raise ClapdexError("a new vocabulary needs the model to embed its concepts")
            settings.require_model(encoder.fingerprint, index_path)
            dictionary = build_dictionary(encoder, vocab)  # before the lock: it encodes text
        bar = Progress(reporter(progress, show_progress), total=store.counts()["segments"],
                       desc="reindexing", unit="segment")
        try:
            # One write transaction: writers wait for it; what it reads is what it replaces.
            with store.write() as session:
                if store.settings.build_id != settings.build_id:
                    raise IndexChangedError(f"index {index_path} was rebuilt by another process "
                                            "meanwhile; nothing was reindexed")
                settings = store.settings  # as stored now, under the lock
                sparsity = sparsity.otherwise(settings.sparsity)
                if dictionary is None:
                    dictionary = store.dictionary()
                before = store.counts()
                bar.total = before["segments"]
                mean = settings.audio_mean
                if recompute_mean or mean is None:
                    mean = _corpus_mean(store)
                changes = dict(lam=sparsity.lam, max_concepts=sparsity.max_concepts,
                               audio_mean=None if mean is None else np.asarray(mean))
                if vocab is not None:
                    changes.update(vocabulary_name=vocab.name, vocabulary_hash=vocab.content_hash)
                    store.replace_concepts(session, dictionary.names, dictionary.text_embeddings)
                # Settings first: the segments record the version they are decomposed under.
                store.update_settings(session, **changes)
                for ids, embeddings in store.iter_segment_embeddings(DECOMPOSE_WINDOWS * 8):
                    result = decompose(embeddings, dictionary, mean, sparsity=sparsity,
                                       skip=store.silent_among(ids))
                    store.replace_postings(session, ids, result)
                    bar.update(len(ids))
        finally:
            bar.close()
        after = store.counts()
        return ReindexSummary(
            index=str(index_path), segments=after["segments"], lam=sparsity.lam,
            max_concepts=sparsity.max_concepts,
            vocabulary=store.settings.vocabulary_name, concepts=after["concepts"],
            postings_before=before["postings"], postings_after=after["postings"],
            mean_recomputed=bool(recompute_mean or settings.audio_mean is None),
            seconds=time.perf_counter() - began)


def _corpus_mean(store: IndexStore) -> np.ndarray | None:
    """Mean of the L2-normalised embeddings of every stored segment that is not flagged silent
    (streamed in chunks)."""
    total, count = None, 0
    for ids, embeddings in store.iter_segment_embeddings():
        rows = unit_rows(embeddings[~store.silent_among(ids)])  # as indexing: silence has no say
        total = rows.sum(axis=0) if total is None else total + rows.sum(axis=0)
        count += len(rows)
    return None if count == 0 else total / count
