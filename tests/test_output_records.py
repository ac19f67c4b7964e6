"""Every list a command prints with --json follows the record shapes of docs/output.md: the
documented fields that are not optional are there, and no field is undocumented. The tables are
read from the document itself, so the document is the specification. Indexed with the spectral
TEST DOUBLE (not CLAP)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import clapdex
from clapdex.cli import main
from tests.audio_collection import tone_mix, write_audio, write_vocabulary
from tests.doubles import SpectralTestEncoder, use_encoder

DOC = Path(__file__).resolve().parent.parent / "docs" / "output.md"


def documented() -> dict[str, tuple[set[str], set[str]]]:
    """{record kind: (all fields, optional fields)} from the tables of docs/output.md."""
    kinds, kind = {}, None
    for line in DOC.read_text().splitlines():
        if line.startswith("## "):
            kind = line[3:].strip()
        match = re.match(r"\| `(\w+)` \|[^|]*\| (.*)\|$", line)
        if kind and match:
            fields, optional = kinds.setdefault(kind, (set(), set()))
            fields.add(match.group(1))
            if match.group(2).startswith("*optional*"):
                optional.add(match.group(1))
    return kinds


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    write_audio(root / "audio/a.wav", tone_mix((400, 1000), 5.0, 8000), 8000)
    write_audio(root / "audio/b.wav", tone_mix((700,), 3.0, 8000), 8000)
    shutil.copy(root / "audio/b.wav", root / "audio/b_copy.wav")
    write_audio(root / "audio/quiet.wav", np.zeros(8000 * 3, np.float32), 8000)  # flagged silent
    cut = root / "audio/cut.wav"  # flagged truncated
    write_audio(cut, tone_mix((400,), 4.0, 8000), 8000)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    vocab = write_vocabulary(root)
    with clapdex.create_index(root / "index", SpectralTestEncoder(), vocabulary=str(vocab),
                              lam=0.01) as index:
        index.add([root / "audio"], roots=[f"audio={root / 'audio'}"])  # paths as OS paths
    return root


COMMANDS = [  # (record kind, arguments)
    ("Segment", ["show", "a.wav"]),
    ("Segment", ["audit", "a 400 hz tone OR a 700 hz tone"]),
    ("Segment", ["audit", "--poorly-explained", "--below", "1"]),
    ("Segment", ["audit", "--flag", "silent"]),
    ("Segment", ["show", "quiet.wav"]),
    ("Flagged file", ["audit", "--flag", "truncated"]),
    ("Window", ["explain", "{root}/audio/a.wav", "--vocab", "{root}/tones.txt"]),
    ("Search result", ["search", "a 400 hz tone", "-k", "2"]),
    ("Search result", ["search", "-c", "a 400 hz tone", "--segments"]),
    ("Search result", ["similar", "a.wav", "-k", "2"]),
    ("Concept", ["concepts"]),
    ("Concept pair", ["audit", "--cooccur", "--min-count", "1"]),
    ("Duplicate", ["duplicates", "--threshold", "0"]),
    ("Root", ["roots", "list"]),
]


@pytest.mark.parametrize("kind, args", COMMANDS, ids=[" ".join(a[:2]) for _, a in COMMANDS])
def test_json_records_follow_docs_output(corpus, monkeypatch, kind, args):
    use_encoder(monkeypatch, lambda **options: SpectralTestEncoder())
    fields, optional = documented()[kind]
    argv = [a.format(root=corpus) for a in args] + ["--json"]
    if args[0] != "explain":
        argv += ["--index", str(corpus / "index")]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows, argv
    for row in rows:
        assert set(row) <= fields, f"undocumented fields {set(row) - fields} in {args[0]}"
        assert fields - optional <= set(row), f"missing {fields - optional - set(row)}"
        for name in ("concepts",):
            for item in row.get(name) or []:
                assert set(item) == {"concept", "weight"}


def test_the_document_has_every_kind():
    assert set(documented()) >= {kind for kind, _ in COMMANDS}
