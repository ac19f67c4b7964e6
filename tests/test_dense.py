"""FAISS dense index: exact search, add/remove, atomic save, and re-sync with the database."""

from __future__ import annotations

import types

import numpy as np
import pytest
import scipy.sparse as sp

from clapdex.storage.database import FileMeta, IndexSettings, IndexStore
from clapdex.storage.dense import DenseIndex, DenseIndexError, agreement, unit_rows, validate_factory

D, K = 16, 6


def _decomposition(n: int):
    weights = sp.csr_matrix(np.abs(np.random.default_rng(n).standard_normal((n, K))) * (
        np.arange(K) < 2))
    return types.SimpleNamespace(weights=weights, fidelity=np.ones(n), concept_fidelity=np.ones(n), recon_norm=np.ones(n),
                                 shift_norm=np.ones(n))


def _store(tmp_path, factory="Flat", files=3, per_file=4, seed=0):
    rng = np.random.default_rng(seed)
    settings = IndexSettings("fp", D, 8000, 2.0, 2.0, "v", "h", lam=0.1, faiss_factory=factory)
    store = IndexStore.create(tmp_path / "ix", settings, [f"c{i}" for i in range(K)],
                              rng.standard_normal((K, D)).astype(np.float32))
    for f in range(files):
        store.add_file(FileMeta(f"/audio/{f}.wav", 1, 1, f"h{f}"), np.arange(per_file) * 2.0,
                       np.arange(per_file) * 2.0 + 2, rng.standard_normal((per_file, D)) * 3,
                       _decomposition(per_file))
    return store


def test_flat_search_is_exact_cosine_over_unit_vectors():
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((50, D)).astype(np.float32) * 5
    ids = np.arange(100, 150)
    dense = DenseIndex.empty(D)
    dense.add(ids, vectors)
    queries = unit_rows(rng.standard_normal((3, D)))
    scores, found = dense.search(queries, 7)
    expected = queries @ unit_rows(vectors).T
    for q in range(3):
        order = np.argsort(-expected[q])[:7]
        assert list(found[q]) == list(ids[order])
        np.testing.assert_allclose(scores[q], expected[q, order], atol=1e-5)
    # k larger than the index: capped
    assert dense.search(queries, 500)[1].shape == (3, 50)


def test_nprobe_applies_to_one_search_of_an_ivf_index():
    """search(nprobe=...) sets the IVF lists searched for that call only: all lists give exact
    results, one list fewer hits; the index's own nprobe is unchanged; Flat ignores it."""
    import faiss

    rng = np.random.default_rng(2)
    vectors = unit_rows(rng.standard_normal((800, D)))
    ids = np.arange(800)
    dense = DenseIndex.empty(D, "IVF16,Flat")
    dense._train(vectors)
    dense.add(ids, vectors)
    inner = faiss.downcast_index(dense._index.index)
    own = inner.nprobe
    queries = unit_rows(rng.standard_normal((20, D)))
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, :10]
    _, every = dense.search(queries, 10, nprobe=16)
    assert np.array_equal(every, exact)
    _, one = dense.search(queries, 10, nprobe=1)
    assert np.mean([len(set(a) & set(b)) for a, b in zip(one, exact)]) < 10
    assert inner.nprobe == own
    flat = DenseIndex.empty(D)
    flat.add(ids, vectors)
    assert np.array_equal(flat.search(queries, 10, nprobe=1)[1], exact)


def test_remove_and_ids():
    dense = DenseIndex.empty(D)
    dense.add(np.array([5, 9, 2]), np.eye(3, D, dtype=np.float32))
    assert list(dense.ids()) == [2, 5, 9]
    assert dense.remove(np.array([9]))
    assert list(dense.ids()) == [2, 5]
    assert 9 not in dense.search(np.eye(3, D, dtype=np.float32), 2)[1]


def test_invalid_factory_is_a_typed_error():
    with pytest.raises(DenseIndexError, match="invalid FAISS factory") as raised:
        validate_factory("NotAnIndex123")
    # FAISS's reason, without the C++ signature and source location it comes wrapped in.
    assert str(raised.value) == ("invalid FAISS factory string 'NotAnIndex123' "
                                 "(could not parse index string NotAnIndex123)")


def test_training_failure_names_the_reason_without_cpp_details():
    dense = DenseIndex.empty(D, "IVF64,Flat")
    with pytest.raises(DenseIndexError) as raised:
        dense._train(np.eye(10, D, dtype=np.float32))
    message = str(raised.value)
    assert "Number of training points (10)" in message and "use --faiss Flat" in message
    assert "\n" not in message and "faiss::" not in message and ".cpp" not in message


def test_save_is_atomic_and_load_roundtrips(tmp_path):
    dense = DenseIndex.empty(D)
    dense.add(np.array([1, 2]), np.ones((2, D), np.float32))
    target = tmp_path / "dense.faiss"
    dense.save(target)
    assert [p.name for p in tmp_path.iterdir()] == ["dense.faiss"]  # no temp file left behind
    loaded = DenseIndex.load(target, D, "Flat")
    assert list(loaded.ids()) == [1, 2]
    with pytest.raises(DenseIndexError):
        DenseIndex.load(target, D + 1, "Flat")


def test_open_rebuilds_missing_or_corrupt_file_and_syncs_stale_one(tmp_path):
    store = _store(tmp_path)
    db_ids = store.segment_ids()
    dense = DenseIndex.open(store)           # no file yet: built from the database
    assert np.array_equal(dense.ids(), db_ids) and agreement(store)["agree"]

    store.remove_file("/audio/0.wav")        # the file on disk is now stale (extra ids)
    rng = np.random.default_rng(5)
    store.add_file(FileMeta("/audio/new.wav", 1, 1, "hn"), np.zeros(2), np.ones(2) * 2,
                   rng.standard_normal((2, D)), _decomposition(2))   # ... and missing ids
    report = agreement(store)
    assert not report["agree"] and report["extra_in_faiss"] == 4 and report["missing_in_faiss"] == 2
    dense = DenseIndex.open(store)
    assert np.array_equal(dense.ids(), store.segment_ids()) and agreement(store)["agree"]
    # the synced vectors are the stored embeddings, normalised
    ids, embeddings = store.segment_embeddings()
    np.testing.assert_allclose(dense.reconstruct(ids[-1]), unit_rows(embeddings)[-1], atol=1e-6)

    store.faiss_path.write_bytes(b"garbage")
    assert agreement(store)["problem"]
    dense = DenseIndex.open(store)
    assert np.array_equal(dense.ids(), store.segment_ids()) and agreement(store)["agree"]
    store.close()


def test_hnsw_cannot_remove_so_sync_rebuilds(tmp_path):
    store = _store(tmp_path, factory="HNSW16")
    dense = DenseIndex.open(store)
    assert not dense.remove(dense.ids()[:1])  # HNSW has no removal
    store.remove_file("/audio/1.wav")
    synced = dense.sync(store)
    assert np.array_equal(synced.ids(), store.segment_ids())
    # approximate index still finds an exact duplicate of a stored vector first
    ids, embeddings = store.segment_embeddings()
    scores, found = synced.search(unit_rows(embeddings[:1]), 3)
    assert found[0, 0] == ids[0] and scores[0, 0] == pytest.approx(1.0, abs=1e-5)
    store.close()


def test_ivf_is_trained_from_the_database(tmp_path):
    store = _store(tmp_path, factory="IVF2,Flat", files=4, per_file=10)
    dense = DenseIndex.rebuild_from(store)
    assert np.array_equal(dense.ids(), store.segment_ids())
    assert dense.remove(dense.ids()[:3])      # IVF supports removal
    store.close()


def test_ivf_with_too_few_segments_says_so(tmp_path):
    store = _store(tmp_path, factory="IVF64,Flat", files=1, per_file=3)
    with pytest.raises(DenseIndexError, match="cannot train"):
        DenseIndex.rebuild_from(store)
    store.close()
