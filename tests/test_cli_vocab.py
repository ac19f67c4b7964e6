"""`clapdex vocab list | show | build` through click's CliRunner.

pruned / clustered load the encoder through the encoder seam (clapdex.encoder_registry), which these tests
point at tests.doubles.SpectralTestEncoder (a TEST DOUBLE, not CLAP).
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from clapdex.cli import main
from clapdex.concepts.vocabulary import load_vocabulary
from tests.doubles import SpectralTestEncoder, use_encoder


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()  # click >= 8.2 keeps stderr apart from stdout


@pytest.fixture
def tag_file(tmp_path):
    clips = {}
    for tag, n in [("wav", 9), ("dog", 8), ("440 hz tone", 7), ("stereo", 6), ("tone 440hz", 5), ("rain", 4),
                   ("wind", 3)]:
        for i in range(n):
            clips[f"{tag}-{i}"] = {"title": tag, "tags": [tag], "license": "", "uploader": "u"}
    path = tmp_path / "dev_clips_info_FSD50K.json"
    path.write_text(json.dumps(clips), encoding="utf-8")
    return path


@pytest.fixture
def test_double_encoder(monkeypatch):
    calls = []

    def fake_load_encoder(**settings):
        calls.append(settings)
        return SpectralTestEncoder()

    use_encoder(monkeypatch, fake_load_encoder)
    return calls


def test_list(runner):
    result = runner.invoke(main, ["vocab", "list"])
    assert result.exit_code == 0, result.output
    size = len(load_vocabulary("default"))
    assert f"default\t{size} concepts" in result.output
    rows = [json.loads(line) for line in runner.invoke(main, ["vocab", "list", "--json"]).stdout.splitlines()]
    assert {"name": "default", "size": size, "content_hash": load_vocabulary("default").content_hash} in rows


def test_show_builtin_and_file(runner, tmp_path):
    result = runner.invoke(main, ["vocab", "show", "default"])
    assert result.exit_code == 0
    assert tuple(result.stdout.splitlines()) == load_vocabulary("default").concepts
    path = tmp_path / "mine.txt"
    path.write_text("Dog\n# comment\nrain\n", encoding="utf-8")
    document = json.loads(runner.invoke(main, ["vocab", "show", str(path), "--json"]).stdout)
    assert document["name"] == "mine" and document["concepts"] == ["dog", "rain"] and document["size"] == 2
    assert document["content_hash"] == load_vocabulary(str(path)).content_hash


def test_show_missing_is_a_one_line_error(runner, tmp_path):
    result = runner.invoke(main, ["vocab", "show", str(tmp_path / "nope.txt")])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert "Traceback" not in result.output


def test_build_baseline_writes_a_loadable_file_without_a_model(runner, tag_file, tmp_path, monkeypatch):
    def no_model(**settings):
        raise AssertionError("baseline must not load a model")

    use_encoder(monkeypatch, no_model)
    out = tmp_path / "vocab.txt"
    result = runner.invoke(main, ["vocab", "build", str(tag_file), "--size", "3", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "wrote 3 concepts" in result.stdout
    assert load_vocabulary(str(out)).concepts == ("wav", "dog", "440 hz tone")
    assert out.read_text(encoding="utf-8").startswith("# clapdex vocabulary built from")


def test_build_to_stdout_and_json(runner, tag_file):
    result = runner.invoke(main, ["vocab", "build", str(tag_file), "--size", "2"])
    assert result.stdout.splitlines() == ["wav", "dog"]
    document = json.loads(runner.invoke(main, ["vocab", "build", str(tag_file), "--size", "2", "--json"]).stdout)
    assert document["concepts"] == ["wav", "dog"] and document["clips"] == 42 and document["method"] == "baseline"


def test_build_pruned_uses_the_encoder(runner, tag_file, tmp_path, test_double_encoder):
    out = tmp_path / "pruned.txt"
    result = runner.invoke(main, ["vocab", "build", str(tag_file), "--size", "10", "--method", "pruned",
                                  "--threshold", "0.95", "--device", "cpu", "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert load_vocabulary(str(out)).concepts == ("dog", "440 hz tone", "rain", "wind")
    summary = json.loads(result.stdout)
    assert summary["near_duplicates_dropped"] == 1 and summary["junk_tags_dropped"] == 2
    assert test_double_encoder == [{"device": "cpu"}]  # the seam passes the options given
    assert "only 4 concepts" in result.stderr


def test_build_clustered(runner, tag_file, test_double_encoder):
    result = runner.invoke(main, ["vocab", "build", str(tag_file), "--size", "2", "--method", "clustered",
                                  "--candidates", "3"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == ["dog", "440 hz tone"]
    assert len(test_double_encoder) == 1


def test_build_errors(runner, tmp_path, tag_file):
    result = runner.invoke(main, ["vocab", "build", str(tmp_path / "missing.json")])
    assert result.exit_code == 1 and result.stderr.startswith("error: ") and "no such tag file" in result.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("clip,name\na,b\n", encoding="utf-8")
    result = runner.invoke(main, ["vocab", "build", str(bad)])
    assert result.exit_code == 1 and "no 'tags' or 'labels' column" in result.stderr
    assert runner.invoke(main, ["vocab", "build", str(tag_file), "--method", "fancy"]).exit_code == 2
    assert runner.invoke(main, ["vocab", "build", str(tag_file), "--size", "0"]).exit_code == 2
    unwritable = tmp_path / "no-such-dir" / "v.txt"
    result = runner.invoke(main, ["vocab", "build", str(tag_file), "-o", str(unwritable)])
    assert result.exit_code == 1 and "cannot write" in result.stderr
