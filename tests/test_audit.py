"""Audit queries against a brute-force computation over the same (known) weights."""

from __future__ import annotations

import numpy as np
import pytest

from audit_fixtures import build_index, decomposition, union_seconds
from clapdex.audit import (ExpressionError, all_pairs, audit, file_profile, partners,
                           poorly_explained, prevalence)
from clapdex.audit.concepts import UnknownConceptError
from clapdex.audit.stats import corpus_totals
from clapdex.errors import QueryError
from clapdex.storage import concept_stats
from clapdex.storage.database import FileMeta

K = {name: i for i, name in enumerate(("dog", "cat", "siren", "music", "speech", "rain on roof",
                                       "dog bark", "traffic", "wind", "birdsong", "engine",
                                       "applause"))}


@pytest.fixture(scope="module")
def index(tmp_path_factory, backend):
    store, truth = build_index(tmp_path_factory.mktemp("audit") / "index")
    yield store, truth
    store.close()


def brute_prevalence(truth):
    w = truth.weights
    indexed = sum(union_seconds(zip(truth.starts[truth.file_of == f], truth.ends[truth.file_of == f]))
                  for f in range(len(truth.paths)))
    out = {}
    for k, name in enumerate(truth.names):
        active = w[:, k] > 0
        if not active.any():
            continue
        seconds = sum(union_seconds(zip(truth.starts[active & (truth.file_of == f)],
                                        truth.ends[active & (truth.file_of == f)]))
                      for f in range(len(truth.paths)))
        out[name] = dict(files=len(set(truth.file_of[active])), segments=int(active.sum()),
                         time_share=seconds / indexed, mean_weight=w[active, k].mean(),
                         max_weight=w[active, k].max(), active_seconds=seconds)
    return out, indexed


def check_prevalence(store, truth):
    expected, indexed = brute_prevalence(truth)
    rows = prevalence(store)
    assert {r.concept for r in rows} == set(expected)
    for r in rows:
        e = expected[r.concept]
        assert (r.files, r.segments) == (e["files"], e["segments"]), r.concept
        assert r.time_share == pytest.approx(e["time_share"], abs=1e-9)
        assert r.mean_weight == pytest.approx(e["mean_weight"], abs=1e-9)
        assert r.max_weight == pytest.approx(e["max_weight"], abs=1e-12)
    assert corpus_totals(store).indexed_seconds == pytest.approx(indexed)
    return expected


def test_prevalence_equals_brute_force(index):
    store, truth = index
    check_prevalence(store, truth)


@pytest.mark.parametrize("sort, key", [
    ("files", lambda e: (-e["files"], -e["segments"])),
    ("segments", lambda e: (-e["segments"], -e["files"])),
    ("time", lambda e: (-round(e["active_seconds"], 6), -e["segments"])),
    ("weight", lambda e: (-round(e["mean_weight"], 9), -e["segments"])),
])
def test_prevalence_orderings_and_top(index, sort, key):
    store, truth = index
    expected, _ = brute_prevalence(truth)
    order = sorted(expected, key=lambda name: (*key(expected[name]), name))
    assert [r.concept for r in prevalence(store, sort=sort)] == order
    assert [r.concept for r in prevalence(store, top=3, sort=sort)] == order[:3]


def test_stale_totals_of_a_read_only_index_are_computed_in_memory(tmp_path):
    from sqlalchemy import select

    from clapdex.audit.stats import SORT_KEYS
    from clapdex.storage.schema import CorpusStatsRow

    from sqlalchemy import update

    from clapdex.storage.schema import ConceptStatsRow

    store, truth = build_index(tmp_path / "index")
    stored = {sort: [r.to_row() for r in prevalence(store, sort=sort)] for sort in SORT_KEYS}
    totals = corpus_totals(store)
    dog_partners = partners(store, "dog", min_count=1, limit=None)
    with store.session() as session, session.begin():
        concept_stats.invalidate(session)  # what a reindex leaves behind
        # Stale totals need not be right: make them wrong, so reading them would show.
        session.execute(update(ConceptStatsRow).values(n_segments=1))
    store.read_only = True  # as IndexStore.open sets it for a folder it cannot write
    check_prevalence(store, truth)
    for sort in SORT_KEYS:
        computed = [r.to_row() for r in prevalence(store, sort=sort)]
        assert [r["concept"] for r in computed] == [r["concept"] for r in stored[sort]]
        for mine, theirs in zip(computed, stored[sort]):  # same numbers (names compared above)
            numbers = [k for k in mine if k != "concept"]
            assert [mine[k] for k in numbers] == pytest.approx([theirs[k] for k in numbers],
                                                               rel=1e-9)
        assert [r.concept for r in prevalence(store, top=3, sort=sort)] == [
            r["concept"] for r in stored[sort][:3]]
    assert partners(store, "dog", min_count=1, limit=None) == dog_partners  # lift from fresh counts
    again = corpus_totals(store)
    assert (again.files, again.segments) == (totals.files, totals.segments)
    assert again.indexed_seconds == pytest.approx(totals.indexed_seconds)
    with store.session() as session:  # nothing was written: the stored totals are still stale
        assert session.scalar(select(CorpusStatsRow.valid)) is False
    store.close()


def test_overlapping_windows_count_once_in_time_share(tmp_path):
    from audit_fixtures import settings
    from clapdex.storage.database import IndexStore
    store = IndexStore.create(tmp_path / "i", settings(), ["a", "b"], np.zeros((2, 4), "f4"))
    weights = np.array([[0.5, 0.0], [0.5, 0.0], [0.0, 0.3]])
    # Windows 0-2, 1-3 (overlap 1 s) are "a"; 2-4 is "b". The file covers 0-4.
    store.add_file(FileMeta("/x.wav", 1, 1), np.array([0.0, 1.0, 2.0]), np.array([2.0, 3.0, 4.0]),
                   np.zeros((3, 4), "f4"), decomposition(weights, np.ones(3)))
    shares = {r.concept: r.time_share for r in prevalence(store)}
    assert shares == {"a": pytest.approx(0.75), "b": pytest.approx(0.5)}
    store.close()


def test_totals_follow_remove_readd_and_invalidation(tmp_path):
    store, truth = build_index(tmp_path / "index", n_files=6, seed=3)
    check_prevalence(store, truth)
    # Remove one file: the incremental totals must equal a brute force over what is left.
    removed = 2
    assert store.remove_file(truth.paths[removed])
    keep = truth.file_of != removed
    truth.file_of, truth.starts, truth.ends = truth.file_of[keep], truth.starts[keep], truth.ends[keep]
    truth.weights, truth.fidelity = truth.weights[keep], truth.fidelity[keep]
    truth.file_of = np.where(truth.file_of > removed, truth.file_of - 1, truth.file_of)
    truth.paths = truth.paths[:removed] + truth.paths[removed + 1:]
    check_prevalence(store, truth)
    # Replacing a file (same path, new content) goes through remove + add.
    path = truth.paths[0]
    new_weights = np.zeros((2, len(truth.names)))
    new_weights[:, K["applause"]] = [0.9, 0.4]
    store.add_file(FileMeta(path, 1, 2), np.array([0.0, 1.0]), np.array([2.0, 3.0]),
                   np.zeros((2, 4), "f4"), decomposition(new_weights, np.array([0.9, 0.8])))
    keep = truth.file_of != 0
    truth.file_of = np.concatenate([truth.file_of[keep], [0, 0]])
    truth.starts = np.concatenate([truth.starts[keep], [0.0, 1.0]])
    truth.ends = np.concatenate([truth.ends[keep], [2.0, 3.0]])
    truth.weights = np.vstack([truth.weights[keep], new_weights])
    truth.fidelity = np.concatenate([truth.fidelity[keep], [0.9, 0.8]])
    expected = check_prevalence(store, truth)
    # A reindex marks the totals stale; the next read rebuilds them and agrees.
    with store.session() as session, session.begin():
        concept_stats.invalidate(session)
    check_prevalence(store, truth)
    assert "applause" in expected
    store.close()


CASES = [
    ("siren", lambda w: w[:, K["siren"]] > 0),
    ("siren AND NOT music", lambda w: (w[:, K["siren"]] > 0) & ~(w[:, K["music"]] > 0)),
    ("dog:0.2 OR cat:0.2", lambda w: (w[:, K["dog"]] >= 0.2) | (w[:, K["cat"]] >= 0.2)),
    ('"rain on roof" AND wind', lambda w: (w[:, K["rain on roof"]] > 0) & (w[:, K["wind"]] > 0)),
    ("dog OR cat AND siren", lambda w: (w[:, K["dog"]] > 0) | ((w[:, K["cat"]] > 0)
                                                               & (w[:, K["siren"]] > 0))),
    ("(dog OR cat) AND siren", lambda w: ((w[:, K["dog"]] > 0) | (w[:, K["cat"]] > 0))
     & (w[:, K["siren"]] > 0)),
    ("NOT music", lambda w: ~(w[:, K["music"]] > 0)),
    ("NOT (music OR speech) AND NOT traffic:0.3",
     lambda w: ~((w[:, K["music"]] > 0) | (w[:, K["speech"]] > 0)) & ~(w[:, K["traffic"]] >= 0.3)),
    ("dog AND dog bark AND NOT NOT engine", lambda w: (w[:, K["dog"]] > 0) & (w[:, K["dog bark"]] > 0)
     & (w[:, K["engine"]] > 0)),
    ("speech:0.5 AND (siren OR NOT birdsong:0.1)",
     lambda w: (w[:, K["speech"]] >= 0.5) & ((w[:, K["siren"]] > 0) | ~(w[:, K["birdsong"]] >= 0.1))),
]
POSITIVE = {  # concepts under an even number of NOTs: they make up a match's score
    "siren": ["siren"], "siren AND NOT music": ["siren"], "dog:0.2 OR cat:0.2": ["dog", "cat"],
    '"rain on roof" AND wind': ["rain on roof", "wind"], "dog OR cat AND siren": ["dog", "cat", "siren"],
    "(dog OR cat) AND siren": ["dog", "cat", "siren"], "NOT music": [],
    "NOT (music OR speech) AND NOT traffic:0.3": [],
    "dog AND dog bark AND NOT NOT engine": ["dog", "dog bark", "engine"],
    "speech:0.5 AND (siren OR NOT birdsong:0.1)": ["speech", "siren"],
}


@pytest.mark.parametrize("expression, brute", CASES, ids=[c[0] for c in CASES])
def test_audit_matches_and_ordering_equal_brute_force(index, expression, brute):
    store, truth = index
    mask = brute(truth.weights)
    assert 0 < mask.sum() < len(mask), "a case must separate segments to be meaningful"
    score = truth.weights[:, [K[n] for n in POSITIVE[expression]]].sum(axis=1)
    order = sorted(np.flatnonzero(mask), key=lambda i: (-score[i], truth.segment_ids[i]))
    result = audit(store, expression, limit=None)
    assert result.n_segments == mask.sum()
    assert result.n_files == len(set(truth.file_of[mask]))
    assert [m.segment_id for m in result.matches] == [int(truth.segment_ids[i]) for i in order]
    assert [m.score for m in result.matches] == pytest.approx([score[i] for i in order])
    first = result.matches[0]
    i = int(np.flatnonzero(truth.segment_ids == first.segment_id)[0])
    assert (first.start, first.end, first.path) == (truth.starts[i], truth.ends[i],
                                                    truth.paths[truth.file_of[i]])
    for name, weight in first.weights.items():
        assert weight == pytest.approx(truth.weights[i, K[name]])
    assert len(audit(store, expression, limit=3).matches) == min(3, mask.sum())


def test_audit_groups_by_file_in_best_segment_order(index):
    store, _ = index
    result = audit(store, "dog OR cat", limit=None)
    groups = result.by_file()
    assert sum(len(g) for _, g in groups) == len(result.matches)
    best = [segments[0].score for _, segments in groups]
    assert best == sorted(best, reverse=True)


def test_unknown_concept_names_the_closest_ones(index):
    store, _ = index
    with pytest.raises(UnknownConceptError, match=r"'sirem' at character 9; closest: siren"):
        audit(store, "dog AND sirem")
    with pytest.raises(QueryError, match="closest: rain on roof"):
        audit(store, "'rain on rooof'")


def test_concept_names_are_case_insensitive_when_unique(index):
    store, _ = index
    assert audit(store, "SIREN", limit=None).n_segments == audit(store, "siren", limit=None).n_segments


def test_bad_expression_is_a_query_error(index):
    store, _ = index
    with pytest.raises(ExpressionError, match="end of the expression at character 8"):
        audit(store, "dog AND")
    assert issubclass(ExpressionError, QueryError)


def test_poorly_explained_equals_brute_force(index):
    store, truth = index
    total, rows = poorly_explained(store, below=0.5, limit=None, n_concepts=2)
    low = np.flatnonzero(truth.fidelity < 0.5)
    assert total == len(low) > 0
    order = sorted(low, key=lambda i: (truth.fidelity[i], truth.segment_ids[i]))
    assert [r.segment_id for r in rows] == [int(truth.segment_ids[i]) for i in order]
    for row in rows:
        i = int(np.flatnonzero(truth.segment_ids == row.segment_id)[0])
        strongest = np.argsort(-truth.weights[i], kind="stable")[:2]
        expected = [(truth.names[k], truth.weights[i, k]) for k in strongest if truth.weights[i, k] > 0]
        assert [n for n, _ in row.concepts] == [n for n, _ in expected]
        assert row.concept_fidelity == pytest.approx(truth.fidelity[i])
        assert row.fidelity == pytest.approx(0.5 + truth.fidelity[i] / 2)  # shown, not used
    assert len(poorly_explained(store, below=0.5, limit=4)[1]) == 4


def test_cooccurrence_equals_brute_force(index):
    store, truth = index
    active = truth.weights > 0
    n = len(active)
    together = active.T.astype(int) @ active.astype(int)
    expected = {}
    for a in range(active.shape[1]):
        for b in range(a + 1, active.shape[1]):
            lift = together[a, b] * n / (together[a, a] * together[b, b])
            if together[a, b] >= 3 and lift > 1:
                expected[(truth.names[a], truth.names[b])] = (together[a, b], lift)
    pairs = all_pairs(store, min_count=3, limit=None)
    assert {(p.concept_a, p.concept_b): (p.count, pytest.approx(p.lift)) for p in pairs} == expected
    from clapdex.audit.cooccurrence import cooccurrence_counts
    some = [3, 0, active.shape[1] - 1, 1]  # the report's heatmap: a subset, in its own order
    assert np.array_equal(cooccurrence_counts(store, some), together[np.ix_(some, some)])
    assert [p.lift for p in pairs] == sorted((p.lift for p in pairs), reverse=True)
    # The correlated pair built into the fixture is found, with a lift well above 1.
    dog = [p for p in partners(store, "dog", min_count=3, limit=None)]
    assert dog[0].concept_b == "dog bark" and dog[0].lift > 1.5
    by_name = {p.concept_b: (p.count, p.lift) for p in dog}
    for (a, b), (count, lift) in expected.items():
        if "dog" in (a, b):
            other = b if a == "dog" else a
            assert by_name[other] == (count, pytest.approx(lift))
    assert len(by_name) == sum("dog" in pair for pair in expected)


def test_file_profile_lists_segments_in_time_order(index):
    store, truth = index
    f = int(np.argmax(np.bincount(truth.file_of)))
    profile = file_profile(store, truth.paths[f], top=3)
    rows = np.flatnonzero(truth.file_of == f)
    rows = rows[np.argsort(truth.starts[rows], kind="stable")]
    assert [(s.start, s.end) for s in profile.segments] == list(zip(truth.starts[rows], truth.ends[rows]))
    for segment, i in zip(profile.segments, rows):
        top = np.argsort(-truth.weights[i], kind="stable")[:3]
        assert [n for n, _ in segment.concepts] == [truth.names[k] for k in top if truth.weights[i, k] > 0]
    # A unique file name is enough; an unknown one is a QueryError.
    assert file_profile(store, "clip_%02d.wav" % f).path == truth.paths[f]
    with pytest.raises(QueryError, match="no indexed file"):
        file_profile(store, "nope.wav")


@pytest.mark.parametrize("expression", [c[0] for c in CASES])
def test_audit_sql_compiles_for_postgresql(index, expression):
    """Portability check without a server: the same Core statements render for PostgreSQL."""
    from sqlalchemy.dialects import postgresql

    from clapdex.audit.concepts import ConceptLookup
    from clapdex.audit.queries import plan_audit
    from clapdex.audit.stats import prevalence_statement

    store, _ = index
    plan = plan_audit(ConceptLookup.load(store), expression, limit=10)
    for statement in (plan.count, plan.rows, plan.unscored, prevalence_statement("weight", 5)):
        if statement is not None:
            sql = str(statement.compile(dialect=postgresql.dialect()))
            assert "WITH matched AS" in sql or "concept_stats" in sql


def test_cooccurrence_kernel_counts_across_blocks():
    """More concepts than one block of the kernel holds (the audit fixture has fewer): every
    block, and a subset's positions, count what a dense XᵀX counts."""
    import scipy.sparse as sp

    from clapdex.audit.cooccurrence_kernel import BLOCK, cooccurrence_upper

    rng = np.random.default_rng(3)
    k = 2 * BLOCK + 37
    dense = rng.random((400, k)) < 0.02
    dense[:, -1] = True  # a concept in every segment, at the end of every row
    matrix = sp.csr_matrix(dense.astype(np.float32))
    matrix.sort_indices()
    together = dense.T.astype(np.int64) @ dense.astype(np.int64)
    for ids in (np.arange(k), np.array([1, BLOCK, BLOCK + 5, k - 1])):
        position = np.full(k, -1, dtype=np.int64)
        position[ids] = np.arange(len(ids))
        upper = np.zeros((len(ids), len(ids)), dtype=np.int32)
        cooccurrence_upper(matrix.indptr.astype(np.int64), matrix.indices.astype(np.int32), position,
                           len(ids), upper)
        assert np.array_equal(upper, np.triu(together[np.ix_(ids, ids)]))
