"""Opening (or creating) an index with the requested settings, refusing ones it was not built with."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Sequence

from clapdex.errors import ClapdexError
from clapdex.sparsity import Sparsity
from clapdex.storage.database import IndexSettings, IndexStore
from clapdex.storage.dense import DEFAULT_FACTORY, validate_factory
from clapdex.storage.roots import check_name, location_of, name_for, parse_spec


def check_roots(specs: Sequence[str | os.PathLike]) -> list[tuple[str | None, str]]:
    """(name or None, location) of each `--root` spec (NAME=PATH or PATH), checked before any
    work: a bad name or a location that is not a folder is a RootError."""
    checked = []
    for spec in specs:
        name, location = parse_spec(spec)
        checked.append((None if name is None else check_name(name), location_of(location)))
    return checked


def define_roots(store: IndexStore, roots: list[tuple[str | None, str]]) -> None:
    """Set each checked root on the index (IndexStore.set_root); a root given by its location
    alone is named by roots.name_for."""
    for name, location in roots:
        store.set_root(name or name_for(location, store.settings.roots), location)


def open_index(index_path: str | os.PathLike, encoder, *, vocabulary: str | None = None,
               sparsity: Sparsity = Sparsity(),
               hop_seconds: float | None = None, faiss_factory: str | None = None,
               rebuild: bool = False, database_url: str | None = None) -> IndexStore:
    """Open the index at `index_path` for adding audio embedded by `encoder`, creating it if needed.

    A new index takes the given vocabulary (default "default"), sparsity (default
    DEFAULT_LAMBDA), hop (default: the window) and FAISS factory (default "Flat"). An existing
    index must match the encoder and every option given explicitly, else IndexMismatchError names
    the differences (its remedy: a reindex or a rebuild). `rebuild` empties the index first (in one write
    transaction; where its data lives is kept). `database_url` (an SQLAlchemy URL, e.g.
    postgresql+psycopg://...) puts a new index's data in that database instead of the folder's
    SQLite file; for an existing index it must name the database the index uses. A changed
    --faiss only rebuilds the FAISS file (it is derived data). An `encoder` that is a
    ProjectedEncoder makes a new index store its projection (see clapdex.api.Index, which
    gives an existing index's stored projection back).
    """
    from clapdex.concepts.decompose import DEFAULT_LAMBDA
    from clapdex.concepts.dictionary import build_dictionary
    from clapdex.concepts.vocabulary import load_vocabulary
    from clapdex.projection import ProjectedEncoder

    root = Path(index_path)
    projection = encoder.projection if isinstance(encoder, ProjectedEncoder) else None
    if faiss_factory is not None:
        validate_factory(faiss_factory)
    if hop_seconds is not None and not (0 < hop_seconds <= encoder.window_seconds):
        raise ClapdexError(f"the hop must be > 0 and at most the window ({encoder.window_seconds} s)")
    IndexStore.require_writable(root)  # before any work: a read-only index or a file at root
    exists = IndexStore.exists(root)
    if exists and database_url:
        IndexStore.check_location(root, database_url)

    if rebuild or not exists:
        vocab = load_vocabulary(vocabulary or "default")
        dictionary = build_dictionary(encoder, vocab)
        sparsity = sparsity.otherwise(Sparsity(DEFAULT_LAMBDA))
        settings = IndexSettings(
            encoder_fingerprint=encoder.fingerprint, dimension=int(encoder.dimension),
            sample_rate=int(encoder.sample_rate), window_seconds=float(encoder.window_seconds),
            hop_seconds=float(hop_seconds or encoder.window_seconds),
            vocabulary_name=vocab.name, vocabulary_hash=vocab.content_hash, lam=sparsity.lam,
            max_concepts=sparsity.max_concepts, faiss_factory=faiss_factory or DEFAULT_FACTORY,
            projection=None if projection is None else projection.matrix,
            projection_hash=None if projection is None else projection.content_hash)
        if exists:
            return IndexStore.rebuild(root, settings, dictionary.names, dictionary.text_embeddings)
        return IndexStore.create(root, settings, dictionary.names, dictionary.text_embeddings,
                                 database_url=database_url)

    model = dict(encoder_fingerprint=encoder.fingerprint, dimension=int(encoder.dimension),
                 sample_rate=int(encoder.sample_rate), window_seconds=float(encoder.window_seconds),
                 projection_hash=None if projection is None else projection.content_hash)
    return open_existing(root, model, vocabulary=vocabulary, sparsity=sparsity,
                         hop_seconds=hop_seconds, faiss_factory=faiss_factory)


def open_existing(root: str | os.PathLike, model: dict, *, vocabulary: str | None,
                  sparsity: Sparsity, hop_seconds: float | None,
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
        if not sparsity.is_default:
            requested.lam, requested.max_concepts = sparsity.lam, sparsity.max_concepts
        stored.check_compatible(requested, root, concepts=store.concept_count(),
                                requested_concepts=requested_concepts)
        if faiss_factory is not None and faiss_factory != stored.faiss_factory:
            store.update_settings(faiss_factory=faiss_factory)
    except BaseException:
        store.close()
        raise
    return store
