"""What measuring levels and clipping costs while decoding (issue 15.4), against decoding alone.

    .venv/bin/python benchmarks/bench_levels.py [--seconds 600] [--rate 44100] [--channels 2]

Writes one file (a tone with noise, a clipped stretch and a silent stretch) and streams it through
`audio.iter_windows` at 48 kHz with 7 s windows, as the indexer does, with `DecodeReport`'s
per-block measure (energy and clipped samples in 10 ms bins) and then `levels()` over every
window ("measured"), and with the measure switched off ("baseline"), alternating, 5 runs each.
Prints the medians and the ratio measured / baseline. Not a test: nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

from clapdex import audio


def make_file(path: Path, seconds: float, rate: int, channels: int) -> None:
    rng = np.random.default_rng(0)
    with soundfile.SoundFile(path, "w", rate, channels, subtype="PCM_16") as out:
        for start in range(0, int(seconds), 60):
            t = np.arange(60 * rate) / rate
            block = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(len(t))
            block[: 15 * rate] = np.clip(4 * block[: 15 * rate], -1, 1)  # 15 s clipped
            block[-15 * rate:] = 0.0                                      # 15 s silent
            out.write(np.repeat(block[:, None], channels, axis=1).astype(np.float32))


def run(path: Path, measured: bool) -> tuple[float, int]:
    report = audio.DecodeReport()
    if not measured:
        report._measure = lambda block, mono: None
    started = time.perf_counter()
    times = [t for _, batch in audio.iter_windows(path, 48000, 7.0, report=report) for t in batch]
    if measured:
        levels = report.levels(times)
        assert levels.silent.any() and levels.clipped.any()
    return time.perf_counter() - started, len(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--rate", type=int, default=44100)
    parser.add_argument("--channels", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "long.wav"
        make_file(path, options.seconds, options.rate, options.channels)
        run(path, True)  # warm-up (file cache, soxr)
        times: dict[str, list[float]] = {"baseline": [], "measured": []}
        for _ in range(options.runs):
            for name in times:
                seconds, windows = run(path, name == "measured")
                times[name].append(seconds)
    base, measured = (statistics.median(times[k]) for k in ("baseline", "measured"))
    print(f"{options.seconds:.0f} s of {options.channels}-channel audio at {options.rate} Hz, "
          f"{windows} windows of 7 s at 48 kHz, median of {options.runs} runs")
    print(f"  baseline (decode, downmix, resample, cut):  {base:.3f} s")
    print(f"  measured (+ levels and clipping):           {measured:.3f} s")
    print(f"  ratio measured / baseline:                  {measured / base:.3f}")


if __name__ == "__main__":
    main()
