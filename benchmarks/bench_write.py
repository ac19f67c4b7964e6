"""Import cost per segment by index size (issue 14): the store's bulk write path
(IndexStore.add_files, what import-embeddings and the indexer store through) appending
5,000-segment transactions of bench_scale's synthetic files to indexes of different sizes,
interleaved (small, large, small, large, ...) so that the load of a shared machine falls on
every size alike. Only add_files is timed (generating the synthetic files is not).

    /work/main/.venv/bin/python benchmarks/bench_write.py INDEX [INDEX ...] [--transactions 6]
        [--src SRC]

Each INDEX is copied to a scratch folder first (the copies are deleted afterwards), so the cached
benchmark indexes are not changed. --src runs the code in SRC instead (e.g. a checkout of the code
before a change, for a baseline in the same run). The first size is the reference: the ratio of
every other size's median µs per segment to it is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

WORKER = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
import bench_scale as b
from clapdex.storage.database import IndexStore
from sqlalchemy import func, select
from clapdex.storage.schema import SegmentRow
roots, n = sys.argv[3].split(","), int(sys.argv[2])
vocabulary = b._vocabulary(0)
from pathlib import Path
stores, first = [], []
for root in roots:
    b._catch_up_schema(Path(root))  # a cached index from before a column was added this round
    store = IndexStore.open(root, write=True)
    with store.session() as session:
        have = session.scalar(select(func.count()).select_from(SegmentRow))
        top = session.scalar(select(func.max(SegmentRow.id))) or 0
    stores.append(store); first.append((have, 10_000_000 + top // b.PER_FILE))
times = [[] for _ in roots]
for t in range(n):
    for i, store in enumerate(stores):
        number = first[i][1] + t * b.PER_TRANSACTION
        files = [b.synthetic_file(vocabulary, number + j) for j in range(b.PER_TRANSACTION)]
        began = time.perf_counter()
        store.add_files(files)
        times[i].append(time.perf_counter() - began)
print(json.dumps([{"segments": have, "seconds": s} for (have, _), s in zip(first, times)]))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("indexes", nargs="+", type=Path)
    parser.add_argument("--transactions", type=int, default=6)
    parser.add_argument("--src", type=Path, default=REPO / "src")
    parser.add_argument("--scratch", type=Path, default=None)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-write-", dir=args.scratch))
    try:
        copies = []
        for i, index in enumerate(args.indexes):
            copy = scratch / f"{i}-{index.name}"
            copy.mkdir()
            for name in ("clapdex.sqlite", "clapdex.sqlite-wal"):
                if (index / name).exists():
                    shutil.copy(index / name, copy / name)
            copies.append(str(copy))
        env = dict(os.environ, PYTHONPATH=str(args.src))
        done = subprocess.run([sys.executable, "-c", WORKER, str(REPO / "benchmarks"),
                               str(args.transactions), ",".join(copies)],
                              capture_output=True, text=True, env=env)
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        results = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    import numpy as np
    per = 5000  # segments per transaction (bench_scale PER_FILE * PER_TRANSACTION)
    reference = None
    print(f"code: {args.src}")
    for index, result in zip(args.indexes, results):
        us = np.array(result["seconds"]) * 1e6 / per
        median = float(np.median(us))
        reference = reference or median
        print(f"{index.name}: {result['segments']:,} segments before; µs per segment stored: "
              f"median {median:.0f} (each: {', '.join(f'{u:.0f}' for u in us)}); "
              f"ratio to the first {median / reference:.2f}×", flush=True)


if __name__ == "__main__":
    main()
