"""The compiled loop behind the co-occurrence matrix (audit/cooccurrence.py), in its own module so
that only the commands that count pairs pay numba's import."""

import numpy as np

from clapdex.compiled import njit, prange

BLOCK = 256  # rows of the matrix counted per pass: 256 × K int32 (4 MB at K = 4,000) stays in cache


@njit(parallel=True, cache=True)
def cooccurrence_upper(row_ptr, row_cols, position, m, out):
    """out[a, c] (a <= c) = segments holding both concepts at positions a and c, over the rows of
    a CSR concept matrix (row_ptr, row_cols); position maps a concept id to its position (-1: not
    counted) and must grow with the concept id, as each row's concept ids do (derived.py writes
    them sorted). Only the upper triangle is written.

    The matrix is counted in blocks of BLOCK rows, each block a pass over every segment: the
    increments of a segment's pairs land at random places of the matrix, and in a block that
    fits in the CPU cache they cost a few ns instead of a trip to memory (at 1M segments, K =
    4,000: 2 s instead of 5 s for one pass into the whole matrix). Blocks run in parallel."""
    n = len(row_ptr) - 1
    for b in prange((m + BLOCK - 1) // BLOCK):
        a0, a1 = b * BLOCK, min(m, (b + 1) * BLOCK)
        counts = np.zeros((a1 - a0, m), np.int32)
        for r in range(n):
            hi = row_ptr[r + 1]
            for p in range(row_ptr[r], hi):
                a = position[row_cols[p]]
                if a < a0:
                    continue
                if a >= a1:
                    break  # the rest of the row lies in later blocks
                for q in range(p, hi):
                    c = position[row_cols[q]]
                    if c >= 0:
                        counts[a - a0, c] += 1
        out[a0:a1] = counts
