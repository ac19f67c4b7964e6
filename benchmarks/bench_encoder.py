"""Audio encoder throughput: msclap's own PyTorch path vs each clapdex backend, and end-to-end
indexing per backend. Same run, same windows, interleaved repeats.

    .venv/bin/python benchmarks/bench_encoder.py [--batch-sizes 1,8,32] [--threads 2] [--repeats 2]
                                                 [--backends torch,onnx,onnx-int8] [--files 8]
                                                 [--device cpu|cuda] [--skip-index]

Model: msclap's 2023 CLAP (HTSAT audio encoder) with RANDOM weights (tests/clap_fixtures.py):
speed does not depend on the weight values, and no download is possible here; but how int8
quantisation treats the real weights cannot be told from random ones (use
`clapdex model check --compare FILES`).

(1) Windows/s per batch size. BASELINE: msclap's CLAPWrapper, loaded by msclap's own code from the
    same files, called through `_get_audio_embeddings` (what `get_audio_embeddings` runs after
    reading files) on identical (n, 1, samples) tensors, in batches of the same size. Each clapdex
    backend embeds the same windows through `ClapEncoder.embed_audio`. Reported: windows/s, the
    ratio to the baseline, the max |difference| and min cosine of its outputs to the baseline's.
    Target (issue 12): onnx >= 1.8x the baseline with max |difference| <= 1e-4.
(2) End to end: `indexer.index_paths` (what `clapdex index` runs: walk, hash, decode in threads,
    encode, decompose, store, FAISS) on a generated folder, once per backend into copies of the
    same empty index (default vocabulary embedded beforehand, μ_A set), interleaved. Baseline: the
    torch backend, which is what `clapdex index` ran before the backends existed. Also the encoder
    forward alone on the same windows, to show how much the decoding threads take from it.
    Target: >= 1.6x faster.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may download
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.clap_fixtures


def best_seconds(runs: dict, repeats: int) -> dict:
    """Best of `repeats` timings of each run; the runs take turns, so a shared machine's changing
    load hits them alike."""
    best = {name: float("inf") for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            started = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - started)
    return best


def bench_throughput(args, files, encoders: dict) -> None:
    import numpy as np
    import torch

    from clapdex.encoder import cosines
    from tests.clap_fixtures import msclap_wrapper

    wrapper = msclap_wrapper(files, use_cuda=args.device == "cuda")
    any_encoder = next(iter(encoders.values()))
    rng = np.random.default_rng(0)
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"cpu, {args.threads} threads"
    print(f"(1) msclap 2023 (HTSAT), random weights, windows of {any_encoder.window_seconds:g} s at "
          f"{any_encoder.sample_rate} Hz, {device}, best of {args.repeats}")
    print(f"    {'batch':>5}  {'path':<34} {'windows/s':>9}  {'ratio':>6}  {'max|diff|':>9}  {'min cos':>9}")
    for batch_size in args.batch_sizes:
        n = max(batch_size, 8)
        t = np.arange(any_encoder.window_samples) / any_encoder.sample_rate
        windows = np.asarray([0.2 * np.sin(2 * np.pi * 150.0 * (i + 1) * t) for i in range(n)], np.float32)
        windows += (0.05 * rng.standard_normal(windows.shape)).astype(np.float32)
        tensors = torch.from_numpy(windows)[:, None, :]

        def baseline():
            parts = []
            for start in range(0, n, batch_size):
                parts.append(wrapper._get_audio_embeddings(tensors[start:start + batch_size].to(args.device)).cpu())
            return torch.cat(parts).numpy()

        runs = {"msclap": baseline}
        for name, encoder in encoders.items():
            encoder.batch_size = batch_size
            runs[name] = (lambda e: lambda: e.embed_audio(windows))(encoder)
        outputs = {name: run() for name, run in runs.items()}  # warm-up, and the outputs compared
        seconds = best_seconds(runs, args.repeats)
        base_rate = n / seconds["msclap"]
        for name in runs:
            rate = n / seconds[name]
            label = "msclap CLAPWrapper (baseline)" if name == "msclap" else f"clapdex --backend {name}"
            diff = float(np.abs(outputs[name] - outputs["msclap"]).max())
            cos = float(cosines(outputs[name], outputs["msclap"]).min())
            print(f"    {batch_size:>5}  {label:<34} {rate:9.2f}  {rate / base_rate:5.2f}x  {diff:9.1e}  {cos:9.6f}")


def bench_index(args, root: Path, encoders: dict) -> None:
    import numpy as np
    import soundfile

    from clapdex import indexer
    from clapdex.audio import cut_windows, load_audio
    from clapdex.concepts.decompose import audio_mean
    from clapdex.storage.database import IndexStore

    first = encoders.get("torch") or next(iter(encoders.values()))
    rng = np.random.default_rng(0)
    audio = root / "audio"
    audio.mkdir()
    for i in range(args.files):  # as in bench_index.py: mono/stereo, 44.1/48/22.05 kHz, WAV/FLAC
        rate = (44100, 48000, 22050)[i % 3]
        seconds = 5.0 + 3.0 * (i % 8)
        samples = 0.1 * rng.standard_normal((int(seconds * rate), 1 + i % 2)).astype(np.float32)
        soundfile.write(audio / f"clip{i:02d}.{'wav' if i % 2 else 'flac'}", samples, rate)
    windows = np.concatenate([
        cut_windows(load_audio(p, first.sample_rate)[0], first.sample_rate, first.window_seconds)[0]
        for p in sorted(audio.iterdir())])
    (root / "empty").mkdir()
    indexer.index_paths([root / "empty"], first, root / "setup", show_progress=False)
    with IndexStore.open(root / "setup") as store:
        store.update_settings(audio_mean=audio_mean(first.embed_audio(windows[:8])))

    def pipeline(name, encoder, run):
        target = root / f"index-{name}-{run}"
        shutil.copytree(root / "setup", target)
        summary = indexer.index_paths([audio], encoder, target, show_progress=False)
        assert summary.segments_added == len(windows) and not summary.skipped
        return summary.seconds

    def forward(encoder):
        began = time.perf_counter()
        for start in range(0, len(windows), encoder.batch_size):
            encoder.embed_audio(windows[start:start + encoder.batch_size])
        return time.perf_counter() - began

    best = {name: [float("inf"), float("inf")] for name in encoders}
    for run in range(args.repeats):
        for name, encoder in encoders.items():
            encoder.batch_size = 16
            best[name][0] = min(best[name][0], pipeline(name, encoder, run))
            best[name][1] = min(best[name][1], forward(encoder))
    base = best[first.backend][0] if first.backend in best else min(b[0] for b in best.values())
    print(f"(2) end to end: indexer.index_paths on {args.files} files, {len(windows)} windows, "
          f"batch 16, {args.threads} threads, μ_A set, best of {args.repeats}")
    print(f"    {'backend':<10} {'index s':>8} {'windows/s':>9}  {'speed-up':>8}  {'forward only s':>14}  {'index/forward':>13}")
    for name, (index_s, forward_s) in best.items():
        print(f"    {name:<10} {index_s:8.2f} {len(windows) / index_s:9.2f}  {base / index_s:7.2f}x  "
              f"{forward_s:14.2f}  {index_s / forward_s:13.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="1,8,32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--backends", default="torch,onnx,onnx-int8")
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--skip-index", action="store_true")
    args = parser.parse_args()
    args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]

    import torch

    from clapdex.encoder import ClapEncoder
    from clapdex.errors import ModelError
    from tests.clap_fixtures import make_random_clap_files

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-encoder-") as root:
        os.environ.setdefault("CLAPDEX_CACHE_DIR", str(Path(root) / "cache"))
        files = make_random_clap_files(Path(root) / "model")
        encoders = {}
        for backend in args.backends.split(","):
            encoder = ClapEncoder(version="2023", weights=files.weights, text_model=files.text_model,
                                  device=args.device, backend=backend, threads=args.threads,
                                  notify=lambda message: None)
            try:
                started = time.perf_counter()
                encoder.load()
                print(f"    {backend}: loaded in {time.perf_counter() - started:.1f} s "
                      f"(precision {encoder.precision}; an ONNX graph is built on first use only)")
            except ModelError as error:
                print(f"    {backend}: not available: {error}")
                continue
            encoders[backend] = encoder
        bench_throughput(args, files, encoders)
        if not args.skip_index:
            bench_index(args, Path(root), encoders)


if __name__ == "__main__":
    main()
