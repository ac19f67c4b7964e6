"""Building vocabularies from tag metadata: reading tag files, baseline / pruned / clustered.

pruned and clustered use tests.doubles.SpectralTestEncoder (a TEST DOUBLE, not CLAP): it embeds a
phrase naming a frequency ("440 hz tone", "tone 440hz") as that sine, so such phrases have identical
embeddings; any other text gets a pseudo-random vector.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from clapdex.concepts.vocab_build import (build_vocabulary, count_tags, is_junk_tag, normalize_tag,
                                          ranked_tags, read_tag_file, spherical_kmeans, split_tag_cell)
from clapdex.errors import VocabularyError
from tests.doubles import SpectralTestEncoder


def clips(*tag_counts: tuple[str, int]) -> list[list[str]]:
    """Tag lists in which tag t appears on exactly n clips (one tag per clip)."""
    return [[tag] for tag, n in tag_counts for _ in range(n)]


class CountingEncoder(SpectralTestEncoder):
    """The spectral test double, recording the size of every embed_text call."""

    def __init__(self):
        super().__init__()
        self.text_batches: list[int] = []

    def embed_text(self, texts):
        self.text_batches.append(len(texts))
        return super().embed_text(texts)


# --- normalisation and junk rules ---------------------------------------------------------------

@pytest.mark.parametrize("raw, expected", [
    ("Dog-Bark", "dog bark"),
    ("rain_on_roof", "rain on roof"),
    ("  Children's   Voices ", "childrens voices"),
    ("44.1kHz", "44.1khz"),
    ("glass!!shatter", "glass shatter"),
    ("end.", "end"),
    ("Domestic_animals_and_pets", "domestic animals and pets"),
    ("---", ""),
])
def test_normalize_tag(raw, expected):
    assert normalize_tag(raw) == expected


@pytest.mark.parametrize("tag", ["wav", "mp3", "zoom h4n", "tascam", "44100", "48khz", "44.1khz", "96k",
                                 "24 bit", "16bit", "120bpm", "stereo", "mono", "field recording",
                                 "fieldrecording", "2012", "2012 05 17", "the", "of the", "x", "",
                                 "stereo 44100 wav", "sound effect", "sfx"])
def test_junk_tags(tag):
    assert is_junk_tag(tag)


@pytest.mark.parametrize("tag", ["dog", "rain stereo", "440 hz tone", "tone 440hz", "quad bike",
                                 "test tone", "record player", "glass", "wave", "recorder"])
def test_meaningful_tags_are_not_junk(tag):
    assert not is_junk_tag(tag)


def test_the_default_vocabulary_has_no_junk_by_these_rules():
    from clapdex.concepts.vocabulary import load_vocabulary

    assert [c for c in load_vocabulary("default").concepts if is_junk_tag(normalize_tag(c))] == []


def test_split_tag_cell():
    assert split_tag_cell("dog-bark rain  wind") == ["dog-bark", "rain", "wind"]
    assert split_tag_cell("Bark,Dog, Domestic_animals") == ["Bark", "Dog", "Domestic_animals"]
    assert split_tag_cell("rain on roof; thunder|wind") == ["rain on roof", "thunder", "wind"]
    assert split_tag_cell("   ") == []


def test_counts_are_clips_per_tag():
    counts = count_tags([["Dog", "dog", "dog-bark"], ["dog"], ["Dog_Bark", ""]])
    assert counts == {"dog": 2, "dog bark": 2}
    assert ranked_tags(count_tags([["b"], ["a"], ["c"], ["c"]])) == ["c", "a", "b"]


# --- reading tag files --------------------------------------------------------------------------

FSD50K_LIKE = {
    "64760": {"title": "Dog barking.wav", "description": "a dog", "tags": ["dog", "bark", "Field-Recording"],
              "license": "http://creativecommons.org/licenses/by/3.0/", "uploader": "someone"},
    "16399": {"title": "rain", "description": "", "tags": ["rain", "Rain-On-Roof", "dog"],
              "license": "http://creativecommons.org/publicdomain/zero/1.0/", "uploader": "other"},
    "12": {"title": "no tags", "description": "", "tags": [], "license": "", "uploader": "x"},
}


def test_reads_fsd50k_clips_info_json(tmp_path):
    path = tmp_path / "dev_clips_info_FSD50K.json"
    path.write_text(json.dumps(FSD50K_LIKE), encoding="utf-8")
    assert read_tag_file(path) == [["dog", "bark", "Field-Recording"], ["rain", "Rain-On-Roof", "dog"], []]


@pytest.mark.parametrize("document, expected", [
    ([{"tags": ["dog", "bark"]}, {"tags": ["rain"], "id": 3}], [["dog", "bark"], ["rain"]]),
    ({"a.wav": ["dog", "bark"], "b.wav": ["rain"]}, [["dog", "bark"], ["rain"]]),
    ([["dog", "bark"], ["rain"]], [["dog", "bark"], ["rain"]]),
    ({"a": {"labels": "Bark,Dog"}}, [["Bark", "Dog"]]),
    ({"a": {"tags": "dog-bark rain"}}, [["dog-bark", "rain"]]),
    ({"a": {"tags": ["dog", 440]}}, [["dog", "440"]]),
])
def test_reads_other_json_shapes(tmp_path, document, expected):
    path = tmp_path / "tags.json"
    path.write_text(json.dumps(document), encoding="utf-8")
    assert read_tag_file(path) == expected


def test_json_is_detected_without_the_extension(tmp_path):
    path = tmp_path / "tags.txt"
    path.write_text(json.dumps({"a": ["dog"]}), encoding="utf-8")
    assert read_tag_file(path) == [["dog"]]


def test_reads_csv_with_a_tags_column(tmp_path):
    path = tmp_path / "tags.csv"
    path.write_text('clip,Tags\na.wav,dog-bark rain\nb.wav,"rain on roof, thunder"\nc.wav,\n', encoding="utf-8")
    assert read_tag_file(path) == [["dog-bark", "rain"], ["rain on roof", "thunder"], []]


def test_reads_fsd50k_ground_truth_csv_labels_column(tmp_path):
    path = tmp_path / "dev.csv"
    path.write_text('fname,labels,mids,split\n64760,"Bark,Dog,Domestic_animals_and_pets","/m/05tny_,/m/0bt9lr",train\n',
                    encoding="utf-8")
    assert read_tag_file(path) == [["Bark", "Dog", "Domestic_animals_and_pets"]]


def test_reads_tsv(tmp_path):
    path = tmp_path / "tags.tsv"
    path.write_text("id\ttags\n1\tdog, rain\n", encoding="utf-8")
    assert read_tag_file(path) == [["dog", "rain"]]


@pytest.mark.parametrize("name, content, message", [
    ("bad.json", b"{not json", "invalid JSON"),
    ("scalar.json", b"42", "expected a JSON object"),
    ("nested.json", json.dumps({"a": {"tags": [{"x": 1}]}}).encode(), "list of strings"),
    ("untagged.json", json.dumps([{"title": "x"}]).encode(), "no 'tags'"),
    ("empty.json", json.dumps({"a": {"tags": []}}).encode(), "no tags found"),
    ("cols.csv", b"clip,name\na,b\n", "no 'tags' or 'labels' column"),
    ("blank.csv", b"", "no 'tags' or 'labels' column"),
    ("binary.json", b"\x00\x01\x02", "binary"),
    ("latin1.csv", b"tags\ncaf\xe9\n", "not UTF-8"),
])
def test_bad_tag_files_are_refused(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(VocabularyError, match=message) as error:
        read_tag_file(path)
    assert "\n" not in str(error.value)


def test_missing_tag_file(tmp_path):
    with pytest.raises(VocabularyError, match="no such tag file"):
        read_tag_file(tmp_path / "nope.json")


# --- baseline -----------------------------------------------------------------------------------

def test_baseline_is_the_most_frequent_tags_with_alphabetical_ties():
    tag_lists = [["Dog", "rain", "wav"], ["dog", "Rain"], ["dog", "wind", "wav"], ["bird", "Wind"], ["car"]]
    result = build_vocabulary(tag_lists, size=4, method="baseline")
    assert result.concepts == ["dog", "rain", "wav", "wind"]
    assert result.counts == {"dog": 3, "rain": 2, "wav": 2, "wind": 2}
    assert build_vocabulary(tag_lists, size=10).concepts == ["dog", "rain", "wav", "wind", "bird", "car"]


# --- pruned -------------------------------------------------------------------------------------

PRUNED_TAGS = clips(("wav", 20), ("dog", 12), ("440 hz tone", 10), ("stereo", 9), ("tone 440hz", 8),
                    ("rain", 7), ("zoom h4n", 6), ("a 440hz sine", 5), ("44100", 5), ("wind", 4),
                    ("1000 hz beep", 3), ("thunder", 2))


def test_pruned_drops_junk_and_near_duplicates_and_refills():
    encoder = SpectralTestEncoder()
    result = build_vocabulary(PRUNED_TAGS, size=5, method="pruned", encoder=encoder)
    assert result.concepts == ["dog", "440 hz tone", "rain", "wind", "1000 hz beep"]
    assert result.duplicates == {"tone 440hz": "440 hz tone", "a 440hz sine": "440 hz tone"}
    assert {"wav", "stereo", "zoom h4n", "44100"} <= set(result.junk)
    baseline = build_vocabulary(PRUNED_TAGS, size=5, method="baseline").concepts
    assert baseline == ["wav", "dog", "440 hz tone", "stereo", "tone 440hz"]


def test_pruned_returns_fewer_when_candidates_run_out():
    result = build_vocabulary(PRUNED_TAGS, size=100, method="pruned", encoder=SpectralTestEncoder())
    assert result.concepts == ["dog", "440 hz tone", "rain", "wind", "1000 hz beep", "thunder"]


def test_pruned_keeps_unrelated_tags_even_at_threshold_one():
    tag_lists = clips(("dog", 3), ("puppy", 2))  # random, unrelated test-double vectors
    result = build_vocabulary(tag_lists, size=5, method="pruned", encoder=SpectralTestEncoder(), threshold=1.0)
    assert result.concepts == ["dog", "puppy"]


def test_pruned_embeds_lazily_in_batches():
    tag_lists = clips(*[(f"tag{chr(97 + i)}{chr(97 + j)}", 100 - i * 10 - j) for i in range(6) for j in range(10)])
    encoder = CountingEncoder()
    result = build_vocabulary(tag_lists, size=7, method="pruned", encoder=encoder, batch_size=4)
    assert len(result.concepts) == 7
    assert encoder.text_batches == [4, 4]  # stopped once 7 concepts were kept


# --- clustered ----------------------------------------------------------------------------------

CLUSTER_TAGS = clips(("440 hz tone", 9), ("1000 hz tone", 8), ("2500 hz tone", 7), ("mp3", 6),
                     ("tone 440hz", 5), ("a 1000hz beep", 4), ("2500 hz whistle", 3), ("440 hz hum", 2))


def test_clustered_groups_identical_embeddings_and_names_them_by_the_most_frequent():
    result = build_vocabulary(CLUSTER_TAGS, size=3, method="clustered", encoder=SpectralTestEncoder())
    assert result.concepts == ["440 hz tone", "1000 hz tone", "2500 hz tone"]
    assert result.groups == [["440 hz tone", "tone 440hz", "440 hz hum"],
                             ["1000 hz tone", "a 1000hz beep"],
                             ["2500 hz tone", "2500 hz whistle"]]
    assert "mp3" in result.junk


def test_clustered_gives_n_names_each_a_member_of_its_group():
    words = ["dog", "cat", "rain", "wind", "car", "bus", "bell", "drum", "piano", "siren", "glass", "door",
             "bird", "water", "fire", "train", "clock", "phone", "crowd", "horn"]
    tag_lists = clips(*[(word, 40 - i) for i, word in enumerate(words)])
    encoder = CountingEncoder()
    result = build_vocabulary(tag_lists, size=6, method="clustered", encoder=encoder, batch_size=8)
    assert len(result.concepts) == 6 == len(set(result.concepts))
    assert len(result.groups) == 6
    for name, members in zip(result.concepts, result.groups):
        assert members[0] == name
        assert all(words.index(name) <= words.index(member) for member in members)  # most frequent
    assert sorted(m for members in result.groups for m in members) == sorted(words)  # a partition
    assert encoder.text_batches == [8, 8, 4]
    again = build_vocabulary(tag_lists, size=6, method="clustered", encoder=SpectralTestEncoder(), batch_size=8)
    assert again.groups == result.groups  # deterministic


def test_clustered_candidate_cap():
    words = [f"word{chr(97 + i)}" for i in range(12)]
    tag_lists = clips(*[(word, 50 - i) for i, word in enumerate(words)])
    result = build_vocabulary(tag_lists, size=2, method="clustered", encoder=SpectralTestEncoder(), candidates=5)
    assert sorted(m for members in result.groups for m in members) == sorted(words[:5])


def test_kmeans_fills_every_group_even_with_identical_points():
    vectors = np.tile(np.array([[1.0, 0.0, 0.0]], dtype=np.float32), (5, 1))
    labels = spherical_kmeans(vectors, 3)
    assert sorted(set(labels.tolist())) == [0, 1, 2]


# --- errors -------------------------------------------------------------------------------------

def test_build_errors():
    tag_lists = [["dog"]]
    with pytest.raises(VocabularyError, match="unknown build method"):
        build_vocabulary(tag_lists, size=3, method="fancy")
    with pytest.raises(VocabularyError, match="at least 1"):
        build_vocabulary(tag_lists, size=0)
    with pytest.raises(VocabularyError, match="needs a text encoder"):
        build_vocabulary(tag_lists, size=3, method="pruned")
    with pytest.raises(VocabularyError, match="threshold"):
        build_vocabulary(tag_lists, size=3, method="pruned", encoder=SpectralTestEncoder(), threshold=1.5)
    with pytest.raises(VocabularyError, match="no tags"):
        build_vocabulary([[], [""]], size=3)
    for method in ("pruned", "clustered"):
        with pytest.raises(VocabularyError, match="non-semantic"):
            build_vocabulary([["wav", "stereo"], ["44100"]], size=3, method=method, encoder=SpectralTestEncoder())
