"""The Python API: open an index and search it.

    import clapdex
    with clapdex.open_index("~/sounds-index") as index:
        for hit in index.search(text="glass breaking", k=5):
            print(hit.path, hit.start, hit.end, hit.score, hit.explanation.contributions[:3])

The CLI is a thin layer over this module.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from clapdex.search import DEFAULT_ALPHA, Searcher, SearchResults
from clapdex.storage.database import IndexSettings, IndexStore


class ClapdexIndex:
    """An open index. Scoring state is loaded on the first search and kept: reopen the index to
    see files indexed after that."""

    def __init__(self, store: IndexStore, encoder: object | Callable[[], object] | None = None):
        self.store = store
        self._searcher = Searcher(store, encoder)

    @property
    def path(self) -> Path:
        return self.store.root

    @property
    def settings(self) -> IndexSettings:
        return self.store.settings

    def counts(self) -> dict:
        return self.store.counts()

    def search(self, text: str | None = None, audio: str | os.PathLike | None = None,
               concepts: Sequence[str | tuple[str, float]] = (), mode: str | None = None,
               k: int = 10, offset: int = 0, min_score: float | None = None,
               path: str | None = None, segments: bool = False, alpha: float = DEFAULT_ALPHA,
               vector: np.ndarray | None = None) -> SearchResults:
        """Search by one of `text`, `audio` (an audio file, or an indexed file named as
        `clapdex show` takes it, e.g. by the end of its path; an indexed file's stored embeddings
        are used, and `results.query.audio_file` names it) or
        `vector` (a raw embedding from the index's model, projected if the index has a
        projection), optionally steered by `concepts`
        ("dog", "-speech", "rain:0.5" or (name, weight) pairs); or by `concepts` alone.

        mode: "hybrid" (default with a text/audio/vector query), "dense" or "concept" (default and
        only choice for concept-only queries). k results after skipping `offset`; `min_score`
        drops weaker results; `path` is a glob on file paths ('[[]' matches a literal '['; a '['
        that opens no set is a QueryError); `segments=True` ranks segments
        instead of files; `alpha` is the dense weight of the hybrid score.
        """
        return self._searcher.search(text=text, audio=audio, concepts=concepts, mode=mode, k=k,
                                     offset=offset, min_score=min_score, path=path,
                                     segments=segments, alpha=alpha, vector=vector)

    def similar(self, audio: str | os.PathLike, **options) -> SearchResults:
        """Files that sound like `audio` (same as search(audio=...))."""
        return self.search(audio=audio, **options)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> "ClapdexIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def open_index(path: str | os.PathLike, encoder: object | Callable[[], object] | None = None
               ) -> ClapdexIndex:
    """Open the index at `path` for searching.

    encoder: an Encoder, or a zero-argument callable returning one (called only when a query needs
    the model), or None to build `ClapEncoder.from_settings()` (options from the environment) on
    first need. Its fingerprint must match the index's, else IndexMismatchError; an index built
    with a projection applies its stored projection to it (text queries are not projected).
    Raises IndexNotFoundError when there is no index at `path`.
    """
    return ClapdexIndex(IndexStore.open(Path(path).expanduser()), encoder)
