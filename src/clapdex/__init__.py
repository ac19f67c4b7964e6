"""clapdex: search and audit audio collections through named sound concepts.

    import clapdex
    with clapdex.open_index("~/sounds-index") as index:
        for hit in index.search(text="glass breaking", k=5):
            print(hit)

The public API is what this package exports (see docs/python-api.md), plus the modules
clapdex.errors (every error class), clapdex.progress (progress events) and
clapdex.encoder_registry (choosing an encoder by name).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# name -> module that defines it. Imported on first use so that `import clapdex` (and the CLI's
# --help) stays fast.
_EXPORTS = {
    "Index": "clapdex.api", "ClapdexIndex": "clapdex.api", "open_index": "clapdex.api",
    "create_index": "clapdex.api", "explain_file": "clapdex.api",
    "evaluate_zeroshot": "clapdex.api", "evaluate_retrieval": "clapdex.api",
    "finetune": "clapdex.api", "check_model": "clapdex.api", "Evaluation": "clapdex.api",
    "tune": "clapdex.api", "TuneOutcome": "clapdex.api",
    "FinetuneSummary": "clapdex.api", "MatchCount": "clapdex.api",
    "PoorlyExplainedResult": "clapdex.api", "TEST_TEXT": "clapdex.api",
    "FlaggedResult": "clapdex.api",
    "to_jsonable": "clapdex.jsonable",
    "ProgressEvent": "clapdex.progress", "terminal_progress": "clapdex.progress",
    "MODES": "clapdex.defaults", "DEFAULT_ALPHA": "clapdex.defaults", "FLAGS": "clapdex.defaults",
    "VOCAB_METHODS": "clapdex.defaults", "VOCAB_DEFAULT_SIZE": "clapdex.defaults",
    "VOCAB_DEFAULT_DUPLICATE_THRESHOLD": "clapdex.defaults",
    "VOCAB_DEFAULT_CANDIDATES_PER_CONCEPT": "clapdex.defaults",
    "DEFAULT_LAMBDA": "clapdex.concepts.decompose",
    "load_vocabulary": "clapdex.concepts.vocabulary",
    "builtin_vocabularies": "clapdex.concepts.vocabulary",
    "write_vocabulary": "clapdex.concepts.vocabulary",
    "build_vocabulary": "clapdex.concepts.vocab_build",
    "read_tag_file": "clapdex.concepts.vocab_build",
    "LOW_FIDELITY_NOTE": "clapdex.search.results",
    "SearchResults": "clapdex.search.results", "SearchResult": "clapdex.search.results",
    "IndexSummary": "clapdex.indexer.storing", "ReindexSummary": "clapdex.indexer.reindexing",
    "load_projection": "clapdex.projection",
    "parse_alphas": "clapdex.evaluation.sweep",
    "write_csv": "clapdex.audit.export",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'clapdex' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
