"""The public Python API (clapdex.Index and the module-level verbs), the encoder seam and progress
events, on a small generated collection with the spectral TEST DOUBLE (not CLAP)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import clapdex
from clapdex import encoder_registry
from clapdex.errors import IndexMismatchError, IndexNotFoundError, ModelError
from clapdex.progress import AUDIO_SECONDS
from tests.audio_collection import make_collection, write_vocabulary
from tests.doubles import SpectralTestEncoder, use_encoder

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    make_collection(root / "audio")
    vocab = write_vocabulary(root / "vocab")
    events = []
    index = clapdex.Index(root / "index", encoder=SpectralTestEncoder())
    summary = index.add([root / "audio"], vocabulary=str(vocab), progress=events.append)
    yield {"root": root, "index": index, "summary": summary, "events": events, "vocab": vocab}
    index.close()


def test_add_creates_the_index_and_reports_progress(built):
    summary, events = built["summary"], built["events"]
    assert summary.added == 5 and len(summary.skipped) == 3
    assert events[0].done == 0 and events[-1].finished
    assert {e.task for e in events} <= {"checking", "indexing", "estimating audio mean"}
    checking = [e for e in events if e.task == "checking"]
    assert checking[-1].finished and checking[-1].done == summary.files_seen
    encoding = events[len(checking):]   # the long part counts seconds of audio, file by file
    assert {e.unit for e in encoding} == {AUDIO_SECONDS} and encoding[-1].finished
    assert [e.done for e in encoding] == sorted(e.done for e in encoding)
    assert encoding[-1].done == pytest.approx(encoding[-1].total)
    assert encoding[-1].total == pytest.approx(summary.audio_seconds, abs=0.01)
    named = {e.item for e in encoding if e.item}     # the file being read, each good one in turn
    assert len(named) == summary.added and not named & {s["path"] for s in summary.skipped}


def test_every_read_verb_answers_on_the_index(built):
    index = built["index"]
    hits = index.search(text="a 400 hz tone", k=2)
    assert hits.results[0].path.endswith("b400.flac")
    assert index.similar(hits.results[0].path, k=1, include_self=True).results[0].path == \
        hits.results[0].path
    assert hits.results[0].path not in {r.path for r in index.similar(hits.results[0].path)}
    assert index.concepts(top=3)[0].files >= 1
    name = index.concepts(top=1)[0].concept
    assert index.count(name).segments >= 1
    assert index.audit(name).n_segments == index.count(name).segments
    assert isinstance(index.cooccurrence(min_count=1), list)
    low = index.poorly_explained(below=1.0, limit=2)
    assert low.total >= len(low.segments) == 2
    assert index.file("a200.wav").path.endswith("a200.wav")
    status, report = index.status(), index.doctor()
    assert status.counts["files"] == 5 and report.ok
    # typed records whose JSON is what `status --json` / `doctor --json` always printed
    assert list(clapdex.to_jsonable(status)) == ["index", "database", "settings", "counts",
                                                 "roots", "errors", "disk", "ann", "flags",
                                                 "truncated"]
    assert list(clapdex.to_jsonable(report)) == [
        "index", "integrity", "faiss", "orphans", "missing_files", "stale_segments", "repaired",
        "faiss_lags", "roots", "unknown_roots", "ok", "lines"]


def test_explain_uses_the_index_settings(built):
    index = built["index"]
    path = built["root"] / "audio" / "tones" / "a200.wav"
    windows = index.explain(path, top=2)
    assert windows and all(w.lam == pytest.approx(index.settings.lam) for w in windows)
    assert windows[0].concepts[0].concept == "a 200 hz tone"
    same = clapdex.explain_file(path, SpectralTestEncoder(), index=index.path, top=2)
    assert clapdex.to_jsonable(same) == clapdex.to_jsonable(windows)


def test_open_index_refuses_a_missing_index(tmp_path):
    with pytest.raises(IndexNotFoundError):
        clapdex.open_index(tmp_path / "nothing")


def test_create_index_then_reindex(tmp_path, built):
    index = clapdex.create_index(tmp_path / "ix", SpectralTestEncoder(), vocabulary=str(built["vocab"]),
                                 lam=0.1)
    assert index.counts()["files"] == 0 and index.settings.lam == 0.1
    with pytest.raises(IndexMismatchError):
        clapdex.create_index(tmp_path / "ix", SpectralTestEncoder(), lam=0.2)
    index.add([built["root"] / "audio" / "tones"])
    assert index.reindex(lam=0.2).lam == 0.2 and index.settings.lam == 0.2  # state refreshed
    index.close()


def test_json_conversion_is_the_clis(built):
    row = clapdex.to_jsonable(built["index"].concepts(top=1)[0])
    assert set(row) >= {"concept", "files", "segments"}
    json.dumps(clapdex.to_jsonable(built["summary"]))


# ---- the encoder seam ------------------------------------------------------------------------------

def test_registry_loads_by_name_spec_and_environment(monkeypatch):
    made = encoder_registry.load("tests.doubles:SpectralTestEncoder")
    assert isinstance(made, SpectralTestEncoder)
    use_encoder(monkeypatch, lambda **options: SpectralTestEncoder(seed=options.get("batch_size", 0)))
    assert encoder_registry.load(batch_size=3).fingerprint.endswith(":s3")  # $CLAPDEX_ENCODER
    with pytest.raises(ModelError, match="unknown encoder"):
        encoder_registry.load("no-such-encoder")
    with pytest.raises(ModelError, match="cannot be loaded"):
        encoder_registry.load("tests.doubles:NoSuchThing")


def test_a_subprocess_cli_uses_the_encoder_named_in_the_environment(built):
    env = {**os.environ, "CLAPDEX_ENCODER": "tests.doubles:SpectralTestEncoder",
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    result = subprocess.run([sys.executable, "-c", "from clapdex.cli import main; main()", "search",
                             "a 700 hz tone", "--index", str(built["index"].path), "-k", "1",
                             "--json"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["path"].endswith("c700.ogg")


def test_library_modules_never_import_the_cli():
    import re

    importing = re.compile(r"^\s*(from|import) clapdex\.cli\b", re.M)
    for path in (REPO / "src" / "clapdex").rglob("*.py"):
        if "cli" in path.relative_to(REPO / "src" / "clapdex").parts:
            continue
        assert not importing.search(path.read_text(encoding="utf-8")), path


def test_files_and_segments_by_id(built):
    from clapdex.errors import QueryError

    index = built["index"]
    failed = index.files(status="error")
    assert len(failed) == 3 and all(f.error for f in failed)
    first = index.files(status="indexed", limit=1)[0]
    assert index.file_info(first.id) == first and first.segments >= 1
    hit = index.search(text="a 400 hz tone", k=1, segments=True).results[0]
    segment = index.segment(hit.segment_id)
    assert segment.path == hit.path and (segment.start, segment.end) == (hit.start, hit.end)
    assert "a 400 hz tone" in index.concept_names()
    with pytest.raises(QueryError):
        index.file_info(10**9)


def test_every_error_class_lives_in_errors_py_and_its_docstring():
    import re

    import clapdex.errors as errors

    src = REPO / "src" / "clapdex"
    ours = {name for name, value in vars(errors).items()
            if isinstance(value, type) and issubclass(value, errors.ClapdexError)}
    for path in src.rglob("*.py"):
        if path.name != "errors.py":
            bases = re.findall(r"^class \w+\((\w+)\)", path.read_text(encoding="utf-8"), re.M)
            assert not ours & set(bases), path  # a ClapdexError defined outside errors.py
    for name in re.findall(r"^class (\w+)\(", (src / "errors.py").read_text(encoding="utf-8"), re.M):
        assert re.search(rf"\b{name}\b", errors.__doc__), name
