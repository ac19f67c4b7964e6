"""The derived, memory-mapped search files (storage/derived.py): they equal what the database says,
follow its generation (extended on additions, rebuilt after a removal, a reindex or a vocabulary
change), and a corrupt or foreign file is rebuilt, never trusted. Uses the tone corpus (TEST DOUBLE
encoder, tests/doubles.py) and synthetic indexes; no timing assertions."""

from __future__ import annotations

import json
import os
import shutil
import threading

import numpy as np
import pytest

from clapdex.api import open_index
from clapdex.concepts.decompose import decompose
from clapdex.sparsity import Sparsity
from clapdex.storage.database import FileMeta, IndexStore
from clapdex.storage.derived import FOLDER, MANIFEST, open_state
from tests.search_fixtures import LAMBDA, build_index, render


def manifest(root):
    return json.loads((root / FOLDER / MANIFEST).read_text())


def assert_matches_database(store, state):
    """Every derived array equals what the database holds."""
    ids, weights = store.concept_matrix()
    assert np.array_equal(state.array("segment_ids"), ids)
    got = state.array
    indptr, indices, data = got("csr_indptr"), got("csr_indices"), got("csr_data")
    assert np.array_equal(indptr, weights.indptr)
    assert np.array_equal(indices, weights.indices)
    assert np.allclose(data, weights.data, rtol=0, atol=0)
    csc = weights.tocsc()
    csc.sort_indices()
    assert np.array_equal(got("csc_indptr"), csc.indptr)
    assert np.array_equal(got("csc_indices"), csc.indices)
    assert np.array_equal(got("csc_data"), csc.data)
    _, embeddings = store.segment_embeddings()
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    assert np.allclose(got("embeddings"), unit, atol=1e-7)
    files = {f.id: f.path for f in store.files("indexed")}
    table = state.json("files")
    assert dict(zip(table["ids"], table["paths"])) == files
    with store.session() as session:
        from sqlalchemy import select
        from clapdex.storage.schema import SegmentRow
        rows = session.execute(select(SegmentRow.id, SegmentRow.file_id, SegmentRow.start,
                                      SegmentRow.fidelity, SegmentRow.recon_norm,
                                      SegmentRow.shift_norm).order_by(SegmentRow.id)).all()
    file_ids = np.asarray(table["ids"])
    assert [file_ids[i] for i in got("file_index")] == [r[1] for r in rows]
    assert np.array_equal(got("starts"), [r[2] for r in rows])
    assert np.array_equal(got("fidelity"), [r[3] for r in rows])
    assert np.allclose(got("row_scale"), [1 / (r[4] * r[5]) for r in rows], rtol=1e-15)
    assert state.generation == store.generation()


@pytest.fixture()
def tones(tmp_path):
    return build_index(tmp_path)


def add_tone(fixture, name, freq, seconds=3.0):
    """Index one more tone file straight through the store (real decomposition)."""
    encoder = fixture.encoder
    path = fixture.audio_dir / name
    import soundfile
    from clapdex.audio import cut_windows

    samples = render([((freq,), seconds)], encoder.sample_rate)
    soundfile.write(path, samples, encoder.sample_rate, subtype="FLOAT")
    batch, times = cut_windows(samples, encoder.sample_rate, encoder.window_seconds)
    emb = encoder.embed_audio(batch)
    with IndexStore.open(fixture.root) as store:
        result = decompose(emb, store.dictionary(), store.settings.audio_mean, lam=LAMBDA)
        store.add_file(FileMeta(path=str(path.resolve()), size=1, mtime_ns=1,
                                duration=times[-1].end, sample_rate=encoder.sample_rate,
                                channels=1),
                       np.array([t.start for t in times]), np.array([t.end for t in times]),
                       emb, result)
    return str(path.resolve())


def test_files_equal_the_database_and_follow_additions_by_extending(tones):
    with IndexStore.open(tones.root) as store:
        state = open_state(store)
        assert_matches_database(store, state)
        tag = manifest(tones.root)["tag"]
        assert open_state(store, state) is state  # nothing changed: the same state, no rebuild
    add_tone(tones, "late.wav", 750)
    with IndexStore.open(tones.root) as store:
        state2 = open_state(store, state)
        assert state2 is not state and state2.n_segments > state.n_segments
        assert_matches_database(store, state2)
        assert manifest(tones.root)["tag"] == tag  # extended (appended), not rebuilt
        # the old version stays readable (mapped) while the new one is in use
        assert len(state.array("segment_ids")) == state.n_segments


def mapped_kb(path) -> int:
    """Resident KB of this process's mappings of `path` (/proc/self/smaps)."""
    total, current = 0, None
    with open("/proc/self/smaps") as handle:
        for line in handle:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5:
                current = parts[5] if len(parts) > 5 else None
            elif parts[0] == "Rss:" and current == str(path):
                total += int(parts[1])
    return total


def test_rows_read_with_pread_equal_the_mapped_rows(tones):
    """DerivedState.rows (pread) returns exactly array[rows] in any order, with runs, repeats or
    nothing selected, without paging the file into this process; a row out of range is an
    IndexError; an old version stays readable after an extension appended to its file."""
    with IndexStore.open(tones.root) as store:
        state = open_state(store)
        embeddings = np.array(state.array("embeddings"))
        n = len(embeddings)
        rng = np.random.default_rng(0)
        selections = [np.arange(n), np.arange(n)[::-1], rng.permutation(n)[: n // 2],
                      np.array([0, 1, 2, 5, 6, n - 1, n - 1, 3]), np.zeros(0, np.int64)]
        for rows in selections:
            got = state.rows("embeddings", rows)
            assert got.dtype == embeddings.dtype and got.shape == (len(rows),) + embeddings.shape[1:]
            assert np.array_equal(got, embeddings[rows])
        for bad in ([n], [-1]):
            with pytest.raises(IndexError):
                state.rows("embeddings", bad)
        fresh = open_state(store)  # a new state: its map has not been touched
        path = fresh.folder / fresh.manifest["arrays"]["embeddings"]["file"]
        if os.path.exists("/proc/self/smaps"):
            before = mapped_kb(path)  # (the first state's map holds what np.array read)
            fresh.rows("embeddings", np.arange(n))
            assert mapped_kb(path) == before
            np.array(fresh.array("embeddings"))  # the check can fail: reading the map counts
            assert mapped_kb(path) > before
        engine = open_index(tones.root)._searcher.engine
        q = embeddings[0].astype(np.float64)
        rows = rng.permutation(n)[:7]
        mapped = np.empty(len(rows))  # the read through the map it replaced
        mapped[np.argsort(rows)] = embeddings[np.sort(rows)] @ q.astype(np.float32)
        assert np.array_equal(engine.dense_scores(q, rows), mapped)
    add_tone(tones, "later.wav", 990)
    with IndexStore.open(tones.root) as store:
        newer = open_state(store, state)
        assert newer.n_segments > n
        assert np.array_equal(state.rows("embeddings", np.arange(n)), embeddings)
        assert np.array_equal(newer.rows("embeddings", np.arange(newer.n_segments)),
                              newer.array("embeddings"))


def test_concept_products_read_the_mapped_weights_without_copying(tones):
    """W·s runs block by block over the mapped CSR files: a block shares their memory (scipy
    copies a slice of a plain array much smaller than its base, which cost a copy of all of W
    per concept-mode query)."""
    with open_index(tones.root) as index:
        engine = index._searcher.engine
        row = int(np.argmax(np.diff(engine.state.array("csr_indptr"))))  # one row of many
        block = engine._block(row, row + 1)
        assert block.nnz and block.nnz * 4 < len(engine.state.array("csr_data"))
        assert np.shares_memory(block.data, engine.state.array("csr_data"))
        assert np.shares_memory(block.indices, engine.state.array("csr_indices"))
        assert np.array_equal(block.toarray(), engine.weights.toarray()[row:row + 1])


def test_removal_reindex_and_vocabulary_change_rebuild(tones, tmp_path):
    from clapdex.indexer.reindexing import reindex
    from tests.doubles import SpectralTestEncoder

    with IndexStore.open(tones.root) as store:
        state = open_state(store)
        tag = manifest(tones.root)["tag"]
        store.remove_file(tones.paths["tone_1000.wav"])
        state = open_state(store, state)
        assert_matches_database(store, state)
        assert manifest(tones.root)["tag"] != tag
        assert tones.paths["tone_1000.wav"] not in state.json("files")["paths"]
    tag = manifest(tones.root)["tag"]
    reindex(tones.root, sparsity=Sparsity(lam=2 * LAMBDA), show_progress=False)
    with IndexStore.open(tones.root) as store:
        state = open_state(store, state)
        assert_matches_database(store, state)
        assert manifest(tones.root)["tag"] != tag
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("a 500 hz tone\na 2000 hz tone\nspeech\n")
    reindex(tones.root, vocabulary=str(vocab), encoder=SpectralTestEncoder(), show_progress=False)
    with IndexStore.open(tones.root) as store:
        state = open_state(store, state)
        assert_matches_database(store, state)
        assert state.json("concepts")["names"] == ["a 500 hz tone", "a 2000 hz tone", "speech"]


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage-manifest", "foreign"])
def test_corrupt_or_foreign_files_are_rebuilt(tones, tmp_path, damage):
    with IndexStore.open(tones.root) as store:
        state = open_state(store)
        expected = [r.segment_id for r in open_index(tones.root).search(concepts=["speech"])]
    state.close()
    folder = tones.root / FOLDER
    entry = manifest(tones.root)["arrays"]["csr_data"]
    target = folder / entry["file"]
    if damage == "flip":
        raw = bytearray(target.read_bytes())
        raw[3] ^= 0xFF
        target.write_bytes(bytes(raw))
    elif damage == "truncate":
        os.truncate(target, target.stat().st_size - 8)
    elif damage == "garbage-manifest":
        (folder / MANIFEST).write_text("{not json")
    else:  # the search files of another index with the same generation
        other = build_index(tmp_path / "other", corpus={"x.wav": [((250,), 2.0)]})
        with IndexStore.open(other.root) as store:
            open_state(store)
        shutil.rmtree(folder)
        shutil.copytree(other.root / FOLDER, folder)
        # make its generation equal ours, so that only the identity can tell
        with IndexStore.open(tones.root) as store:
            generation = store.generation()
        data = json.loads((folder / MANIFEST).read_text())
        data["generation"] = generation
        (folder / MANIFEST).write_text(json.dumps(data))
    with IndexStore.open(tones.root) as store:
        rebuilt = open_state(store)
        assert_matches_database(store, rebuilt)
    with open_index(tones.root) as index:
        assert [r.segment_id for r in index.search(concepts=["speech"])] == expected


def test_a_long_lived_index_follows_new_generations(tones):
    with open_index(tones.root) as index:
        before = {r.path for r in index.search(concepts=["a 750 hz tone"], k=50)}
        path = add_tone(tones, "late_750.wav", 750)
        after = index.search(concepts=["a 750 hz tone"], k=50)
        assert path in {r.path for r in after} and path not in before
        hits = index.search(audio=path, k=3, include_self=True)  # stored embeddings: no encoding
        assert hits.query.audio_indexed and hits[0].path == path


def test_threads_share_one_searcher(tones):
    """Searches from several threads while a new generation arrives: every answer is whole."""
    errors = []
    with open_index(tones.root) as index:
        def work():
            try:
                for _ in range(15):
                    for hit in index.search(concepts=["a 500 hz tone"], k=5):
                        total = sum(t.contribution for t in hit.explanation.contributions)
                        assert abs(total - hit.concept) < 1e-9
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(error)
        threads = [threading.Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        add_tone(tones, "during.wav", 500)
        for t in threads:
            t.join()
    assert errors == []


def test_read_only_index_folder_uses_a_temporary_copy(tones, monkeypatch):
    with open_index(tones.root) as index:
        expected = [r.segment_id for r in index.search(concepts=["speech"])]
    shutil.rmtree(tones.root / FOLDER)
    real_access = os.access
    root = str(tones.root)

    def access(path, mode, **kwargs):  # the folder reads as not writable (tests may run as root)
        if str(path).startswith(root) and mode & os.W_OK:
            return False
        return real_access(path, mode, **kwargs)

    monkeypatch.setattr(os, "access", access)
    monkeypatch.setattr("pathlib.Path.mkdir", lambda *a, **k: (_ for _ in ()).throw(PermissionError()))
    with open_index(tones.root) as index:
        assert [r.segment_id for r in index.search(concepts=["speech"])] == expected
    assert not (tones.root / FOLDER).exists()


# ---- PostgreSQL (the same files from a server database) -------------------------------------

@pytest.fixture(scope="module")
def postgres():
    from tests.postgres import REQUIRE_ENV, PostgresServer, PostgresUnavailable

    try:
        server = PostgresServer()
    except PostgresUnavailable as error:
        if os.environ.get(REQUIRE_ENV) == "1":
            raise
        pytest.skip(f"no PostgreSQL here: {error}")
    yield server
    server.stop()


def test_postgresql_files_equal_the_database_and_follow_it(postgres, tmp_path):
    from tests.search_fixtures import build_synthetic_index

    root = tmp_path / "pg"
    build_synthetic_index(root, n_segments=300, n_concepts=20, dimension=16, per_segment=4,
                          per_file=30, database_url=postgres.new_database_url())
    with IndexStore.open(root) as store:
        state = open_state(store)
        assert_matches_database(store, state)
        path = store.files("indexed")[0].path
        store.remove_file(path)
        state = open_state(store, state)
        assert_matches_database(store, state)
        assert path not in state.json("files")["paths"]
    with open_index(root) as index:
        hits = index.search(concepts=["concept 3"], k=5)
        assert len(hits) and all("concept 3" in [c.concept for c in h.explanation.concepts]
                                 for h in hits)
