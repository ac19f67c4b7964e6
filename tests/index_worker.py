"""Subprocess entry point for the SIGKILL test: indexes a folder with the spectral TEST DOUBLE.

    python tests/index_worker.py INDEX FOLDER VOCAB [DELAY]

DELAY (seconds per encoder call) slows the run so the test can kill it midway. Small batch sizes
make the indexer store often, so a kill lands between stored batches. Prints the summary as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clapdex import indexer  # noqa: E402
from clapdex.indexer import storing  # noqa: E402
from clapdex.cli.common import to_jsonable  # noqa: E402
from tests.doubles import SpectralTestEncoder  # noqa: E402


class SlowTestEncoder(SpectralTestEncoder):
    """The test double, sleeping `delay` seconds per call (TEST DOUBLE, not CLAP)."""

    def __init__(self, delay: float):
        super().__init__()
        self.delay = delay
        self.batch_size = 2

    def embed_audio(self, windows):
        time.sleep(self.delay)
        return super().embed_audio(windows)


def main() -> None:
    index, folder, vocab = sys.argv[1:4]
    delay = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    storing.MEAN_WINDOWS = 4
    storing.DECOMPOSE_WINDOWS = 3
    summary = indexer.index_paths([folder], SlowTestEncoder(delay), index, vocabulary=vocab,
                                  show_progress=False)
    print(json.dumps(to_jsonable(summary)))


if __name__ == "__main__":
    main()
