"""How user-typed names and path globs meet stored paths: several `--path` globs (ORed), globs
that ignore case and Unicode normalisation, names typed in NFD (as macOS types them), two files
whose names differ only in normalisation, and files deleted since they were indexed (marked
missing in search and show). Built with the TEST DOUBLE encoder (tests.doubles, not CLAP)."""

from __future__ import annotations

import json
import os
import unicodedata

import pytest
from click.testing import CliRunner

from clapdex import open_index
from clapdex.cli import main
from clapdex.errors import AmbiguousFileError
from tests.doubles import use_encoder, SpectralTestEncoder
from tests.search_fixtures import build_index

NFC_E = unicodedata.normalize("NFC", "é")
NFD_E = unicodedata.normalize("NFD", "é")
CORPUS = {
    "drums/KICK.WAV": [((500,), 2.0)],
    "drums/snare.wav": [((1000,), 2.0)],
    f"fx/caf{NFC_E}.wav": [((2000,), 2.0)],
    f"pair/{NFC_E}{NFC_E}.wav": [((250,), 2.0)],        # the same name twice, in NFC ...
    f"pair/{NFD_E}{NFD_E}.wav": [((3000,), 2.0)],        # ... and in NFD: two files on Linux
    "raw/caf\udce9.wav": [((1500,), 2.0)],               # a Latin-1 name (not UTF-8)
    "keys/organ.wav": [((750,), 2.0)],
}
ALL = 100


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    return build_index(tmp_path_factory.mktemp("names"), corpus=CORPUS)


def _paths(results) -> set[str]:
    return {r.path for r in results}


def _everything(index, **options):
    return index.search(text="a 500 hz tone", mode="dense", k=ALL, **options)


def test_several_globs_keep_the_files_matching_any(named):
    with open_index(named.root, encoder=named.encoder) as index:
        drums, keys = _paths(_everything(index, path="drums/*")), \
            _paths(_everything(index, path="keys/*"))
        both = _paths(_everything(index, path=["drums/*", "keys/*"]))
    assert drums == {named.paths["drums/KICK.WAV"], named.paths["drums/snare.wav"]}
    assert keys == {named.paths["keys/organ.wav"]}
    assert both == drums | keys


def test_globs_ignore_case(named):
    with open_index(named.root, encoder=named.encoder) as index:
        wavs = _paths(_everything(index, path="*.wav"))
        upper = _paths(_everything(index, path="DRUMS/*.Wav"))
    assert wavs == set(named.paths.values())  # KICK.WAV too, as the indexer takes it
    assert upper == {named.paths["drums/KICK.WAV"], named.paths["drums/snare.wav"]}


def test_globs_ignore_unicode_normalisation_and_keep_non_utf8_names(named):
    with open_index(named.root, encoder=named.encoder) as index:
        nfd_typed = _paths(_everything(index, path=f"fx/caf{NFD_E}.wav"))
        pair = _paths(_everything(index, path=f"pair/{NFD_E}*"))
        raw = _paths(_everything(index, path="raw/caf\udce9.wav"))
    assert nfd_typed == {named.paths[f"fx/caf{NFC_E}.wav"]}
    assert pair == {named.paths[f"pair/{NFC_E}{NFC_E}.wav"], named.paths[f"pair/{NFD_E}{NFD_E}.wav"]}
    assert raw == {named.paths["raw/caf\udce9.wav"]}


def test_a_name_typed_in_nfd_finds_the_file_stored_in_nfc(named, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing of that name here
    stored = named.paths[f"fx/caf{NFC_E}.wav"]
    nfd_path = unicodedata.normalize("NFD", stored)
    assert nfd_path != stored
    with open_index(named.root, encoder=named.encoder) as index:
        assert index.file(f"caf{NFD_E}.wav").path == stored             # the end of the path
        assert index.file(f"fx/caf{NFD_E}.wav").path == stored
        assert index.file(nfd_path).path == stored                      # the whole path
        similar = index.similar(f"caf{NFD_E}.wav", k=1, include_self=True)
        assert similar.query.audio_file == stored and similar[0].path == stored
        assert index.file("caf\udce9.wav").path == named.paths["raw/caf\udce9.wav"]


def test_names_that_differ_only_in_normalisation_stay_two_files(named, tmp_path, monkeypatch):
    """Each is found by its exact name; a third form of the name (one é composed, one not)
    matches both and is refused as ambiguous rather than picking one."""
    monkeypatch.chdir(tmp_path)
    composed, decomposed = named.paths[f"pair/{NFC_E}{NFC_E}.wav"], \
        named.paths[f"pair/{NFD_E}{NFD_E}.wav"]
    with open_index(named.root, encoder=named.encoder) as index:
        assert index.file(f"{NFC_E}{NFC_E}.wav").path == composed
        assert index.file(f"{NFD_E}{NFD_E}.wav").path == decomposed
        assert index.file(composed).path == composed and index.file(decomposed).path == decomposed
        with pytest.raises(AmbiguousFileError, match="matches 2 files"):
            index.file(f"{NFC_E}{NFD_E}.wav")
        with pytest.raises(AmbiguousFileError, match="matches 2 files"):
            index.file(os.path.join(os.path.dirname(composed), f"{NFC_E}{NFD_E}.wav"))


def test_cli_takes_path_several_times(named, monkeypatch):
    use_encoder(monkeypatch, lambda **_: SpectralTestEncoder())
    result = CliRunner().invoke(main, ["search", "a 500 hz tone", "--mode", "dense", "-k", "50",
                                       "--index", str(named.root), "--json",
                                       "--path", "drums/*", "--path", "KEYS/*"])
    assert result.exit_code == 0, result.output
    assert {json.loads(line)["path"] for line in result.output.splitlines()} == {
        named.paths["drums/KICK.WAV"], named.paths["drums/snare.wav"],
        named.paths["keys/organ.wav"]}


def test_a_deleted_file_is_marked_missing_in_search_and_show(tmp_path, monkeypatch):
    fixture = build_index(tmp_path, corpus={"a.wav": [((500,), 2.0)], "b.wav": [((500,), 2.0)]})
    gone, kept = fixture.paths["a.wav"], fixture.paths["b.wav"]
    os.remove(gone)
    with open_index(fixture.root, encoder=fixture.encoder) as index:
        results = index.search(text="a 500 hz tone", k=5)
        assert {r.path: r.missing for r in results} == {gone: True, kept: False}
        assert index.file(gone).missing and not index.file(kept).missing
    monkeypatch.chdir(tmp_path)
    use_encoder(monkeypatch, lambda **_: SpectralTestEncoder())
    runner = CliRunner()
    shown = runner.invoke(main, ["search", "a 500 hz tone", "--index", str(fixture.root)])
    headlines = [line for line in shown.output.splitlines() if line[:1].isdigit()]
    assert sorted(headlines)[0].endswith("a.wav  [missing from disk]")
    assert [h for h in headlines if "b.wav" in h][0].endswith("b.wav")
    show = runner.invoke(main, ["show", gone, "--index", str(fixture.root)])
    assert show.exit_code == 0 and show.output.splitlines()[0].endswith("[missing from disk]")
    rows = [json.loads(line) for line in runner.invoke(
        main, ["show", gone, "--index", str(fixture.root), "--json"]).output.splitlines()]
    assert rows and all(row["missing"] is True for row in rows)
