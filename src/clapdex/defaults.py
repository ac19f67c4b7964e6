"""Defaults and choices that the CLI needs at start-up (for its options and help), kept in a
module that imports nothing, so that `clapdex --help` does not load numpy, scipy or SQLAlchemy.
The modules that use them import them from here."""

# search (search/engine.py)
MODES = ("hybrid", "dense", "concept")
# Weight of the dense score in hybrid mode. Both scores are cosines with the same unit query (dense:
# cos(a, q); concept: cos(r, q), r the concept reconstruction of a), so they share one scale and a
# plain average needs no calibration. No labelled data with real CLAP weights was available to tune
# it here; evaluation can, and callers may pass alpha.
DEFAULT_ALPHA = 0.5

# vocabulary building (concepts/vocab_build.py)
VOCAB_METHODS = ("baseline", "pruned", "clustered")
VOCAB_DEFAULT_SIZE = 2000
# Near-duplicate cutoff for `pruned`, on the cosine of raw (uncentred) text embeddings. Chosen, not
# measured: high enough that only rewordings of one concept ("dog bark" / "dog barking") merge.
VOCAB_DEFAULT_DUPLICATE_THRESHOLD = 0.9
# `clustered` clusters at most this many candidate tags per requested concept (most frequent first).
VOCAB_DEFAULT_CANDIDATES_PER_CONCEPT = 5
