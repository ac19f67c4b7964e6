"""CLI start-up time: `import clapdex.cli` and `clapdex --help`, before vs after, in the same run.

    .venv/bin/python benchmarks/bench_startup.py [--before COMMIT] [--runs 15]

"Before" is the source tree of COMMIT (default b147e1b, the last commit before issue 16's front
door, whose cli/search.py imported the search engine for three constants), extracted with
`git archive` into a temporary folder; "after" is this checkout's src/. Each measurement is a fresh
Python process (cold interpreter; the OS file cache is warm for both, and the two alternate so
neither gets a warmer machine). Prints the median and the ratio before / after.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, extract_src

CASES = {
    "import clapdex.cli": ["-c", "import clapdex.cli"],
    "clapdex --help": ["-c", "import sys; sys.argv = ['clapdex', '--help']\n"
                             "from clapdex.cli import main\nmain()"],
}


def once(src: Path, args: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(src)}
    started = time.perf_counter()
    subprocess.run([sys.executable, *args], env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="b147e1b")
    parser.add_argument("--runs", type=int, default=15)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        trees = {"before": extract_src(options.before, Path(folder)), "after": REPO / "src"}
        for name, args in CASES.items():
            times = {"before": [], "after": []}
            for tree in trees:  # warm-up: byte-compile both trees
                once(trees[tree], args)
            for _ in range(options.runs):
                for tree in trees:
                    times[tree].append(once(trees[tree], args))
            before, after = (statistics.median(times[t]) for t in ("before", "after"))
            print(f"{name:<20} before {before * 1e3:6.0f} ms   after {after * 1e3:6.0f} ms   "
                  f"before/after {before / after:4.2f}x  (median of {options.runs})")


if __name__ == "__main__":
    main()
