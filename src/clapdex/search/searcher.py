"""Answering one query: turn text / audio / concepts into a query, rank, and explain the results.

Query vectors (all unit vectors in the index's CLAP space):
- text: normalize(embed_text(text)).
- audio: the unit mean of the file's L2-normalised window embeddings (windows cut exactly as the
  indexer cuts them). One vector per file keeps dense and concept scoring, and their exact
  explanations, the same as for text; a per-window max would need one search per window and could
  not be explained as one sum. An indexed file, named as for `clapdex show`
  (storage.naming.resolve_indexed_file), uses its stored embeddings (nothing is decoded or encoded); a
  name that is a file on disk means that file. An index built with a projection stores projected embeddings,
  and a non-indexed file is projected with the index's stored matrix.
- concept steering: q = normalize(q̂ + Σ β_j c_j) with the centred concept atoms c_j (query.steer).
A concept-only query has no vector: it is answered from the concept weights (the inverted index),
returning exactly the segments that hold a positive named concept, ranked by Σ β_j w_j.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from clapdex.errors import QueryError
from clapdex.printable import one_line
from clapdex.projection import encoder_for_index
from clapdex.search.engine import (DEFAULT_ALPHA, EXACT_HYBRID_MAX, MODES, SearchEngine,
                                   concept_text_direction)
from clapdex.search.query import (ConceptTermSpec, mean_direction, path_globs, resolve_concepts,
                                  steer, unit)
from clapdex.search.results import ConceptWeight, QueryInfo, SearchResults
from clapdex.storage.derived import open_state
from clapdex.storage.records import segment_flags

EncoderSource = Callable[[], object]


class Searcher:
    """Searches one open IndexStore. The encoder is obtained (and checked) only when a text or
    non-indexed audio query needs it, so concept-only and indexed-audio queries need no model.

    Each search starts by checking the database's generation (one small query) and moves to the
    new version of the derived search files when it changed, so a long-lived Searcher sees later
    writes. A search uses one SearchEngine (immutable) throughout, so threads may share a Searcher.
    """

    def __init__(self, store, encoder: object | EncoderSource | None = None):
        self.store = store
        self._encoder_source = encoder
        self._encoder = None
        self._engine: SearchEngine | None = None
        self._lock = threading.RLock()  # threads share a Searcher: build each lazy part once
        self._model_lock = threading.Lock()  # and use the model one at a time

    @property
    def engine(self) -> SearchEngine:
        """The engine over the current generation (refreshing the derived files if needed)."""
        with self._lock:
            known = self._engine.state if self._engine is not None else None
            state = open_state(self.store, known)
            if state is not known:
                if known is not None and hasattr(self.store, "_settings"):
                    self.store._settings = None  # λ or μ_A may have changed with the data
                self._engine = SearchEngine(self.store, state)
            return self._engine

    # ---- the encoder -----------------------------------------------------------------------

    def encoder(self):
        if self._encoder is None:
            with self._lock:
                if self._encoder is None:
                    self._encoder = self._checked_encoder()
        return self._encoder

    def _checked_encoder(self):
        source = self._encoder_source
        if source is None:
            from clapdex import encoder_registry
            source = encoder_registry.load
        encoder = source() if callable(source) and not hasattr(source, "embed_text") else source
        settings = self.store.settings
        # An index built with a projection holds projected audio embeddings: project audio
        # queries with its stored matrix too (text queries are never projected).
        encoder = encoder_for_index(encoder, settings, index_path=self.store.root)
        settings.require_model(encoder.fingerprint, self.store.root)
        return encoder

    # ---- query vectors ---------------------------------------------------------------------

    def text_vector(self, text: str) -> np.ndarray:
        if not isinstance(text, str) or not text.strip():
            raise QueryError("empty text query")
        encoder = self.encoder()
        with self._model_lock:  # tokenizers and torch modules are not safe to share mid-call
            return unit(encoder.embed_text([text.strip()])[0], "text query")

    def audio_vector(self, audio: str | os.PathLike, engine: SearchEngine | None = None
                     ) -> tuple[np.ndarray, str | None]:
        """(unit query vector, the indexed file whose stored embeddings were used, or None when
        the file was decoded and encoded)."""
        engine = engine or self.engine
        indexed = self._indexed_rows(audio, engine)
        if indexed is not None:
            indexed_path, rows = indexed
            vector = mean_direction(engine.embedding_rows(rows).astype(np.float64),
                                    f"audio query {_shown(audio)}")
            return vector, indexed_path
        path = Path(audio).expanduser()
        if not path.exists():
            raise QueryError(f"audio file not found: {_shown(audio)} (not on disk, and no "
                             f"indexed file matches it)")
        if path.is_dir():
            raise QueryError(f"audio query must be a file, not a folder: {_shown(audio)}")
        from clapdex.encoder import mean_window_embedding

        encoder = self.encoder()
        with self._model_lock:
            mean, count = mean_window_embedding(encoder, path, self.store.settings.hop_seconds)
        if count == 0:
            raise QueryError(f"no audio windows in {_shown(audio)}")
        return unit(mean, f"audio query {_shown(audio)}"), None

    def _indexed_rows(self, audio: str | os.PathLike, engine: SearchEngine
                      ) -> tuple[str, np.ndarray] | None:
        """(path, segment rows) of the indexed file that `audio` names, or None to decode it from
        disk.

        Names resolve as for `clapdex show` (storage.naming.resolve_indexed_file: a path, or the end of one
        indexed path). But a name that is a file on disk means that file: it is looked up in the
        index only as itself, never as the end of another indexed path, and is decoded when the
        index does not hold it. A name matching several indexed files, or a file whose indexing
        failed, is a QueryError (AmbiguousFileError, FileNotIndexedError).
        """
        from clapdex.storage.naming import (AmbiguousFileError, FileNotIndexedError,
                                            FileNotInIndexError, resolve_indexed_file)

        name = os.fsdecode(audio)
        on_disk = os.path.isfile(os.path.expanduser(name))
        try:
            indexed_path = resolve_indexed_file(self.store, name).path
        except FileNotInIndexError:
            return None
        except AmbiguousFileError:
            if on_disk:
                return None
            raise
        except FileNotIndexedError as error:
            if on_disk and not _same_file(error.path, name):
                return None
            raise
        if on_disk and not _same_file(indexed_path, name):
            return None  # a file on disk that merely ends like an indexed path
        file_position = engine.file_position.get(indexed_path)
        if file_position is None:  # indexed after this search's generation was read
            if on_disk:
                return None
            raise QueryError(f"{one_line(indexed_path)} was indexed while this search ran; "
                             "search again to search by it")
        rows = np.flatnonzero(engine.file_index == file_position)
        return (indexed_path, rows) if len(rows) else None

    def query_concepts(self, query: np.ndarray, engine: SearchEngine | None = None
                       ) -> dict[int, float]:
        """Decompose a query vector with the index's dictionary, μ_A and λ (or max-concepts)."""
        from clapdex.concepts.decompose import decompose

        engine = engine or self.engine
        settings = self.store.settings
        result = decompose(query[None, :], engine.dictionary, engine.audio_mean, lam=settings.lam,
                           max_concepts=settings.max_concepts)
        row = result.weights.tocsr()
        return {int(c): float(w) for c, w in zip(row.indices, row.data) if w > 0}

    # ---- search ----------------------------------------------------------------------------

    def search(self, text: str | None = None, audio: str | os.PathLike | None = None,
               concepts: Sequence[str | tuple[str, float]] = (), mode: str | None = None,
               k: int = 10, offset: int = 0, min_score: float | None = None,
               path: str | Sequence[str] | None = None, segments: bool = False,
               alpha: float | None = None, vector: np.ndarray | None = None,
               include_self: bool = False) -> SearchResults:
        """Rank files (or segments) for one query. See the module docstring and docs/search.md.
        `alpha` None: the index's tuned α (`clapdex tune --apply`), else DEFAULT_ALPHA. `path`:
        one glob or several (ORed). An indexed query file is left out of its own results unless
        `include_self`. Each result says whether its file is `missing` from disk now."""
        if alpha is None:
            stored = self.store.settings.alpha
            alpha = DEFAULT_ALPHA if stored is None else stored
        given = [name for name, value in (("text", text), ("audio", audio), ("vector", vector))
                 if value is not None]
        if len(given) > 1:
            raise QueryError(f"give one query, not {' and '.join(given)}")
        concepts = [concepts] if isinstance(concepts, str) else list(concepts or ())
        if not given and not concepts:
            raise QueryError("nothing to search for: give a text query, an audio file or a concept")
        if int(k) < 1:
            raise QueryError("the number of results (k) must be at least 1")
        if int(offset) < 0:
            raise QueryError("offset must not be negative")
        if not 0.0 <= float(alpha) <= 1.0:
            raise QueryError("alpha (the hybrid weight of the dense score) must lie in [0, 1]")
        if mode is not None and mode not in MODES:
            raise QueryError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        if min_score is not None and not np.isfinite(min_score):
            raise QueryError("min_score must be a finite number")
        globs = path_globs(path)

        engine = self.engine
        terms = resolve_concepts(concepts, engine.concept_lookup) if concepts else []
        info = QueryInfo(kind=given[0] if given else "concepts",
                         text=text.strip() if isinstance(text, str) else None,
                         audio=str(audio) if audio is not None else None,
                         steering=[ConceptWeight(t.name, t.weight) for t in terms])
        need = int(offset) + int(k)
        if given:
            if text is not None:
                base = self.text_vector(text)
            elif audio is not None:
                base, info.audio_file = self.audio_vector(audio, engine)
                info.audio_indexed = info.audio_file is not None
            else:
                base = unit(np.asarray(vector, dtype=np.float64).ravel(), "query vector")
                if base.shape[0] != engine.atoms.shape[1]:
                    raise QueryError(f"query vector has dimension {base.shape[0]}, the index "
                                     f"{engine.atoms.shape[1]}")
            query_weights = None
            if audio is not None and engine.n_segments:
                query_weights = self.query_concepts(base, engine)
                info.query_concepts = sorted(
                    (ConceptWeight(engine.concept_names[c], w) for c, w in query_weights.items()),
                    key=lambda c: -c.weight)
            query = steer(base, engine.atoms, terms) if terms else base
            mode = mode or "hybrid"
            itself = None if include_self or info.audio_file is None else \
                engine.file_position[info.audio_file]
            results = self._vector_search(engine, query, mode, need, offset, min_score,
                                          engine.allowed_rows(globs, itself), segments, alpha,
                                          query_weights)
        else:
            mode = mode or "concept"
            if mode != "concept":
                raise QueryError(f"a concept-only query is ranked by concept weight; use mode "
                                 f"'concept', or add a text or audio query for {mode} search")
            if not any(t.weight > 0 for t in terms):
                raise QueryError("a concept-only query needs at least one positive concept")
            results = self._concept_search(engine, terms, need, offset, min_score,
                                           engine.allowed_rows(globs), segments)
        flags = segment_flags(self.store, [result.segment_id for result in results])
        for result in results:  # a cheap check of this page only; doctor checks every file
            result.missing = not os.path.exists(result.path)
            result.flags = flags.get(result.segment_id) or []  # [] also when not measured
        return SearchResults(query=info, mode=mode, alpha=float(alpha) if mode == "hybrid" else None,
                             segments=bool(segments), offset=int(offset), results=results)

    def _vector_search(self, engine, query, mode, need, offset, min_score, allowed, per_segment,
                       alpha, query_weights):
        if not engine.n_segments:
            return []
        per_file = not per_segment
        projection = engine.concept_projection(query)
        if mode == "dense":
            rows, dense = engine.rank_dense(query, need, per_file, allowed, min_score, projection)
            rows, dense = rows[offset:], dense[offset:]
            concept = engine.concept_scores(projection, rows)
            fused = dense
        elif mode == "concept":
            concept_all = engine.concept_scores(projection)
            rows = engine.rank_array(concept_all, need, per_file, allowed, min_score)[offset:]
            concept = concept_all[rows]
            dense = engine.dense_scores(query, rows)
            fused = concept
        else:
            found = None
            if engine.n_segments > EXACT_HYBRID_MAX:
                found = engine.rank_hybrid_candidates(query, projection, alpha, need, per_file,
                                                      allowed, min_score)
            if found is not None:
                rows, dense, concept = (x[offset:] for x in found)
            else:
                concept_all = engine.concept_scores(projection)
                rows, dense = engine.rank_hybrid(query, concept_all, alpha, need, per_file,
                                                 allowed, min_score)
                rows, dense = rows[offset:], dense[offset:]
                concept = concept_all[rows]
            fused = alpha * dense + (1.0 - alpha) * concept
        s, mean_dot = projection
        out = []
        for i, row in enumerate(rows.tolist()):
            contributions, baseline = engine.explain_vector(row, s, mean_dot)
            shared = engine.shared_concepts(row, query_weights) if query_weights is not None else None
            out.append(engine.result(offset + i + 1, row, fused[i], dense[i], concept[i],
                                     contributions, baseline, shared))
        return out

    def _concept_search(self, engine, terms: list[ConceptTermSpec], need, offset, min_score,
                        allowed, per_segment):
        if not engine.n_segments:
            return []
        holders, scores = engine.concept_weight_scores(terms)
        rows = engine.rank_rows(holders, scores, need, not per_segment, allowed, min_score)[offset:]
        score_of = scores[np.searchsorted(holders, rows)]
        dense = engine.dense_scores(concept_text_direction(engine, terms), rows)
        return [engine.result(offset + i + 1, row, score_of[i], dense[i], score_of[i],
                              engine.explain_terms(row, terms), 0.0, None)
                for i, row in enumerate(rows.tolist())]


def _shown(audio: str | os.PathLike) -> str:
    """A query file name for a one-line error message."""
    return one_line(os.fsdecode(audio))


def _same_file(indexed_path: str, name: str) -> bool:
    try:
        return os.path.samefile(indexed_path, os.path.expanduser(name))
    except OSError:  # the indexed file is gone from disk, or unreadable
        return False

