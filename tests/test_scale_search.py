"""Search past the exact paths (issue 14): hybrid re-scoring of a bounded candidate set, and the
FAISS type chosen by size. Synthetic indexes (random atoms and weights, no model); no timings."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clapdex.api import open_index
from tests.search_fixtures import build_synthetic_index


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale") / "idx"
    build_synthetic_index(root, n_segments=2400, n_concepts=60, dimension=64, per_segment=8,
                          per_file=20, noise=0.3)
    return root


def exact_hybrid(engine, q, alpha=0.5):
    dense = np.asarray(engine.embeddings, dtype=np.float64) @ q
    concept = engine.concept_scores(engine.concept_projection(q))
    return alpha * dense + (1 - alpha) * concept, dense, concept


def queries(engine, count, seed=3):
    rng = np.random.default_rng(seed)
    unit = np.asarray(engine.embeddings, dtype=np.float64)
    for _ in range(count):
        q = unit[rng.integers(len(unit))] + 0.5 * rng.standard_normal(unit.shape[1]) / 8
        yield q / np.linalg.norm(q)


def test_candidate_rescoring_returns_the_exact_top_k(synthetic, monkeypatch):
    monkeypatch.setattr("clapdex.search.searcher.EXACT_HYBRID_MAX", 0)  # always candidates
    with open_index(synthetic) as index:
        engine = index._searcher.engine
        for q in queries(engine, 8):
            fused, dense, concept = exact_hybrid(engine, q)
            order = np.argsort(-fused)
            got = index.search(vector=q, k=10, segments=True)
            assert [r.segment_id for r in got] == list(engine.segment_ids[order[:10]])
            assert [r.score for r in got] == pytest.approx(fused[order[:10]], abs=1e-6)
            for r in got:  # explanations stay exact
                total = sum(t.contribution for t in r.explanation.contributions)
                assert total + r.explanation.baseline == pytest.approx(r.concept, abs=1e-6)
            # files: the best segment of each of the 5 best files
            seen, best = set(), []
            for i in order:
                if engine.file_index[i] not in seen:
                    seen.add(engine.file_index[i])
                    best.append(engine.segment_ids[i])
            assert [r.segment_id for r in index.search(vector=q, k=5)] == best[:5]


def test_small_candidate_budget_is_exact_on_the_test_index(synthetic):
    """rank_hybrid_candidates itself, with 100 candidates per source (of 2,400 segments)."""
    with open_index(synthetic) as index:
        engine = index._searcher.engine
        for q in queries(engine, 8, seed=5):
            fused, _, _ = exact_hybrid(engine, q)
            found = engine.rank_hybrid_candidates(q, engine.concept_projection(q), 0.5, 10,
                                                  False, None, None, budget=100)
            assert found is not None
            assert list(found[0]) == list(np.argsort(-fused)[:10])


def test_posting_candidates_are_the_best_partial_concept_scores(synthetic):
    """The postings' candidates are exactly the `budget` best segments by the part of the concept
    score the HYBRID_CONCEPTS strongest concepts give, among the segments holding one of them
    (computed here from the whole weight matrix)."""
    from clapdex.search.engine import HYBRID_CONCEPTS

    with open_index(synthetic) as index:
        engine = index._searcher.engine
        weights = engine.weights.tocsc()
        for q in queries(engine, 6, seed=11):
            s, mean_dot = engine.concept_projection(q)
            strongest = np.argsort(-s)[:HYBRID_CONCEPTS]
            strongest = strongest[s[strongest] > 0]
            part = weights[:, strongest]
            holders = np.flatnonzero(part.getnnz(axis=1))
            partial = engine.row_scale * (part @ s[strongest]) + engine.base_scale * mean_dot
            for budget in (1, 50, len(holders), len(holders) + 10):
                expected = holders[np.argsort(-partial[holders], kind="stable")[:budget]]
                got = engine._posting_candidates((s, mean_dot), budget)
                assert list(got) == sorted(expected.tolist())


def test_candidates_that_cannot_fill_the_page_fall_back_to_every_segment(synthetic, monkeypatch):
    monkeypatch.setattr("clapdex.search.searcher.EXACT_HYBRID_MAX", 0)
    monkeypatch.setattr("clapdex.search.engine.HYBRID_CANDIDATES", 5)
    monkeypatch.setattr("clapdex.search.engine.CANDIDATES_PER_RESULT", 0)
    with open_index(synthetic) as index:
        engine = index._searcher.engine
        q = next(queries(engine, 1, seed=9))
        fused, _, _ = exact_hybrid(engine, q)
        got = index.search(vector=q, k=40, segments=True)  # more than 2 × 5 candidates
        assert [r.segment_id for r in got] == list(engine.segment_ids[np.argsort(-fused)[:40]])


def test_auto_picks_ivf_past_flat_max_and_records_its_recall(tmp_path, monkeypatch):
    monkeypatch.setattr("clapdex.storage.dense.FLAT_MAX", 1000)
    root = tmp_path / "idx"
    build_synthetic_index(root, n_segments=2400, n_concepts=60, dimension=64, per_segment=8,
                          per_file=20, noise=0.3)
    from clapdex.storage.database import IndexStore
    with IndexStore.open(root) as store:
        store.update_settings(faiss_factory="auto")
    with open_index(root) as index:
        engine = index._searcher.engine
        q = next(queries(engine, 1))
        got = index.search(vector=q, mode="dense", k=10, segments=True)
        meta = json.loads((root / "dense.json").read_text())
        assert meta["kind"].startswith("IVF") and meta["kind"].endswith(",SQ8")
        assert 0.0 <= meta["recall_at_10"] <= 1.0
        # hits are re-scored exactly: the dense score is the float32 cosine
        rows = np.searchsorted(engine.segment_ids, [r.segment_id for r in got])
        exact = np.asarray(engine.embeddings[rows], dtype=np.float32) @ q.astype(np.float32)
        assert [r.dense for r in got] == pytest.approx(exact, abs=1e-6)
        assert [r.dense for r in got] == sorted((r.dense for r in got), reverse=True)
    from clapdex.storage.health import index_status
    assert index_status(root).ann["kind"] == meta["kind"]
    # --faiss overrides: an explicit Flat is rebuilt as Flat
    with IndexStore.open(root) as store:
        store.update_settings(faiss_factory="Flat")
    with open_index(root) as index:
        index.search(vector=q, mode="dense", k=10)
    assert json.loads((root / "dense.json").read_text())["kind"] == "Flat"


def test_the_faiss_stamp_alone_says_what_the_file_holds(tmp_path):
    """dense.json keeps what search measured, not a generation of its own: the stamp (build id,
    generation) is the one record. A write that leaves the segments as they are moves the
    generation on; the next search re-stamps the file without rewriting it."""
    from clapdex.storage.database import IndexStore
    from clapdex.storage.dense import read_stamp

    root = tmp_path / "idx"
    build_synthetic_index(root, n_segments=300, n_concepts=20, dimension=16, per_segment=4,
                          per_file=30)
    with open_index(root) as index:
        q = next(queries(index._searcher.engine, 1))
        index.search(vector=q, mode="dense", k=5)
    meta = json.loads((root / "dense.json").read_text())
    assert "generation" not in meta and meta["kind"] == "Flat" and meta["segments"] == 300
    with IndexStore.open(root) as store:
        build, generation = store.state()
        assert read_stamp(store.faiss_path) == (build, generation)
        store.update_file_stat("/synthetic/file_000003.wav", 7, 7)  # no segment changes
        assert store.generation() == generation + 1
    before = (root / "dense.faiss").stat()
    with open_index(root) as index:
        hits = index.search(vector=q, mode="dense", k=5, segments=True)
    after = (root / "dense.faiss").stat()
    assert (before.st_ino, before.st_mtime_ns) == (after.st_ino, after.st_mtime_ns)
    assert read_stamp(root / "dense.faiss") == (build, generation + 1)
    assert len(hits) == 5
