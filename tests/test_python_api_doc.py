"""docs/python-api.md: its examples run, in order, as one script, on a tiny generated folder with
the spectral TEST DOUBLE (not CLAP) chosen through the encoder seam ($CLAPDEX_ENCODER)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from tests.audio_collection import make_collection, tone_mix, write_audio, write_vocabulary

DOC = Path(__file__).resolve().parent.parent / "docs" / "python-api.md"


def _folder(root: Path) -> None:
    make_collection(root / "sounds")
    write_vocabulary(root)  # tones.txt
    captions = []
    for label, freq in (("a 200 hz tone", 200), ("a 1000 hz tone", 1000)):
        for i in range(3):
            path = write_audio(root / "labeled" / label / f"{i}.wav",
                               tone_mix([freq + 5 * i], 2.0, 8000, i), 8000)
            captions.append((str(path.relative_to(root)), label))
    with open(root / "captions.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([("path", "caption"), *captions])
    rng = np.random.default_rng(0)
    np.save(root / "emb.npy", rng.standard_normal((2, 64)).astype(np.float32))
    (root / "FILES.csv").write_text("path,start,end\nimported/x.wav,0,2\nimported/x.wav,2,4\n")


def test_the_examples_run(tmp_path, monkeypatch, capsys):
    _folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CLAPDEX_ENCODER", "tests.doubles:SpectralTestEncoder")
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 10
    namespace: dict = {}
    for number, block in enumerate(blocks, start=1):
        exec(compile(block, f"{DOC.name} example {number}", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "test-double-spectral" in printed          # the seam chose the test double
    assert (tmp_path / "report.html").exists() and (tmp_path / "projection.pt").exists()
    assert "error: " in printed.splitlines()[-1]  # the last example catches IndexNotFoundError
