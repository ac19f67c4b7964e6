"""IndexStore's write transactions: the write lock and the database generation."""

from __future__ import annotations

import pytest

from clapdex.storage.database import IndexStore
from tests.search_fixtures import build_index


def test_every_write_moves_the_generation_on_and_a_failed_one_does_not(tmp_path):
    fixture = build_index(tmp_path)
    with IndexStore.open(fixture.root) as store:
        first = store.generation()
        assert first > 0  # one per stored file at least
        path = fixture.paths["tone_1000.wav"]
        store.update_file_stat(path, 1, 2)
        assert store.generation() == first + 1
        assert store.remove_file(path)
        assert store.generation() == first + 2
        with pytest.raises(RuntimeError):
            with store.write() as session:
                store.update_settings(session, lam=0.5)
                raise RuntimeError("rolled back")
        assert store.generation() == first + 2
        assert store.settings.lam != 0.5  # the rolled-back change is not remembered either
    with IndexStore.open(fixture.root) as reopened:
        assert reopened.generation() == first + 2
        assert reopened.settings.lam != 0.5


_HOLDER = """
import sys, time
from clapdex.storage.database import IndexStore
with IndexStore.open(sys.argv[1]) as store, store.write() as session:
    store.update_settings(session, lam=0.7)
    print("locked", flush=True)
    time.sleep(1.5)
"""


def test_a_second_writer_waits_and_sees_the_first_ones_settings(tmp_path, backend):
    """A real second process holds the write lock with λ changed but not committed; a write here
    waits for it and then reads the committed λ under the lock."""
    import subprocess
    import sys

    fixture = build_index(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(fixture.root)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read()
        with IndexStore.open(fixture.root) as store:
            assert store.settings.lam != 0.7          # a reader sees the committed state...
            with store.write():
                assert store.settings.lam == 0.7      # ...a writer waits and re-reads
        assert holder.wait(timeout=60) == 0
    finally:
        holder.kill()


def test_audio_mean_is_set_once(tmp_path, backend):
    import numpy as np

    fixture = build_index(tmp_path)
    with IndexStore.open(fixture.root) as store:
        stored = store.settings.audio_mean.copy()
        version = store.settings.settings_version
        with store.write() as session:
            assert not store.set_audio_mean(session, np.ones_like(stored))
        assert np.array_equal(store.settings.audio_mean, stored)
        assert store.settings.settings_version == version


def test_stale_segments_are_reported_and_repaired(tmp_path, backend):
    from sqlalchemy import update

    from clapdex.storage.health import doctor
    from clapdex.storage.schema import SegmentRow

    fixture = build_index(tmp_path)
    with IndexStore.open(fixture.root) as store:
        _, before = store.concept_matrix()
        with store.write() as session:   # as if decomposed under older settings
            session.execute(update(SegmentRow).where(SegmentRow.id <= 3)
                            .values(settings_version=-1))
        assert len(store.stale_segments()) == 3
    report = doctor(fixture.root)
    assert not report.ok and report.stale_segments == 3
    assert any("decomposed under other settings" in line for line in report.lines)
    repaired = doctor(fixture.root, repair=True)
    assert repaired.ok, repaired.lines
    with IndexStore.open(fixture.root) as store:
        _, after = store.concept_matrix()
        assert len(store.stale_segments()) == 0
    assert abs(after - before).max() < 1e-6  # same settings: the same weights again


def test_doctor_compares_vectors_not_only_ids(tmp_path, backend):
    """A FAISS file with the right ids but other vectors (a stale save) is a problem, repaired."""
    import numpy as np

    from clapdex.storage.dense import DenseIndex
    from clapdex.storage.health import doctor

    fixture = build_index(tmp_path)
    with IndexStore.open(fixture.root) as store:
        ids, embeddings = store.segment_embeddings()
        dense = DenseIndex.empty(store.settings.dimension)
        dense.state = store.state()
        dense.add(ids, np.roll(embeddings, 1, axis=0))  # every vector under a neighbour's id
        dense.save(store.faiss_path)
    report = doctor(fixture.root)
    differ = int((np.abs(np.roll(embeddings, 1, axis=0) - embeddings).max(axis=1) > 1e-4).sum())
    assert differ > 0 and report.faiss["vectors_checked"] == len(ids)
    assert not report.ok and report.faiss["wrong_vectors"] == differ
    assert doctor(fixture.root, repair=True).ok


def test_a_late_save_never_replaces_a_newer_one(tmp_path, backend):
    from clapdex.storage.dense import DenseIndex, read_stamp

    fixture = build_index(tmp_path)
    with IndexStore.open(fixture.root) as store:
        old = DenseIndex.rebuild_from(store)           # built at generation g
        store.remove_file(fixture.paths["tone_1000.wav"])
        new = DenseIndex.rebuild_from(store)           # at g + 1
        assert new.save(store.faiss_path)
        assert not old.save(store.faiss_path)          # the slow process's save is dropped
        assert read_stamp(store.faiss_path) == store.state()
        assert DenseIndex.open(store).ntotal == len(store.segment_ids())


def test_rebuild_keeps_ids_growing_and_where_the_data_lives(tmp_path, backend):
    import numpy as np
    import scipy.sparse as sp

    from clapdex.storage.database import FileMeta

    fixture = build_index(tmp_path)
    with IndexStore.open(fixture.root) as store:
        settings, names = store.settings, store.concept_names()
        embeddings, top = store.concept_embeddings(), int(store.segment_ids().max())
        location, build = store.location(), settings.build_id
    with IndexStore.rebuild(fixture.root, settings, names, embeddings) as store:
        assert store.counts()["files"] == 0 and store.location() == location
        assert store.settings.build_id != build
        assert not store.faiss_path.exists()
        decomposition = type("Decomposition", (), {})()
        decomposition.weights = sp.csr_matrix((1, len(names)))
        decomposition.fidelity = decomposition.recon_norm = decomposition.shift_norm = np.ones(1)
        decomposition.concept_fidelity = np.ones(1)
        _, segment_ids = store.add_file(FileMeta("/x.wav", 1, 1), np.array([0.0]),
                                        np.array([1.0]), np.ones((1, settings.dimension), "f4"),
                                        decomposition)
    assert int(segment_ids[0]) > top  # never an id of the old build
