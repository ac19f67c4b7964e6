"""What named roots cost (storage/roots.py): file-path reads and look-ups through schema.FilePath
with a root against the same index without one, in the same run; and `roots set` on files stored
by absolute path (the one-off conversion) against moving the root afterwards (one setting).

    .venv/bin/python benchmarks/bench_roots.py [--files 20000] [--runs 5]

Synthetic file rows (no segments) in a temporary SQLite index; CPU time of this process, medians
of --runs. Not a test.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from clapdex.storage.database import IndexSettings, IndexStore  # noqa: E402
from clapdex.storage.schema import FileRow  # noqa: E402


def make_index(folder: Path, library: Path, n: int) -> IndexStore:
    settings = IndexSettings(encoder_fingerprint="bench", dimension=4, sample_rate=8000,
                             window_seconds=1.0, hop_seconds=1.0, vocabulary_name="bench",
                             vocabulary_hash="bench", lam=0.05)
    store = IndexStore.create(folder, settings, ["a", "b"], np.eye(2, 4, dtype=np.float32))
    with store.write() as session:
        session.execute(insert(FileRow), [
            {"path": str(library / f"folder{i % 100:02d}" / f"take_{i:06d}.wav"), "size": i,
             "mtime_ns": i, "status": "indexed"} for i in range(n)])
    return store


def median(fn, runs: int) -> float:
    """Median CPU seconds of this process (the machine is shared: wall time is mostly waiting)."""
    times = []
    for _ in range(runs):
        began = time.process_time()
        fn()
        times.append(time.process_time() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        library = tmp / "library"
        (library / "moved").mkdir(parents=True)
        plain = make_index(tmp / "plain", library, args.files)
        rooted = make_index(tmp / "rooted", library, args.files)
        began = time.process_time()
        rooted.set_root("lib", library)
        convert = time.process_time() - began
        began = time.process_time()
        rooted.set_root("lib", library / "moved")
        move = time.process_time() - began
        rooted.set_root("lib", library)
        names = [str(library / f"folder{i % 100:02d}" / f"take_{i:06d}.wav")
                 for i in range(0, args.files, max(1, args.files // 1000))]
        rows = {}
        for label, store in (("no root", plain), ("root", rooted)):
            assert len(store.files()) == args.files
            assert store.file_by_path(names[-1]) is not None
            rows[label] = (median(store.files, args.runs),
                           median(lambda: [store.file_by_path(p) for p in names], args.runs))
        print(f"{args.files} file rows, SQLite, CPU time, median of {args.runs}")
        print(f"{'':<28}{'no root (baseline)':>20}{'root':>12}{'ratio':>8}")
        for i, what in enumerate(("read every file row", f"{len(names)} look-ups by path")):
            base, with_root = rows["no root"][i], rows["root"][i]
            print(f"{what:<28}{base * 1e3:>17.1f} ms{with_root * 1e3:>9.1f} ms"
                  f"{with_root / base:>7.2f}x")
        print(f"roots set on {args.files} absolute rows (one-off conversion): {convert:.2f} s")
        print(f"roots set moving the root afterwards (one setting): {move * 1e3:.1f} ms "
              f"({convert / move:.0f}x less)")
        plain.close()
        rooted.close()


if __name__ == "__main__":
    main()
