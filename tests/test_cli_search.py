"""`clapdex search` / `clapdex similar` through click, with the TEST DOUBLE encoder injected by
the encoder seam (tests.doubles.use_encoder) (as docs/architecture.md prescribes)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from clapdex.cli import main
from tests.doubles import SpectralTestEncoder, use_encoder
from tests.search_fixtures import build_index


@pytest.fixture(scope="module")
def fixture(tmp_path_factory):
    return build_index(tmp_path_factory.mktemp("cli-search"))


@pytest.fixture
def loads(monkeypatch):
    """Counts model loads; every load returns a fresh test double."""
    calls = []

    def load_encoder(**settings):
        calls.append(settings)
        return SpectralTestEncoder()

    use_encoder(monkeypatch, load_encoder)
    return calls


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def test_text_search_prints_compact_explained_results(fixture, loads):
    result = run("search", "a", "500", "hz", "tone", "--index", fixture.root, "-k", "3")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    # the file has a line of its own, whole; the rest of the result is indented below it
    assert lines[0] == f"1. {fixture.paths['tone_500.wav']}"
    assert "00:00–00:02" in lines[1] and "score " in lines[1] and "(dense " in lines[1]
    assert lines[2].lstrip().startswith("= ") and "a 500 hz tone" in lines[2]
    assert "fidelity" in lines[3]
    assert sum(line.startswith(("1. ", "2. ", "3. ")) for line in lines) == 3
    assert all(len(line) <= 80 for line in lines if not line.startswith(("1. ", "2. ", "3. ")))
    assert len(loads) == 1


def test_json_output_is_ndjson_with_everything(fixture, loads):
    result = run("search", "a 500 hz tone", "--index", fixture.root, "--json", "-k", "4",
                 "--mode", "concept")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert [r["rank"] for r in rows] == [1, 2, 3, 4]
    first = rows[0]
    assert first["mode"] == "concept" and first["query"]["text"] == "a 500 hz tone"
    assert {"dense", "concept", "score", "start", "end", "path", "segment_id"} <= set(first)
    explanation = first["explanation"]
    total = sum(t["contribution"] for t in explanation["contributions"]) + explanation["baseline"]
    assert total == pytest.approx(first["concept"], abs=1e-6)
    assert {"concepts", "fidelity", "low_fidelity"} <= set(explanation)


def test_concept_only_search_loads_no_model(fixture, loads):
    result = run("search", "--concept", "a 2500 hz tone", "--index", fixture.root, "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert rows[0]["path"] == fixture.paths["tone_500_2500.wav"]
    assert [r["explanation"]["contributions"][0]["concept"] for r in rows] == \
        ["a 2500 hz tone"] * len(rows)
    assert loads == []


def test_similar_on_an_indexed_file_leaves_it_out_without_the_model(fixture, loads):
    target = fixture.audio_dir / "tone_2000_then_250.wav"
    result = run("similar", target, "--index", fixture.root, "--segments", "-k", "2")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    ranked = [line for line in lines if line[:1].isdigit()]
    assert len(ranked) == 2 and not any("tone_2000_then_250.wav" in line for line in ranked)
    assert any("shared with query:" in line for line in lines)
    assert all(len(line) <= 80 for line in lines if not line[:1].isdigit())
    kept = run("similar", target, "--index", fixture.root, "--segments", "-k", "2",
               "--include-self")
    first = next(line for line in kept.output.splitlines() if line.startswith("1. "))
    assert "tone_2000_then_250.wav" in first
    assert loads == []


def test_steering_and_options_reach_the_search(fixture, loads):
    plain = run("search", "a 500 hz tone", "--index", fixture.root, "--json", "-k", "3")
    pushed = run("search", "a 500 hz tone", "-c", "a 2500 hz tone:1.5", "-c", "-a 1500 hz tone",
                 "--index", fixture.root, "--json", "-k", "3", "--mode", "dense")
    paths = [json.loads(line)["path"] for line in pushed.output.splitlines()]
    assert paths[0] == fixture.paths["tone_500_2500.wav"]
    assert [json.loads(line)["path"] for line in plain.output.splitlines()][0] == \
        fixture.paths["tone_500.wav"]
    globbed = run("search", "a 500 hz tone", "--index", fixture.root, "--json", "--path", "sub/*")
    assert [json.loads(line)["path"] for line in globbed.output.splitlines()] == \
        [fixture.paths["sub/tone_3000.wav"]]
    none = run("search", "a 500 hz tone", "--index", fixture.root, "--min-score", "2")
    assert none.exit_code == 0 and none.output.strip() == "no results"


def test_index_from_environment(fixture, loads, monkeypatch):
    monkeypatch.setenv("CLAPDEX_INDEX", str(fixture.root))
    result = run("search", "--concept", "speech", "-k", "1")
    assert result.exit_code == 0 and result.output.startswith("1. ")


@pytest.mark.parametrize("args, message", [
    (["search", ""], "error: empty text query"),
    (["search", "--audio", "/nonexistent/x.wav"], "error: audio file not found"),
    (["similar", "/nonexistent/x.wav"], "error: audio file not found"),
    (["search", "--concept", "spech"], "closest: speech"),
    (["search"], "error: nothing to search for"),
])
def test_bad_queries_exit_1_with_one_line(fixture, loads, args, message):
    result = run(*args, "--index", fixture.root)
    assert result.exit_code == 1
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


def test_missing_index_exits_1_with_one_line(tmp_path, loads):
    result = run("search", "a 500 hz tone", "--index", tmp_path / "nowhere")
    assert result.exit_code == 1
    assert result.output.strip().startswith("error: no index at")
    assert len(result.output.strip().splitlines()) == 1
    assert loads == []


def test_wrong_model_is_refused(fixture, monkeypatch):
    use_encoder(monkeypatch, lambda **_: SpectralTestEncoder(seed=7))
    result = run("search", "a 500 hz tone", "--index", fixture.root)
    assert result.exit_code == 1
    assert "was built with model" in result.output and "Traceback" not in result.output
    # the library's error names the remedy; the CLI turns it into the command
    assert "pass the model options it was built with (--model-version" in result.output


def test_index_a_folder_then_search_it(tmp_path, loads):
    """The main job end to end: `clapdex index FOLDER` (real indexer, test-double encoder), then a
    text query with explanations, then a concept query."""
    from tests.search_fixtures import CONCEPTS, write_corpus

    audio = tmp_path / "audio"
    write_corpus(audio, SpectralTestEncoder().sample_rate)
    vocab = tmp_path / "tones.txt"
    vocab.write_text("\n".join(CONCEPTS) + "\n")
    index = tmp_path / "index"
    built = run("index", audio, "--index", index, "--vocab", vocab, "--lambda", "0.02")
    assert built.exit_code == 0, built.output
    found = run("search", "a 1000 hz tone", "--index", index, "-k", "2")
    assert found.exit_code == 0, found.output
    lines = found.output.splitlines()
    assert lines[0].startswith("1. ") and "tone_1000.wav" in lines[0]
    assert "a 1000 hz tone" in lines[2]
    concept = run("search", "-c", "a 3000 hz tone", "--index", index, "--json", "-k", "1")
    assert json.loads(concept.output)["path"].endswith("sub/tone_3000.wav")


# ---- names, paths and times in the output --------------------------------------------------------

@pytest.fixture(scope="module")
def named(tmp_path_factory):
    """An index whose file names need care: a newline in one name, two files called x.wav, a
    short clip (0.5 s) and drums/kick.wav."""
    corpus = {"odd\nname.wav": [((500,), 2.0)], "a/x.wav": [((750,), 2.0)],
              "b/x.wav": [((1000,), 2.0)], "drums/kick.wav": [((2500,), 2.0)],
              "short.wav": [((1500,), 0.5)]}
    return build_index(tmp_path_factory.mktemp("cli-names"), corpus=corpus)


def test_a_newline_in_a_file_name_stays_on_one_line(named, loads):
    result = run("search", "-c", "a 500 hz tone", "--index", named.root, "--segments")
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[0]
    assert first.startswith("1. ") and "odd\\nname.wav" in first
    assert [line for line in result.output.splitlines() if line.startswith(("1. ", "2. "))] == \
        [first]  # one result, no stray line made of the name's second half
    raw = run("search", "-c", "a 500 hz tone", "--index", named.root, "--json")
    assert json.loads(raw.output)["path"] == named.paths["odd\nname.wav"]  # JSON keeps it as is


def test_time_ranges_cover_the_window_and_json_keeps_seconds(named, loads):
    result = run("search", "-c", "a 1500 hz tone", "--index", named.root, "-k", "1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].endswith("/short.wav") and lines[1].startswith("    00:00.0–00:00.5  score")
    raw = json.loads(run("search", "-c", "a 1500 hz tone", "--index", named.root, "-k", "1",
                         "--json").output)
    assert (raw["start"], raw["end"]) == (0.0, 0.5)


def test_similar_takes_the_names_show_takes(named, loads, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for args in (["similar", "kick.wav"], ["search", "--audio", "drums/kick.wav"]):
        result = run(*args, "--index", named.root, "-k", "1", "--json", "--include-self")
        assert result.exit_code == 0, result.output
        row = json.loads(result.output)
        assert row["query"]["audio_file"] == named.paths["drums/kick.wav"]
        assert row["path"] == named.paths["drums/kick.wav"]
    assert loads == []  # stored embeddings: no model
    ambiguous = run("similar", "x.wav", "--index", named.root)
    assert ambiguous.exit_code == 1
    assert ambiguous.output.startswith("error: 'x.wav' matches 2 files (")
    assert len(ambiguous.output.strip().splitlines()) == 1


def test_a_file_on_disk_wins_over_an_indexed_name(named, loads, tmp_path, monkeypatch):
    import shutil

    monkeypatch.chdir(tmp_path)
    shutil.copy(named.audio_dir / "b" / "x.wav", tmp_path / "kick.wav")
    result = run("similar", "kick.wav", "--index", named.root, "-k", "1", "--json")
    assert result.exit_code == 0, result.output
    row = json.loads(result.output)
    assert row["query"]["audio_indexed"] is False and row["path"] == named.paths["b/x.wav"]
    assert len(loads) == 1  # decoded and encoded


@pytest.mark.parametrize("glob", ["[", "drums/[k", "[z-a]*"])
def test_a_bad_path_glob_is_a_one_line_error(named, loads, glob):
    result = run("search", "-c", "a 500 hz tone", "--index", named.root, "--path", glob)
    assert result.exit_code == 1
    assert result.output.startswith(f"error: path glob {glob!r}")
    assert len(result.output.strip().splitlines()) == 1


def test_help_of_path_and_of_similar_concepts():
    search_help = run("search", "--help").output
    similar_help = run("similar", "--help").output
    assert "'[[]' matches a literal '['" in " ".join(search_help.split())
    assert "pure concept search" in search_help
    assert "pure concept search" not in similar_help
    assert "steer the results" in " ".join(similar_help.split())


def test_sum_line_writes_a_negative_first_term_as_a_signed_number():
    from clapdex.cli.search import format_result
    from clapdex.search.results import ConceptTerm, Explanation, SearchResult

    def sum_line(contributions):
        terms = [ConceptTerm(name, 0.1, c) for name, c in contributions]
        explanation = Explanation(contributions=terms, baseline=0.02, concepts=[],
                                  fidelity=0.8, low_fidelity=False, shared=None)
        result = SearchResult(rank=1, path="/x/a.wav", file_id=1, segment_id=1, start=0.0,
                              end=7.0, score=0.1, dense=0.1, concept=0.1, explanation=explanation)
        return format_result(result, width=80)[2].strip()

    assert sum_line([("pinball", -0.02), ("drum", 0.02)]) == "= −0.02 pinball + 0.02 drum + 0.02 baseline"
    assert sum_line([("pinball", 0.03), ("drum", -0.01)]) == "= 0.03 pinball − 0.01 drum + 0.02 baseline"
    # nothing fits: the whole sum as one term, with the same minus sign as everywhere else
    long = [(f"concept number {i} with a very long name indeed", -0.001) for i in range(40)]
    assert sum_line(long).startswith("= −0.04 (40 concepts)")


@pytest.mark.parametrize("columns", [60, 80, 200])
def test_human_output_fits_the_terminal_width_and_never_cuts_the_file(fixture, loads, monkeypatch,
                                                                       columns):
    monkeypatch.setenv("COLUMNS", str(columns))
    result = run("search", "a 500 hz tone", "--index", fixture.root, "-k", "5", "--segments")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    headlines = [line for line in lines if line[:1].isdigit()]
    assert len(headlines) == 5
    indexed = set(fixture.paths.values())
    assert all(line.split(". ", 1)[1] in indexed for line in headlines)  # whole paths
    assert all(len(line) <= columns for line in lines if line not in headlines)
    assert any(len(line) > 60 for line in lines) or columns == 60  # the room is used


def test_paths_under_the_current_folder_are_shown_relative(fixture, loads, monkeypatch):
    monkeypatch.chdir(fixture.audio_dir)
    result = run("search", "a 500 hz tone", "--index", fixture.root, "-k", "1")
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[0] == "1. tone_500.wav"
