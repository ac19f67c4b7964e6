"""Unit vectors, one copy for everyone.

Convention: an all-zero row stays zero (it has no direction; callers that must refuse it check
for it, e.g. search.query.unit raises QueryError).
"""

from __future__ import annotations

import numpy as np


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows (or one vector) scaled to unit length as float64; all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)
