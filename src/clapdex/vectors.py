"""Unit vectors, one copy for everyone.

Convention: an all-zero row stays zero (it has no direction; callers that must refuse it check
for it, e.g. search.query.unit raises QueryError). So a mean of unit rows counts a zero row as
nothing added (but still as a row).
"""

from __future__ import annotations

import numpy as np


def unit_rows(x: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Rows (or one vector) scaled to unit length, as `dtype` (float64 unless asked otherwise);
    all-zero rows stay zero."""
    x = np.asarray(x, dtype=dtype)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0).astype(dtype)


def mean_of_unit_rows(x: np.ndarray) -> np.ndarray:
    """The mean of the L2-normalised rows (d,), float64 (e.g. the audio mean μ_A)."""
    return unit_rows(x).mean(axis=0)
