"""storage/postings.postings_to_csr and IndexStore.concept_matrix, checked against scipy's own
COO -> CSR construction from the same posting rows."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sqlalchemy import select

from clapdex.storage.database import IndexStore
from clapdex.storage.postings import postings_to_csr
from clapdex.storage.schema import PostingRow
from tests.search_fixtures import build_synthetic_index


def _reference(ids, postings, n_concepts):
    seg, con, weight = (np.array(c) for c in zip(*postings))
    return sp.csr_matrix((weight, (np.searchsorted(ids, seg), con)), shape=(len(ids), n_concepts))


def test_rows_in_any_order_give_the_same_matrix():
    rng = np.random.default_rng(0)
    ids = np.array([3, 8, 9, 20, 41])
    postings = [(int(s), int(c), float(rng.random()) + 0.1)
                for s in ids for c in rng.choice(7, size=3, replace=False)]
    expected = _reference(ids, postings, 7)
    for rows in (postings, postings[::-1], [postings[i] for i in rng.permutation(len(postings))]):
        matrix = postings_to_csr(ids, rows, 7)
        assert matrix.shape == (5, 7) and matrix.has_sorted_indices
        assert (matrix != expected).nnz == 0


def test_unknown_segments_empty_input_and_inferred_width():
    ids = np.array([2, 5])
    matrix = postings_to_csr(ids, [(5, 1, 0.5), (4, 0, 9.0), (7, 3, 9.0), (2, 2, 0.25)], 4)
    assert matrix.toarray().tolist() == [[0, 0, 0.25, 0], [0, 0.5, 0, 0]]  # 4 and 7 are dropped
    assert postings_to_csr(ids, [], 6).shape == (2, 6)
    assert postings_to_csr(np.zeros(0, np.int64), [(1, 1, 1.0)], 3).shape == (0, 3)
    assert postings_to_csr(ids, [(5, 4, 1.0)], None).shape == (2, 5)


def test_concept_matrix_matches_the_stored_postings(tmp_path):
    build_synthetic_index(tmp_path / "index", n_segments=250, n_concepts=40, dimension=16,
                          per_segment=5, per_file=30)
    with IndexStore.open(tmp_path / "index") as store:
        ids, matrix = store.concept_matrix()
        with store.session() as session:
            postings = session.execute(select(PostingRow.segment_id, PostingRow.concept_id,
                                              PostingRow.weight)).all()
        assert np.array_equal(ids, store.segment_ids()) and matrix.shape == (250, 40)
        assert matrix.nnz == 250 * 5 == len(postings)
        assert (matrix != _reference(ids, postings, 40)).nnz == 0
