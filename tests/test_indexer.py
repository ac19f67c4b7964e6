"""Indexer behaviour with the spectral TEST DOUBLE (fast), plus one run with real msclap code."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from clapdex.concepts.decompose import audio_mean
from clapdex.errors import IndexMismatchError, Remedy
from clapdex.sparsity import Sparsity
from clapdex.indexer import (PathNotFoundError, find_audio_files, import_embeddings,
                             index_paths, read_manifest, reindex)
from clapdex.storage.database import IndexStore
from clapdex.storage.dense import DenseIndex, agreement
from tests.audio_collection import make_collection, tone_mix, write_audio, write_vocabulary
from tests.doubles import SpectralTestEncoder


@pytest.fixture
def collection(tmp_path):
    files = make_collection(tmp_path / "audio")
    files["root"] = tmp_path / "audio"
    files["vocab"] = str(write_vocabulary(tmp_path))
    files["index"] = tmp_path / "index"
    return files


def _run(collection, encoder, **options):
    options.setdefault("vocabulary", collection["vocab"])
    return index_paths([collection["root"]], encoder, collection["index"], show_progress=False,
                       **options)


def _file_segments(store, path):
    row = store.file_by_path(str(path))
    with store.session() as session:
        from sqlalchemy import select

        from clapdex.storage.schema import SegmentRow
        return list(session.scalars(select(SegmentRow.id).where(SegmentRow.file_id == row.id)
                                    .order_by(SegmentRow.id)))


# ---- walking ---------------------------------------------------------------------------------

def test_walk_is_recursive_sorted_filtered_and_safe_with_symlink_loops(tmp_path):
    root = tmp_path / "music"
    for name in ["b/2.wav", "b/1.FLAC", "a.mp3", "c/d/e.ogg", ".hidden/x.wav", "._a.wav",
                 "notes.txt", "image.png"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    os.symlink(root, root / "b" / "loop")               # a loop back to the top
    os.symlink(root / "a.mp3", root / "c" / "link.mp3")  # the same file twice
    extra = tmp_path / "single.txt"                       # named directly: taken as is
    extra.write_bytes(b"y")
    found = find_audio_files([root, extra])
    relative = [os.path.relpath(p, tmp_path) for p in found]
    assert relative == ["music/a.mp3", "music/b/1.FLAC", "music/b/2.wav", "music/c/d/e.ogg",
                        "single.txt"]
    assert find_audio_files([root, extra]) == found  # deterministic
    with pytest.raises(PathNotFoundError, match="no such file or folder"):
        find_audio_files([tmp_path / "missing"])


# ---- a first run, a no-op re-run, bad files ----------------------------------------------------

def test_index_folder_records_bad_files_and_rerun_is_a_noop(collection):
    encoder = SpectralTestEncoder()
    summary = _run(collection, encoder)
    assert summary.completed and summary.added == 5 and summary.files_seen == 8
    assert sorted(s["path"] for s in summary.skipped) == sorted(str(p) for p in collection["bad"])
    assert all(s["error"] for s in summary.skipped)
    windows = encoder.audio_calls
    # 5 s -> 3 windows of 2 s (last aligned to the end), 3 s -> 2, 2.5 s -> 2, 4 s -> 2, 0.7 s -> 1
    assert windows == summary.segments_added == 10

    with IndexStore.open(collection["index"]) as store:
        counts = store.counts()
        assert counts["files"] == 5 and counts["errors"] == 3 and counts["segments"] == 10
        assert counts["postings"] > 0
        assert {row.path for row in store.files("error")} == {str(p) for p in collection["bad"]}
        assert agreement(store)["agree"]
        stereo = store.file_by_path(str(collection["root"] / "mix_44k_stereo.wav"))
        assert (stereo.sample_rate, stereo.channels) == (44100, 2)
        assert stereo.duration == pytest.approx(4.0)
        assert stereo.content_hash and len(stereo.content_hash) == 64

    again = _run(collection, encoder)
    assert encoder.audio_calls == windows            # nothing was encoded again
    assert again.unchanged == 5 and again.added == again.updated == 0
    assert len(again.skipped) == 3                     # bad files are tried again and reported
    with IndexStore.open(collection["index"]) as store:
        assert store.counts()["segments"] == 10


def test_embeddings_match_the_encoder_and_postings_are_non_negative(collection):
    encoder = SpectralTestEncoder()
    _run(collection, encoder)
    from clapdex.audio import load_audio, cut_windows

    path = collection["root"] / "tones" / "a200.wav"
    samples, _ = load_audio(path, encoder.sample_rate)
    windows, times = cut_windows(samples, encoder.sample_rate, encoder.window_seconds)
    with IndexStore.open(collection["index"]) as store:
        ids = _file_segments(store, path)
        stored_ids, stored = store.segment_embeddings(ids)
        np.testing.assert_allclose(stored, encoder.embed_audio(windows), atol=1e-6)
        segment_ids, weights = store.concept_matrix()
        assert weights.nnz > 0 and weights.data.min() > 0
        # the 200 Hz file is explained mostly by the "a 200 hz tone" concept
        rows = np.searchsorted(segment_ids, ids)
        names = store.concept_names()
        assert names[int(np.asarray(weights[rows].sum(axis=0)).argmax())] == "a 200 hz tone"


def test_audio_mean_is_set_once_from_the_first_windows(collection):
    encoder = SpectralTestEncoder()
    _run(collection, encoder)
    with IndexStore.open(collection["index"]) as store:
        _, embeddings = store.segment_embeddings()
        first_mean = store.settings.audio_mean
        np.testing.assert_allclose(first_mean, audio_mean(embeddings), atol=1e-6)
    write_audio(collection["root"] / "new.wav", tone_mix([2500], 6.0, 8000, 9), 8000)
    summary = _run(collection, encoder)
    assert summary.added == 1
    with IndexStore.open(collection["index"]) as store:
        np.testing.assert_array_equal(store.settings.audio_mean, first_mean)  # kept fixed


def test_progress_bar_says_when_it_waits_for_the_audio_mean(collection, capsys, monkeypatch):
    import clapdex.indexer as indexer

    monkeypatch.setattr(indexer.storing, "MEAN_WINDOWS", 4)  # the collection has 10 windows
    encoder = SpectralTestEncoder()
    index_paths([collection["root"]], encoder, collection["index"], show_progress=True,
                vocabulary=collection["vocab"])
    first = capsys.readouterr().err
    assert f"{indexer.MEAN_LABEL}:" in first
    assert first.rstrip().splitlines()[-1].lstrip("\r").split("\r")[-1].startswith("indexing: 100%")
    write_audio(collection["root"] / "new.wav", tone_mix([2500], 6.0, 8000, 9), 8000)
    index_paths([collection["root"]], encoder, collection["index"], show_progress=True)
    assert indexer.MEAN_LABEL not in capsys.readouterr().err  # μ_A is known: nothing waits


# ---- incremental updates -------------------------------------------------------------------------

def test_touch_modify_delete_prune(collection):
    encoder = SpectralTestEncoder()
    _run(collection, encoder)
    a200 = collection["root"] / "tones" / "a200.wav"
    b400 = collection["root"] / "tones" / "b400.flac"
    c700 = collection["root"] / "tones" / "deep" / "c700.ogg"
    with IndexStore.open(collection["index"]) as store:
        old_b400 = _file_segments(store, b400)

    stat = a200.stat()
    os.utime(a200, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # touch only
    write_audio(b400, tone_mix([1000], 6.0, 8000, 11), 8000, subtype="PCM_16")  # new content
    c700.unlink()
    calls = encoder.audio_calls
    summary = _run(collection, encoder)
    assert summary.touched == 1 and summary.updated == 1 and summary.removed == 0
    assert summary.missing == 1                        # c700, reported: --prune removes it
    assert encoder.audio_calls == calls + 3             # only b400 (6 s -> 3 windows) re-encoded
    with IndexStore.open(collection["index"]) as store:
        assert store.file_by_path(str(a200)).mtime_ns == a200.stat().st_mtime_ns
        new_b400 = _file_segments(store, b400)
        assert len(new_b400) == 3 and not set(new_b400) & set(old_b400)
        assert store.file_by_path(str(c700)) is not None   # still indexed without --prune
        dense = DenseIndex.open(store, save=False)
        assert not set(old_b400) & set(dense.ids().tolist())
        assert agreement(store)["agree"]

    summary = _run(collection, encoder, prune=True)
    assert summary.removed == 1 and summary.unchanged == 4 and summary.missing == 0
    assert _run(collection, encoder).missing == 0
    with IndexStore.open(collection["index"]) as store:
        assert store.file_by_path(str(c700)) is None
        assert agreement(store)["agree"]


def test_move_and_copy_are_not_re_encoded(collection):
    encoder = SpectralTestEncoder()
    _run(collection, encoder)
    a200 = collection["root"] / "tones" / "a200.wav"
    moved = collection["root"] / "moved" / "renamed.wav"
    copy = collection["root"] / "copy_of_b400.flac"
    b400 = collection["root"] / "tones" / "b400.flac"
    with IndexStore.open(collection["index"]) as store:
        a_ids = _file_segments(store, a200)
        _, a_embeddings = store.segment_embeddings(a_ids)
        b_ids = _file_segments(store, b400)
    moved.parent.mkdir()
    shutil.move(a200, moved)
    shutil.copy(b400, copy)
    calls = encoder.audio_calls
    summary = _run(collection, encoder)
    assert encoder.audio_calls == calls
    assert summary.moved == 1 and summary.copied == 1 and summary.added == 0
    with IndexStore.open(collection["index"]) as store:
        assert store.file_by_path(str(a200)) is None
        assert _file_segments(store, moved) == a_ids      # same segments, same FAISS ids
        copy_ids = _file_segments(store, copy)
        assert len(copy_ids) == len(b_ids) and not set(copy_ids) & set(b_ids)
        _, copy_emb = store.segment_embeddings(copy_ids)
        _, b_emb = store.segment_embeddings(b_ids)
        np.testing.assert_array_equal(copy_emb, b_emb)
        ids, weights = store.concept_matrix()
        rows = lambda seg: np.searchsorted(ids, seg)
        assert (weights[rows(copy_ids)] != weights[rows(b_ids)]).nnz == 0
        assert agreement(store)["agree"]


def test_duplicates_within_one_run_are_encoded_once(tmp_path):
    audio = tmp_path / "audio"
    write_audio(audio / "one.wav", tone_mix([400], 4.0, 8000), 8000)
    shutil.copy(audio / "one.wav", audio / "two.wav")
    encoder = SpectralTestEncoder()
    summary = index_paths([audio], encoder, tmp_path / "ix", show_progress=False,
                          vocabulary=str(write_vocabulary(tmp_path)))
    assert summary.added == 1 and summary.copied == 1 and encoder.audio_calls == 2


# ---- settings: mismatch, reindex ---------------------------------------------------------------

def test_opening_with_another_model_or_lambda_is_refused(collection):
    _run(collection, SpectralTestEncoder())
    with pytest.raises(IndexMismatchError) as error:
        _run(collection, SpectralTestEncoder(seed=1))
    message = str(error.value)
    # the library says what is wrong and names the remedy; the CLI words it as a command
    assert "was built with model" in message and "clapdex" not in message
    assert error.value.remedy == Remedy("model", str(collection["index"]))
    with pytest.raises(IndexMismatchError, match="lambda is 0.05, requested 0.3") as error:
        _run(collection, SpectralTestEncoder(), sparsity=Sparsity(lam=0.3))
    assert "clapdex" not in str(error.value) and "--" not in str(error.value)
    assert error.value.remedy == Remedy("reindex", str(collection["index"]), ("lam",))
    # --rebuild starts over with the new model
    summary = _run(collection, SpectralTestEncoder(seed=1), rebuild=True)
    assert summary.added == 5


def test_vocabulary_mismatch_names_both_vocabularies(collection, tmp_path):
    encoder = SpectralTestEncoder()
    _run(collection, encoder)  # the 10-concept "tones" vocabulary
    other = write_vocabulary(tmp_path / "v2", ["wind", "rain", "a 300 hz tone"], "weather")
    with pytest.raises(IndexMismatchError) as error:
        _run(collection, encoder, vocabulary=str(other))
    message = str(error.value)
    assert "vocabulary is 'tones' (10 concepts), requested 'weather' (3 concepts)" in message
    assert "vocabulary_hash" not in message and "clapdex" not in message
    assert error.value.remedy.action == "reindex" and error.value.remedy.settings == ("vocabulary",)
    # an edited file with the same name: same name, other concepts
    edited = write_vocabulary(tmp_path / "v3", ["wind", "rain"], "tones")
    with IndexStore.open(collection["index"]) as store:
        emb_file, manifest_file = _export(store, tmp_path)
    with pytest.raises(IndexMismatchError, match=r"vocabulary is 'tones' \(10 concepts\), "
                       r"requested 'tones' \(2 concepts\) \(same name, other concepts\)"):
        import_embeddings(collection["index"], np.load(emb_file), read_manifest(manifest_file),
                          fingerprint=encoder.fingerprint, vocabulary=str(edited),
                          show_progress=False)


def test_reindex_changes_postings_not_embeddings(collection):
    encoder = SpectralTestEncoder()
    _run(collection, encoder, sparsity=Sparsity(lam=0.01))
    with IndexStore.open(collection["index"]) as store:
        ids_before, emb_before = store.segment_embeddings()
        _, weights_before = store.concept_matrix()
    calls = encoder.audio_calls
    result = reindex(collection["index"], sparsity=Sparsity(lam=0.2), show_progress=False)
    assert encoder.audio_calls == calls and result.segments == len(ids_before)
    with IndexStore.open(collection["index"]) as store:
        ids_after, emb_after = store.segment_embeddings()
        _, weights_after = store.concept_matrix()
        assert store.settings.lam == 0.2
        assert agreement(store)["agree"]
    np.testing.assert_array_equal(ids_before, ids_after)
    np.testing.assert_array_equal(emb_before, emb_after)
    assert weights_after.nnz < weights_before.nnz      # a larger λ gives sparser explanations
    # the index now accepts λ = 0.2 and refuses the old one
    assert _run(collection, encoder, sparsity=Sparsity(lam=0.2)).unchanged == 5
    with pytest.raises(IndexMismatchError):
        _run(collection, encoder, sparsity=Sparsity(lam=0.01))

    result = reindex(collection["index"], sparsity=Sparsity(max_concepts=1), show_progress=False)
    with IndexStore.open(collection["index"]) as store:
        _, weights = store.concept_matrix()
        assert np.diff(weights.indptr).max() <= 1 and store.settings.max_concepts == 1
        assert store.settings.lam is None


def test_reindex_with_a_new_vocabulary(collection, tmp_path):
    encoder = SpectralTestEncoder()
    _run(collection, encoder)
    other = write_vocabulary(tmp_path / "v2", ["a 300 hz tone", "a 2500 hz tone", "wind"], "v2")
    with pytest.raises(Exception, match="needs the model"):
        reindex(collection["index"], vocabulary=str(other), show_progress=False)
    reindex(collection["index"], vocabulary=str(other), encoder=encoder, show_progress=False)
    with IndexStore.open(collection["index"]) as store:
        assert store.concept_names() == ["a 300 hz tone", "a 2500 hz tone", "wind"]
        assert store.settings.vocabulary_name == "v2"
        _, weights = store.concept_matrix()
        assert weights.shape[1] == 3


# ---- precomputed embeddings ---------------------------------------------------------------------

def _export(store, folder):
    """Write an index's segments as EMB.npy + FILES.csv, as a GPU cluster would."""
    from sqlalchemy import select

    from clapdex.storage.schema import FileRow, SegmentRow
    with store.session() as session:
        rows = session.execute(select(FileRow.path, SegmentRow.start, SegmentRow.end, SegmentRow.id)
                               .join(FileRow, FileRow.id == SegmentRow.file_id)
                               .order_by(SegmentRow.id)).all()
    _, embeddings = store.segment_embeddings([r[3] for r in rows])
    np.save(folder / "emb.npy", embeddings)
    lines = ["path,start,end"] + [f"{r[0]},{r[1]},{r[2]}" for r in rows]
    (folder / "files.csv").write_text("\n".join(lines) + "\n")
    return folder / "emb.npy", folder / "files.csv"


def test_import_embeddings_reproduces_an_index(collection, tmp_path):
    encoder = SpectralTestEncoder()
    _run(collection, encoder)
    with IndexStore.open(collection["index"]) as store:
        emb_file, manifest_file = _export(store, tmp_path)
        _, original = store.concept_matrix()
    calls = encoder.audio_calls
    summary = import_embeddings(tmp_path / "imported", np.load(emb_file), read_manifest(manifest_file),
                                encoder=encoder, vocabulary=collection["vocab"], show_progress=False)
    assert encoder.audio_calls == calls and summary.added == 5 and summary.segments_added == 10
    with IndexStore.open(tmp_path / "imported") as store:
        _, imported = store.concept_matrix()
        assert agreement(store)["agree"]
    assert abs(imported - original).max() < 1e-9      # same embeddings, mean and λ: same postings


def test_import_embeddings_checks(collection, tmp_path):
    encoder = SpectralTestEncoder()
    _run(collection, encoder)
    with IndexStore.open(collection["index"]) as store:
        emb_file, manifest_file = _export(store, tmp_path)
    embeddings, manifest = np.load(emb_file), read_manifest(manifest_file)
    index = collection["index"]
    with pytest.raises(Exception, match="embedding rows but"):
        import_embeddings(index, embeddings[:-1], manifest, encoder=encoder, show_progress=False)
    with pytest.raises(Exception, match="dimension"):
        import_embeddings(index, embeddings[:, :-1], manifest, encoder=encoder, show_progress=False)
    bad = embeddings.copy()
    bad[3, 0] = np.nan
    with pytest.raises(Exception, match="NaN"):
        import_embeddings(index, bad, manifest, encoder=encoder, show_progress=False)
    with pytest.raises(IndexMismatchError, match="was built with model"):
        import_embeddings(index, embeddings, manifest, fingerprint="some-other-model",
                          show_progress=False)
    # the right fingerprint alone (no model loaded) is enough for an existing index
    fingerprint = encoder.fingerprint
    summary = import_embeddings(index, embeddings, manifest, fingerprint=fingerprint,
                                show_progress=False)
    assert summary.updated == 5
    with IndexStore.open(index) as store:
        assert store.counts()["segments"] == 10 and agreement(store)["agree"]
    (tmp_path / "bad.csv").write_text("file,begin\nx,1\n")
    with pytest.raises(Exception, match="lacks column"):
        read_manifest(tmp_path / "bad.csv")


# ---- the real msclap code (random weights) -------------------------------------------------------

def test_end_to_end_with_random_weights_msclap(random_clap_encoder, tmp_path):
    encoder = random_clap_encoder
    audio = tmp_path / "audio"
    write_audio(audio / "tone.wav", tone_mix([440], 3.0, 48000), 48000)
    write_audio(audio / "sub" / "chord.flac", tone_mix([300, 500], 8.0, 22050, 1), 22050, channels=2)
    (audio / "broken.wav").write_text("not audio")
    vocab = write_vocabulary(tmp_path, ["a dog barking", "rain on a roof", "a siren wailing"], "v")
    summary = index_paths([audio], encoder, tmp_path / "ix", vocabulary=str(vocab),
                          show_progress=False)
    assert summary.added == 2 and len(summary.skipped) == 1
    assert summary.segments_added == 3                 # 3 s -> 1 (padded), 8 s -> 2 windows of 7 s
    with IndexStore.open(tmp_path / "ix") as store:
        ids, embeddings = store.segment_embeddings()
        assert embeddings.shape == (3, 1024) and np.isfinite(embeddings).all()
        assert store.settings.encoder_fingerprint == encoder.fingerprint
        assert store.settings.window_seconds == 7.0 and agreement(store)["agree"]
        from clapdex.audio import load_audio, cut_windows
        samples, _ = load_audio(audio / "tone.wav", encoder.sample_rate)
        windows, _ = cut_windows(samples, encoder.sample_rate, encoder.window_seconds)
        np.testing.assert_allclose(embeddings[0], encoder.embed_audio(windows)[0], rtol=1e-4,
                                   atol=1e-5)
    again = index_paths([audio], encoder, tmp_path / "ix", show_progress=False)
    assert again.unchanged == 2 and again.segments_added == 0


def test_bulk_storing_keeps_audit_totals_equal_to_a_rebuild(collection, tmp_path):
    """add_files applies a batch's concept totals at once; they must equal a full recount."""
    from sqlalchemy import select

    from clapdex.indexer import storing
    from clapdex.storage import concept_stats
    from clapdex.storage.schema import ConceptStatsRow, CorpusStatsRow

    old = storing.DECOMPOSE_WINDOWS
    storing.DECOMPOSE_WINDOWS = 4  # several multi-file batches
    try:
        _run(collection, SpectralTestEncoder(), hop_seconds=1.0)
    finally:
        storing.DECOMPOSE_WINDOWS = old
    shutil.copy(collection["root"] / "tones" / "a200.wav", collection["root"] / "copy.wav")
    os.remove(collection["root"] / "short.aiff")
    _run(collection, SpectralTestEncoder(), prune=True)

    def totals(store):
        with store.session() as session:
            rows = sorted((r.concept_id, r.n_files, r.n_segments, round(r.active_seconds, 6),
                           round(r.weight_sum, 6)) for r in session.scalars(select(ConceptStatsRow)))
            corpus = session.get(CorpusStatsRow, 1)
            return rows, (corpus.n_files, corpus.n_segments, round(corpus.indexed_seconds, 6))

    with IndexStore.open(collection["index"]) as store:
        incremental = totals(store)
        with store.session() as session, session.begin():
            concept_stats.rebuild(session)
        assert incremental == totals(store) and incremental[1][0] == 5


def test_an_ivf_index_is_trained_on_the_stored_segments(collection):
    summary = _run(collection, SpectralTestEncoder(), faiss_factory="IVF2,Flat")
    assert summary.completed and summary.added == 5
    with IndexStore.open(collection["index"]) as store:
        assert store.settings.faiss_factory == "IVF2,Flat" and agreement(store)["agree"]
        ids, embeddings = store.segment_embeddings()
        dense = DenseIndex.open(store, save=False)
        found = dense.search(embeddings[:1] / np.linalg.norm(embeddings[:1]), 1)[1]
        assert found[0, 0] == ids[0]
    # switching back to Flat only rebuilds the FAISS file
    assert _run(collection, SpectralTestEncoder(), faiss_factory="Flat").unchanged == 5
    with IndexStore.open(collection["index"]) as store:
        assert store.settings.faiss_factory == "Flat" and agreement(store)["agree"]


def test_windows_are_encoded_in_full_batches_across_files(collection):
    class Recording(SpectralTestEncoder):
        """TEST DOUBLE that records the size of each embed_audio call."""
        batch_size = 3
        sizes: list = []

        def embed_audio(self, windows):
            self.sizes.append(len(windows))
            return super().embed_audio(windows)

        def embed_text(self, texts):  # the double embeds tone names as audio: don't count those
            sizes = list(self.sizes)
            out = super().embed_text(texts)
            self.sizes[:] = sizes
            return out

    encoder = Recording()
    encoder.sizes = []
    summary = _run(collection, encoder)
    assert sum(encoder.sizes) == summary.segments_added == 10
    assert encoder.sizes == [3, 3, 3, 1]  # files are split across batches, only the last is short
    with IndexStore.open(collection["index"]) as store:   # and each file got its own windows
        _, stored = store.segment_embeddings()
        from clapdex.audio import cut_windows, load_audio
        expected = np.concatenate([
            SpectralTestEncoder().embed_audio(cut_windows(load_audio(p, 8000)[0], 8000, 2.0)[0])
            for p in find_audio_files([collection["root"]]) if p not in map(str, collection["bad"])])
        np.testing.assert_allclose(stored, expected, atol=1e-6)
