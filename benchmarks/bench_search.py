"""Search latency at 100,000 segments, against a brute-force numpy baseline in the same run.

    .venv/bin/python benchmarks/bench_search.py [--segments 100000] [--concepts 2000] [--queries 100]

(1) Builds a synthetic index (K concepts, ~20 per segment, d = 1024) through IndexStore bulk writes:
    random atoms, random sparse non-negative weights, embeddings a = r + noise whose stored
    fidelity / recon_norm / shift_norm are exactly those of the stored weights. No model involved.
(2) Opens it with clapdex.api.open_index and, warm, times index.search(vector=q, mode=..., k=10)
    per mode (query vectors given, no text encoding; explanations of the 10 results included).
(3) Baseline, same data, same queries: brute-force numpy with everything dense in memory:
    E·q (n × d float32) + W·s with W as a dense n × K float32 matrix, fused, top-10 by argpartition.
    Prints p50 / p95 and the ratio baseline / clapdex.
(4) Cold start of the CLI for one text query with the random-weights msclap model (tests/
    clap_fixtures.py) on a small index built by `clapdex index`, and of a concept-only query.
Targets (issue 5): concept and hybrid p50 <= 20 ms at 100k segments, faster than the baseline.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import percentiles, random_clap_index, synthetic_arguments, synthetic_index
from clapdex.api import open_index


class BruteForce:
    """Everything dense in memory; one query = E·q + W·s, fused, top-k."""

    def __init__(self, engine):
        self.unit = engine.embeddings                      # (n, d) float32 unit rows
        self.dense_weights = engine.weights.astype(np.float32).toarray()  # (n, K) float32
        self.atoms = engine.atoms.astype(np.float32)
        self.mean = engine.audio_mean.astype(np.float32)
        self.row_scale = engine.row_scale.astype(np.float32)
        self.base_scale = engine.base_scale.astype(np.float32)

    def query(self, q: np.ndarray, k: int = 10, alpha: float = 0.5) -> np.ndarray:
        q = q.astype(np.float32)
        dense = self.unit @ q
        concept = self.row_scale * (self.dense_weights @ (self.atoms @ q)) + self.base_scale * (self.mean @ q)
        fused = alpha * dense + (1 - alpha) * concept
        top = np.argpartition(-fused, k)[:k]
        return top[np.argsort(-fused[top])]


def bench_api(root: Path, n_queries: int, seed: int = 1) -> None:
    rng = np.random.default_rng(seed)
    with open_index(root) as index:
        t0 = time.perf_counter()
        engine = index._searcher.engine
        print(f"  open + load concept state: {time.perf_counter() - t0:.2f} s")
        t0 = time.perf_counter()
        _ = engine.embeddings
        print(f"  load unit embeddings (hybrid): {time.perf_counter() - t0:.2f} s")
        t0 = time.perf_counter()
        engine.dense_index()
        print(f"  open/sync FAISS index (dense): {time.perf_counter() - t0:.2f} s")
        # Queries near stored segments (as a real query lands near some clips), plus noise.
        picks = rng.choice(engine.n_segments, n_queries, replace=False)
        queries = engine.embeddings[picks].astype(np.float64)
        queries += 0.5 * rng.standard_normal(queries.shape) / np.sqrt(queries.shape[1])
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)

        stats = {}
        for mode in ("dense", "concept", "hybrid"):
            index.search(vector=queries[0], mode=mode)  # warm
            times = []
            for q in queries:
                t = time.perf_counter()
                index.search(vector=q, mode=mode, k=10)
                times.append(time.perf_counter() - t)
            stats[mode] = percentiles(times)

        # Concept-only queries (inverted index): two named concepts, one pushed away.
        names = engine.concept_names
        picks = rng.choice(len(names), (n_queries, 2), replace=False) if len(names) > 2 * n_queries \
            else rng.integers(0, len(names), (n_queries, 2))
        index.search(concepts=[names[0]])
        times = []
        for a, b in picks:
            t = time.perf_counter()
            index.search(concepts=[names[a], f"-{names[b]}:0.5"], k=10)
            times.append(time.perf_counter() - t)
        stats["concept-only"] = percentiles(times)

        brute = BruteForce(engine)
        brute.query(queries[0])
        times, agree = [], 0
        for q in queries:
            t = time.perf_counter()
            top = brute.query(q)
            times.append(time.perf_counter() - t)
            hit = index.search(vector=q, mode="hybrid", k=1, segments=True)[0]
            agree += int(engine.segment_ids[top[0]] == hit.segment_id)
        stats["brute"] = percentiles(times)

    base50, base95 = stats["brute"]
    print(f"\n  {'':26s} {'p50 ms':>8s} {'p95 ms':>8s} {'baseline/this (p50)':>20s}")
    print(f"  {'brute-force numpy':26s}   {base50:8.2f} {base95:8.2f} {'1.00':>20s}")
    for mode in ("dense", "concept", "hybrid", "concept-only"):
        p50, p95 = stats[mode]
        print(f"  {'clapdex ' + mode:26s}   {p50:8.2f} {p95:8.2f} {base50 / p50:20.2f}")
    print("  (concept-only: 2 named concepts through the inverted index; the baseline scores vectors)")
    print(f"  hybrid top-1 segment equals brute force top-1 in {agree}/{len(queries)} queries")


def bench_cli_cold_start(workdir: Path) -> None:
    """Wall time of `clapdex search` in a fresh process (imports, index open, model load, query)."""
    clapdex = [str(Path(sys.executable).parent / "clapdex")]  # the installed console script
    index, env = random_clap_index(workdir, clapdex, dict(os.environ))
    for label, args in (("text query (loads the model)", ["search", "a dog barking"]),
                        ("concept-only query (no model)", ["search", "--concept", "dog"])):
        times = []
        for _ in range(3):
            t = time.perf_counter()
            subprocess.run(clapdex + args + ["--index", str(index)], env=env, check=True,
                           capture_output=True)
            times.append(time.perf_counter() - t)
        print(f"  CLI cold start, {label}: median {np.median(times):.2f} s (3 runs)")
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import clapdex.cli"], check=True)
    print(f"  (python + import clapdex.cli alone: {time.perf_counter() - t:.2f} s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    synthetic_arguments(parser)
    parser.add_argument("--skip-cli", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        tmp = Path(tmp)
        bench_api(synthetic_index(args, tmp), args.queries)
        if not args.skip_cli:
            print()
            bench_cli_cold_start(tmp)


if __name__ == "__main__":
    main()
