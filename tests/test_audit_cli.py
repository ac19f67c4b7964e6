"""The audit CLI verbs: output, --json / --csv exports that read back equal, one-line errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from audit_fixtures import build_index
from clapdex.audit import all_pairs, audit, file_profile, partners, poorly_explained, prevalence
from clapdex.audit.export import csv_cell
from clapdex.cli import main


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit_cli") / "index"
    store, truth = build_index(root, n_files=10, seed=11)
    yield store, truth, root
    store.close()


def run(root, *args):
    result = CliRunner().invoke(main, [*args, "--index", str(root)])
    return result


def ndjson(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def same_values(csv_rows, rows):
    """CSV cells are text: compare them with the original values' types."""
    assert len(csv_rows) == len(rows)
    for got, want in zip(csv_rows, rows):
        assert set(got) >= set(want)
        for key, value in want.items():
            cell = got[key]
            if value is None:
                assert cell == "", key
            elif isinstance(value, list):  # concepts: one "name=weight; ..." cell
                assert cell == csv_cell(value), key
                assert [part.split("=")[0] for part in cell.split("; ") if part] == [
                    item["concept"] for item in value], key
            elif isinstance(value, bool):
                assert cell == str(value), key     # True / False
            elif isinstance(value, float):
                assert float(cell) == value, key   # repr round-trips floats exactly
            elif isinstance(value, int):
                assert int(cell) == value, key
            else:
                assert cell == value, key


# (CLI arguments, the same rows from the Python API)
EXPORTS = {
    "concepts": (["concepts", "--top", "5", "--sort", "time"],
                 lambda s: [r.to_row() for r in prevalence(s, top=5, sort="time")]),
    "audit": (["audit", "dog OR 'rain on roof':0.1", "--limit", "0"],
              lambda s: [m.to_row() for m in audit(s, "dog OR 'rain on roof':0.1", limit=None).matches]),
    "cooccur": (["audit", "--cooccur", "--min-count", "2"],
                lambda s: [p.to_row() for p in all_pairs(s, min_count=2, limit=100)]),
    "poorly": (["audit", "--poorly-explained", "--below", "0.6"],
               lambda s: [r.to_row() for r in poorly_explained(s, below=0.6, limit=100)[1]]),
}


@pytest.mark.parametrize("name", list(EXPORTS))
def test_json_and_csv_exports_read_back_equal(index, tmp_path, name):
    store, truth, root = index
    args, api = EXPORTS[name]
    expected = api(store)
    assert expected, "the export must have rows to be a meaningful test"
    as_json = run(root, *args, "--json")
    assert as_json.exit_code == 0, as_json.output
    assert ndjson(as_json.output) == expected
    path = tmp_path / f"{name}.csv"
    as_csv = run(root, *args, "--csv", str(path))
    assert as_csv.exit_code == 0, as_csv.output
    same_values(read_csv(path), expected)


def test_show_exports(index, tmp_path):
    store, truth, root = index
    path = truth.paths[int(np.argmax(np.bincount(truth.file_of)))]
    profile = file_profile(store, path, top=2)
    expected = profile.rows()
    assert all(row["missing"] for row in expected)  # the fixture's files are not on disk
    out = run(root, "show", path, "--top", "2", "--json")
    assert out.exit_code == 0 and ndjson(out.output) == expected
    csv_path = tmp_path / "show.csv"
    assert run(root, "show", path, "--top", "2", "--csv", str(csv_path)).exit_code == 0
    same_values(read_csv(csv_path), expected)
    text = run(root, "show", path).output
    assert text.splitlines()[0].startswith(path) and len(text.splitlines()) == len(expected) + 2


def test_audit_prints_the_count_first_then_rows_by_weight(index):
    store, truth, root = index
    siren, music = truth.names.index("siren"), truth.names.index("music")
    mask = (truth.weights[:, siren] > 0) & ~(truth.weights[:, music] > 0)
    files = len(set(truth.file_of[mask]))
    out = run(root, "audit", "siren AND NOT music")
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert lines[0] == f"{mask.sum()} segments in {files} files match siren AND NOT music"
    # Files (in the order of their best segment), each followed by its segments, best first.
    groups = []
    for line in lines[1:]:
        if line.startswith("  "):
            groups[-1].append(float(line.split("score ")[1].split()[0]))
        else:
            groups.append([])
    assert len(groups) == files and sum(len(g) for g in groups) == mask.sum()
    assert all(g == sorted(g, reverse=True) for g in groups)
    assert [g[0] for g in groups] == sorted((g[0] for g in groups), reverse=True)
    count = run(root, "audit", "--count", "siren AND NOT music")
    assert count.output == f"{mask.sum()} segments in {files} files\n"
    count_json = run(root, "audit", "--count", "--json", "siren AND NOT music")
    assert json.loads(count_json.output) == {"segments": int(mask.sum()), "files": files}


def test_concepts_table_lists_every_active_concept(index):
    store, truth, root = index
    out = run(root, "concepts")
    lines = out.output.splitlines()
    assert lines[0].split() == ["concept", "files", "segments", "time", "%", "mean", "w", "max", "w"]
    assert len(lines) - 1 == int(((truth.weights > 0).sum(axis=0) > 0).sum())


@pytest.mark.parametrize("args, message", [
    (["audit", "dog AND (cat"], "error: unclosed '(' at character 9 of 'dog AND (cat'"),
    (["audit", "sirne"], "error: unknown concept 'sirne' at character 1; closest: siren"),
    (["audit"], "error: give a concept expression"),
    (["audit", "--cooccur", "nope"], "error: unknown concept 'nope'"),
    (["show", "missing.wav"], "error: no indexed file matches 'missing.wav'"),
])
def test_bad_input_is_one_line_error(index, args, message):
    _, _, root = index
    out = run(root, *args)
    assert out.exit_code == 1
    assert out.output.startswith(message) and out.output.count("\n") == 1
    assert "Traceback" not in out.output


def test_missing_index_is_a_clear_error(tmp_path):
    out = CliRunner().invoke(main, ["concepts", "--index", str(tmp_path / "none")])
    assert out.exit_code == 1 and out.output.startswith("error: no index at")


# ---- human output: times, paths, plurals (a hand-made index with awkward files) ------------------

ODD = "odd\nname\x1b[31m.wav"   # a newline and a terminal escape in a file name
CONCEPT_IDS = {"dog": 0, "cat": 1, "rock and roll": 2}


@pytest.fixture(scope="module")
def awkward(tmp_path_factory):
    """A 0.3 s clip with an odd name, a file past one hour, a mix, and a file that failed."""
    from audit_fixtures import decomposition, settings
    from clapdex.storage.database import FileMeta, IndexStore

    root = tmp_path_factory.mktemp("awkward")
    (root / "sub").mkdir()
    store = IndexStore.create(root / "index", settings(), list(CONCEPT_IDS), np.eye(3, 4, dtype="f4"))
    files = [(ODD, 0.3, [(0.0, 0.3, {"dog": 0.4}, 0.3)]),
             ("long.wav", 3725.0, [(3720.0, 3722.0, {"cat": 0.25}, 0.45),
                                   (3723.0, 3725.0, {"cat": 0.5}, 0.9)]),
             ("mix.wav", 2.0, [(0.0, 2.0, {"rock and roll": 0.5, "dog": 0.2}, 0.9)])]
    for name, duration, segments in files:
        weights = np.zeros((len(segments), len(CONCEPT_IDS)))
        for i, (_, _, concepts, _) in enumerate(segments):
            for concept, weight in concepts.items():
                weights[i, CONCEPT_IDS[concept]] = weight
        store.add_file(FileMeta(str(root / name), size=1, mtime_ns=1, duration=duration),
                       np.array([s[0] for s in segments]), np.array([s[1] for s in segments]),
                       np.ones((len(segments), 4), dtype="f4"),
                       decomposition(weights, np.array([s[3] for s in segments])))
    store.record_error(FileMeta(str(root / "empty.wav"), size=0, mtime_ns=1),
                       "AudioError: no audio samples")
    store.close()
    return root


def test_one_match_is_singular_and_short_clips_keep_tenths(awkward):
    out = run(awkward / "index", "audit", "--count", "'rock and roll'")
    assert out.exit_code == 0 and out.output == "1 segment in 1 file\n"
    out = run(awkward / "index", "audit", "'rock and roll'")
    assert out.output.splitlines()[0] == "1 segment in 1 file matches 'rock and roll'"
    out = run(awkward / "index", "audit", "dog")
    odd = str(awkward / "odd\\nname\\x1b[31m.wav")
    assert out.output.splitlines() == [
        "2 segments in 2 files match dog",
        odd, "  00:00.0–00:00.3  score 0.40  dog 0.40",
        str(awkward / "mix.wav"), "  00:00–00:02  score 0.20  dog 0.20"]


def test_show_prints_clock_times_and_an_escaped_path(awkward):
    out = run(awkward / "index", "show", str(awkward / ODD))
    assert out.exit_code == 0, out.output
    assert out.output.splitlines() == [
        str(awkward / "odd\\nname\\x1b[31m.wav") + "  [missing from disk]",  # never written
        "  00:00.3, 1 segment",
        "  00:00.0–00:00.3  concept fidelity 0.30  dog 0.40"]
    out = run(awkward / "index", "show", "long.wav")
    assert out.output.splitlines() == [
        str(awkward / "long.wav") + "  [missing from disk]", "  1:02:05, 2 segments",
        "  1:02:00–1:02:02  concept fidelity 0.45  cat 0.25",
        "  1:02:03–1:02:05  concept fidelity 0.90  cat 0.50"]


def test_poorly_explained_lines(awkward):
    out = run(awkward / "index", "audit", "--poorly-explained", "--below", "0.5")
    assert out.output.splitlines() == [
        "2 segments with concept fidelity below 0.5",
        f"  {awkward}/odd\\nname\\x1b[31m.wav",
        "    00:00.0–00:00.3  concept fidelity 0.30  closest: dog 0.40",
        f"  {awkward}/long.wav",
        "    1:02:00–1:02:02  concept fidelity 0.45  closest: cat 0.25"]
    out = run(awkward / "index", "audit", "--poorly-explained", "--below", "0.4", "--count")
    assert out.output == "1 segment with concept fidelity below 0.4\n"


def test_json_keeps_raw_absolute_paths_and_float_seconds(awkward):
    rows = ndjson(run(awkward / "index", "show", str(awkward / ODD), "--json").output)
    assert rows == [{"path": str(awkward / ODD), "file_id": 1, "segment_id": 1, "start": 0.0,
                     "end": 0.3,
                     "concept_fidelity": pytest.approx(0.3), "fidelity": pytest.approx(0.65),
                     "concepts": [{"concept": "dog", "weight": pytest.approx(0.4)}],
                     "missing": True,  # the fixture's files are not on disk
                     # stored without audio measures: not measured, no truncation warning
                     "warning": None, "flags": None, "level_db": None, "clipped_fraction": None}]
    for args in (["audit", "dog"], ["audit", "--poorly-explained"]):
        for row in ndjson(run(awkward / "index", *args, "--json").output):
            assert row["path"].startswith(str(awkward) + "/")
            assert isinstance(row["start"], float) and isinstance(row["end"], float)


def test_show_names_the_file_that_failed(awkward, monkeypatch):
    monkeypatch.chdir(awkward / "sub")
    out = run(awkward / "index", "show", "../empty.wav")
    assert out.exit_code == 1
    assert out.output == f"error: {awkward}/empty.wav could not be indexed: AudioError: no audio samples\n"


def test_cooccur_takes_one_concept_name(awkward, index):
    out = run(awkward / "index", "audit", "--cooccur", "rock and roll", "--min-count", "1", "--json")
    assert out.exit_code == 0, out.output     # a name that reads as an expression
    assert [r["concept_b"] for r in ndjson(out.output)] == ["dog"]
    store, _, root = index
    quoted = run(root, "audit", "--cooccur", "'dog bark'", "--json")
    expected = [p.to_row() for p in partners(store, "dog bark", limit=100)]
    assert expected and ndjson(quoted.output) == expected
    for expression in ("dog AND siren", "dog:0.2", "dog OR (cat"):
        out = run(root, "audit", expression, "--cooccur")
        assert out.exit_code == 1
        assert out.output == f"error: --cooccur takes one concept name, not {expression!r}\n"


def test_tables_show_two_decimals(index):
    _, _, root = index
    for args in (["concepts"], ["audit", "--cooccur", "--min-count", "2"]):
        lines = run(root, *args).output.splitlines()
        assert len(lines) > 1
        last = lines[1].split()[-1]
        assert last.count(".") == 1 and len(last.split(".")[1]) == 2, lines[1]


@pytest.mark.parametrize("columns", [60, 80, 200])
def test_show_audit_and_poorly_explained_fit_the_terminal(index, monkeypatch, columns):
    """Every line but a file's own (which is never cut) fits $COLUMNS."""
    monkeypatch.setenv("COLUMNS", str(columns))
    root = index[2]
    expression = "siren OR traffic OR wind"
    indexed = {row.path for row in index[0].files()}
    path = sorted(r["path"] for r in ndjson(run(root, "audit", expression, "--json").output))[0]
    for args in (("show", path, "--top", "5"), ("audit", expression),
                 ("audit", "--poorly-explained", "--below", "0.9")):
        out = run(root, *args)
        assert out.exit_code == 0, out.output
        lines = out.output.splitlines()
        assert lines, args
        # (the fixture's files are not on disk: show marks the file's line)
        own = [line.strip().removesuffix("  [missing from disk]") in indexed for line in lines]
        assert all(len(line) <= columns for line, is_own in zip(lines, own) if not is_own), args
        assert any(own), args
