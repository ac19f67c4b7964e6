"""Eval's embedding step: windows batched across files (evaluation.embeddings.embed_files, the
indexer's batching rule, clapdex.batching) against the BASELINE measured in the same run, file by
file (evaluation.embeddings.embed_file on each: one forward pass per one-window file, what eval did
before). Same files, same encoder, interleaved repeats, best of each.

    .venv/bin/python benchmarks/bench_eval_embedding.py [--files 16] [--seconds 5] [--repeats 2]
                                                        [--threads 2] [--device cpu|cuda]

Model: msclap's 2023 CLAP (HTSAT) with RANDOM weights (tests/clap_fixtures.py): speed does not
depend on the weight values, and no download is possible here. The files are one window each
(5 s of noise; the model's window is 7 s), as in the issue (a folder of short sound effects).
Also printed: the largest difference between the two ways' file embeddings (batching must not
change them beyond float noise).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may download
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.clap_fixtures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    import numpy as np
    import soundfile
    import torch

    from clapdex.encoder import ClapEncoder
    from clapdex.evaluation.embeddings import embed_file, embed_files
    from tests.clap_fixtures import make_random_clap_files

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-eval-embedding-") as root:
        os.environ.setdefault("CLAPDEX_CACHE_DIR", str(Path(root) / "cache"))
        files = make_random_clap_files(Path(root) / "model")
        encoder = ClapEncoder(version="2023", weights=files.weights, text_model=files.text_model,
                              device=args.device, backend="torch", threads=args.threads,
                              notify=lambda message: None)
        encoder.load()
        rng = np.random.default_rng(0)
        paths = []
        for i in range(args.files):
            path = Path(root) / f"clip_{i:03d}.wav"
            soundfile.write(path, 0.1 * rng.standard_normal(int(args.seconds * 44100)), 44100)
            paths.append(path)
        print(f"{args.files} files of {args.seconds:g} s (one {encoder.window_seconds:g} s window "
              f"each), batch size {encoder.batch_size}, {args.threads} threads, {args.device}")
        encoder.embed_audio(np.zeros((1, int(encoder.sample_rate * encoder.window_seconds)),
                                     np.float32))  # warm-up
        best = {"file by file (baseline)": float("inf"), "batched across files": float("inf")}
        outputs = {}
        for _ in range(args.repeats):
            for name in best:
                started = time.perf_counter()
                if name.startswith("file"):
                    outputs[name] = np.stack([embed_file(encoder, p) for p in paths])
                else:
                    outputs[name] = embed_files(encoder, paths, use_cache=False).embeddings
                best[name] = min(best[name], time.perf_counter() - started)
        baseline = best["file by file (baseline)"]
        for name, seconds in best.items():
            print(f"  {name:26s} {seconds:7.2f} s  {seconds / args.files:6.3f} s/file  "
                  f"speed-up {baseline / seconds:4.2f}x")
        a, b = outputs.values()
        print(f"  max |difference| of the file embeddings: {np.abs(a - b).max():.2e}")


if __name__ == "__main__":
    main()
