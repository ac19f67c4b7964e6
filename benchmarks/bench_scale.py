"""Serving at scale (issue 14): synthetic indexes of 100k and 1M segments, K = 4,000 concepts,
~25 concepts per segment, d = 1024; every figure at both sizes and its growth.

    /work/main/.venv/bin/python benchmarks/bench_scale.py [--sizes 100000,1000000] [--build-only]

Indexes are cached under $CLAPDEX_BENCH_CACHE (default /work/benchcache) as scale-<n>/ and reused
between runs. They are built through the store's own bulk write path (IndexStore.add_files, the
code import-embeddings and the indexer store through), 5,000 segments per transaction, with
random atoms, sparse non-negative weights (concept popularity skewed, Zipf-like) and embeddings
a = r + noise whose stored fidelity / recon_norm / shift_norm are exactly those of the weights.

Per size it reports: import time per segment (add_files into a copy of each cached database,
PER_TRANSACTION files a transaction, the sizes taking turns in the same run; the build's own mean,
taken under whatever load it met, is printed too), the derived search files' first build, disk,
time to open for search, RSS after open and after 100 queries, cold CLI wall time of a
concept-only query, warm p50/p95 of concept-only, concept, dense and hybrid queries, recall@10
of hybrid and dense against exact brute force over every segment, an audit expression,
`audit --cooccur` over all pairs, and `report`.
Not a test: nothing is asserted; the targets of issue 14 are printed beside the 1M figures. The
machine is shared, so CLI figures give wall and CPU (user + system) time: under load the wall time
is mostly waiting for a core.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("CLAPDEX_BENCH_CACHE", "/work/benchcache"))
K = 4000
DIM = 1024
PER_FILE = 100            # segments per synthetic file
PER_TRANSACTION = 50      # files per add_files call (5,000 segments)


class _Decomposition:
    def __init__(self, weights, fidelity, recon_norm, shift_norm, concept_fidelity):
        self.weights, self.fidelity = weights, fidelity
        self.recon_norm, self.shift_norm = recon_norm, shift_norm
        self.concept_fidelity = concept_fidelity


def _vocabulary(seed: int):
    """The synthetic concepts: names, text embeddings, atoms, μ_A and a skewed popularity."""
    from clapdex.concepts.dictionary import ConceptDictionary

    rng = np.random.default_rng(seed)
    text = rng.standard_normal((K, DIM)).astype(np.float32)
    names = [f"concept {i}" for i in range(K)]
    atoms = ConceptDictionary.from_text_embeddings(names, text).atoms
    mean = rng.standard_normal(DIM)
    mean = (0.5 * mean / np.linalg.norm(mean)).astype(np.float32)
    popularity = 1.0 / (np.arange(K) + 50.0) ** 0.8
    popularity /= popularity.sum()
    return names, text, atoms, mean, popularity[rng.permutation(K)]


def synthetic_file(vocabulary, number: int, seed: int = 0, noise: float = 0.6):
    """File `number` (PER_FILE segments) as a NewFile; its own random stream, so a build that
    resumes after an interruption writes exactly what an uninterrupted one would."""
    import scipy.sparse as sp

    from clapdex.storage.database import FileMeta, NewFile

    _names, _text, atoms, mean, popularity = vocabulary
    mean = mean.astype(np.float64)
    rng = np.random.default_rng([seed, number])
    n = PER_FILE
    draws = np.sort(rng.choice(K, size=(n, 26), p=popularity), axis=1)
    keep = np.ones(draws.shape, dtype=bool)
    keep[:, 1:] = np.diff(draws, axis=1) != 0
    counts = keep.sum(axis=1)
    indptr = np.concatenate([[0], np.cumsum(counts)])
    vals = rng.exponential(0.1, size=int(indptr[-1])) + 1e-3
    weights = sp.csr_matrix((vals, draws[keep], indptr), shape=(n, K))
    u = weights @ atoms
    recon = np.linalg.norm(u, axis=1)
    shifted = u / recon[:, None] + mean
    shift = np.linalg.norm(shifted, axis=1)
    r = shifted / shift[:, None]
    a = r + noise * rng.standard_normal(r.shape) / np.sqrt(DIM)
    fidelity = np.sum(r * a, axis=1) / np.linalg.norm(a, axis=1)
    x = a / np.linalg.norm(a, axis=1, keepdims=True)
    z = (x - mean) / np.linalg.norm(x - mean, axis=1, keepdims=True)
    concept_fidelity = np.sum(u * z, axis=1) / recon
    starts = np.arange(n) * 7.0
    meta = FileMeta(path=f"/synthetic/{number % 97:02d}/file_{number:07d}.wav", size=0,
                    mtime_ns=0, duration=n * 7.0, sample_rate=16000, channels=1)
    return NewFile(meta, starts, starts + 7.0, a.astype(np.float32),
                   _Decomposition(weights, fidelity, recon, shift, concept_fidelity))


def settings_for(mean):
    from clapdex.storage.database import IndexSettings

    return IndexSettings(encoder_fingerprint="synthetic-benchmark", dimension=DIM,
                         sample_rate=16000, window_seconds=7.0, hop_seconds=7.0,
                         vocabulary_name="synthetic", vocabulary_hash="synthetic", lam=0.05,
                         audio_mean=mean, faiss_factory="auto")


def build(root: Path, n_segments: int, seed: int = 0) -> dict:
    """Write the synthetic index; returns the timings (written to root/bench-build.json).

    Resumable: an interrupted build is continued from root.partial (each transaction holds whole
    files, and every file has its own random stream, so the result is what an uninterrupted build
    writes). Only the store's writes (add_files) are timed, not the generation of the synthetic
    files; root.partial.json keeps the timed seconds and segments after every transaction."""
    from clapdex.storage.database import IndexStore

    vocabulary = _vocabulary(seed)
    names, text, _atoms, mean, _popularity = vocabulary
    partial = root.with_name(root.name + ".partial")
    progress = partial.with_name(partial.name + ".json")
    done = json.loads(progress.read_text()) if progress.exists() and partial.exists() else {}
    if "timed_segments" not in done:  # a new build, or one begun before add_files was timed
        done = {"seconds": 0.0, "timed_segments": 0, "laps": []}
    if IndexStore.exists(partial) and progress.exists():
        _catch_up_schema(partial)  # begun by an older version of this round's code
        store = IndexStore.open(partial, write=True)
    else:
        import shutil
        shutil.rmtree(partial, ignore_errors=True)
        store = IndexStore.create(partial, settings_for(mean), names, text)
    with store:
        first = store.counts()["segments"] // PER_FILE
        if first:
            print(f"    resuming at {first * PER_FILE:,} segments", flush=True)
        lap = 0.0
        for number in range(first, n_segments // PER_FILE, PER_TRANSACTION):
            files = [synthetic_file(vocabulary, i, seed)
                     for i in range(number, min(number + PER_TRANSACTION, n_segments // PER_FILE))]
            began = time.perf_counter()
            store.add_files(files)
            seconds = time.perf_counter() - began
            done["seconds"] += seconds
            done["timed_segments"] += len(files) * PER_FILE
            lap += seconds
            stored = (number + len(files)) * PER_FILE
            if stored % 100_000 == 0:
                done["laps"].append(lap)
                print(f"    {stored:,} segments; storing the last 100,000 took {lap:.0f} s",
                      flush=True)
                lap = 0.0
            progress.write_text(json.dumps(done))
    timings = {"segments": n_segments, "import_seconds": done["seconds"],
               "import_us_per_segment": 1e6 * done["seconds"] / max(1, done["timed_segments"]),
               "timed_segments": done["timed_segments"], "seconds_per_100k": done["laps"]}
    (partial / "bench-build.json").write_text(json.dumps(timings))
    partial.rename(root)
    progress.unlink()
    return timings


def import_growth(sizes: list[int], transactions: int, rounds: int, seed: int = 0) -> dict[int, list]:
    """Import cost per segment at each size, measured the same way in the same run: a copy of each
    cached database gets `transactions` more add_files transactions (PER_TRANSACTION new files
    each) per round, the sizes taking turns so that load drifts hit them alike. Returns, per size,
    [wall µs, CPU µs] per segment (median over the rounds). The copies are deleted afterwards."""
    import shutil

    from clapdex.storage.database import IndexStore

    vocabulary = _vocabulary(seed)
    copies = {}
    for n in sizes:
        copies[n] = CACHE / f"growth-{n}"
        shutil.rmtree(copies[n], ignore_errors=True)
        copies[n].mkdir()
        shutil.copy2(CACHE / f"scale-{n}" / "clapdex.sqlite", copies[n] / "clapdex.sqlite")
    laps = {n: [] for n in sizes}
    try:
        for round_ in range(rounds):
            for n in sizes:
                with IndexStore.open(copies[n], write=True) as store:
                    first = store.counts()["segments"] // PER_FILE
                    wall = cpu = 0.0
                    for t in range(transactions):
                        start = first + t * PER_TRANSACTION
                        files = [synthetic_file(vocabulary, i, seed)
                                 for i in range(start, start + PER_TRANSACTION)]
                        began, began_cpu = time.perf_counter(), time.process_time()
                        store.add_files(files)
                        wall += time.perf_counter() - began
                        cpu += time.process_time() - began_cpu
                segments = transactions * PER_TRANSACTION * PER_FILE
                laps[n].append([1e6 * wall / segments, 1e6 * cpu / segments])
                print(f"    import into {n:,} (round {round_ + 1}): {laps[n][-1][0]:.0f} µs wall, "
                      f"{laps[n][-1][1]:.0f} µs CPU per segment", flush=True)
    finally:
        for path in copies.values():
            shutil.rmtree(path, ignore_errors=True)
    return {n: [float(np.median([lap[0] for lap in laps[n]])),
                float(np.median([lap[1] for lap in laps[n]]))] for n in sizes}


def rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


PROBE = r"""
import json, sys, time
t0 = time.perf_counter()
from clapdex.api import open_index
import numpy as np
root, n_queries = sys.argv[1], int(sys.argv[2])
def rss(field="VmRSS:"):
    for line in open("/proc/self/status"):
        if line.startswith(field):
            return int(line.split()[1]) / 1024
imported = time.perf_counter()
t = time.perf_counter()
index = open_index(root)
engine = index._searcher.engine
out = {"open_s": time.perf_counter() - t, "import_s": imported - t0, "rss_open_mb": rss()}
rng = np.random.default_rng(7)
n, names = engine.n_segments, engine.concept_names
picks = np.sort(rng.choice(n, n_queries, replace=False))
# read as search reads rows (not through the map, which would count their pages in RSS)
queries = engine.embedding_rows(picks).astype(np.float64)
queries += 0.5 * rng.standard_normal(queries.shape) / np.sqrt(queries.shape[1])
queries /= np.linalg.norm(queries, axis=1, keepdims=True)
t = time.perf_counter(); index.search(vector=queries[0], mode="dense")
out["first_dense_s"] = time.perf_counter() - t
pairs = rng.integers(0, len(names), (n_queries, 2))
def timed(run):
    times, cpu = [], []
    for i in range(n_queries):
        t, c = time.perf_counter(), time.process_time()
        run(i)
        times.append(time.perf_counter() - t); cpu.append(time.process_time() - c)
    ms = np.array(times) * 1e3
    return [float(np.percentile(ms, 50)), float(np.percentile(ms, 95)),
            float(np.percentile(np.array(cpu) * 1e3, 50))]
out["concept-only"] = timed(lambda i: index.search(concepts=[names[pairs[i, 0]], f"-{names[pairs[i, 1]]}:0.5"], k=10))
for mode in ("concept", "dense", "hybrid"):
    out[mode] = timed(lambda i: index.search(vector=queries[i], mode=mode, k=10))
out["rss_queries_mb"] = rss()
out["rss_anon_queries_mb"] = rss("RssAnon:")  # private memory; the rest is mapped file pages
# recall@10 (segments) against exact brute force over every segment
m = min(20, n_queries)
exact = {"dense": [], "hybrid": []}
for i in range(m):
    q = queries[i]
    dense = engine.dense_scores(q)
    concept = engine.concept_scores(engine.concept_projection(q))
    for mode, score in (("dense", dense), ("hybrid", 0.5 * dense + 0.5 * concept)):
        top = set(engine.segment_ids[np.argpartition(-score, 9)[:10]].tolist())
        got = {r.segment_id for r in index.search(vector=q, mode=mode, k=10, segments=True)}
        exact[mode].append(len(top & got) / 10)
out["recall_dense"] = float(np.mean(exact["dense"]))
out["recall_hybrid"] = float(np.mean(exact["hybrid"]))
out["recall_queries"] = m
from clapdex.storage.dense import read_meta
out["ann"] = read_meta(index.store)
print(json.dumps(out))
"""


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def clapdex(*args: str) -> list[float]:
    """[wall s, CPU s (user + system)] of one CLI run in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "import sys; from clapdex.cli import main; "
                           "sys.argv[0] = 'clapdex'; main()", *args], capture_output=True,
                          text=True, env=_env())
    if done.returncode:
        raise SystemExit(f"clapdex {' '.join(args)} failed: {done.stderr.strip()[-400:]}")
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return [wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(REPO / "src"))


def _catch_up_schema(root: Path) -> None:
    """A cached index built before a column was added this round (same schema version): add the
    missing columns the way storage/migrate.py does (its upgrade runs only for older versions)."""
    sys.path.insert(0, str(REPO / "src"))
    from sqlalchemy import create_engine

    from clapdex.storage import migrate

    from clapdex.storage.schema import SCHEMA_VERSION

    engine = create_engine(f"sqlite:///{root / 'clapdex.sqlite'}")
    with engine.begin() as connection:
        version = connection.exec_driver_sql("SELECT schema_version FROM index_settings").scalar()
        if version != SCHEMA_VERSION:  # an older version: IndexStore.open upgrades it properly
            return
        for table, column in migrate.add_missing(connection):
            filler = migrate.FILLERS.get((table, column))
            if filler is not None:
                filler(connection)
    engine.dispose()


def measure(root: Path, n_queries: int) -> dict:
    _catch_up_schema(root)
    figures = json.loads((root / "bench-build.json").read_text())
    if not (root / "search" / "manifest.json").exists():  # derived files, built once
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import sys; from clapdex.api import open_index; "
                        "open_index(sys.argv[1])._searcher.engine", str(root)], check=True, env=_env())
        figures["derived_build_s"] = time.perf_counter() - t
        (root / "bench-build.json").write_text(json.dumps(figures))
    if not (root / "dense.json").exists():
        t = time.perf_counter()
        subprocess.run([sys.executable, "-c", "import sys; from clapdex.api import open_index; "
                        "open_index(sys.argv[1])._searcher.engine.dense_index()", str(root)],
                       check=True, env=_env())
        figures["ann_build_s"] = time.perf_counter() - t
        (root / "bench-build.json").write_text(json.dumps(figures))
    figures["disk_db_mb"] = sum(p.stat().st_size for p in root.glob("clapdex.sqlite*")) / 2**20
    figures["disk_search_mb"] = du(root / "search") / 2**20
    figures["disk_faiss_mb"] = (root / "dense.faiss").stat().st_size / 2**20
    probe = subprocess.run([sys.executable, "-c", PROBE, str(root), str(n_queries)],
                           capture_output=True, text=True, env=_env())
    if probe.returncode:
        raise SystemExit(probe.stderr[-2000:])
    figures.update(json.loads(probe.stdout.strip().splitlines()[-1]))
    cold = [clapdex("search", "--concept", "concept 17", "--index", str(root)) for _ in range(3)]
    figures["cold_cli_concept_s"] = [float(np.median([c[0] for c in cold])),
                                     float(np.median([c[1] for c in cold]))]
    figures["audit_expression_s"] = clapdex(
        "audit", "concept 3 AND NOT concept 5", "--count", "--index", str(root))
    figures["audit_cooccur_s"] = clapdex("audit", "--cooccur", "--index", str(root))
    figures["report_s"] = clapdex("report", "-o", str(root.parent / f"report-{root.name}.html"),
                                  "--index", str(root))
    return figures


ROWS = [  # (label, key, format, target at 1M)
    ("import into the index, µs per segment, wall / CPU", "import_growth_us", "{:.0f} / {:.0f}",
     "≤1.3× 100k"),
    ("  mean over the cached build", "import_us_per_segment", "{:.0f}", ""),
    ("derived search files, first build (s)", "derived_build_s", "{:.1f}", ""),
    ("ANN build + recall check (s)", "ann_build_s", "{:.1f}", ""),
    ("disk: database (MB)", "disk_db_mb", "{:.0f}", ""),
    ("disk: search/ derived files (MB)", "disk_search_mb", "{:.0f}", ""),
    ("disk: dense.faiss (MB)", "disk_faiss_mb", "{:.0f}", ""),
    ("open for search (s)", "open_s", "{:.3f}", "≤1 s"),
    ("RSS after open (MB)", "rss_open_mb", "{:.0f}", ""),
    ("RSS after the queries (MB)", "rss_queries_mb", "{:.0f}", "≤3 GB"),
    ("  of which private (RssAnon, MB)", "rss_anon_queries_mb", "{:.0f}", ""),
    ("first dense query (maps FAISS) (s)", "first_dense_s", "{:.2f}", ""),
    ("cold CLI concept-only query, wall / CPU (s)", "cold_cli_concept_s", "{:.2f} / {:.2f}", "≤2 s"),
    ("concept-only p50 / p95 (CPU p50) (ms)", "concept-only", "{:.1f} / {:.1f} ({:.1f})", "p50 ≤20 ms"),
    ("concept (vector) p50 / p95 (CPU p50) (ms)", "concept", "{:.1f} / {:.1f} ({:.1f})", ""),
    ("dense p50 / p95 (CPU p50) (ms)", "dense", "{:.1f} / {:.1f} ({:.1f})", ""),
    ("hybrid p50 / p95 (CPU p50) (ms)", "hybrid", "{:.1f} / {:.1f} ({:.1f})", "p50 ≤50 ms"),
    ("recall@10 dense", "recall_dense", "{:.3f}", ""),
    ("recall@10 hybrid", "recall_hybrid", "{:.3f}", "≥0.95"),
    ("audit expression --count, wall / CPU (s)", "audit_expression_s", "{:.2f} / {:.2f}", ""),
    ("audit --cooccur, all pairs, wall / CPU (s)", "audit_cooccur_s", "{:.1f} / {:.1f}", "≤15 s"),
    ("report, wall / CPU (s)", "report_s", "{:.1f} / {:.1f}", "≤15 s"),
]


def _value(figures: dict, key: str):
    value = figures.get(key)
    return value[0] if isinstance(value, list) else value


def table(results: dict[int, dict]) -> str:
    sizes = sorted(results)
    head = "| | " + " | ".join(f"{n:,} segments" for n in sizes) + \
        (" | growth | target at 1M |" if len(sizes) > 1 else " |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for label, key, fmt, target in ROWS:
        cells = []
        for n in sizes:
            value = results[n].get(key)
            cells.append("—" if value is None else
                         fmt.format(*value) if isinstance(value, list) else fmt.format(value))
        line = f"| {label} | " + " | ".join(cells)
        if len(sizes) > 1:
            a, b = _value(results[sizes[0]], key), _value(results[sizes[-1]], key)
            growth = f"{b / a:.2f}×" if a and b is not None else "—"
            line += f" | {growth} | {target}"
        lines.append(line + " |")
    first = results[sizes[-1]].get("ann") or {}
    lines.append(f"\nANN at {sizes[-1]:,}: {first.get('kind')} (recall@10 measured at build "
                 f"{first.get('recall_at_10')})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--reuse", action="store_true",
                        help="take a size's figures from its cached results file when there is one")
    parser.add_argument("--import-transactions", type=int, default=4,
                        help="add_files transactions per size and round of the import measurement "
                             "(0: skip it)")
    parser.add_argument("--import-rounds", type=int, default=3)
    args = parser.parse_args()
    results = {}
    sys.path.insert(0, str(REPO / "src"))
    for n in [int(s) for s in args.sizes.split(",")]:
        root = CACHE / f"scale-{n}"
        if not root.exists():
            print(f"building {root} ({n:,} segments)", flush=True)
            print(f"  {build(root, n)}", flush=True)
        if args.build_only:
            continue
        cached = CACHE / f"results-{n}.json"
        if args.reuse and cached.exists():
            results[n] = json.loads(cached.read_text())
            continue
        print(f"measuring {root}", flush=True)
        results[n] = measure(root, args.queries)
        (CACHE / f"results-{n}.json").write_text(json.dumps(results[n]))
    if results and args.import_transactions:
        print("measuring import cost per segment (copies of the cached databases)", flush=True)
        for n, figure in import_growth(sorted(results), args.import_transactions, args.import_rounds).items():
            results[n]["import_growth_us"] = figure
            (CACHE / f"results-{n}.json").write_text(json.dumps(results[n]))
    if results:
        print(table(results))


if __name__ == "__main__":
    main()
