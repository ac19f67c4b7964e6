"""`clapdex duplicates` / Index.duplicates: planted exact copies and re-encodings (another format,
level, trim) are found; different sounds are not. Indexed with the spectral TEST DOUBLE (not CLAP)."""

from __future__ import annotations

import json
import shutil

import pytest
from click.testing import CliRunner

import clapdex
from clapdex.cli import main
from tests.audio_collection import tone_mix, write_audio, write_vocabulary
from tests.doubles import SpectralTestEncoder

RATE = 8000


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("duplicates")
    audio = root / "audio"
    original = tone_mix((400, 1500), 6.0, RATE, seed=1)
    write_audio(audio / "a/original.wav", original, RATE)
    (audio / "b").mkdir()
    shutil.copy(audio / "a/original.wav", audio / "b/copy.wav")
    shutil.copy(audio / "a/original.wav", audio / "c_copy_too.wav")
    write_audio(audio / "formats/original.flac", original, RATE, subtype="PCM_16")   # re-encoded
    write_audio(audio / "formats/quieter.wav", 0.3 * original, RATE)                 # level
    write_audio(audio / "formats/trimmed.wav", original[RATE // 4:], RATE)            # trim
    write_audio(audio / "other/tone_200.wav", tone_mix((200,), 6.0, RATE, seed=2), RATE)
    write_audio(audio / "other/tone_2500.wav", tone_mix((2500,), 6.0, RATE, seed=3), RATE)
    index = clapdex.create_index(root / "index", SpectralTestEncoder(),
                                 vocabulary=str(write_vocabulary(root)))
    index.add([audio])
    index.close()
    return root, audio


def test_exact_copies_and_reencodings_are_found_and_other_sounds_are_not(planted):
    root, audio = planted
    with clapdex.open_index(root / "index") as index:
        pairs = index.duplicates()
    exact = {(p.path, p.duplicate_of) for p in pairs if p.kind == "exact"}
    original = str(audio / "a/original.wav")
    assert exact == {(str(audio / "b/copy.wav"), original),
                     (str(audio / "c_copy_too.wav"), original)}
    near = {frozenset((p.path, p.duplicate_of)) for p in pairs if p.kind == "near"}
    family = [original, str(audio / "formats/original.flac"), str(audio / "formats/quieter.wav"),
              str(audio / "formats/trimmed.wav")]
    for i, a in enumerate(family):
        for b in family[i + 1:]:
            assert frozenset((a, b)) in near, (a, b)
    others = {str(audio / "other/tone_200.wav"), str(audio / "other/tone_2500.wav")}
    assert not any(pair & others for pair in near)
    # copies of one original are not reported again as near-duplicates of each other
    assert frozenset((str(audio / "b/copy.wav"), str(audio / "c_copy_too.wav"))) not in near
    assert all(p.similarity >= 0.98 for p in pairs)


def test_exact_only_and_threshold(planted):
    root, _ = planted
    with clapdex.open_index(root / "index") as index:
        assert {p.kind for p in index.duplicates(near=False)} == {"exact"}
        loose = index.duplicates(threshold=-1.0)
        strict = index.duplicates(threshold=0.98)
    assert len(loose) > len(strict)  # at -1 every pair of files is "similar"


def test_cli_json_csv_and_text(planted, tmp_path):
    root, audio = planted
    run = CliRunner().invoke
    rows = [json.loads(line) for line in
            run(main, ["duplicates", "--index", str(root / "index"), "--json"]).stdout.splitlines()]
    assert {"kind", "similarity", "path", "file_id", "duplicate_of", "duplicate_of_id"} <= set(rows[0])
    csv_path = tmp_path / "dups.csv"
    made = run(main, ["duplicates", "--index", str(root / "index"), "--csv", str(csv_path)])
    assert made.exit_code == 0 and len(csv_path.read_text().splitlines()) == len(rows) + 1
    text = run(main, ["duplicates", "--index", str(root / "index"), "--exact"])
    assert text.exit_code == 0, text.output
    lines = text.stdout.splitlines()
    assert lines[0] == "exact copies: 2 files"
    assert f"    same content as {audio / 'a/original.wav'}" in lines
    bad = run(main, ["duplicates", "--index", str(root / "index"), "--threshold", "2"])
    assert bad.exit_code == 2
