"""Cold CLI queries: wall time of `clapdex search` in a fresh process, this tree vs a baseline tree,
same run, same index, same model files, interleaved.

    .venv/bin/python benchmarks/bench_query_cold.py [--baseline-rev REV] [--repeats 3]

Model: msclap 2023 with RANDOM weights and the tiny GPT-2 of tests/clap_fixtures.py (loading and
import costs do not depend on the weight values; the real GPT-2 is ~124 M parameters, so its first
forward costs a little more). The index holds two short files and a 3-concept vocabulary, built
by each tree beforehand (untimed). Timed, each in a new Python process (`python -m clapdex`-style
entry, the installed packages already in the OS page cache after the first run):
  text     `clapdex search "a dog barking"`     (needs the text encoder only)
  concept  `clapdex search -c "a dog barking"`  (needs no model)
and, once, for this tree: the text query with the ONNX text graph removed from the cache, so that
this one query exports it first (what the first text query after an upgrade costs; normally
`clapdex index` builds it while embedding the vocabulary).
Each figure is wall time and, in brackets, the CPU time (user + system) of the process: on a
shared machine the wall time includes waiting for a core, the CPU time does not.
BASELINE: the same commands run on the source of --baseline-rev (git archive of that commit's
src/), e.g. the commit before the text-only loading landed. Target (issue 15, item 2): text query
<= 8 s cold on the 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # for tests.clap_fixtures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-rev", default=None, help="git revision to compare with")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    import soundfile

    from tests.clap_fixtures import make_random_clap_files

    with tempfile.TemporaryDirectory(prefix="bench-query-") as root:
        root = Path(root)
        files = make_random_clap_files(root / "model")
        env = dict(os.environ, HF_HUB_OFFLINE="1", CLAPDEX_CLAP_WEIGHTS=str(files.weights),
                   CLAPDEX_TEXT_MODEL=str(files.text_model), CLAPDEX_CACHE_DIR=str(root / "cache"))
        env.pop("CLAPDEX_ENCODER", None)
        audio = root / "audio"
        audio.mkdir()
        rng = np.random.default_rng(0)
        for i in range(2):
            soundfile.write(audio / f"clip{i}.wav", (0.1 * rng.standard_normal(44100 * 8)).astype(np.float32), 44100)
        (root / "vocab.txt").write_text("a dog barking\nrain on a roof\na siren wailing\n")
        trees = {"this tree": REPO / "src"}
        if args.baseline_rev:
            base = root / "baseline"
            base.mkdir()
            archive = subprocess.run(["git", "-C", str(REPO), "archive", args.baseline_rev, "src"],
                                     check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(base)], input=archive, check=True)
            trees = {f"baseline {args.baseline_rev}": base / "src", **trees}

        def clapdex(src: Path, *arguments: str) -> tuple[float, float]:
            """(wall seconds, CPU seconds) of one fresh process."""
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            result = subprocess.run([sys.executable, "-c", "import sys; from clapdex.cli import main; "
                                     "sys.argv[0] = 'clapdex'; main()", *arguments],
                                    env=dict(env, PYTHONPATH=str(src)), capture_output=True, text=True)
            seconds = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            if result.returncode != 0:
                raise SystemExit(f"clapdex {' '.join(arguments)} failed:\n{result.stderr}")
            cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            return seconds, cpu

        # Each tree builds its own index (an older tree may not read a newer schema).
        queries = {}
        for number, (tree, src) in enumerate(trees.items()):
            index = str(root / f"index-{number}")
            clapdex(src, "index", str(audio), "--index", index, "--vocab", str(root / "vocab.txt"))
            queries[tree] = {"text": ["search", "a dog barking", "--index", index],
                             "concept": ["search", "-c", "a dog barking", "--index", index]}
        kinds = ("text", "concept")
        best = {(tree, kind): (float("inf"), float("inf")) for tree in trees for kind in kinds}
        for _ in range(args.repeats):
            for tree, src in trees.items():
                for kind in kinds:
                    best[tree, kind] = min(best[tree, kind], clapdex(src, *queries[tree][kind]))
        for graph in (root / "cache" / "onnx").glob("text-*"):
            graph.unlink()
        first = clapdex(REPO / "src", *queries["this tree"]["text"])

    def shown(figure: tuple[float, float]) -> str:
        return f"{figure[0]:6.2f} s ({figure[1]:5.2f} s CPU)"

    print(f"cold `clapdex search`, fresh process each, random-weights msclap 2023 + tiny GPT-2, "
          f"best of {args.repeats}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    for tree in trees:
        print(f"  {tree:<28} text query {shown(best[tree, 'text'])}   concept-only "
              f"{shown(best[tree, 'concept'])}")
    print(f"  {'this tree, text graph built':<28} text query {shown(first)}   (once)")
    if len(trees) == 2:
        (old, new) = trees
        print(f"  text query: {best[old, 'text'][0] / best[new, 'text'][0]:.2f}x faster wall, "
              f"{best[old, 'text'][1] / best[new, 'text'][1]:.2f}x less CPU (target <= 8 s cold)")


if __name__ == "__main__":
    main()
