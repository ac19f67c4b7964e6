"""Evaluation on labeled audio: zero-shot classification, text-audio retrieval, sparsity sweeps, and
the optional linear projection of audio embeddings (fine-tuning).

Import the parts from their modules: datasets, embeddings, representations, zeroshot, retrieval,
sweep, report, projection. `load_projection` / `apply_projection` are re-exported here for callers
outside evaluation (explain, index, search).
"""

from clapdex.evaluation.projection import (ProjectedEncoder, Projection, ProjectionError, apply_projection,
                                           load_projection, save_projection)

__all__ = ["Projection", "ProjectedEncoder", "ProjectionError", "apply_projection", "load_projection",
           "save_projection"]
