"""Keeping C libraries' own notes off the terminal: libmpg123 (inside libsndfile) prints lines such
as `Note: Illegal Audio-MPEG-Header 0x00000000 at offset 19996.` straight to file descriptor 2 when
it probes a file that is not MP3, on every run. clapdex reports such a file in one line of its own,
so those notes are noise.

`quiet_native_stderr()` points descriptor 2 at a temporary file for the duration of the block and
then writes back whatever is not such a note. Threads decode in parallel, so the redirection is
shared (the first block in starts it, the last one out ends it), and anything Python wrote to
stderr meanwhile (a progress bar, a warning from another thread) is written back, not lost. Use it
around short calls only (opening a file): output held there is shown late.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import threading
from contextlib import contextmanager

# What libmpg123 prints on its own (its notes, warnings and "[src/libmpg123/...] error:" lines).
_NATIVE_NOTE = re.compile(rb"^(Note: |Warning: |\[src/libmpg123/)")
_PIECES = re.compile(rb"[^\r\n]*(?:\r\n|\r|\n)?")

_lock = threading.Lock()
_users = 0
_saved: int | None = None
_capture = None


@contextmanager
def quiet_native_stderr():
    _enter()
    try:
        yield
    finally:
        _leave()


def _enter() -> None:
    global _users, _saved, _capture
    with _lock:
        if _users == 0:
            try:
                sys.stderr.flush()
                capture = tempfile.TemporaryFile(prefix="clapdex-stderr-")
                saved = os.dup(2)
            except (OSError, ValueError, AttributeError):  # no usable descriptor 2: leave it
                _users += 1
                return
            os.dup2(capture.fileno(), 2)
            _saved, _capture = saved, capture
        _users += 1


def _leave() -> None:
    global _users, _saved, _capture
    with _lock:
        _users -= 1
        if _users or _saved is None:
            return
        try:
            sys.stderr.flush()
        except (OSError, ValueError, AttributeError):
            pass
        os.dup2(_saved, 2)
        os.close(_saved)
        capture, _saved, _capture = _capture, None, None
        capture.seek(0)
        held = capture.read()
        capture.close()
        kept = b"".join(piece for piece in _PIECES.findall(held)
                        if piece and not _NATIVE_NOTE.match(piece))
        while kept:
            kept = kept[os.write(2, kept):]
