"""resolve_indexed_file: which indexed file a name on the command line designates.

A real SQLite index with hand-picked paths (the segments' numbers are arbitrary, see
audit_fixtures.decomposition); the files themselves need not exist except where a test
resolves symlinks.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from audit_fixtures import decomposition, settings
from clapdex.audit import resolve_indexed_file
from clapdex.audit.files import AmbiguousFileError, FileNotIndexedError, FileNotInIndexError
from clapdex.errors import QueryError
from clapdex.storage.database import FileMeta, IndexStore

INDEXED = ["a/empty.wav", "a/..hidden.wav", "b/hidden.wav", "b/kick.wav", "c/kick.wav",
           "d/50%_off.wav", "e/tab\there.wav"]
FAILED = {"empty.wav": "AudioError: no audio\n(0 samples)", "f/broken.wav": None}


@pytest.fixture(scope="module")
def collection(tmp_path_factory, backend):
    root = tmp_path_factory.mktemp("resolve")
    store = IndexStore.create(root / "index", settings(), ["dog", "cat"],
                              np.eye(2, 4, dtype="f4"))
    for i, name in enumerate(INDEXED):
        store.add_file(FileMeta(str(root / name), size=1, mtime_ns=1, duration=2.0 + i),
                       np.array([0.0]), np.array([2.0]), np.ones((1, 4), dtype="f4"),
                       decomposition(np.array([[0.3, 0.0]]), np.array([0.8])))
    for name, error in FAILED.items():
        store.record_error(FileMeta(str(root / name), size=1, mtime_ns=1), error)
    yield store, root
    store.close()


def path_of(store, name):
    return resolve_indexed_file(store, name).path


def test_an_absolute_path_or_a_path_relative_to_the_current_folder(collection, monkeypatch):
    store, root = collection
    assert path_of(store, str(root / "b/kick.wav")) == str(root / "b/kick.wav")
    monkeypatch.chdir(root / "index")        # any existing folder under root
    assert path_of(store, "../b/kick.wav") == str(root / "b/kick.wav")
    monkeypatch.chdir(root)
    assert path_of(store, "./b/kick.wav") == str(root / "b/kick.wav")
    found = resolve_indexed_file(store, "b/kick.wav")
    assert (found.path, found.duration) == (str(root / "b/kick.wav"), 5.0)


def test_dot_dot_is_never_a_suffix(collection, monkeypatch):
    """`../empty.wav` from a/ is root/empty.wav (which failed), not a/empty.wav."""
    store, root = collection
    (root / "a").mkdir(exist_ok=True)
    monkeypatch.chdir(root / "a")
    with pytest.raises(FileNotIndexedError) as failed:
        resolve_indexed_file(store, "../empty.wav")
    assert str(failed.value) == f"{root / 'empty.wav'} could not be indexed: AudioError: no audio\\n(0 samples)"
    assert failed.value.error == FAILED["empty.wav"]
    # Going up to a file that is not indexed: an error naming the absolute path, no suffix match.
    monkeypatch.chdir(root / "index")
    with pytest.raises(FileNotInIndexError, match=f"no indexed file at {root / 'kick.wav'}$"):
        resolve_indexed_file(store, "../kick.wav")
    with pytest.raises(FileNotInIndexError, match="no indexed file at"):
        resolve_indexed_file(store, "b/../a/empty.wav")


def test_leading_dots_of_a_name_are_kept(collection, tmp_path, monkeypatch):
    store, root = collection
    monkeypatch.chdir(tmp_path)               # nothing indexed here: suffix matches only
    assert path_of(store, "..hidden.wav") == str(root / "a/..hidden.wav")
    assert path_of(store, "hidden.wav") == str(root / "b/hidden.wav")
    assert path_of(store, "./..hidden.wav") == str(root / "a/..hidden.wav")
    assert path_of(store, "././b/hidden.wav") == str(root / "b/hidden.wav")
    assert path_of(store, ".//b//kick.wav") == str(root / "b/kick.wav")


def test_a_suffix_matches_whole_path_components(collection, tmp_path, monkeypatch):
    store, root = collection
    monkeypatch.chdir(tmp_path)
    assert path_of(store, "c/kick.wav") == str(root / "c/kick.wav")
    with pytest.raises(FileNotInIndexError, match="no indexed file matches 'ick.wav'"):
        resolve_indexed_file(store, "ick.wav")
    with pytest.raises(FileNotInIndexError):
        resolve_indexed_file(store, "KICK.wav")   # SQLite's LIKE ignores case; the match does not
    with pytest.raises(AmbiguousFileError) as ambiguous:
        resolve_indexed_file(store, "kick.wav")
    assert str(ambiguous.value) == (f"'kick.wav' matches 2 files ({root / 'b/kick.wav'}, "
                                    f"{root / 'c/kick.wav'}); give more of the path")


def test_like_wildcards_in_names_are_literal(collection, tmp_path, monkeypatch):
    store, root = collection
    monkeypatch.chdir(tmp_path)
    assert path_of(store, "50%_off.wav") == str(root / "d/50%_off.wav")
    with pytest.raises(FileNotInIndexError):
        resolve_indexed_file(store, "50%.wav")


def test_symlinked_folders_resolve(collection, monkeypatch):
    store, root = collection
    (root / "b").mkdir(exist_ok=True)
    (root / "b/kick.wav").write_bytes(b"")
    link = root / "link"
    if not link.exists():
        os.symlink(root / "b", link)
    monkeypatch.chdir(root)
    assert path_of(store, "link/kick.wav") == str(root / "b/kick.wav")


def test_failed_files_say_why(collection, tmp_path, monkeypatch):
    store, root = collection
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotIndexedError, match="broken.wav could not be indexed: no reason recorded"):
        resolve_indexed_file(store, "broken.wav")


@pytest.mark.parametrize("name", ["", "   ", "./", "."])
def test_empty_names_are_refused(collection, tmp_path, monkeypatch, name):
    store, _ = collection
    monkeypatch.chdir(tmp_path)
    with pytest.raises(QueryError) as refused:
        resolve_indexed_file(store, name)
    assert "\n" not in str(refused.value)


def test_error_messages_stay_on_one_line(collection, tmp_path, monkeypatch):
    store, root = collection
    monkeypatch.chdir(tmp_path)
    assert path_of(store, "tab\there.wav") == str(root / "e/tab\there.wav")
    (root / "x").mkdir(exist_ok=True)
    store.record_error(FileMeta(str(root / "x/tab\there.wav"), size=1, mtime_ns=1), "bad")
    try:
        with pytest.raises(AmbiguousFileError) as ambiguous:
            resolve_indexed_file(store, "tab\there.wav")
        assert "\t" not in str(ambiguous.value) and "tab\\there.wav" in str(ambiguous.value)
    finally:
        store.remove_file(str(root / "x/tab\there.wav"))
