"""Every command survives bad index locations and damaged databases with one `error:` line (never a
traceback): read-only folders, corrupt or empty databases, --index naming a file, unwritable
parents; plus the indexer's count of copied segments, broken symlinks and doctor's FAISS lag.
The spectral TEST DOUBLE replaces the model through the encoder seam (tests.doubles.use_encoder)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from contextlib import contextmanager, nullcontext
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner

from clapdex.cli import main
from clapdex.cli.common import SafeGroup
from clapdex.errors import IndexDamagedError, ReadOnlyIndexError
from clapdex.storage.database import IndexStore
from clapdex.storage.dense import DenseIndex
from tests.audio_collection import tone_mix, write_audio, write_vocabulary
from tests.doubles import SpectralTestEncoder, use_encoder

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


@pytest.fixture(autouse=True)
def test_double(monkeypatch):
    use_encoder(monkeypatch, lambda **settings: SpectralTestEncoder())


@pytest.fixture
def setup(tmp_path):
    audio = tmp_path / "audio"
    write_audio(audio / "a200.wav", tone_mix([200], 4.0, 8000, 1), 8000)
    write_audio(audio / "b700.wav", tone_mix([700], 2.0, 8000, 2), 8000)
    return {"audio": audio, "index": tmp_path / "index", "tmp": tmp_path,
            "vocab": str(write_vocabulary(tmp_path))}


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def index(setup, *extra, index_path=None):
    return run("index", setup["audio"], "--index", index_path or setup["index"],
               "--vocab", setup["vocab"], *extra)


def assert_one_line_error(result, *expected: str) -> str:
    """Exit 1, exactly one `error:` line on stderr, no traceback; returns that line."""
    assert result.exit_code == 1, (result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@contextmanager
def read_only(folder: Path):
    """Make `folder` unwritable: `chattr +i` as root (root ignores chmod), chmod otherwise."""
    if IS_ROOT:
        if shutil.which("chattr") is None:
            pytest.skip("running as root without chattr: cannot make a folder read-only")
        made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True)
        if made.returncode != 0:
            pytest.skip(f"chattr +i not supported here: {made.stderr.decode().strip()}")
        try:
            yield
        finally:
            subprocess.run(["chattr", "-i", str(folder)], check=True)
    else:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(mode)


# ---- 1. a read-only index folder -------------------------------------------------------------

def test_read_only_index_serves_reads_and_refuses_writes(setup):
    assert index(setup).exit_code == 0
    (setup["index"] / "dense.faiss").unlink()  # search must rebuild FAISS in memory only
    before = sorted(p.name for p in setup["index"].iterdir())
    with read_only(setup["index"]):
        searched = run("search", "a 200 hz tone", "--index", setup["index"], "--json")
        assert searched.exit_code == 0, searched.output
        hits = [json.loads(line) for line in searched.stdout.splitlines()]
        assert hits and hits[0]["path"].endswith("a200.wav")

        status = run("status", "--index", setup["index"], "--json")
        assert status.exit_code == 0, status.output
        assert json.loads(status.stdout)["counts"]["files"] == 2

        report = setup["tmp"] / "report.html"
        for command in (["concepts"], ["audit", "a 200 hz tone"], ["show", "a200.wav"],
                        ["report", "-o", report]):
            result = run(*command, "--index", setup["index"])
            assert result.exit_code == 0, (command, result.output, result.exception)
        assert report.stat().st_size > 0
        doctor = run("doctor", "--index", setup["index"])  # a report, not an error
        assert doctor.exit_code == 1 and isinstance(doctor.exception, SystemExit)
        assert "problem: FAISS file is missing" in doctor.output and "error:" not in doctor.output

        with IndexStore.open(setup["index"]) as store:  # the API: reads work, writes say why
            assert store.read_only and store.counts()["segments"] == 3
            with pytest.raises(ReadOnlyIndexError, match="read-only"):
                store.update_settings(lam=0.5)

        assert_one_line_error(index(setup), "read-only")
        assert_one_line_error(run("reindex", "--index", setup["index"], "--lambda", "0.1"),
                              "read-only")
        assert_one_line_error(run("doctor", "--repair", "--index", setup["index"]), "read-only")
        assert sorted(p.name for p in setup["index"].iterdir()) == before  # nothing written
    assert index(setup).exit_code == 0  # writable again: works as before


def test_concepts_on_a_read_only_index_after_a_reindex(setup):
    """A reindex leaves the audit totals stale; read-only, they are computed without writing."""
    assert index(setup).exit_code == 0
    assert run("reindex", "--index", setup["index"], "--lambda", "0.01").exit_code == 0
    before = sorted(p.name for p in setup["index"].iterdir())
    with read_only(setup["index"]):
        listed = run("concepts", "--index", setup["index"], "--json")
        assert listed.exit_code == 0, (listed.output, listed.exception)
        assert sorted(p.name for p in setup["index"].iterdir()) == before
    rebuilt = run("concepts", "--index", setup["index"], "--json")  # writable: stored, then read
    assert rebuilt.exit_code == 0, rebuilt.output
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert rows and rows == [json.loads(line) for line in rebuilt.stdout.splitlines()]


def test_cannot_create_an_index_in_a_read_only_folder(setup):
    parent = setup["tmp"] / "locked"
    parent.mkdir()
    with read_only(parent):
        assert_one_line_error(index(setup, index_path=parent / "index"),
                              "cannot create index folder", "permission denied")
        assert_one_line_error(index(setup, index_path=parent), "read-only")
    assert list(parent.iterdir()) == []


# ---- 2. a damaged database -------------------------------------------------------------------

@pytest.mark.parametrize("content", [b"", b"this is not a database\n" * 200], ids=["empty", "junk"])
def test_damaged_database_gives_one_line_with_the_rebuild_command(setup, content):
    setup["index"].mkdir()
    (setup["index"] / "clapdex.sqlite").write_bytes(content)
    for command in (["status"], ["search", "dog"], ["doctor"], ["concepts"]):
        line = assert_one_line_error(run(*command, "--index", setup["index"]), "is damaged")
        assert f"clapdex index --rebuild --index {setup['index']}" in line
    with pytest.raises(IndexDamagedError):
        IndexStore.open(setup["index"])
    assert_one_line_error(index(setup), "is damaged")
    rebuilt = index(setup, "--rebuild", "--json")  # the command the message names works
    assert rebuilt.exit_code == 0, rebuilt.output
    assert json.loads(rebuilt.stdout)["added"] == 2


def test_corruption_found_after_opening_is_reported_as_damage(setup):
    assert index(setup).exit_code == 0
    database = setup["index"] / "clapdex.sqlite"
    data = bytearray(database.read_bytes())
    page = 4096
    assert len(data) > 3 * page
    data[page:] = b"\xff" * (len(data) - page)  # keep the header page, ruin every table page
    database.write_bytes(bytes(data))
    line = assert_one_line_error(run("status", "--index", setup["index"]))
    assert "damaged" in line or "malformed" in line


# ---- 3. --index naming a file or an unwritable place -----------------------------------------

def test_index_option_naming_a_file(setup):
    a_file = setup["tmp"] / "notes.txt"
    a_file.write_text("not an index\n")
    for command in (["index", setup["audio"], "--vocab", setup["vocab"]], ["status"], ["search", "dog"],
                    ["doctor"], ["reindex"]):
        assert_one_line_error(run(*command, "--index", a_file), f"{a_file} is a file, not an index folder")
    assert_one_line_error(index(setup, index_path=a_file / "index"), "cannot create index folder")
    assert a_file.read_text() == "not an index\n"


# ---- 4. the backstop in SafeGroup ------------------------------------------------------------

def test_backstop_turns_os_and_database_errors_into_one_line():
    import sqlite3

    from sqlalchemy.exc import OperationalError

    @click.group(cls=SafeGroup)
    def group():
        pass

    @group.command()
    def disk():
        raise OSError(28, "No space left on device", "/data/index/clapdex.sqlite")

    @group.command()
    def locked():
        raise OperationalError("SELECT 1\nFROM files", {}, sqlite3.OperationalError("database is locked"))

    @group.command()
    def bug():
        raise ZeroDivisionError("a bug in clapdex")

    @group.command()
    def stop():
        raise KeyboardInterrupt

    runner = CliRunner()
    assert_one_line_error(runner.invoke(group, ["disk"]), "/data/index/clapdex.sqlite",
                          "No space left on device")
    line = assert_one_line_error(runner.invoke(group, ["locked"]), "database is locked")
    assert "SELECT" not in line
    crashed = runner.invoke(group, ["bug"])  # a bug keeps its traceback so that it gets reported
    assert isinstance(crashed.exception, ZeroDivisionError)
    assert runner.invoke(group, ["stop"]).exit_code == 130


# ---- 5. segments_added counts copies ---------------------------------------------------------

def test_copied_files_count_in_segments_added(setup):
    first = json.loads(index(setup, "--json").stdout)
    assert first["added"] == 2 and first["segments_added"] == 3  # 4 s + 2 s in 2 s windows
    shutil.copy(setup["audio"] / "a200.wav", setup["audio"] / "copy_of_a200.wav")
    second = json.loads(index(setup, "--json").stdout)
    assert second["copied"] == 1 and second["added"] == 0
    assert second["segments_added"] == 2


# ---- 6. broken symlinks ----------------------------------------------------------------------

def test_broken_symlinks_are_reported_as_skipped(setup):
    (setup["audio"] / "gone.wav").symlink_to(setup["tmp"] / "nowhere.wav")
    (setup["audio"] / "gone.txt").symlink_to(setup["tmp"] / "nowhere.txt")  # not audio: ignored
    (setup["audio"] / "loop.flac").symlink_to(setup["audio"] / "loop.flac")
    summary = json.loads(index(setup, "--json").stdout)
    assert summary["added"] == 2
    assert sorted((Path(s["path"]).name, s["error"]) for s in summary["skipped"]) == [
        ("gone.wav", "broken symlink"), ("loop.flac", "broken symlink")]


# ---- 7. doctor: a lagging FAISS file is a warning --------------------------------------------

def test_doctor_warns_when_faiss_lags_and_fails_when_it_has_extra_ids(setup):
    assert index(setup).exit_code == 0
    with IndexStore.open(setup["index"]) as store:
        ids, embeddings = store.segment_embeddings()
        settings = store.settings
        lagging = DenseIndex.empty(settings.dimension, settings.faiss_factory)
        lagging.add(ids[:1], embeddings[:1])  # as after a run interrupted before the FAISS save
        lagging.save(store.faiss_path)
    report = run("doctor", "--index", setup["index"])
    assert report.exit_code == 0, report.output
    assert "warning: FAISS lags the database (1 of 3 segments)" in report.output
    assert "problem" not in report.output
    as_json = json.loads(run("doctor", "--index", setup["index"], "--json").stdout)
    assert as_json["ok"] and as_json["faiss_lags"]

    extra = DenseIndex.empty(settings.dimension, settings.faiss_factory)
    extra.add(np.append(ids, ids.max() + 100), np.vstack([embeddings, embeddings[:1]]))
    extra.save(setup["index"] / "dense.faiss")
    sick = run("doctor", "--index", setup["index"])
    assert sick.exit_code == 1 and "problem: FAISS holds 4 segments" in sick.output


# ---- 8. the fingerprint reference ------------------------------------------------------------

def test_fingerprint_help_names_commands_that_exist():
    help_text = run("import-embeddings", "--help").output
    assert "clapdex model check" in help_text and "model info" not in help_text
    assert run("model", "check", "--help").exit_code == 0
    assert run("model", "info", "--help").exit_code != 0


def test_index_folder_names_with_url_characters(setup):
    """"?", "#" and "%" in the folder name stay part of the path (SQLite URLs are built, not
    formatted), in writable and in read-only folders."""
    odd = setup["tmp"] / "odd ?#%20 name"
    assert index(setup, index_path=odd).exit_code == 0
    assert (odd / "clapdex.sqlite").exists()
    for writable in (True, False):
        with nullcontext() if writable else read_only(odd):
            status = run("status", "--index", odd, "--json")
            assert status.exit_code == 0, status.output
            assert json.loads(status.stdout)["counts"]["files"] == 2
