"""Progress while indexing counts seconds of audio, with rate, ETA and the file being read; an
interrupted run says what it kept and a re-run resumes (issue 15, item 3).

The process tests run the real `clapdex index` in a real pseudo-terminal (so the CLI draws the
line it draws for people) with the spectral TEST DOUBLE (not CLAP), slowed down so that the run
lasts a few seconds, and send it a real SIGTERM.
"""

from __future__ import annotations

import io
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile

from clapdex import indexer
from clapdex.progress import (AUDIO_SECONDS, ProgressEvent, duration_words, plain_progress,
                              progress_line, shorten_path, terminal_progress)
from clapdex.storage.database import IndexStore
from tests.audio_collection import tone_mix, write_vocabulary
from tests.doubles import SpectralTestEncoder

ROOT = Path(__file__).resolve().parent.parent
RATE = 8000  # the test double's rate: no resampling

# The CLI with the test double slowed to `delay` s per call of 2 windows (4 s of audio).
_CLI = """
import sys
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/src"]
import os
from clapdex import encoder_registry
from tests.index_worker import SlowTestEncoder
encoder_registry.register("slow-double", lambda **_: SlowTestEncoder(float(sys.argv[2])))
os.environ[encoder_registry.ENV] = "slow-double"
from clapdex.cli import main
main(sys.argv[3:], prog_name="clapdex")
"""


# ---- the line ----------------------------------------------------------------------------------

def _event(done, total=3600.0, item="/music/field recordings/2019/dawn chorus.flac", **kw):
    return ProgressEvent("indexing", done, total, AUDIO_SECONDS, item=item, **kw)


@pytest.mark.parametrize("width", [60, 80, 200])
def test_the_line_fits_the_width_and_keeps_the_file_name(width):
    line = progress_line(_event(828.0), rate=41.3, width=width)
    assert len(line) <= width
    assert line.startswith("indexing:  23%")
    assert "13:48/1:00:00" in line and "41.3×" in line
    assert "ETA 1:07" in line                    # (3600 - 828) / 41.3 s
    if width == 200:
        assert "13:48/1:00:00 audio, 41.3× real time, ETA 1:07" in line and "█" in line
        assert line.endswith("  /music/field recordings/2019/dawn chorus.flac")
    elif width == 80:                                # the words give way first, then folders
        assert "█" in line and line.endswith("  …/2019/dawn chorus.flac")
    else:                                            # then the bar, then the middle of the name
        assert "█" not in line and line.endswith("  dawn chor….flac")


def test_the_bar_moves_with_the_seconds_of_one_long_file():
    bars = [progress_line(_event(done), rate=10.0, width=120) for done in (0.0, 900.0, 1800.0, 3600.0)]
    assert [re.search(r"(\d+)%", bar)[1] for bar in bars] == ["0", "25", "50", "100"]
    assert [bar.count("█") for bar in bars] == sorted(bar.count("█") for bar in bars)
    assert bars[1].count("█") < bars[3].count("█")


def test_no_rate_yet_means_no_eta_and_no_total_means_no_percentage():
    assert "ETA" not in progress_line(_event(5.0), rate=None, width=100)
    line = progress_line(ProgressEvent("embedding", 12, None, "file"), rate=3.0, width=100)
    assert line == "embedding: 12 files, 3/s"


@pytest.mark.parametrize("path,width,expected", [
    ("a/b/c/name.flac", 20, "a/b/c/name.flac"),
    ("collections/field/2019/dawn chorus.flac", 24, "…/2019/dawn chorus.flac"),
    ("collections/field/2019/dawn chorus.flac", 18, "…/dawn chorus.flac"),
    ("collections/a-very-long-recording-name.flac", 20, "a-very-long-re….flac"),
])
def test_paths_are_shortened_where_it_hurts_least(path, width, expected):
    shortened = shorten_path(path, width)
    assert shortened == expected and len(shortened) <= width


@pytest.mark.parametrize("seconds,words", [(0, "0 s"), (45, "45 s"), (125, "2 min 5 s"),
                                           (2700, "45 min"), (15000, "4 h 10 min"), (3600, "1 h")])
def test_durations_in_words(seconds, words):
    assert duration_words(seconds) == words


def test_a_terminal_gets_one_line_redrawn_in_place_and_ended_once():
    stream = io.StringIO()
    render = terminal_progress(True, stream=stream)
    render(_event(0.0))
    render(_event(3600.0, finished=True))
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n") and text.startswith("\r")
    assert "100%" in text.split("\r")[-1]


def test_a_log_gets_a_plain_line_now_and_then_and_none_for_short_tasks():
    stream = io.StringIO()
    render = plain_progress(every=0.2, stream=stream)
    render(_event(0.0))
    render(_event(10.0, finished=True))           # a short task: nothing at all
    assert stream.getvalue() == ""
    render(_event(0.0))
    time.sleep(0.25)
    render(_event(600.0))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("indexing:  16% 10:00/1:00:00 audio")
    assert "\r" not in lines[0] and "█" not in lines[0] and "\x1b" not in lines[0]


# ---- real processes in a real terminal ----------------------------------------------------------

def _run_in_pty(args, env, stop_when=None, timeout=120.0):
    """Run `args` with stdin/stdout/stderr on a new pseudo-terminal; read its output until it exits
    or `stop_when(output)` holds (then SIGTERM it and read the rest). Returns (returncode, text)."""
    import pty

    master, slave = pty.openpty()
    process = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env,
                               close_fds=True)
    os.close(slave)
    chunks, signalled = [], False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.1)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # the other side closed: the process is gone
                    break
                if not data:
                    break
                chunks.append(data)
            if (stop_when is not None and not signalled
                    and stop_when(b"".join(chunks).decode("utf-8", "replace"))):
                process.send_signal(signal.SIGTERM)
                signalled = True
        process.wait(timeout=max(deadline - time.monotonic(), 1))
    finally:
        process.kill()
        os.close(master)
    return process.returncode, b"".join(chunks).decode("utf-8", "replace")


def _frames(text: str) -> list[str]:
    """What the terminal showed, one entry per redraw (\\r) or line."""
    return [frame.replace("\x1b[K", "").strip() for frame in re.split(r"[\r\n]+", text) if frame.strip()]


def _cli_env(columns: int = 100) -> dict:
    env = {**os.environ, "COLUMNS": str(columns), "PYTHONPATH": f"{ROOT}/src:{ROOT}"}
    env.pop("CLAPDEX_ENCODER", None)
    return env


def test_a_long_file_shows_a_moving_bar_with_rate_eta_and_its_name(tmp_path):
    folder = tmp_path / "recordings" / "field"
    folder.mkdir(parents=True)
    soundfile.write(folder / "long take.flac", tone_mix([300, 900], 600.0, RATE), RATE)  # 10 min
    vocab = write_vocabulary(tmp_path / "vocab")
    args = [sys.executable, "-c", _CLI, str(ROOT), "0.03", "index", str(folder),
            "--index", str(tmp_path / "index"), "--vocab", str(vocab)]
    code, text = _run_in_pty(args, _cli_env(), timeout=240)
    assert code == 0, text
    frames = _frames(text)
    moving = [f for f in frames if re.match(r"(indexing|estimating audio mean): +\d+% ", f)]
    percents = [int(re.search(r"(\d+)%", f)[1]) for f in moving]
    assert percents == sorted(percents) and percents[-1] == 100
    assert len({p for p in percents if 0 < p < 100}) >= 3, frames   # it moved within the one file
    middle = [f for f in moving if 0 < int(re.search(r"(\d+)%", f)[1]) < 100]
    assert any(re.search(r" \d+:\d\d/10:00 audio, [\d.]+× real time, ETA \d+:\d\d  "
                         r".*long take\.flac$", f) for f in middle), middle
    assert all(len(f) <= 99 for f in moving)      # COLUMNS=100, the last column left free
    assert any(f.startswith("index ") for f in frames) and "1 added" in text


def test_an_interrupted_first_run_keeps_the_files_waiting_for_the_audio_mean(tmp_path):
    """SIGTERM while the first windows wait for μ_A (nothing is stored yet): the run says what it
    kept, the re-run encodes none of it again, and μ_A and the embeddings are those of one run."""
    folder = tmp_path / "clips"
    folder.mkdir()
    for i in range(24):
        soundfile.write(folder / f"clip{i:02d}.wav", tone_mix([200 + 50 * i], 4.0, RATE, seed=i), RATE)
    vocab = write_vocabulary(tmp_path / "vocab")
    index_path = tmp_path / "index"
    args = [sys.executable, "-c", _CLI, str(ROOT), "0.3", "index", str(folder),
            "--index", str(index_path), "--vocab", str(vocab)]

    def some_encoded(text: str) -> bool:   # 24 s of audio encoded, all waiting for μ_A
        seen = re.findall(r"estimating audio mean: +\d+% [^0-9]*(\d+):(\d\d)/", text)
        return any(int(m) * 60 + int(s) >= 24 for m, s in seen)

    code, text = _run_in_pty(args, _cli_env(), stop_when=some_encoded, timeout=240)
    assert code == 143, text
    said = re.search(r"terminated: kept (\d+) files \(([^)]+) of audio\)"
                     r"(?:; 1 file part-done \((\d) s of 4 s\))?; "
                     r"index the same paths again to resume", text)
    assert said, text
    kept, part_windows = int(said[1]), int(said[3] or 0) // 2
    assert 6 <= kept < 24 and said[2] == duration_words(4 * kept)
    with IndexStore.open(index_path) as store:
        assert store.settings.audio_mean is None and not store.files("indexed")  # not stored...

    encoder = SpectralTestEncoder()                                          # ...but kept:
    resumed = indexer.index_paths([folder], encoder, index_path, show_progress=False)
    assert resumed.added == 24 and encoder.audio_calls == 2 * (24 - kept) - part_windows
    once = indexer.index_paths([folder], SpectralTestEncoder(), tmp_path / "one-pass",
                               vocabulary=str(vocab), show_progress=False)
    with IndexStore.open(index_path) as a, IndexStore.open(tmp_path / "one-pass") as b:
        np.testing.assert_allclose(a.settings.audio_mean, b.settings.audio_mean, atol=1e-12)
        np.testing.assert_allclose(a.segment_embeddings()[1], b.segment_embeddings()[1], atol=1e-6)
    assert once.audio_seconds == pytest.approx(resumed.audio_seconds) == pytest.approx(96.0)
    assert not list((index_path / "partial").glob("*"))                     # parts files gone
