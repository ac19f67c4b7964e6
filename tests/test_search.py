"""Search through the Python API on a small tone index built with the TEST DOUBLE encoder.

Scores are checked against brute-force numpy computations from the stored data (the design's
formulas, written out here independently of the engine).
"""

from __future__ import annotations

import shutil

import fnmatch

import numpy as np
import pytest
import scipy.sparse as sp

from clapdex.api import open_index
from clapdex.errors import IndexMismatchError, IndexNotFoundError, QueryError
from clapdex.search import LOW_FIDELITY
from clapdex.storage.database import IndexStore
from tests.doubles import SpectralTestEncoder
from tests.search_fixtures import CORPUS, build_index

ALL = 100  # more than the corpus has segments


@pytest.fixture(scope="module")
def fixture(tmp_path_factory, backend):
    return build_index(tmp_path_factory.mktemp("search"))


@pytest.fixture
def index(fixture):
    with open_index(fixture.root, encoder=SpectralTestEncoder()) as opened:
        yield opened


@pytest.fixture(scope="module")
def brute(fixture):
    """Everything needed to score by hand: unit embeddings, weights, atoms, μ_A, segment→file."""
    with IndexStore.open(fixture.root) as store:
        ids, emb = store.segment_embeddings()
        _, weights = store.concept_matrix()
        atoms = store.dictionary().atoms
        mean = store.settings.audio_mean.astype(np.float64)
        files = {f.id: f.path for f in store.files()}
        from sqlalchemy import select
        from clapdex.storage.schema import SegmentRow
        with store.session() as session:
            owner = dict(session.execute(select(SegmentRow.id, SegmentRow.file_id)).all())
    unit = emb.astype(np.float64) / np.linalg.norm(emb, axis=1, keepdims=True)
    u = weights.toarray() @ atoms
    norm = np.linalg.norm(u, axis=1, keepdims=True)
    r = np.divide(u, norm, out=np.zeros_like(u), where=norm > 0) + mean  # w = 0: r = normalize(μ_A)
    r /= np.linalg.norm(r, axis=1, keepdims=True)
    return dict(ids=ids, unit=unit, weights=weights.toarray(), r=r, atoms=atoms, mean=mean,
                path={int(s): files[owner[int(s)]] for s in ids}, names=store_names(fixture))


def store_names(fixture):
    with IndexStore.open(fixture.root) as store:
        return store.concept_names()


def text_vector(text):
    v = SpectralTestEncoder().embed_text([text])[0].astype(np.float64)
    return v / np.linalg.norm(v)


def by_segment(results):
    return {r.segment_id: r for r in results}


# ---- scores equal brute force ------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["hybrid", "dense", "concept"])
def test_scores_equal_brute_force(index, brute, mode):
    q = text_vector("a 500 hz tone")
    results = index.search(text="a 500 hz tone", mode=mode, k=ALL, segments=True)
    assert len(results) == len(brute["ids"])
    dense = brute["unit"] @ q
    concept = brute["r"] @ q
    fused = {"hybrid": 0.5 * dense + 0.5 * concept, "dense": dense, "concept": concept}[mode]
    position = {int(s): i for i, s in enumerate(brute["ids"])}
    for result in results:
        i = position[result.segment_id]
        assert result.dense == pytest.approx(dense[i], abs=1e-5)
        assert result.concept == pytest.approx(concept[i], abs=1e-9)
        assert result.score == pytest.approx(fused[i], abs=1e-5)
    got = [r.score for r in results]
    assert got == sorted(got, reverse=True)
    assert np.allclose(sorted(got, reverse=True), np.sort(fused)[::-1], atol=1e-5)


def test_files_are_ranked_by_their_best_segment(index, brute):
    q = text_vector("a 250 hz tone")
    results = index.search(text="a 250 hz tone", mode="concept", k=ALL)
    concept = brute["r"] @ q
    best = {}
    for s, score in zip(brute["ids"], concept):
        path = brute["path"][int(s)]
        best[path] = max(best.get(path, -np.inf), score)
    assert [r.path for r in results] == sorted(best, key=lambda p: -best[p])
    assert len(results) == len(CORPUS)
    top = results[0]
    assert top.path.endswith("tone_2000_then_250.wav") and (top.start, top.end) == (2.0, 4.0)


def test_alpha_weights_the_fusion(index, brute):
    q = text_vector("a 1000 hz tone")
    results = index.search(text="a 1000 hz tone", alpha=0.8, k=ALL, segments=True)
    position = {int(s): i for i, s in enumerate(brute["ids"])}
    for r in results:
        i = position[r.segment_id]
        expected = 0.8 * brute["unit"][i] @ q + 0.2 * brute["r"][i] @ q
        assert r.score == pytest.approx(expected, abs=1e-5)


# ---- explanations --------------------------------------------------------------------------------

@pytest.mark.parametrize("query", [
    dict(text="a 500 hz tone"),
    dict(text="a 500 hz tone", mode="concept"),
    dict(text="a 500 hz tone", concepts=["a 1500 hz tone:0.7", "-speech"]),
    dict(text="birdsong at dawn", mode="dense"),
    dict(concepts=["a 500 hz tone", "a 1500 hz tone:2", "-speech"]),
])
def test_contributions_and_baseline_add_up_to_the_concept_score(index, query):
    results = index.search(k=ALL, segments=True, **query)
    assert len(results) > 0
    for r in results:
        total = sum(t.contribution for t in r.explanation.contributions) + r.explanation.baseline
        assert total == pytest.approx(r.concept, abs=1e-6)


def test_explanation_lists_the_segments_own_concepts(index, brute):
    results = index.search(text="a 3000 hz tone", k=1, segments=True)
    top = results[0]
    assert top.path.endswith("tone_3000.wav")
    i = list(brute["ids"]).index(top.segment_id)
    own = {brute["names"][k]: w for k, w in enumerate(brute["weights"][i]) if w > 0}
    assert {c.concept: c.weight for c in top.explanation.concepts} == pytest.approx(own)
    weights = [c.weight for c in top.explanation.concepts]
    assert weights == sorted(weights, reverse=True)
    assert top.explanation.concepts[0].concept == "a 3000 hz tone"


def test_low_fidelity_is_flagged(index):
    results = index.search(text="a 500 hz tone", k=ALL, segments=True)
    flags = {r.path.rsplit("/", 1)[-1]: r.explanation.low_fidelity for r in results}
    assert flags["noise.wav"] is True          # broadband noise is not made of tones
    assert flags["tone_500.wav"] is False
    for r in results:
        assert r.explanation.low_fidelity == (r.explanation.concept_fidelity < LOW_FIDELITY)


# ---- audio queries ------------------------------------------------------------------------------

def test_indexed_file_queried_by_audio_leaves_itself_out_unless_asked(fixture):
    """Its stored embeddings are used (nothing encoded). By default none of its segments is a
    result; include_self=True keeps them, and it is then its own best match."""
    encoder = SpectralTestEncoder()
    with open_index(fixture.root, encoder=encoder) as index:
        for name in ("tone_500_1500.wav", "tone_2000_then_250.wav", "sub/tone_3000.wav"):
            own = fixture.paths[name]
            kept = index.similar(fixture.audio_dir / name, k=ALL, include_self=True)
            assert kept[0].path == own
            assert kept.query.audio_indexed
            left_out = index.similar(fixture.audio_dir / name, k=ALL)
            assert [r.path for r in left_out] == [r.path for r in kept if r.path != own]
            segments = index.similar(fixture.audio_dir / name, k=ALL, segments=True)
            assert segments.results and own not in {r.path for r in segments}
            with_own = index.similar(fixture.audio_dir / name, k=ALL, segments=True,
                                     include_self=True)
            assert own in {r.path for r in with_own}
    assert encoder.audio_calls == 0


def test_unindexed_audio_is_decoded_and_encoded(fixture, tmp_path):
    copy = tmp_path / "copy_of_tone_500_2500.wav"
    shutil.copy(fixture.audio_dir / "tone_500_2500.wav", copy)
    encoder = SpectralTestEncoder()
    with open_index(fixture.root, encoder=encoder) as index:
        results = index.search(audio=copy, k=2)
    assert not results.query.audio_indexed
    assert encoder.audio_calls == 2  # its two windows
    assert results[0].path == fixture.paths["tone_500_2500.wav"]
    assert results[0].dense == pytest.approx(1.0, abs=1e-5)


@pytest.fixture(scope="module")
def named(tmp_path_factory, backend):
    """A second small index for file names: two files called x.wav, one drums/kick.wav, and a
    file whose indexing failed (recorded with its error, no segments)."""
    from clapdex.storage.database import FileMeta

    corpus = {"a/x.wav": [((500,), 2.0)], "b/x.wav": [((1000,), 2.0)],
              "drums/kick.wav": [((2500,), 2.0)], "tone_250.wav": [((250,), 2.0)]}
    built = build_index(tmp_path_factory.mktemp("names"), corpus=corpus)
    broken = built.audio_dir / "broken.wav"
    broken.write_bytes(b"not audio")
    with IndexStore.open(built.root) as store:
        store.record_error(FileMeta(str(broken), size=9, mtime_ns=1), "not a readable audio file")
    return built


def test_audio_names_resolve_like_show(named, tmp_path, monkeypatch):
    """A name that is not a file here is looked up as `clapdex show` does: the end of one indexed
    path on a component boundary. The stored embeddings are used, nothing is encoded."""
    monkeypatch.chdir(tmp_path)  # none of the names exists here
    encoder = SpectralTestEncoder()
    with open_index(named.root, encoder=encoder) as index:
        for name in ("kick.wav", "drums/kick.wav", "./drums/kick.wav"):
            results = index.similar(name, k=1, include_self=True)
            assert results.query.audio_indexed
            assert results.query.audio_file == named.paths["drums/kick.wav"]
            assert results[0].path == named.paths["drums/kick.wav"]
        by_suffix = index.search(audio="a/x.wav", k=1)
        assert by_suffix.query.audio_file == named.paths["a/x.wav"]
    assert encoder.audio_calls == 0


def test_ambiguous_and_failed_names_are_one_line_errors(named, tmp_path, monkeypatch):
    from clapdex.audit.files import AmbiguousFileError, FileNotIndexedError

    monkeypatch.chdir(tmp_path)
    with open_index(named.root, encoder=SpectralTestEncoder()) as index:
        with pytest.raises(AmbiguousFileError, match="'x.wav' matches 2 files") as ambiguous:
            index.similar("x.wav")
        with pytest.raises(FileNotIndexedError, match="could not be indexed: not a readable") \
                as failed:
            index.similar(named.audio_dir / "broken.wav")
        with pytest.raises(QueryError, match="audio file not found: nothing.wav"):
            index.similar("nothing.wav")
    assert "\n" not in str(ambiguous.value) and "\n" not in str(failed.value)


def test_a_file_on_disk_is_not_taken_for_an_indexed_file_of_the_same_name(named, tmp_path,
                                                                           monkeypatch):
    """./x.wav and ./kick.wav here are not the indexed files that end in those names: they are
    decoded and encoded (the ambiguity and the suffix match apply only to names not on disk)."""
    monkeypatch.chdir(tmp_path)
    shutil.copy(named.audio_dir / "tone_250.wav", tmp_path / "kick.wav")
    shutil.copy(named.audio_dir / "tone_250.wav", tmp_path / "x.wav")
    encoder = SpectralTestEncoder()
    with open_index(named.root, encoder=encoder) as index:
        for name in ("kick.wav", "x.wav"):
            results = index.similar(name, k=1)
            assert not results.query.audio_indexed and results.query.audio_file is None
            assert results[0].path == named.paths["tone_250.wav"]  # what ./kick.wav holds
    assert encoder.audio_calls == 2


def test_audio_query_reports_shared_concepts(index, fixture):
    results = index.similar(fixture.audio_dir / "tone_500_1500.wav", k=ALL, include_self=True)
    query = {c.concept: c.weight for c in results.query.query_concepts}
    assert "a 1500 hz tone" in query and "a 500 hz tone" in query
    for r in results:
        own = {c.concept: c.weight for c in r.explanation.concepts}
        shared = r.explanation.shared
        assert {s.concept for s in shared} == set(own) & set(query)
        for s in shared:
            assert s.query_weight == query[s.concept] and s.result_weight == own[s.concept]
    assert "a 1500 hz tone" in {s.concept for s in results[0].explanation.shared}


# ---- concept queries and steering ---------------------------------------------------------------

@pytest.mark.parametrize("concept", ["a 500 hz tone", "a 2500 hz tone", "speech"])
def test_concept_only_returns_exactly_the_files_with_postings_ordered_by_weight(index, brute, concept):
    k = brute["names"].index(concept)
    best = {}
    for s, w in zip(brute["ids"], brute["weights"][:, k]):
        if w > 0:
            path = brute["path"][int(s)]
            best[path] = max(best.get(path, 0.0), w)
    results = index.search(concepts=[concept], k=ALL)
    assert [r.path for r in results] == sorted(best, key=lambda p: -best[p])
    assert [r.score for r in results] == pytest.approx([best[p] for p in sorted(best, key=lambda p: -best[p])])
    segments = index.search(concepts=[concept], k=ALL, segments=True)
    assert len(segments) == int((brute["weights"][:, k] > 0).sum())


def test_concept_only_with_weights_and_negatives(index, brute):
    a, b = brute["names"].index("a 500 hz tone"), brute["names"].index("a 1500 hz tone")
    results = index.search(concepts=["a 500 hz tone:2", "-a 1500 hz tone"], k=ALL, segments=True)
    expected = {int(s): 2 * w[a] - w[b] for s, w in zip(brute["ids"], brute["weights"]) if w[a] > 0}
    assert {r.segment_id: r.score for r in results} == pytest.approx(expected)
    assert results.mode == "concept"


def rank_of(results, path):
    return [r.path for r in results].index(path)


def test_steering_moves_a_known_file_up_and_down(index, fixture):
    mix_1500 = fixture.paths["tone_500_1500.wav"]
    mix_2500 = fixture.paths["tone_500_2500.wav"]
    plain = index.search(text="a 500 hz tone", k=ALL)
    toward = index.search(text="a 500 hz tone", concepts=["a 1500 hz tone"], k=ALL)
    away = index.search(text="a 500 hz tone", concepts=["-a 1500 hz tone"], k=ALL)
    assert rank_of(toward, mix_1500) < rank_of(toward, mix_2500)
    assert rank_of(toward, mix_1500) < rank_of(plain, mix_1500)
    assert rank_of(away, mix_1500) > rank_of(away, mix_2500)
    score = {r.path: r.score for r in plain}
    assert {r.path: r.score for r in toward}[mix_1500] > score[mix_1500]
    assert {r.path: r.score for r in away}[mix_1500] < score[mix_1500]
    assert [c.concept for c in toward.query.steering] == ["a 1500 hz tone"]


# ---- paging and filters -------------------------------------------------------------------------

def test_limit_offset_min_score_and_path_glob(index):
    everything = index.search(text="a 500 hz tone", k=ALL)
    page = index.search(text="a 500 hz tone", k=2, offset=2)
    assert [r.path for r in page] == [r.path for r in everything[2:4]]
    assert [r.rank for r in page] == [3, 4]
    floor = everything[2].score
    kept = index.search(text="a 500 hz tone", k=ALL, min_score=floor)
    assert [r.path for r in kept] == [r.path for r in everything if r.score >= floor]
    only_sub = index.search(text="a 500 hz tone", k=ALL, path="sub/*.wav")
    assert [r.path.rsplit("/", 2)[-2:] for r in only_sub] == [["sub", "tone_3000.wav"]]
    mixes = index.search(text="a 500 hz tone", k=ALL, path="*_500_*")
    assert len(mixes) == 2
    assert len(index.search(text="a 500 hz tone", mode="dense", k=ALL, path="*_500_*")) == 2


@pytest.mark.parametrize("glob, message", [
    ("[", "has a '[' with no closing ']'; write '[[]' to match a literal '['"),
    ("sub/[abc", "has a '[' with no closing ']'"),
    ("[!]", "has a '[' with no closing ']'"),
    ("*[z-a].wav", "the set '[z-a]' matches no character"),
])
def test_bad_path_globs_are_refused(index, glob, message):
    for query in (dict(text="a 500 hz tone"), dict(concepts=["a 500 hz tone"])):
        with pytest.raises(QueryError) as error:
            index.search(path=glob, **query)
        assert message in str(error.value) and "\n" not in str(error.value)


def test_a_literal_bracket_is_matched_with_a_set(tmp_path):
    built = build_index(tmp_path, corpus={"take[1].wav": [((500,), 2.0)],
                                          "take1.wav": [((500,), 2.0)]})
    with open_index(built.root, encoder=SpectralTestEncoder()) as index:
        hits = index.search(text="a 500 hz tone", path="take[[]1].wav")
        assert [r.path for r in hits] == [built.paths["take[1].wav"]]
        assert [r.path for r in index.search(text="a 500 hz tone", path="take[1].wav")] == \
            [built.paths["take1.wav"]]  # a set: [1] is the character 1


# ---- bad queries ------------------------------------------------------------------------------

@pytest.mark.parametrize("query, message", [
    (dict(text=""), "empty text query"),
    (dict(text="   "), "empty text query"),
    (dict(audio="/nonexistent/clip.wav"), "audio file not found"),
    (dict(concepts=["a 500 hz tonne"]), "closest: a 500 hz tone"),
    (dict(concepts=["speach"]), "closest: speech"),
    (dict(), "nothing to search for"),
    (dict(text="a", audio="b.wav"), "give one query"),
    (dict(concepts=["a 500 hz tone"], mode="dense"), "concept-only query"),
    (dict(concepts=["-speech"]), "at least one positive concept"),
    (dict(text="a", mode="fuzzy"), "unknown mode"),
    (dict(concepts=["speech:0"]), "non-zero"),
])
def test_bad_queries_raise_one_line_query_errors(index, query, message):
    with pytest.raises(QueryError) as error:
        index.search(**query)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_index_and_wrong_model_are_refused(fixture, tmp_path):
    with pytest.raises(IndexNotFoundError):
        open_index(tmp_path / "nowhere")
    with open_index(fixture.root, encoder=SpectralTestEncoder(seed=1)) as index:
        assert len(index.search(concepts=["speech"])) > 0  # no model needed
        with pytest.raises(IndexMismatchError, match="was built with model"):
            index.search(text="a 500 hz tone")


def test_encoder_is_only_built_when_needed(fixture):
    calls = []

    def factory():
        calls.append(1)
        return SpectralTestEncoder()

    with open_index(fixture.root, encoder=factory) as index:
        index.search(concepts=["a 500 hz tone"])
        index.similar(fixture.audio_dir / "tone_1000.wav")
        assert calls == []
        index.search(text="a 500 hz tone")
        index.search(text="a 750 hz tone")
        assert calls == [1]


def test_empty_index_gives_no_results(tmp_path):
    fixture = build_index(tmp_path, corpus={})
    with open_index(fixture.root, encoder=fixture.encoder) as index:
        assert len(index.search(text="a 500 hz tone")) == 0
        assert len(index.search(concepts=["speech"])) == 0


# ---- exact hybrid with pruning (a larger synthetic index, no model) ----------------------------

@pytest.mark.parametrize("noise, pruned", [(0.3, True), (3.0, False)])
def test_hybrid_pruning_is_exact(tmp_path, monkeypatch, noise, pruned):
    """With high fidelity the dense-score bound lets hybrid skip most dense products; with low
    fidelity it falls back to all of them. Both must equal the brute-force fused ranking."""
    from tests.search_fixtures import build_synthetic_index

    monkeypatch.setattr("clapdex.search.engine._PRUNE_FRACTION", 4)  # a small index can prune

    build_synthetic_index(tmp_path / "idx", n_segments=2400, n_concepts=60, dimension=64,
                          per_segment=8, per_file=20, noise=noise)
    rng = np.random.default_rng(3)
    with open_index(tmp_path / "idx") as index:
        engine = index._searcher.engine
        unit = engine.embeddings.astype(np.float64)
        full_calls = []
        original = engine.dense_scores
        engine.dense_scores = lambda q, rows=None: (full_calls.append(rows is None), original(q, rows))[1]
        for _ in range(5):
            q = unit[rng.integers(len(unit))] + 0.5 * rng.standard_normal(unit.shape[1]) / 8
            q /= np.linalg.norm(q)
            got = index.search(vector=q, k=7, segments=True)
            got_files = index.search(vector=q, k=7)
            u = engine.weights @ engine.atoms
            r = u / np.linalg.norm(u, axis=1, keepdims=True) + engine.audio_mean
            r /= np.linalg.norm(r, axis=1, keepdims=True)
            fused = 0.5 * unit @ q + 0.5 * r @ q
            order = np.argsort(-fused)
            assert [x.segment_id for x in got] == list(engine.segment_ids[order[:7]])
            assert [x.score for x in got] == pytest.approx(fused[order[:7]], abs=1e-6)
            best_files, seen = [], set()
            for i in order:
                if engine.file_index[i] not in seen:
                    seen.add(engine.file_index[i])
                    best_files.append(engine.segment_ids[i])
            assert [x.segment_id for x in got_files] == best_files[:7]
        assert (not any(full_calls)) == pruned

        # A path filter keeps rows that fail it out of the result on both paths.
        glob = "*file_00001?.wav"
        allowed = np.array([fnmatch.fnmatchcase(engine.file_paths[f], glob)
                            for f in engine.file_index])
        for _ in range(3):
            q = unit[rng.integers(len(unit))]
            fused = np.where(allowed, 0.5 * unit @ q + 0.5 * r @ q, -np.inf)
            order = np.argsort(-fused)
            got = index.search(vector=q, k=7, segments=True, path=glob)
            assert [x.segment_id for x in got] == list(engine.segment_ids[order[:7]])
