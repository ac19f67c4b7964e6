"""An index and a running server for the web-app tests (tests/test_serve_*.py).

The index is tests/search_fixtures' tone corpus, embedded with the TEST DOUBLE encoder (not CLAP),
plus: a file whose name is markup (it must render as text), an AIFF file (a format browsers do not
play: its segments are decoded to WAV), a file that vanished from disk after indexing, and a file
that could not be indexed (recorded with its error).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tests.search_fixtures import CORPUS, SearchFixture, build_index

HOSTILE = '<img src=x onerror="window.__xss=1">.wav'
AIFF = "tone_750.aiff"
VANISHED = "vanished_1000.wav"
FAILED = "broken.wav"
CORPUS_SERVE = {**CORPUS, HOSTILE: [((1500,), 2.0)], AIFF: [((750,), 4.0)],
                VANISHED: [((1000, 2000), 2.0)]}


@dataclass
class ServeFixture(SearchFixture):
    failed_path: str = ""


def build_serve_index(tmp_path: Path) -> ServeFixture:
    from clapdex.storage.database import FileMeta, IndexStore

    base = build_index(tmp_path, corpus=CORPUS_SERVE)
    fixture = ServeFixture(root=base.root, audio_dir=base.audio_dir, encoder=base.encoder,
                           paths=base.paths)
    Path(fixture.paths[VANISHED]).unlink()
    broken = fixture.audio_dir / FAILED
    broken.write_bytes(b"not audio at all")
    fixture.failed_path = str(broken.resolve())
    with IndexStore.open(fixture.root, write=True) as store:
        store.record_error(FileMeta(path=fixture.failed_path, size=16, mtime_ns=1),
                           "not a readable audio file (Format not recognised)")
    return fixture


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running_server(app, port: int | None = None):
    """Real uvicorn serving `app` on a free loopback port, in a thread; yields the base URL."""
    import uvicorn

    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
