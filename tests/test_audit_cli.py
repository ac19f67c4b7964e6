"""The audit CLI verbs: output, --json / --csv exports that read back equal, one-line errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner

from audit_fixtures import build_index
from clapdex.audit import all_pairs, audit, file_profile, poorly_explained, prevalence
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
            if isinstance(value, float):
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
    expected = [{"path": profile.path, **s.to_row()} for s in profile.segments]
    out = run(root, "show", path, "--top", "2", "--json")
    assert out.exit_code == 0 and ndjson(out.output) == expected
    csv_path = tmp_path / "show.csv"
    assert run(root, "show", path, "--top", "2", "--csv", str(csv_path)).exit_code == 0
    same_values(read_csv(csv_path), expected)
    text = run(root, "show", path).output
    assert text.splitlines()[0].startswith(path) and len(text.splitlines()) == len(expected) + 1


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
