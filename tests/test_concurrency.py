"""Concurrent writers (issues 13 and 18.2), with real processes, on SQLite and PostgreSQL.

Each case runs a slow indexing subprocess (tests/index_worker.py, the spectral TEST DOUBLE) while
this process (or a second worker) changes the same index. Whatever the interleaving, the index
must end consistent: every segment's stored postings are what the stored settings (μ_A, λ,
vocabulary) give for its stored embedding, every segment is of the current settings version,
the FAISS file holds the right vectors under the right ids, and `doctor` is clean.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from clapdex.concepts.decompose import decompose
from clapdex.indexer import index_paths, open_index, reindex
from clapdex.sparsity import Sparsity
from clapdex.storage.database import IndexStore
from clapdex.storage.dense import DenseIndex
from clapdex.storage.health import doctor
from tests.audio_collection import TONE_CONCEPTS, tone_mix, write_audio, write_vocabulary
from tests.doubles import SpectralTestEncoder

WORKER = Path(__file__).resolve().parent / "index_worker.py"
RATE = 8000


def _folder(root: Path, n: int, first_freq: int) -> Path:
    for i in range(n):
        write_audio(root / f"{i:03d}.wav", tone_mix([first_freq + 31 * i], 2.0, RATE, i), RATE)
    return root


def _worker(index, folder, vocab, delay=0.0):
    return subprocess.Popen([sys.executable, str(WORKER), str(index), str(folder), str(vocab),
                             str(delay)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _files(index) -> int:
    with IndexStore.open(index) as store:
        return store.counts()["files"]


def _wait_for_files(index, worker, at_least: int) -> None:
    deadline = time.monotonic() + 120
    while _files(index) < at_least:
        assert worker.poll() is None, worker.communicate()[1]
        assert time.monotonic() < deadline, "the worker stored nothing"
        time.sleep(0.05)


def _empty_index(tmp_path, vocab) -> Path:
    root = tmp_path / "index"
    open_index(root, SpectralTestEncoder(), vocabulary=str(vocab)).close()  # no μ_A yet
    return root


def _assert_consistent(index) -> None:
    """Stored postings = decomposition of the stored embeddings under the stored settings; FAISS
    holds the stored vectors; doctor is clean."""
    with IndexStore.open(index) as store:
        settings = store.settings
        ids, embeddings = store.segment_embeddings()
        matrix_ids, weights = store.concept_matrix()
        assert np.array_equal(ids, matrix_ids) and len(ids) > 0
        expected = decompose(embeddings, store.dictionary(), settings.audio_mean,
                             lam=settings.lam, max_concepts=settings.max_concepts)
        np.testing.assert_allclose(weights.toarray(), expected.weights.toarray(), atol=1e-5)
        assert len(store.stale_segments()) == 0
        dense = DenseIndex.load(store.faiss_path, settings.dimension, settings.faiss_factory)
        assert np.array_equal(dense.ids(), ids)
        unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
        held = np.stack([dense.reconstruct(int(i)) for i in ids])
        np.testing.assert_allclose(held, unit, atol=1e-5)
    report = doctor(index)
    assert report.ok, report.lines
    assert report.faiss["vectors_checked"] == len(ids)


def test_two_first_writers_share_one_audio_mean(tmp_path, backend):
    vocab = write_vocabulary(tmp_path)
    index = _empty_index(tmp_path, vocab)
    one = _worker(index, _folder(tmp_path / "low", 8, 200), vocab, delay=0.05)
    two = _worker(index, _folder(tmp_path / "high", 8, 1400), vocab, delay=0.05)
    for worker in (one, two):
        out, err = worker.communicate(timeout=180)
        assert worker.returncode == 0, err
        assert json.loads(out)["added"] == 8
    assert _files(index) == 16
    _assert_consistent(index)


def test_writer_during_reindex_lambda(tmp_path, backend):
    vocab = write_vocabulary(tmp_path)
    folder = _folder(tmp_path / "audio", 24, 200)
    index = _empty_index(tmp_path, vocab)
    worker = _worker(index, folder, vocab, delay=0.25)
    _wait_for_files(index, worker, 3)
    reindex(index, sparsity=Sparsity(lam=0.1), show_progress=False)
    assert _files(index) < 24, "the reindex did not land during the run"
    out, err = worker.communicate(timeout=180)
    assert worker.returncode == 0, err
    with IndexStore.open(index) as store:
        assert store.settings.lam == 0.1 and store.counts()["files"] == 24
    _assert_consistent(index)


def test_reindex_vocab_during_an_index_run(tmp_path, backend):
    vocab = write_vocabulary(tmp_path)
    other = write_vocabulary(tmp_path, concepts=list(reversed(TONE_CONCEPTS))[:7] +
                             ["a 300 hz tone", "a 900 hz tone"], name="other")
    folder = _folder(tmp_path / "audio", 24, 200)
    index = _empty_index(tmp_path, vocab)
    worker = _worker(index, folder, vocab, delay=0.25)
    _wait_for_files(index, worker, 3)
    reindex(index, vocabulary=str(other), encoder=SpectralTestEncoder(), show_progress=False)
    assert _files(index) < 24, "the reindex did not land during the run"
    out, err = worker.communicate(timeout=180)
    # The worker was started with the old vocabulary: it stores under the index's new one.
    assert worker.returncode == 0, err
    with IndexStore.open(index) as store:
        assert store.settings.vocabulary_name == "other"
        assert store.concept_names()[-1] == "a 900 hz tone"
        assert store.counts()["files"] == 24
    _assert_consistent(index)


def test_rebuild_during_another_run(tmp_path, backend):
    vocab = write_vocabulary(tmp_path)
    # Many files, so the rebuild commits while the worker still has files to go even on a loaded
    # machine (with 24 it sometimes finished first); it stops at its next batch, so they cost nothing.
    folder = _folder(tmp_path / "audio", 96, 200)
    index = _empty_index(tmp_path, vocab)
    worker = _worker(index, folder, vocab, delay=0.25)
    _wait_for_files(index, worker, 3)
    summary = index_paths([_folder(tmp_path / "new", 3, 900)], SpectralTestEncoder(), index,
                          vocabulary=str(vocab), rebuild=True, show_progress=False)
    assert summary.added == 3
    out, err = worker.communicate(timeout=180)
    # The first run finds the index rebuilt at its next batch and stops, saying so.
    assert worker.returncode != 0 and "rebuilt by another process" in err, (out, err)
    with IndexStore.open(index) as store:
        paths = [row.path for row in store.files()]
    assert len(paths) == 3 and all("/new/" in path for path in paths)
    _assert_consistent(index)
