"""libmpg123's own notes (printed by the C library on file descriptor 2) stay off the terminal,
while clapdex's one-line reason and anything else written to stderr meanwhile still shows. Real
processes: the notes bypass Python's sys.stderr, so only the process's real stderr shows them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.audio_collection import write_vocabulary

ROOT = Path(__file__).resolve().parents[1]
PREAMBLE = "import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/src']\n"


def _python(code: str, *args, env=None, text=True) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", PREAMBLE + code, str(ROOT), *map(str, args)],
                          capture_output=True, text=text, timeout=300, env=env)


def test_random_bytes_named_mp3_print_no_library_notes(tmp_path):
    junk = tmp_path / "noise.mp3"
    junk.write_bytes(np.random.default_rng(0).bytes(20000))
    # Without the guard, libsndfile's MP3 probe prints libmpg123's notes (the case being fixed).
    bare = _python("import soundfile\ntry:\n    soundfile.info(sys.argv[2])\nexcept Exception:\n"
                   "    pass", junk)
    assert "Illegal Audio-MPEG-Header" in bare.stderr
    guarded = _python("from clapdex import audio\nfrom clapdex.errors import AudioError\n"
                      "try:\n    audio.probe(sys.argv[2])\nexcept AudioError as e:\n"
                      "    print(e.reason)", junk)
    assert guarded.returncode == 0, guarded.stderr
    assert guarded.stderr == ""
    assert "not a readable audio file" in guarded.stdout


def test_index_runs_on_a_broken_mp3_without_library_notes(tmp_path):
    folder = tmp_path / "audio"
    folder.mkdir()
    (folder / "noise.mp3").write_bytes(np.random.default_rng(1).bytes(20000))
    env = {**os.environ, "CLAPDEX_ENCODER": "tests.doubles:SpectralTestEncoder"}  # the seam
    args = ["index", folder, "--index", tmp_path / "index", "--vocab", write_vocabulary(tmp_path)]
    for _ in range(2):  # the second run meets the file again
        done = _python("from clapdex.cli import main; main(sys.argv[2:])", *args, env=env)
        assert done.returncode == 0, done.stderr
        assert "Note:" not in done.stderr and "MPEG" not in done.stderr
        assert "noise.mp3" in done.stdout + done.stderr  # our own one-line reason is kept


def test_other_stderr_output_during_the_guard_is_written_back(tmp_path):
    code = ("import os, threading\n"
            "from clapdex.native_stderr import quiet_native_stderr\n"
            "def noisy():\n"
            "    with quiet_native_stderr():\n"
            "        os.write(2, b'Note: Trying to resync...\\n')\n"
            "with quiet_native_stderr():\n"
            "    os.write(2, b'Note: Illegal Audio-MPEG-Header 0x00000000 at offset 0.\\n')\n"
            "    sys.stderr.write('ours\\n'); sys.stderr.flush()\n"
            "    thread = threading.Thread(target=noisy); thread.start(); thread.join()\n"
            "    os.write(2, b'\\rprogress 1/2\\rWarning: Encountered a second ID3v2 tag\\n')\n"
            "    os.write(2, b'[src/libmpg123/parse.c:1234] error: bad\\n')\n"
            "sys.stderr.write('after\\n')\n")
    done = _python(code, text=False)
    assert done.returncode == 0, done.stderr
    assert done.stderr == b"ours\n\rprogress 1/2\rafter\n"
