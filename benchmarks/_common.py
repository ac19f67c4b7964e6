"""What several benchmarks share: the repository on sys.path, percentiles, the synthetic index's
options and build-or-reuse, a small index built by `clapdex index` with the random-weights msclap
model, and the source tree of another commit (for a baseline measured in the same run)."""

from __future__ import annotations

import argparse
import io
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
for _path in (str(REPO / "src"), str(REPO)):  # this checkout's clapdex, and tests/ for fixtures
    if _path not in sys.path:
        sys.path.insert(0, _path)


def percentiles(times: list[float]) -> tuple[float, float]:
    """(p50, p95) in milliseconds of times in seconds."""
    ms = np.array(times) * 1e3
    return float(np.percentile(ms, 50)), float(np.percentile(ms, 95))


def synthetic_arguments(parser: argparse.ArgumentParser) -> None:
    """--segments, --concepts, --dimension, --queries and --keep DIR."""
    parser.add_argument("--segments", type=int, default=100_000)
    parser.add_argument("--concepts", type=int, default=2_000)
    parser.add_argument("--dimension", type=int, default=1024)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--keep", metavar="DIR", default=None,
                        help="Build the synthetic index in DIR and reuse it on later runs.")


def synthetic_index(args, tmp: Path) -> Path:
    """The synthetic index of tests/search_fixtures.build_synthetic_index (random atoms and
    sparse weights, ~20 concepts per segment; no model), built in `tmp` or reused from --keep."""
    from clapdex.storage.database import IndexStore
    from tests.search_fixtures import build_synthetic_index

    index = Path(args.keep) if args.keep else tmp / "index"
    print(f"synthetic index: {args.segments:,} segments, K = {args.concepts:,}, "
          f"d = {args.dimension}, 20 concepts per segment; {args.queries} queries per row")
    if not IndexStore.exists(index):
        started = time.perf_counter()
        build_synthetic_index(index, args.segments, args.concepts, args.dimension)
        print(f"  built through IndexStore bulk writes in {time.perf_counter() - started:.1f} s")
    return index


def random_clap_index(workdir: Path, cli: list[str], env: dict) -> tuple[Path, dict]:
    """(index, environment): four tones indexed by `cli index` with the random-weights msclap
    model (tests/clap_fixtures.py: real msclap code, random weights) and a 10-concept
    vocabulary; the environment points the model options at those files, offline."""
    import soundfile

    from tests.clap_fixtures import make_random_clap_files
    from tests.doubles import sine

    files = make_random_clap_files(workdir / "clap-random")
    audio = workdir / "audio"
    audio.mkdir()
    for freq in (220, 440, 880, 1760):
        soundfile.write(audio / f"tone_{freq}.wav", np.tile(sine(freq, 1.0, 16000), 9), 16000)
    vocab = workdir / "vocab.txt"
    vocab.write_text("\n".join(["dog", "rain", "speech", "siren", "engine", "birdsong", "music",
                                "glass breaking", "traffic", "water"]) + "\n")
    env = dict(env, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               CLAPDEX_CLAP_WEIGHTS=str(files.weights), CLAPDEX_TEXT_MODEL=str(files.text_model),
               CLAPDEX_DEVICE="cpu", CLAPDEX_CACHE_DIR=str(workdir / "cache"))
    index = workdir / "clap-index"
    built = subprocess.run(cli + ["index", str(audio), "--index", str(index), "--vocab", str(vocab)],
                           env=env, capture_output=True, text=True)
    if built.returncode:
        raise SystemExit(f"clapdex index failed: {built.stderr.strip()[-500:]}")
    return index, env


def extract_src(commit: str, into: Path) -> Path:
    """The src/ folder of `commit` (git archive), extracted under `into`."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "src"],
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into)
    return into / "src"


def environment_for(src: Path) -> dict:
    """os.environ with PYTHONPATH running the clapdex of `src` (and this checkout's tests/)."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(src), str(REPO)]))
