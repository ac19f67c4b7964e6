"""Concept vocabularies: the built-in default list and user vocabulary files."""

from __future__ import annotations

import dataclasses
import hashlib
from importlib import resources

import pytest

from clapdex.concepts.vocabulary import (Vocabulary, builtin_vocabularies, load_vocabulary, parse_concepts,
                                         write_vocabulary)
from clapdex.errors import ClapdexError, VocabularyError


def _raw_default_lines() -> list[str]:
    text = (resources.files("clapdex") / "data" / "vocab_default.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_default_vocabulary_is_large_clean_and_lowercase():
    vocabulary = load_vocabulary("default")
    assert vocabulary.name == "default"
    assert len(vocabulary) >= 1500
    assert len(set(vocabulary.concepts)) == len(vocabulary.concepts)
    for concept in vocabulary.concepts:
        assert concept and concept == concept.strip() and "  " not in concept
        assert concept == concept.lower()
    # The shipped file itself is clean: loading changes nothing and drops nothing.
    assert tuple(_raw_default_lines()) == vocabulary.concepts


def test_default_vocabulary_covers_the_everyday_sound_families():
    concepts = set(load_vocabulary("default").concepts)
    for expected in ("dog bark", "laughter", "speech", "jazz", "violin", "helicopter", "vacuum cleaner",
                     "typing", "chainsaw", "thunder", "waterfall", "crackling fire", "siren",
                     "glass breaking", "metal clang", "wood creak", "cafe", "city street", "forest",
                     "loud", "distant", "reverberant", "muffled"):
        assert expected in concepts, expected


def test_builtins_list_default():
    assert "default" in builtin_vocabularies()


def test_content_hash_is_sha256_of_the_normalised_lines():
    vocabulary = Vocabulary("v", ("dog", "rain on roof"))
    assert vocabulary.content_hash == hashlib.sha256(b"dog\nrain on roof").hexdigest()
    assert Vocabulary("other name", ("dog", "rain on roof")).content_hash == vocabulary.content_hash
    assert Vocabulary("v", ("rain on roof", "dog")).content_hash != vocabulary.content_hash
    assert len(vocabulary) == 2


def test_vocabulary_is_frozen():
    vocabulary = Vocabulary("v", ("dog",))
    with pytest.raises(dataclasses.FrozenInstanceError):
        vocabulary.name = "w"


def test_user_file_is_normalised(tmp_path):
    path = tmp_path / "my_sounds.txt"
    path.write_text("\ufeff# my concepts\n\n  Dog   Bark \nrain\tOn roof\ndog bark\n   \n# another comment\nSiren\n",
                    encoding="utf-8")
    vocabulary = load_vocabulary(str(path))
    assert vocabulary.name == "my_sounds"
    assert vocabulary.concepts == ("dog bark", "rain on roof", "siren")


def test_same_concepts_written_differently_hash_the_same(tmp_path):
    messy = tmp_path / "messy.txt"
    messy.write_text("# header\nDOG\n\n  rain  \ndog\n", encoding="utf-8")
    clean = tmp_path / "clean.txt"
    clean.write_text("dog\nrain\n", encoding="utf-8")
    assert load_vocabulary(messy).content_hash == load_vocabulary(clean).content_hash


def test_parse_concepts_keeps_first_occurrence_order():
    assert parse_concepts(["b", "a", "B", "c", "a"]) == ("b", "a", "c")


def test_path_spec_loads_a_file_named_like_a_builtin(tmp_path, monkeypatch):
    (tmp_path / "default").write_text("only this\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    assert load_vocabulary("./default").concepts == ("only this",)
    assert len(load_vocabulary("default")) >= 1500  # the bare name is the built-in


def test_write_vocabulary_round_trips(tmp_path):
    path = write_vocabulary(["Dog", "rain", "dog", " siren "], tmp_path / "out.txt", header=["built by a test"])
    assert path.read_text(encoding="utf-8").splitlines()[0] == "# built by a test"
    assert load_vocabulary(path).concepts == ("dog", "rain", "siren")


@pytest.mark.parametrize("content, message", [
    (b"", "no concepts"),
    (b"# only a comment\n\n   \n", "no concepts"),
    (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    (b"caf\xe9\n", "not UTF-8"),
])
def test_unusable_files_are_refused(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(VocabularyError, match=message) as error:
        load_vocabulary(str(path))
    assert "\n" not in str(error.value)


def test_missing_file_and_directory_are_refused(tmp_path):
    with pytest.raises(VocabularyError, match="no such vocabulary"):
        load_vocabulary(str(tmp_path / "nope.txt"))
    with pytest.raises(VocabularyError, match="not a file"):
        load_vocabulary(str(tmp_path))
    with pytest.raises(ClapdexError):
        load_vocabulary("")


def test_writing_an_empty_vocabulary_is_refused(tmp_path):
    with pytest.raises(VocabularyError):
        write_vocabulary(["", "# comment"], tmp_path / "x.txt")
