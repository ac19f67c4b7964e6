"""Indexing audio into an index, one module per job:

- walk.py         finding the audio files under the given paths; content hashes
- opening.py      opening or creating an index with the requested settings
- incremental.py  which files need encoding (unchanged, touched, moved, copied ones do not)
- pipeline.py     index_paths: walk -> decode (threads) -> encode (batches) -> store; resumable
- storing.py      decompose finished files in batches, one transaction per batch; IndexSummary
- reindexing.py   re-decompose stored embeddings (new λ, max-concepts or vocabulary)
- imports.py      import precomputed embeddings with their FILES.csv manifest

The names below are the public API. The tuning constants are read where they are defined: to
change one (tests do), set it on its module, e.g. `clapdex.indexer.storing.DECOMPOSE_WINDOWS`.
"""

from clapdex.indexer.imports import (IMPORT_WINDOWS, MANIFEST_OPTIONAL, MANIFEST_REQUIRED,
                                     ManifestRow, import_embeddings, read_manifest)
from clapdex.indexer.opening import open_index
from clapdex.indexer.pipeline import DECODE_WORKERS, QUEUE_BATCHES, index_paths
from clapdex.indexer.reindexing import ReindexSummary, reindex
from clapdex.indexer.storing import (DECOMPOSE_WINDOWS, MEAN_LABEL, MEAN_WINDOWS, STORE_AHEAD,
                                     IndexSummary)
from clapdex.indexer.walk import HASH_BLOCK, PathNotFoundError, content_hash, find_audio_files

__all__ = [
    "DECODE_WORKERS", "DECOMPOSE_WINDOWS", "HASH_BLOCK", "IMPORT_WINDOWS", "MANIFEST_OPTIONAL",
    "MANIFEST_REQUIRED", "MEAN_LABEL", "MEAN_WINDOWS", "QUEUE_BATCHES", "STORE_AHEAD",
    "IndexSummary", "ManifestRow", "PathNotFoundError", "ReindexSummary", "content_hash",
    "find_audio_files", "import_embeddings", "index_paths", "open_index", "read_manifest",
    "reindex",
]
