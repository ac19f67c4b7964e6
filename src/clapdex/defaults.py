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

# damaged, silent and clipped audio (audio.py measures, the indexer flags; docs/indexing.md
# "Damaged, silent and clipped audio")
FLAGS = ("truncated", "silent", "clipped")  # `audit --flag`: a file flag, then segment flags
# A file whose decoded audio falls short of what its header claims by more than this is truncated.
TRUNCATION_TOLERANCE_SECONDS = 0.05
# Less decoded audio than this is refused, not repeated to fill a window: under one period of
# 50 Hz (the lowest band the CLAP models' mel filters analyse) there is no sound to name.
MIN_AUDIO_SECONDS = 0.02
# A window whose RMS level is below this is silent: it gets no concepts (digital zero, or noise
# at -70 dBFS, is not "hydraulics"). Quiet room tone sits around -50 to -60 dBFS RMS.
SILENT_LEVEL_DB = -60.0
LEVEL_FLOOR_DB = -120.0     # the level stored for digital silence (RMS 0)
# A sample is clipped when some channel is at full scale (|x| >= CLIP_LEVEL) for at least
# CLIP_RUN consecutive samples (a peak touching full scale once is not clipping); a window is
# clipped when at least CLIPPED_FRACTION of its source samples are.
CLIP_LEVEL = 0.999
CLIP_RUN = 3
CLIPPED_FRACTION = 0.001
