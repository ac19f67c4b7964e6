"""Audio embedding throughput of ClapEncoder vs msclap's own embedding path, same run, same tensors.

    .venv/bin/python benchmarks/bench_encoder.py [--windows 32] [--batch-size 16] [--threads 2] [--device cpu]

The model is msclap's 2023 CLAP (HTSAT audio encoder) with RANDOM weights (tests/clap_fixtures.py):
speed does not depend on the weight values, and no download is possible here. Baseline: msclap's
CLAPWrapper, loaded by msclap's own code from the same files, called through
`_get_audio_embeddings` (what `get_audio_embeddings` runs after reading files) on identical
(n, 1, samples) tensors in batches of the same size. Reported: windows/s of each, the ratio, and
the largest difference between the two outputs.
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


def best_rates(runs: dict, n_windows: int, repeats: int) -> dict:
    """Best of `repeats` timings of each run, as windows per second. The runs take turns, so a
    shared machine's changing load hits them alike."""
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return {name: n_windows / seconds for name, seconds in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--windows", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()

    import numpy as np
    import torch

    from clapdex.encoder import ClapEncoder
    from tests.clap_fixtures import make_random_clap_files, msclap_wrapper

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-encoder-") as root:
        files = make_random_clap_files(Path(root))
        encoder = ClapEncoder(version="2023", weights=files.weights, text_model=files.text_model,
                              device=args.device, batch_size=args.batch_size).load()
        wrapper = msclap_wrapper(files, use_cuda=args.device == "cuda")

        rng = np.random.default_rng(0)
        windows = (0.1 * rng.standard_normal((args.windows, encoder.window_samples))).astype(np.float32)
        tensors = torch.from_numpy(windows)[:, None, :]

        def ours():
            return encoder.embed_audio(windows)

        def baseline():
            parts = []
            for start in range(0, len(tensors), args.batch_size):
                batch = tensors[start:start + args.batch_size].to(args.device)
                parts.append(wrapper._get_audio_embeddings(batch).cpu())
            return torch.cat(parts).numpy()

        ours(), baseline()  # warm-up (allocator, kernels)
        difference = float(np.abs(ours() - baseline()).max())
        rates = best_rates({"baseline": baseline, "ours": ours}, args.windows, args.repeats)
        ours_rate, baseline_rate = rates["ours"], rates["baseline"]

    device = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {args.threads} torch threads"
    print(f"msclap 2023 (HTSAT), random weights, {args.windows} windows of "
          f"{encoder.window_seconds:g} s at {encoder.sample_rate} Hz, batch {args.batch_size}, {device}")
    print(f"  baseline  msclap CLAPWrapper._get_audio_embeddings : {baseline_rate:8.2f} windows/s")
    print(f"  clapdex   ClapEncoder.embed_audio                   : {ours_rate:8.2f} windows/s")
    print(f"  ratio clapdex / baseline: {ours_rate / baseline_rate:.3f}   "
          f"max |difference| of outputs: {difference:.2e}")
    print(f"  real time factor (audio seconds per second): {ours_rate * encoder.window_seconds:.1f}")


if __name__ == "__main__":
    main()
