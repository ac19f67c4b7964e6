"""Named roots (storage/roots.py): files under a root are stored relative to it, so an index keeps
working when the whole collection is mounted elsewhere. Indexed with the spectral TEST DOUBLE (not
CLAP); on SQLite and PostgreSQL (`backend`, tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
import sqlite3

import pytest
import soundfile
from click.testing import CliRunner
from sqlalchemy import Text, select, type_coerce

import clapdex
from clapdex.cli import main
from clapdex.errors import RootError, UnknownRootError
from clapdex.storage.database import DB_FILE, IndexStore
from clapdex.storage.schema import ROOT_MARK, SCHEMA_VERSION, FileRow, IndexSettingsRow
from tests.audio_collection import tone_mix, write_audio, write_vocabulary
from tests.doubles import SpectralTestEncoder, use_encoder

TONES = {"drums/kick.wav": 200, "drums/snare.wav": 700, "pads/warm.flac": 1000,
         "pads/deep/low.wav": 400}


def collection(folder):
    for name, freq in TONES.items():
        write_audio(folder / name, tone_mix([freq], 3.0, 8000, seed=freq), 8000)
    return folder


def stored_paths(store) -> list[str]:
    """files.path as the database holds it."""
    with store.session() as session:
        return sorted(session.scalars(select(type_coerce(FileRow.path, Text()))))


def new_index(path, vocab):
    return clapdex.create_index(path, SpectralTestEncoder(), vocabulary=str(vocab), lam=0.01)


@pytest.fixture
def built(tmp_path):
    """The collection at A/library (root `lib`) plus one file outside any root, indexed."""
    library = collection(tmp_path / "A" / "library")
    outside = write_audio(tmp_path / "elsewhere" / "hum.wav", tone_mix([1500], 3.0, 8000), 8000)
    vocab = write_vocabulary(tmp_path)
    with new_index(tmp_path / "index", vocab) as index:
        summary = index.add([library, outside], roots=[f"lib={library}"])
    assert summary.added == len(TONES) + 1
    return tmp_path, library, outside


def test_files_under_a_root_are_stored_relative_to_it_others_absolute(built):
    base, library, outside = built
    with IndexStore.open(base / "index") as store:
        assert store.settings.roots == {"lib": str(library)}
        assert stored_paths(store) == sorted([str(outside)] + [f"{ROOT_MARK}lib/{name}"
                                                               for name in TONES])
        # every reader above storage sees OS paths
        assert sorted(row.path for row in store.files()) == sorted(
            [str(outside)] + [str(library / name) for name in TONES])


def test_a_copied_index_works_after_one_setting_change(built, backend):
    """Copy the index folder and the collection to another 'machine' (another mount point), make
    the originals disappear, change the root once: search, show, audit, duplicates, the web app's
    audio, a re-run of index and doctor all work with the new paths."""
    base, library, outside = built
    mount = base / "B" / "mnt" / "lib"
    shutil.copytree(library, mount, copy_function=shutil.copy2)  # keeps mtimes, as rsync -t does
    shutil.copytree(base / "index", base / "copy")
    shutil.rmtree(base / "A")

    with clapdex.open_index(base / "copy", SpectralTestEncoder()) as index:
        info = index.set_root("lib", mount)
        assert (info.location, info.files, info.exists) == (str(mount), len(TONES), True)

        hits = index.search(text="a 700 hz tone", k=len(TONES) + 1)
        assert {hit.path for hit in hits} == {str(mount / n) for n in TONES} | {str(outside)}
        assert hits[0].path == str(mount / "drums/snare.wav")
        assert index.file("snare.wav").path == str(mount / "drums/snare.wav")
        assert index.file(str(mount / "pads/warm.flac")).path == str(mount / "pads/warm.flac")
        similar = index.similar(str(mount / "drums/kick.wav"), k=1, include_self=True)
        assert similar.query.audio_indexed and similar[0].path == str(mount / "drums/kick.wav")
        audit = index.audit("a 200 hz tone")
        assert audit.matches and all(m.path.startswith(str(mount)) for m in audit.matches)

        summary = index.add([mount, outside])
        assert (summary.added, summary.updated, summary.moved, summary.copied,
                summary.unchanged) == (0, 0, 0, 0, len(TONES) + 1)
        report = index.doctor()
        assert report.ok, report.lines
        assert not report.missing_files

    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from clapdex.server import create_app

    with clapdex.open_index(base / "copy", SpectralTestEncoder()) as index:
        client = TestClient(create_app(index))
        files = client.get("/api/files", params={"limit": 100}).json()["files"]
        kick = next(f for f in files if f["path"].endswith("kick.wav"))
        assert kick["path"] == str(mount / "drums/kick.wav")
        audio = client.get(f"/api/files/{kick['id']}/audio")
        assert audio.status_code == 200
        assert audio.content == (mount / "drums/kick.wav").read_bytes()


def test_the_environment_moves_a_root_for_one_process(built, monkeypatch):
    base, library, _ = built
    mount = base / "media" / "lib"
    shutil.copytree(library, mount, copy_function=shutil.copy2)
    shutil.rmtree(library)
    with clapdex.open_index(base / "index") as index:
        [info] = index.roots()
        assert not info.exists and info.files == len(TONES)
        report = index.doctor()
        assert not report.ok and not report.missing_files  # the root, not 4 lost files
        assert any("root lib is at" in line for line in report.lines)
        # search's derived files are written now, by a process without the variable
        assert index.search(concepts=["a 400 hz tone"], k=1)[0].path == str(library / "pads/deep/low.wav")
    monkeypatch.setenv("CLAPDEX_ROOT_LIB", str(mount))
    with clapdex.open_index(base / "index", SpectralTestEncoder()) as index:
        [info] = index.roots()
        assert info.from_env and info.exists and info.effective == str(mount)
        assert info.location == str(library)  # nothing stored changed
        assert index.search(text="a 400 hz tone", k=1)[0].path == str(mount / "pads/deep/low.wav")
        assert index.doctor().ok
        with pytest.raises(RootError, match="CLAPDEX_ROOT_LIB"):
            index.set_root("lib", mount)  # the stored value would not apply in this process


def test_moves_inside_a_root_and_prune_work_on_relative_rows(built):
    base, library, _ = built
    (library / "drums" / "kick.wav").rename(library / "kick_moved.wav")
    (library / "pads" / "warm.flac").unlink()
    with clapdex.open_index(base / "index", SpectralTestEncoder()) as index:
        summary = index.add([library], prune=True)
        assert (summary.moved, summary.removed, summary.added) == (1, 1, 0)
        assert index.file("kick_moved.wav").path == str(library / "kick_moved.wav")
    with IndexStore.open(base / "index") as store:
        assert f"{ROOT_MARK}lib/kick_moved.wav" in stored_paths(store)


def test_a_root_given_to_an_existing_index_takes_its_files_and_can_be_removed(tmp_path):
    library = collection(tmp_path / "library")
    vocab = write_vocabulary(tmp_path)
    with new_index(tmp_path / "index", vocab) as index:
        index.add([library])
        before = [(h.path, h.score) for h in index.search(text="a 200 hz tone", k=4)]
        summary = index.add([library], roots=[str(library)])  # named after its folder
        assert summary.unchanged == len(TONES) and summary.added == 0
        assert [(r.name, r.files) for r in index.roots()] == [("library", len(TONES))]
        assert [(h.path, h.score) for h in index.search(text="a 200 hz tone", k=4)] == before
        with IndexStore.open(tmp_path / "index") as store:
            assert all(p.startswith(ROOT_MARK + "library/") for p in stored_paths(store))
        assert index.remove_root("library") == len(TONES)
        assert index.roots() == []
        with IndexStore.open(tmp_path / "index") as store:
            assert stored_paths(store) == sorted(str(library / n) for n in TONES)
        assert [(h.path, h.score) for h in index.search(text="a 200 hz tone", k=4)] == before
        assert index.add([library]).unchanged == len(TONES)


def test_bad_roots_are_one_line_errors_and_change_nothing(built):
    base, library, _ = built
    with clapdex.open_index(base / "index", SpectralTestEncoder()) as index:
        with pytest.raises(RootError, match="does not exist"):
            index.set_root("lib", base / "nowhere")
        with pytest.raises(RootError, match="would nest"):
            index.set_root("drums", library / "drums")
        with pytest.raises(RootError, match="would nest"):
            index.set_root("top", base)
        with pytest.raises(RootError, match="not usable"):
            index.set_root("9lives", library)
        with pytest.raises(RootError, match="differ only in case"):
            index.set_root("LIB", base / "elsewhere")
        with pytest.raises(RootError, match="not a folder"):
            index.add([library], roots=[f"x={library / 'drums' / 'kick.wav'}"])
        with pytest.raises(RootError, match="no root named"):
            index.remove_root("nope")
        assert [(r.name, r.location) for r in index.roots()] == [("lib", str(library))]


def test_nesting_roots_from_the_environment_are_refused_at_open(built, monkeypatch):
    base, library, outside = built
    with clapdex.open_index(base / "index", SpectralTestEncoder()) as index:
        index.set_root("hums", outside.parent)
    monkeypatch.setenv("CLAPDEX_ROOT_HUMS", str(library / "drums"))
    with pytest.raises(RootError, match="nest.*CLAPDEX_ROOT_HUMS"):
        IndexStore.open(base / "index")


@pytest.mark.sqlite_only
def test_a_file_row_under_an_unknown_root_is_a_clear_error(built):
    base, _, _ = built
    database = sqlite3.connect(base / "index" / DB_FILE)
    with database:
        database.execute("UPDATE files SET path = ? WHERE path LIKE ?",
                         (f"{ROOT_MARK}gone/x.wav", f"{ROOT_MARK}lib/drums/kick.wav"))
    database.close()
    with clapdex.open_index(base / "index") as index:
        with pytest.raises(UnknownRootError, match="root 'gone'"):
            index.search(concepts=["a 200 hz tone"])
        report = index.doctor()
        assert not report.ok and report.unknown_roots == {"gone": 1}
        index.set_root("gone", base / "elsewhere")  # the fix the message names
        assert index.doctor().unknown_roots == {}


@pytest.mark.sqlite_only
def test_names_that_are_not_utf8_keep_their_escape_under_a_root(tmp_path):
    library = tmp_path / "library"
    name = os.fsdecode(b"caf\xe9.wav")
    library.mkdir()
    soundfile.write(os.fsencode(library / name), tone_mix([300], 3.0, 8000), 8000)
    write_audio(library / "marker-\ufdd0.wav", tone_mix([900], 3.0, 8000), 8000)
    with new_index(tmp_path / "index", write_vocabulary(tmp_path)) as index:
        assert index.add([library], roots=[f"lib={library}"]).added == 2
        assert sorted(r.path for r in index.store.files()) == sorted(
            [str(library / name), str(library / "marker-\ufdd0.wav")])
        with IndexStore.open(tmp_path / "index") as store:
            assert stored_paths(store) == sorted([f"{ROOT_MARK}lib/caf\ufdd0e9.wav",
                                                  f"{ROOT_MARK}lib/marker-\ufdd0\ufdd0.wav"])
        assert index.add([library]).unchanged == 2


@pytest.mark.sqlite_only
def test_a_version_4_index_upgrades_and_takes_roots(built):
    base, library, _ = built
    with clapdex.open_index(base / "index") as index:
        index.remove_root("lib")
    database = sqlite3.connect(base / "index" / DB_FILE)
    with database:
        database.execute("ALTER TABLE index_settings DROP COLUMN roots")
        database.execute("UPDATE index_settings SET schema_version = 4")
    database.close()
    with IndexStore.open(base / "index", write=True) as store:
        assert store.settings.roots == {}
        with store.session() as session:
            assert session.scalar(select(IndexSettingsRow.schema_version)) == SCHEMA_VERSION == 6
        store.set_root("lib", library)
        assert sum(p.startswith(ROOT_MARK) for p in stored_paths(store)) == len(TONES)


def test_the_cli(built, monkeypatch):
    base, library, _ = built
    use_encoder(monkeypatch, lambda **_: SpectralTestEncoder())
    runner = CliRunner()
    index = ["--index", str(base / "index")]

    listed = runner.invoke(main, ["roots", *index])
    assert listed.exit_code == 0 and listed.output.startswith("lib ")
    assert f"{library}" in listed.output and "4 files" in listed.output

    mount = base / "moved"
    shutil.move(library, mount)
    moved = runner.invoke(main, ["roots", "set", f"lib={mount}", *index])
    assert moved.exit_code == 0, moved.output
    found = runner.invoke(main, ["search", *index, "a 700 hz tone", "-k", "1", "--json"])
    assert str(mount / "drums" / "snare.wav") in found.output
    again = runner.invoke(main, ["index", *index, str(mount), "--root", f"lib={mount}", "--json"])
    assert again.exit_code == 0 and '"unchanged": 4' in again.output
    status = runner.invoke(main, ["status", *index])
    assert "root lib:" in status.output

    for args, message in [(["roots", "set", "lib", *index], "NAME=PATH"),
                          (["roots", "set", f"lib={base / 'none'}", *index], "does not exist"),
                          (["roots", "set", "9x=/tmp", *index], "not usable"),
                          (["index", str(mount), "--root", f"d={mount / 'drums'}", *index],
                           "would nest")]:
        result = runner.invoke(main, args)
        assert result.exit_code == 1, (args, result.output)
        assert result.output.startswith("error: ") and message in result.output
        assert result.output.count("\n") == 1

    removed = runner.invoke(main, ["roots", "remove", "lib", *index])
    assert removed.exit_code == 0 and "4 files" in removed.output
    assert runner.invoke(main, ["roots", "list", *index]).output.startswith("no roots")


def test_a_rebuild_keeps_the_roots(built):
    base, library, _ = built
    with clapdex.open_index(base / "index", SpectralTestEncoder()) as index:
        summary = index.add([library], rebuild=True, vocabulary=str(base / "tones.txt"))
        assert summary.added == len(TONES)
        assert [(r.name, r.files) for r in index.roots()] == [("lib", len(TONES))]


def test_files_indexed_both_ways_keep_the_roots_rows_when_the_root_moves_onto_them(built):
    base, library, outside = built
    second = base / "second"
    shutil.copytree(library, second, copy_function=shutil.copy2)
    with clapdex.open_index(base / "index", SpectralTestEncoder()) as index:
        assert index.add([second]).copied == len(TONES)  # absolute rows: another copy
        with IndexStore.open(base / "index") as store:
            kept = {p: i for i, p in ((r.id, r.path) for r in store.files())
                    if p.startswith(str(library))}
        index.set_root("lib", second)
        with IndexStore.open(base / "index") as store:
            assert stored_paths(store) == sorted([str(outside)] + [f"{ROOT_MARK}lib/{name}"
                                                                   for name in TONES])
            assert sorted(r.id for r in store.files() if r.path != str(outside)) == \
                sorted(kept.values())  # the root's rows, not the copies
        assert index.doctor().ok


def test_a_root_named_after_its_folder_must_not_take_another_roots_name(built):
    base, library, _ = built
    other = base / "x" / "lib"
    other.mkdir(parents=True)
    with clapdex.open_index(base / "index", SpectralTestEncoder()) as index:
        index.add([library], roots=[str(library)])  # the root already there: `lib`
        assert [r.name for r in index.roots()] == ["lib"]
        with pytest.raises(RootError, match="a root named 'lib' is already at"):
            index.add([other], roots=[str(other)])
        index.add([other], roots=[f"other={other}"])
        assert [r.name for r in index.roots()] == ["lib", "other"]
