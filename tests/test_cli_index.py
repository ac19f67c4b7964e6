"""`clapdex index / reindex / import-embeddings / status / doctor` through click, with the spectral
TEST DOUBLE injected by the encoder seam (tests.doubles.use_encoder)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from clapdex.cli import main
from clapdex.storage.database import IndexStore
from tests.audio_collection import make_collection, write_vocabulary
from tests.doubles import SpectralTestEncoder, use_encoder


@pytest.fixture
def encoders(monkeypatch):
    """Every model load returns a new test double; the list holds them (to count audio calls)."""
    made = []

    def load_encoder(**settings):
        made.append(SpectralTestEncoder())
        return made[-1]

    use_encoder(monkeypatch, load_encoder)
    return made


@pytest.fixture
def setup(tmp_path):
    files = make_collection(tmp_path / "audio")
    return {"audio": tmp_path / "audio", "index": tmp_path / "index",
            "vocab": str(write_vocabulary(tmp_path)), "bad": files["bad"], "tmp": tmp_path}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def _index(setup, *extra):
    return run("index", setup["audio"], "--index", setup["index"], "--vocab", setup["vocab"], *extra)


def test_index_json_summary_then_status(setup, encoders):
    result = _index(setup, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["added"] == 5 and summary["segments_added"] == 10 and summary["completed"]
    assert {s["path"] for s in summary["skipped"]} == {str(p) for p in setup["bad"]}

    result = run("status", "--index", setup["index"], "--json")
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert status["counts"]["files"] == 5 and status["counts"]["errors"] == 3
    assert status["settings"]["vocabulary_name"] == "tones"
    assert status["settings"]["encoder_fingerprint"] == SpectralTestEncoder().fingerprint
    assert status["settings"]["audio_mean_set"] is True
    assert {e["path"] for e in status["errors"]} == {str(p) for p in setup["bad"]}
    assert status["disk"]["database_bytes"] > 0 and status["disk"]["faiss_bytes"] > 0

    text = run("status", "--index", setup["index"])
    assert text.exit_code == 0 and "5 files, 10 segments" in text.output
    assert "empty file (0 bytes)" in text.output


def test_human_summary_lists_skipped_files_and_strict_fails(setup, encoders):
    result = _index(setup)
    assert result.exit_code == 0, result.output
    assert "5 added" in result.stdout and "skipped 3 files:" in result.stdout
    assert str(setup["bad"][0]) in result.stdout
    strict = _index(setup, "--strict")
    assert strict.exit_code == 1
    assert "error: 3 files skipped (--strict)" in strict.output
    assert "Traceback" not in strict.output
    assert encoders[-1].audio_calls == 0            # the re-run encoded nothing


def test_missing_path_and_mismatch_are_one_line_errors(setup, encoders):
    missing = run("index", setup["tmp"] / "nope", "--index", setup["index"])
    assert missing.exit_code == 1 and "no such file or folder" in missing.output
    assert "Traceback" not in missing.output
    assert not IndexStore.exists(setup["index"])   # nothing was created

    assert _index(setup).exit_code == 0
    mismatch = _index(setup, "--lambda", "0.5")
    assert mismatch.exit_code == 1
    line = mismatch.output.strip()
    assert line.startswith("error: ") and "\n" not in line
    # settings are named as the options say, not by their attribute names (lam, hop_seconds)
    assert "lambda is 0.05, requested 0.5" in line and "clapdex reindex --lambda" in line
    hop = _index(setup, "--hop", "0.5")
    assert hop.exit_code == 1 and "hop (s) is " in hop.output and "hop_seconds" not in hop.output

    bad_faiss = _index(setup, "--faiss", "garbage")
    assert bad_faiss.exit_code == 1
    assert bad_faiss.output == ("error: invalid FAISS factory string 'garbage' "
                                "(could not parse index string garbage)\n")


def test_decomposition_option_help_gives_values_not_symbols():
    from clapdex.concepts.decompose import DEFAULT_LAMBDA

    for command in ("index", "import-embeddings"):
        text = " ".join(run(command, "--help").output.split())
        assert f"default for a new index: {DEFAULT_LAMBDA:g};" in text, text
        assert "DEFAULT_LAMBDA" not in text
        assert "default for a new index: the built-in 'default'" in text
    reindex_help = " ".join(run("reindex", "--help").output.split())
    assert "new index" not in reindex_help and "DEFAULT_LAMBDA" not in reindex_help
    assert "(default: the index's)" in reindex_help


def test_max_concepts_must_be_positive(setup, encoders):
    for command in (["index", setup["audio"]], ["reindex"]):
        result = run(*command, "--index", setup["index"], "--max-concepts", "0")
        assert result.exit_code == 2 and "0 is not in the range x>=1" in result.output
    assert not IndexStore.exists(setup["index"])


def test_no_index_is_a_clear_error(setup, encoders):
    result = run("status", "--index", setup["tmp"] / "none")
    assert result.exit_code == 1 and "no index at" in result.output


def test_reindex_cli_changes_lambda_without_the_model(setup, encoders):
    assert _index(setup).exit_code == 0
    loads = len(encoders)
    result = run("reindex", "--index", setup["index"], "--lambda", "0.3", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["lam"] == 0.3 and summary["segments"] == 10
    assert summary["postings_after"] < summary["postings_before"]
    assert len(encoders) == loads                  # a new λ needs no model
    both = run("reindex", "--index", setup["index"], "--lambda", "0.3", "--max-concepts", "2")
    assert both.exit_code == 1 and "not both" in both.output


def test_import_embeddings_cli(setup, encoders):
    rng = np.random.default_rng(0)
    embeddings = rng.standard_normal((5, 64)).astype(np.float32)
    np.save(setup["tmp"] / "emb.npy", embeddings)
    (setup["tmp"] / "files.csv").write_text(
        "path,start,end,size,mtime_ns\n"
        "clips/x.wav,0,2,100,1\nclips/x.wav,2,4,100,1\nclips/y.wav,0,2,50,1\n"
        "clips/y.wav,2,3.5,50,1\n/abs/z.wav,0,1.2,10,1\n")
    args = ("import-embeddings", setup["tmp"] / "emb.npy", "--manifest", setup["tmp"] / "files.csv",
            "--index", setup["index"], "--vocab", setup["vocab"])
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["added"] == 3 and summary["segments_added"] == 5
    with IndexStore.open(setup["index"]) as store:
        paths = [row.path for row in store.files()]
        assert str(setup["tmp"] / "clips" / "x.wav") in paths and "/abs/z.wav" in paths
        _, stored = store.segment_embeddings()
        np.testing.assert_array_equal(stored, embeddings)

    wrong = run(*args, "--fingerprint", "another-model")
    assert wrong.exit_code == 1 and "was built with model" in wrong.output
    # issue 15.8g: the fix given is the index's fingerprint (where to see it) or another index
    assert len(wrong.output.strip().splitlines()) == 1 and "rebuild" not in wrong.output
    assert "--fingerprint" in wrong.output and "clapdex status" in wrong.output
    assert "--index" in wrong.output
    np.save(setup["tmp"] / "short.npy", embeddings[:3])
    short = run("import-embeddings", setup["tmp"] / "short.npy", "--manifest",
                setup["tmp"] / "files.csv", "--index", setup["index"])
    assert short.exit_code == 1 and "3 embedding rows but 5 manifest rows" in short.output
    (setup["tmp"] / "junk.npy").write_text("junk")
    junk = run("import-embeddings", setup["tmp"] / "junk.npy", "--manifest",
               setup["tmp"] / "files.csv", "--index", setup["index"])
    assert junk.exit_code == 1 and "not a readable .npy" in junk.output


def test_import_embeddings_under_a_root(setup, encoders):
    """--root as for `clapdex index`: defined before anything is stored, manifest paths under it
    stored relative to it, others absolute; a bad root changes nothing."""
    from sqlalchemy import Text, select, type_coerce

    from clapdex.storage.schema import ROOT_MARK, FileRow

    library = setup["tmp"] / "library"
    (library / "a").mkdir(parents=True)
    np.save(setup["tmp"] / "emb.npy",
            np.random.default_rng(1).standard_normal((3, 64)).astype(np.float32))
    (setup["tmp"] / "files.csv").write_text(
        "path,start,end\nlibrary/a/x.wav,0,2\nlibrary/a/x.wav,2,4\n/abs/z.wav,0,1\n")
    args = ("import-embeddings", setup["tmp"] / "emb.npy", "--manifest", setup["tmp"] / "files.csv",
            "--index", setup["index"], "--vocab", setup["vocab"])
    result = run(*args, "--root", f"lib={library}")
    assert result.exit_code == 0, result.output
    with IndexStore.open(setup["index"]) as store:
        assert store.settings.roots == {"lib": str(library)}
        with store.session() as session:
            stored = sorted(session.scalars(select(type_coerce(FileRow.path, Text()))))
        assert stored == sorted([f"{ROOT_MARK}lib/a/x.wav", "/abs/z.wav"])
        assert {row.path for row in store.files()} == {str(library / "a" / "x.wav"), "/abs/z.wav"}
    bad = run(*args, "--root", f"lib={setup['tmp'] / 'nowhere'}")
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    with IndexStore.open(setup["index"]) as store:
        assert store.settings.roots == {"lib": str(library)} and store.counts()["files"] == 2


def test_doctor_finds_and_repairs_problems(setup, encoders):
    assert _index(setup).exit_code == 0
    healthy = run("doctor", "--index", setup["index"], "--json")
    assert healthy.exit_code == 0, healthy.output
    assert json.loads(healthy.stdout)["ok"] is True

    (setup["index"] / "dense.faiss").unlink()
    sick = run("doctor", "--index", setup["index"])
    assert sick.exit_code == 1 and "FAISS file is missing" in sick.output

    repaired = run("doctor", "--index", setup["index"], "--repair", "--json")
    assert repaired.exit_code == 0, repaired.output
    report = json.loads(repaired.stdout)
    assert report["ok"] and report["faiss"]["agree"] and report["repaired"]

    faiss_file = setup["index"] / "dense.faiss"
    faiss_file.write_bytes(faiss_file.read_bytes()[:40] + b"\x07" * 200)  # damaged
    damaged = run("doctor", "--index", setup["index"])
    assert damaged.exit_code == 1
    problems = [line for line in damaged.output.splitlines() if line.startswith("problem:")]
    assert problems == [f"problem: the FAISS file {faiss_file} is damaged (FAISS cannot read "
                        "it); clapdex doctor --repair rebuilds it from the database"]
    assert "faiss::" not in damaged.output and "index_read" not in damaged.output
    assert run("doctor", "--index", setup["index"], "--repair").exit_code == 0

    (setup["audio"] / "short.aiff").unlink()
    missing = run("doctor", "--index", setup["index"])
    assert missing.exit_code == 1 and "no longer exist" in missing.output
    assert "short.aiff" in missing.output
    rerun = _index(setup)
    assert rerun.exit_code == 0, rerun.output
    assert "  1 indexed file no longer on disk; --prune removes it from the index" in \
        rerun.output.splitlines()
    pruned = _index(setup, "--prune", "--json")
    assert json.loads(pruned.stdout)["removed"] == 1
    assert run("doctor", "--index", setup["index"]).exit_code == 0


def test_index_location_from_environment(setup, encoders, monkeypatch):
    monkeypatch.setenv("CLAPDEX_INDEX", str(setup["tmp"] / "env-index"))
    result = run("index", setup["audio"] / "tones", "--vocab", setup["vocab"], "--json")
    assert result.exit_code == 0, result.output
    assert IndexStore.exists(setup["tmp"] / "env-index")
    assert run("status", "--json").exit_code == 0


@pytest.mark.parametrize("columns", [60, 80, 200])
def test_index_summary_and_status_fit_the_terminal(setup, encoders, monkeypatch, columns):
    """Paths (never cut) have lines of their own; every other line fits $COLUMNS."""
    monkeypatch.setenv("COLUMNS", str(columns))
    paths = {str(setup["index"])} | {str(p) for p in setup["bad"]}
    for result in (_index(setup), run("status", "--index", setup["index"])):
        assert result.exit_code == 0, result.output
        lines = result.stdout.splitlines()
        long = [line for line in lines if len(line) > columns]
        assert all(any(p in line for p in paths) for line in long), long
    assert any("5 added" in line for line in _index(setup, "--rebuild").stdout.splitlines())
