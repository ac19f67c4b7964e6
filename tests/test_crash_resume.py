"""Crash safety: SIGKILL a real indexing subprocess midway, re-run it, and check the result."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from clapdex.storage.database import IndexStore
from clapdex.storage.dense import agreement
from clapdex.storage.schema import FileRow, PostingRow, SegmentRow
from tests.audio_collection import tone_mix, write_audio, write_vocabulary

WORKER = Path(__file__).resolve().parent / "index_worker.py"
N_FIRST, N_MORE = 6, 34


def _worker(index, folder, vocab, delay=0.0):
    return subprocess.Popen([sys.executable, str(WORKER), str(index), str(folder), str(vocab),
                             str(delay)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _indexed_files(index) -> int:
    if not IndexStore.exists(index):
        return 0
    with IndexStore.open(index) as store:
        return store.counts()["files"]


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_midway_then_resume(tmp_path):
    audio, index = tmp_path / "audio", tmp_path / "index"
    vocab = write_vocabulary(tmp_path)
    # Files of 1 to 3 windows (2 s each), so a half-stored file would show as a wrong count.
    windows_of = {}
    for i in range(N_FIRST + N_MORE):
        seconds = 2.0 * (1 + i % 3)
        path = audio / f"{i:03d}.wav"
        windows_of[str(path)] = 1 + i % 3
        if i < N_FIRST:
            write_audio(path, tone_mix([200 + 37 * i], seconds, 8000, i), 8000)
    first = _worker(index, audio, vocab)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert json.loads(out)["added"] == N_FIRST      # a complete run: FAISS file saved

    for i in range(N_FIRST, N_FIRST + N_MORE):
        write_audio(audio / f"{i:03d}.wav", tone_mix([200 + 37 * i], 2.0 * (1 + i % 3), 8000, i),
                    8000)
    victim = _worker(index, audio, vocab, delay=0.15)
    deadline = time.monotonic() + 120
    while _indexed_files(index) < N_FIRST + 5:   # let it store a few batches...
        assert victim.poll() is None, victim.stderr.read()
        assert time.monotonic() < deadline, "the worker made no progress"
        time.sleep(0.05)
    os.kill(victim.pid, signal.SIGKILL)           # ...then kill it without warning
    victim.wait(timeout=30)
    assert victim.returncode == -signal.SIGKILL

    stored = _indexed_files(index)
    assert N_FIRST < stored < N_FIRST + N_MORE, "the kill did not land midway"
    with IndexStore.open(index) as store:
        _check_whole_files(store, windows_of)     # only whole files are visible after the kill
        assert not agreement(store)["agree"]      # the FAISS file lags behind: it is derived

    resumed = _worker(index, audio, vocab)
    out, err = resumed.communicate(timeout=120)
    assert resumed.returncode == 0, err
    summary = json.loads(out)
    assert summary["unchanged"] == stored            # finished work is not redone
    assert summary["added"] == N_FIRST + N_MORE - stored
    with IndexStore.open(index) as store:
        counts = store.counts()
        assert counts["files"] == N_FIRST + N_MORE and counts["errors"] == 0
        assert counts["segments"] == sum(windows_of.values())
        _check_whole_files(store, windows_of)
        assert agreement(store)["agree"]
        with store.session() as session:   # no duplicate segments (same file, same start)
            duplicates = session.execute(
                select(SegmentRow.file_id, SegmentRow.start, func.count())
                .group_by(SegmentRow.file_id, SegmentRow.start).having(func.count() > 1)).all()
        assert duplicates == []


def _check_whole_files(store, windows_of):
    with store.session() as session:
        per_file = dict(session.execute(
            select(FileRow.path, func.count(SegmentRow.id))
            .join(SegmentRow, SegmentRow.file_id == FileRow.id, isouter=True)
            .group_by(FileRow.path)).all())
        without_postings = session.scalar(
            select(func.count()).select_from(SegmentRow).where(
                SegmentRow.id.not_in(select(PostingRow.segment_id))))
    assert per_file and all(per_file[p] == windows_of[p] for p in per_file), per_file
    assert without_postings == 0
    assert store.orphans() == {k: 0 for k in store.orphans()}
    assert store.settings.audio_mean is not None and np.isfinite(store.settings.audio_mean).all()
