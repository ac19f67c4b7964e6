"""Posting rows (segment_id, concept_id, weight) -> a concept matrix in CSR form.

Shared by IndexStore (the whole index for search, one file for a copy) and storage/concept_stats.py
(one file's contribution when it is removed).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp

POSTING = np.dtype([("segment_id", np.int64), ("concept_id", np.int64), ("weight", np.float64)])


def postings_to_csr(segment_ids: np.ndarray, postings: Sequence, n_concepts: int | None) -> sp.csr_matrix:
    """The (len(segment_ids), n_concepts) matrix of `postings`, row i belonging to segment_ids[i].

    `segment_ids` must be sorted ascending. `postings` is a sequence of (segment_id, concept_id,
    weight) rows: plain tuples, or SQLAlchemy rows. Postings of segments not in `segment_ids` are
    dropped (a segment written or deleted between two reads). `n_concepts` None: just enough
    columns for the largest concept id. Rows given in segment order (the order postings are
    written in, so a table scan's order) need no sorting.
    """
    ids = np.asarray(segment_ids, dtype=np.int64)
    table = np.fromiter(map(tuple, postings), dtype=POSTING, count=len(postings))
    segments, concepts, weights = table["segment_id"], table["concept_id"], table["weight"]
    rows = np.searchsorted(ids, segments)
    known = ids[np.minimum(rows, len(ids) - 1)] == segments if len(ids) else np.zeros(len(rows), bool)
    if not known.all():
        rows, concepts, weights = rows[known], concepts[known], weights[known]
    if len(rows) > 1 and (np.diff(rows) < 0).any():
        order = np.argsort(rows, kind="stable")
        rows, concepts, weights = rows[order], concepts[order], weights[order]
    if n_concepts is None:
        n_concepts = int(concepts.max()) + 1 if len(concepts) else 0
    indptr = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(np.bincount(rows, minlength=len(ids)), out=indptr[1:])
    matrix = sp.csr_matrix((weights, concepts, indptr), shape=(len(ids), n_concepts))
    matrix.sort_indices()  # concepts within a row ascending (a no-op when written that way)
    return matrix
