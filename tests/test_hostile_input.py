"""Hostile and broken input (issue 18): names that are not UTF-8, special files, sample-rate bombs,
unlistable folders, CSV formula injection, hostile names in human output. Indexing uses the
spectral TEST DOUBLE (not CLAP); files, folders, FIFOs and the database are real."""

from __future__ import annotations

import csv
import json
import os
import re
import stat
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from clapdex import audio, indexer
from clapdex.cli import main
from clapdex.errors import AudioError
from clapdex.storage.database import IndexStore
from clapdex.storage.schema import os_text_from_db, os_text_to_db
from tests.audio_collection import tone_mix, write_vocabulary
from tests.doubles import SpectralTestEncoder, use_encoder

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def double(monkeypatch):
    use_encoder(monkeypatch, lambda **_: SpectralTestEncoder())


def run(*args):
    return CliRunner().invoke(main, [os.fsdecode(a) if isinstance(a, bytes) else str(a)
                                     for a in args])


def tone(path: str | bytes | Path, seconds: float = 1.5, rate: int = 8000, freq: int = 400) -> None:
    # soundfile encodes a str name strictly: write names that are not UTF-8 as bytes.
    os.makedirs(os.path.dirname(os.fsencode(path)), exist_ok=True)
    soundfile.write(os.fsencode(path), tone_mix([freq], seconds, rate), rate)


def index(folder, index_path, vocab, **kwargs):
    return indexer.index_paths([folder], SpectralTestEncoder(), index_path, vocabulary=str(vocab),
                               show_progress=False, **kwargs)


# ---- 1. names that are not UTF-8 ----

def test_stored_form_is_valid_utf8_and_round_trips():
    for name in ["/a/caf\udce9.wav", "/a/\ufdd0e9.wav", "/a/\ufdd0\udcff\ufdd0.wav", "/plain/ü.wav",
                 "/a/\\xe9.wav"]:
        stored = os_text_to_db(name)
        stored.encode("utf-8")  # what SQLite and PostgreSQL text columns accept
        assert os_text_from_db(stored) == name
    assert os_text_to_db("/plain/ü.wav") == "/plain/ü.wav"       # valid names stored as they are
    assert len({os_text_to_db(n) for n in ["/a/\udce9", "/a/\ufdd0e9"]}) == 2  # injective


def test_names_that_are_not_utf8_are_indexed_stored_and_shown_escaped(tmp_path, double):
    folder = tmp_path / "latin1"
    folder.mkdir()
    latin1 = os.path.join(os.fsencode(folder), b"caf\xe9.wav")
    tone(latin1, freq=400)
    tone(os.path.join(os.fsencode(folder), b"z\xff\xfe.wav"), freq=700)
    tone(folder / "zzz_after.wav", freq=1000)   # files after the bad name are indexed too
    vocab = write_vocabulary(tmp_path)
    summary = index(folder, tmp_path / "index", vocab)
    assert summary.added == 3 and not summary.skipped

    with IndexStore.open(tmp_path / "index") as store:
        paths = {row.path for row in store.files()}
        assert os.fsdecode(latin1) in paths
        assert all(os.path.exists(p) for p in paths)  # lossless: the OS finds every stored path
    assert index(folder, tmp_path / "index", vocab).unchanged == 3  # and the next run knows them

    shown = run("status", "--index", tmp_path / "index")
    assert shown.exit_code == 0
    as_json = run("status", "--index", tmp_path / "index", "--json")
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["counts"]["files"] == 3

    found = run("search", "--index", tmp_path / "index", "a 400 hz tone", "--json")
    assert found.exit_code == 0, found.output
    assert "\\udce9" in found.stdout                   # the byte, as a JSON escape
    assert os.fsdecode(latin1) in [json.loads(line)["path"] for line in found.stdout.splitlines()]
    human = run("search", "--index", tmp_path / "index", "a 400 hz tone")
    assert "caf\\xe9.wav" in human.stdout


def test_a_bad_file_with_a_name_that_is_not_utf8_is_recorded(tmp_path, double):
    folder = tmp_path / "a"
    folder.mkdir()
    (Path(os.fsdecode(os.path.join(os.fsencode(folder), b"bad\xff.wav")))).write_bytes(b"junk" * 10)
    tone(folder / "good.wav")
    summary = index(folder, tmp_path / "index", write_vocabulary(tmp_path))
    assert summary.added == 1 and [s["path"] for s in summary.skipped] == [
        os.fsdecode(os.path.join(os.fsencode(folder), b"bad\xff.wav"))]
    text = run("status", "--index", tmp_path / "index")
    lines = text.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if line.endswith("bad\\xff.wav"))
    assert "not a readable audio file" in lines[at + 1]  # the reason under the file's own line


# ---- 4. sample-rate bombs ----

def _wav_header_only(path: Path, rate: int, frames: int, data: bytes) -> None:
    """A 16-bit mono PCM WAV whose header says `rate`."""
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(data), b"WAVE", b"fmt ", 16, 1, 1,
                         rate, rate * 2, 2, 16, b"data", len(data))
    path.write_bytes(header + data)


def test_absurd_sample_rates_are_refused_with_a_reason(tmp_path):
    bomb = tmp_path / "bomb.wav"
    _wav_header_only(bomb, 1, 2000, np.zeros(2000, np.int16).tobytes())  # 33 minutes at 1 Hz
    with pytest.raises(AudioError, match="implausible sample rate 1 Hz"):
        list(audio.iter_windows(bomb, 48000, 7.0))
    with pytest.raises(AudioError, match="implausible sample rate"):
        audio.probe(bomb)


def test_absurd_duration_per_byte_is_refused():
    class Header:  # what soundfile reports for a header claiming a day of audio
        samplerate, channels, frames = 8000, 1, 8000 * 86400
    with pytest.raises(AudioError, match="implausible header: 86400 s of audio in"):
        audio._info_of(__file__, Header())


def test_block_sizes_bound_memory_whatever_the_header():
    many_channels = audio.AudioInfo(1.0, 48000, 4096, 48000)
    upsampled = audio.AudioInfo(1.0, audio.MIN_SAMPLE_RATE, 1, 1000)
    assert audio._block_frames(many_channels, 48000) * 4096 <= audio._BLOCK_SAMPLES
    frames = audio._block_frames(upsampled, 48000)
    assert frames * 48000 / audio.MIN_SAMPLE_RATE <= audio._BLOCK_SAMPLES


# ---- 7. special files ----

def test_fifo_and_device_named_directly_do_not_hang(tmp_path, double):
    fifo = tmp_path / "f.wav"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.wav"
    zero.symlink_to("/dev/zero")
    vocab = write_vocabulary(tmp_path)
    code = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/src']\n"
            "from tests.doubles import SpectralTestEncoder\nfrom clapdex import indexer\n"
            "s = indexer.index_paths(sys.argv[2:4], SpectralTestEncoder(), sys.argv[4],"
            " vocabulary=sys.argv[5], show_progress=False)\n"
            "print(sorted((d['path'], d['error']) for d in s.skipped))")
    done = subprocess.run([sys.executable, "-c", code, str(ROOT), str(fifo), str(zero),
                           str(tmp_path / "index"), str(vocab)],
                          capture_output=True, text=True, timeout=120)  # a hang fails here
    assert done.returncode == 0, done.stderr
    assert "not a regular file (a FIFO or pipe)" in done.stdout
    assert "not a regular file (a character device)" in done.stdout


def test_explain_on_a_fifo_is_a_one_line_error(tmp_path):
    fifo = tmp_path / "f.wav"
    os.mkfifo(fifo)
    with pytest.raises(AudioError, match="not a regular file"):
        audio.load_audio(fifo, 16000)
    vocab = write_vocabulary(tmp_path)
    code = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/src']\n"
            "from clapdex.cli import main; main(sys.argv[2:])")
    env = {**os.environ, "CLAPDEX_ENCODER": "tests.doubles:SpectralTestEncoder"}  # the seam
    done = subprocess.run([sys.executable, "-c", code, str(ROOT), "explain", str(fifo),
                           "--vocab", str(vocab)], capture_output=True, text=True, timeout=120,
                          env=env)
    assert done.returncode == 1 and "not a regular file" in done.stderr
    assert "Traceback" not in done.stderr


def test_special_files_in_folders_are_reported_in_the_summary_and_status(tmp_path, double):
    folder = tmp_path / "a"
    folder.mkdir()
    tone(folder / "good.wav")
    os.mkfifo(folder / "pipe.wav")
    (folder / "zero.flac").symlink_to("/dev/zero")
    (folder / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    os.mkfifo(folder / "not-audio-name")  # not an audio name: ignored like any other
    summary = index(folder, tmp_path / "index", write_vocabulary(tmp_path))
    reasons = {Path(s["path"]).name: s["error"] for s in summary.skipped}
    assert summary.added == 1
    assert reasons == {"pipe.wav": "not a regular file (a FIFO or pipe)",
                       "zero.flac": "not a regular file (a character device)",
                       "gone.wav": "broken symlink"}
    status = json.loads(run("status", "--index", tmp_path / "index", "--json").stdout)
    assert {Path(e["path"]).name: e["error"] for e in status["errors"]} == reasons

    (folder / "pipe.wav").unlink()   # problem gone: the next run drops its error row
    index(folder, tmp_path / "index", write_vocabulary(tmp_path))
    status = json.loads(run("status", "--index", tmp_path / "index", "--json").stdout)
    assert "pipe.wav" not in {Path(e["path"]).name for e in status["errors"]}


# ---- 10. --prune and unreadable folders ----

def test_prune_keeps_the_files_of_a_folder_that_cannot_be_listed():
    """The real OS refusal: root lists any folder, so the runs drop to user "nobody" (setpriv)."""
    import shutil
    import tempfile

    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to test permissions"
    as_user = ([setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"]
               if os.geteuid() == 0 else [])
    work = Path(tempfile.mkdtemp(prefix="clapdex-prune-"))
    try:
        folder, locked = work / "a", work / "a" / "locked"
        tone(locked / "x.wav")
        tone(folder / "y.wav", freq=700)
        vocab = write_vocabulary(work)
        if as_user:  # nobody owns the test folder: it writes the index there
            for path in [work, *work.rglob("*")]:
                os.chown(path, 65534, 65534)
        code = ("import sys, json; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/src']\n"
                "from tests.doubles import SpectralTestEncoder\nfrom clapdex import indexer\n"
                "s = indexer.index_paths([sys.argv[2]], SpectralTestEncoder(), sys.argv[3],"
                " vocabulary=sys.argv[4], prune=True, show_progress=False)\n"
                "print(json.dumps({'removed': s.removed, 'added': s.added,"
                " 'errors': [e['error'] for e in s.skipped]}))")
        command = as_user + [sys.executable, "-c", code, str(ROOT), str(folder), str(work / "index"),
                             str(vocab)]
        env = {**os.environ, "CLAPDEX_CACHE_DIR": str(work / "cache"),
               "NUMBA_CACHE_DIR": str(work / "numba")}  # places user nobody may write
        probe = subprocess.run(as_user + [sys.executable, "-c", f"import sys; sys.path[:0] = "
                                          f"[{str(ROOT)!r} + '/src']; import clapdex.indexer"],
                               capture_output=True)
        if probe.returncode != 0:
            pytest.skip("user nobody cannot read this checkout; see the test below")
        first = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        assert first.returncode == 0, first.stderr
        assert json.loads(first.stdout)["added"] == 2
        locked.chmod(0)
        second = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
        locked.chmod(stat.S_IRWXU)
        assert second.returncode == 0, second.stderr
        result = json.loads(second.stdout)
        assert result["removed"] == 0
        assert result["errors"] == ["cannot list folder (Permission denied)"]
        with IndexStore.open(work / "index") as store:
            assert len(store.files("indexed")) == 2
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_prune_keeps_a_locked_folder_as_a_user_sees_it(tmp_path, double, monkeypatch):
    """What a chmod-0 folder does for a user who is not root (the suite may run as root): listing
    it and stat-ing anything in it fail with EACCES."""
    folder = tmp_path / "a"
    locked = folder / "locked"
    locked.mkdir(parents=True)
    tone(locked / "x.wav")
    tone(folder / "y.wav", freq=700)
    vocab = write_vocabulary(tmp_path)
    assert index(folder, tmp_path / "index", vocab).added == 2
    real_scandir, real_stat = os.scandir, os.stat

    def scandir(path):
        if os.fspath(path) == str(locked):
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    def stat_(path, *args, **kwargs):
        if isinstance(path, str) and path.startswith(str(locked) + os.sep):
            raise PermissionError(13, "Permission denied")
        return real_stat(path, *args, **kwargs)
    monkeypatch.setattr(os, "scandir", scandir)
    monkeypatch.setattr(os, "stat", stat_)
    summary = index(folder, tmp_path / "index", vocab, prune=True)
    monkeypatch.undo()
    assert summary.removed == 0
    assert {s["error"] for s in summary.skipped} == {"cannot list folder (Permission denied)"}
    with IndexStore.open(tmp_path / "index") as store:
        assert len(store.files("indexed")) == 2
    (locked / "x.wav").unlink()   # really gone (and the folder listable): pruned
    assert index(folder, tmp_path / "index", vocab, prune=True).removed == 1


# ---- 13. CSV formula injection ----

def test_csv_cells_that_start_a_formula_are_neutralised(tmp_path):
    from clapdex.audit.export import write_csv
    from clapdex.printable import spreadsheet_safe

    rows = [{"concept": '=cmd|" /c calc"!a0', "n": -3, "w": -0.5, "p": "+1", "q": "@SUM(A1)",
             "r": "-2", "s": "'quoted", "t": "\tx", "concepts": [{"concept": "=evil", "weight": 0.5}],
             "ok": "dog"}]
    write_csv(rows, tmp_path / "out.csv")
    with open(tmp_path / "out.csv", newline="") as handle:
        cells = next(csv.DictReader(handle))
    assert cells["concept"] == "'=cmd|\" /c calc\"!a0"
    assert cells["n"] == "-3" and cells["w"] == "-0.5"     # numbers stay numbers
    assert cells["p"] == "'+1" and cells["q"] == "'@SUM(A1)" and cells["r"] == "'-2"
    assert cells["s"] == "''quoted" and cells["t"] == "'\tx" and cells["ok"] == "dog"
    assert cells["concepts"] == "'=evil=0.5"
    for value in ["=a", "'b", "plain", "-"]:
        assert spreadsheet_safe(value)[1:] == value or spreadsheet_safe(value) == value


def test_eval_csv_is_neutralised_too(tmp_path):
    from dataclasses import dataclass

    from clapdex.evaluation.report import write_csv

    @dataclass
    class Row:
        label: str
        score: float

    write_csv([Row("=HYPERLINK(1)", -1.0)], tmp_path / "e.csv")
    assert (tmp_path / "e.csv").read_text().splitlines()[1] == "'=HYPERLINK(1),-1.0"


# ---- 6. hostile names in human output ----

def test_status_summary_and_doctor_escape_hostile_names(tmp_path, double):
    folder = tmp_path / "a"
    folder.mkdir()
    tone(folder / "x\x1b[2J.wav")
    (folder / "bad\nINJECTED LINE: all files ok.wav").write_bytes(b"junk" * 10)
    vocab = write_vocabulary(tmp_path)
    out = run("index", folder, "--index", tmp_path / "index", "--vocab", vocab)
    assert out.exit_code == 0, out.output
    status = run("status", "--index", tmp_path / "index")
    (folder / "x\x1b[2J.wav").unlink()
    doctor = run("doctor", "--index", tmp_path / "index")
    for text in (out.stdout, status.stdout, doctor.stdout):
        assert "\x1b" not in text
        assert not any(line.startswith("INJECTED") for line in text.splitlines())
    assert "bad\\nINJECTED LINE" in out.stdout and "bad\\nINJECTED LINE" in status.stdout
    assert "x\\x1b[2J.wav" in doctor.stdout


# ---- 12. one-line errors, not tracebacks ----

@pytest.fixture(scope="module")
def audit_index(tmp_path_factory):
    from tests.audit_fixtures import build_index

    store, truth = build_index(tmp_path_factory.mktemp("audit") / "index")
    yield store, truth
    store.close()


@pytest.mark.parametrize("expression", ["(" * 300 + "dog" + ")" * 300, "NOT " * 200 + "dog",
                                        "dog AND " * 600 + "cat"])
def test_deep_or_long_expressions_are_one_line_errors(audit_index, expression):
    from clapdex.audit.queries import audit
    from clapdex.errors import QueryError

    with pytest.raises(QueryError) as caught:
        audit(audit_index[0], expression)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 400


def test_an_or_of_many_concepts_is_answered(audit_index):
    from clapdex.audit.queries import audit

    store, truth = audit_index
    names = list(truth.names)
    many = " OR ".join(f'"{names[i % len(names)]}"' + (":0.2" if i % 3 else "") for i in range(700))
    result = audit(store, many, limit=None)
    dog_or_cat = " OR ".join(f'"{n}"' + ":0.2" for n in names) + " OR " + " OR ".join(
        f'"{n}"' for n in names[0::3])
    assert result.n_segments == audit(store, dog_or_cat, limit=None).n_segments > 0
    nested = " OR ".join(f'("{names[i % len(names)]}" AND NOT "{names[(i + 1) % len(names)]}")'
                         for i in range(450))  # more groups than one UNION may hold
    assert audit(store, nested, limit=5).n_segments > 0
    assert audit(store, "(" * 60 + "dog" + ")" * 60).n_segments == audit(store, "dog").n_segments


@pytest.fixture
def small_index(tmp_path, double):
    folder = tmp_path / "a"
    folder.mkdir()
    tone(folder / "one.wav")
    tone(folder / "two.wav", freq=1000, seconds=9.0)
    index(folder, tmp_path / "index", write_vocabulary(tmp_path))
    return tmp_path / "index"


def _sql(index_path, statement, *args):
    import sqlite3

    with sqlite3.connect(index_path / "clapdex.sqlite") as connection:
        connection.execute(statement, args)


@pytest.mark.parametrize("statement, args, reason", [
    ("UPDATE index_settings SET audio_mean = ?", (b"\0" * 12,), "audio mean holds 3 values"),
    ("UPDATE index_settings SET dimension = ?", (7,), "holds"),
    ("UPDATE index_settings SET dimension = ?", (-1,), "implausible embedding dimension"),
    ("UPDATE segments SET embedding = ? WHERE id = 2", (b"\0" * 10,), "segment 2 holds 2.5 values"),
    ("UPDATE concepts SET embedding = ? WHERE id = 3", (b"\0" * 8,), "concept 3 holds 2 values"),
    ("UPDATE index_settings SET created_at = ?", ("\0\0\0\0",), "settings row unreadable"),
])
def test_tampered_rows_are_one_line_errors(small_index, statement, args, reason):
    _sql(small_index, statement, *args)
    result = run("search", "--index", small_index, "a 400 hz tone")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "is damaged" in result.stderr and reason in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("nesting", [100_000])
def test_deeply_nested_json_tags_are_a_one_line_error(tmp_path, nesting):
    from clapdex.concepts.vocab_build import read_tag_file
    from clapdex.errors import VocabularyError

    path = tmp_path / "tags.json"
    path.write_text('{"a": {"tags": ' + "[" * nesting + "]" * nesting + "}}")
    with pytest.raises(VocabularyError, match="nested too deeply"):
        read_tag_file(path)


@pytest.mark.parametrize("url, reason", [
    ("postgresql+pg8000://user@localhost/db", "is not installed"),
    ("this is not a url", "index"),
    ("nosuchdialect://x/y", "no SQLAlchemy dialect"),
])
def test_bad_database_urls_are_one_line_errors(small_index, url, reason):
    (small_index / "database.url").write_text(url + "\n")
    result = run("status", "--index", small_index)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert reason in result.stderr and len(result.stderr.strip().splitlines()) == 1


# ---- 3. report labels ----

def test_report_draws_tex_and_huge_names_as_plain_short_labels(tmp_path):
    import resource

    from tests.audit_fixtures import CONCEPTS, build_index

    names = ("$x$", "cost $5", "\\frac{a}{b} $", "x" * 20_000, "x" * 20_001) + CONCEPTS[5:]
    store, _ = build_index(tmp_path / "index", n_files=4, seed=1, names=names,
                           file_name="$clip {}$ \x1b[2J " + "y" * 3000 + ".wav")
    store.close()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result = run("report", "-o", tmp_path / "r.html", "--index", tmp_path / "index", "--json",
                 "--top", "12", "--files", "2")
    assert result.exit_code == 0, result.output
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 400, f"rendering grew the process by {grown_mb:.0f} MB"
    assert json.loads(result.stdout)["charts"] == 5


def test_chart_labels_are_one_line_and_short():
    from clapdex.audit.report import LABEL_CHARS, _label

    assert _label("a\nb$c$") == "a\\nb$c$"
    assert len(_label("z" * 20_000)) == LABEL_CHARS and _label("z" * 20_000).endswith("…")


# ---- 8. disk full while saving the FAISS file; 11. temporaries of killed saves ----

def test_a_failed_faiss_write_raises_and_keeps_the_old_file(tmp_path):
    """A real write failure: the file size limit (RLIMIT_FSIZE) makes the kernel refuse writes."""
    code = ("import sys, resource, signal; sys.path[:0] = [sys.argv[1] + '/src']\n"
            "import faiss, numpy as np\nfrom clapdex.storage.dense import DenseIndex, DenseSaveError\n"
            "index = faiss.IndexIDMap2(faiss.IndexFlatIP(64))\n"
            "index.add_with_ids(np.ones((200, 64), 'f4'), np.arange(200))\n"
            "dense = DenseIndex(index, 64, 'Flat')\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
            "resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))\n"
            "try:\n    dense.save(sys.argv[2])\nexcept DenseSaveError as error:\n    print(error)\n")
    target = tmp_path / "dense.faiss"
    target.write_bytes(b"old contents")
    done = subprocess.run([sys.executable, "-c", code, str(ROOT), str(target)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "could not be written (File too large); the old one is kept" in done.stdout
    assert target.read_bytes() == b"old contents"
    assert [p.name for p in tmp_path.iterdir()] == ["dense.faiss"]   # no temporary left


def test_disk_full_after_the_commit_is_one_warning_and_the_data_stays(small_index, tmp_path,
                                                                      double, monkeypatch):
    from clapdex.storage.dense import DenseIndex

    old = (small_index / "dense.faiss").read_bytes()
    tone(tmp_path / "a" / "three.wav", freq=1500)

    def full(fd):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "fsync", full)   # where a full disk shows on a delayed write
    result = run("index", tmp_path / "a", "--index", small_index)
    monkeypatch.undo()
    assert result.exit_code == 0, result.output
    assert "1 added" in result.stdout and "Traceback" not in result.output
    warning = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warning) == 1 and "No space left on device" in warning[0]
    assert "stored file is in the database" in warning[0] and "will be rebuilt" in warning[0]
    assert (small_index / "dense.faiss").read_bytes() == old
    with IndexStore.open(small_index) as store:
        assert len(DenseIndex.open(store).ids()) == len(store.segment_ids())  # caught up
    assert run("doctor", "--index", small_index).exit_code == 0


def test_temporaries_of_killed_saves_are_removed_on_open(small_index):
    from clapdex.storage.dense import DenseIndex

    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True, check=True)
    dead = small_index / f".dense.faiss.{finished.stdout.strip()}.tmp"
    dead.write_bytes(b"partial")
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        saving = small_index / f".dense.faiss.{alive.pid}.tmp"   # a save still in progress
        saving.write_bytes(b"partial")
        with IndexStore.open(small_index) as store:
            DenseIndex.open(store)
        assert not dead.exists() and saving.exists()
    finally:
        alive.kill()
        alive.wait()


# ---- 9. doctor on a damaged database ----

def _zero_page_of(index_path: Path, name: str) -> None:
    import sqlite3

    database = index_path / "clapdex.sqlite"
    with sqlite3.connect(database) as connection:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        page_size = connection.execute("PRAGMA page_size").fetchone()[0]
        root = connection.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                                  (name,)).fetchone()[0]
    connection.close()
    with open(database, "r+b") as handle:
        handle.seek((root - 1) * page_size)
        handle.write(b"\0" * page_size)


@pytest.mark.parametrize("damaged", ["concept_stats", "ix_postings_segment_concept_weight"])
def test_doctor_finds_and_repairs_damage_to_derived_data(small_index, damaged):
    _zero_page_of(small_index, damaged)
    found = run("doctor", "--index", small_index)
    assert found.exit_code == 1 and "Traceback" not in found.output
    assert "problem: the database is damaged" in found.stdout
    repaired = run("doctor", "--repair", "--index", small_index)
    assert repaired.exit_code == 0, repaired.output
    assert "repaired: rebuilt the database indexes and audit totals" in repaired.stdout
    assert run("doctor", "--index", small_index).exit_code == 0
    assert run("concepts", "--index", small_index).exit_code == 0
    assert run("search", "--index", small_index, "a 400 hz tone").exit_code == 0


def test_doctor_reports_damage_it_cannot_repair(small_index):
    _zero_page_of(small_index, "postings")
    assert run("doctor", "--index", small_index).exit_code == 1
    repaired = run("doctor", "--repair", "--index", small_index)
    assert repaired.exit_code == 1 and "Traceback" not in repaired.output
    assert "clapdex index --rebuild" in repaired.stdout


def test_doctor_finds_rows_no_reader_could_use(small_index):
    _sql(small_index, "UPDATE segments SET embedding = ? WHERE id = 1", b"\0" * 6)
    result = run("doctor", "--index", small_index)
    assert result.exit_code == 1
    assert "1 segment embedding(s) of the wrong size" in result.stdout


# ---- 5. vocabulary size ----

def test_a_huge_vocabulary_is_refused_before_any_index_exists(tmp_path, double):
    from clapdex.concepts.vocabulary import MAX_CONCEPTS

    vocab = tmp_path / "huge.txt"
    vocab.write_text("\n".join(f"concept {i}" for i in range(20_000)) + "\n")
    tone(tmp_path / "a" / "x.wav")
    result = run("index", tmp_path / "a", "--index", tmp_path / "index", "--vocab", vocab)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"20000 concepts; at most {MAX_CONCEPTS}" in result.stderr
    assert "3.2 GB" in result.stderr
    assert not (tmp_path / "index").exists()   # nothing half-created


def test_a_concept_longer_than_the_column_is_refused(tmp_path):
    from clapdex.concepts.vocabulary import load_vocabulary
    from clapdex.errors import VocabularyError

    vocab = tmp_path / "long.txt"
    vocab.write_text("dog\n" + "x" * 20_000 + "\n")
    with pytest.raises(VocabularyError, match="a concept of 20000 characters"):
        load_vocabulary(vocab)


# ---- 14. reasons, plurals, padding, the concept cache ----

def test_random_bytes_named_mp3_get_a_plain_reason(tmp_path):
    junk = tmp_path / "noise.mp3"
    junk.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(AudioError) as caught:
        audio.probe(junk)
    assert "pipe" not in caught.value.reason and "not a readable audio file" in caught.value.reason


def test_empty_duplicates_say_they_are_empty(tmp_path, double):
    folder = tmp_path / "a"
    folder.mkdir()
    for name in ("e1.wav", "e2.wav", "e3.wav"):
        (folder / name).write_bytes(b"")
    summary = index(folder, tmp_path / "index", write_vocabulary(tmp_path))
    assert [s["error"] for s in summary.skipped] == ["empty file (0 bytes)"] * 3
    status = run("status", "--index", tmp_path / "index")
    assert "3 files with errors" in status.stdout and "0 files, 0 segments" in status.stdout


def test_one_long_concept_name_does_not_pad_every_row(tmp_path):
    from tests.audit_fixtures import CONCEPTS, build_index

    store, _ = build_index(tmp_path / "index", n_files=6, names=("x" * 2000,) + CONCEPTS[1:])
    store.close()
    result = run("concepts", "--index", tmp_path / "index")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) > 2000
    assert sorted(len(line) for line in lines)[-2] < 120


def test_concept_cache_is_bounded_and_can_be_shown_and_cleared(tmp_path, monkeypatch):
    from clapdex import cache
    from clapdex.concepts.dictionary import build_dictionary
    from clapdex.concepts.vocabulary import Vocabulary

    monkeypatch.setenv("CLAPDEX_CACHE_DIR", str(tmp_path / "cache"))
    encoder = SpectralTestEncoder()
    one = build_dictionary(encoder, Vocabulary("v0", tuple(f"c{i}" for i in range(50))))
    size = sum(p.stat().st_size for p in (tmp_path / "cache" / "concepts").iterdir())
    monkeypatch.setattr(cache, "CONCEPT_CACHE_MAX_BYTES", 3 * size)
    for n in range(1, 8):
        build_dictionary(encoder, Vocabulary(f"v{n}", tuple(f"c{i} {n}" for i in range(50))))
    files = list((tmp_path / "cache" / "concepts").iterdir())
    assert len(files) == 3 and sum(p.stat().st_size for p in files) <= 3 * size
    assert one.size == 50

    info = run("cache", "info", "--json")
    assert info.exit_code == 0, info.output
    parts = {p["part"]: p for p in json.loads(info.stdout)["parts"]}
    assert parts["concepts"]["files"] == 3
    (tmp_path / "cache" / "unrelated.txt").write_text("not ours")
    cleared = run("cache", "clear")
    assert cleared.exit_code == 0 and cleared.stdout.startswith("freed ")
    assert not (tmp_path / "cache" / "concepts").exists()
    assert (tmp_path / "cache" / "unrelated.txt").exists()   # only clapdex's own parts go
    bad = run("cache", "clear", "everything")
    assert bad.exit_code == 1 and "unknown cache part" in bad.stderr


# ---- 15. SIGTERM ----

_CLI_WITH_SLOW_DOUBLE = """
import sys
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/src"]
import os
import re
from clapdex import encoder_registry
from clapdex.indexer import storing
from tests.index_worker import SlowTestEncoder
storing.MEAN_WINDOWS, storing.DECOMPOSE_WINDOWS = 4, 3   # store often
encoder_registry.register("slow-double", lambda **_: SlowTestEncoder(float(sys.argv[2])))
os.environ[encoder_registry.ENV] = "slow-double"
from clapdex.cli import main
main(sys.argv[3:], prog_name="clapdex")
"""


def _stored_files(index_path: Path) -> int:
    import sqlite3

    try:
        with sqlite3.connect(f"file:{index_path / 'clapdex.sqlite'}?mode=ro", uri=True) as db:
            return db.execute("SELECT count(*) FROM files WHERE status = 'indexed'").fetchone()[0]
    except sqlite3.Error:
        return 0


def test_sigterm_is_handled_like_ctrl_c(tmp_path):
    import signal
    import time

    folder = tmp_path / "a"
    for i in range(12):
        tone(folder / f"t{i:02d}.wav", seconds=2.0, freq=200 + 100 * i)
    vocab = write_vocabulary(tmp_path)
    args = [sys.executable, "-c", _CLI_WITH_SLOW_DOUBLE, str(ROOT), "0.4", "index", str(folder),
            "--index", str(tmp_path / "index"), "--vocab", str(vocab)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while _stored_files(tmp_path / "index") < 2 and time.monotonic() < deadline:
            if process.poll() is not None:
                break
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 143, err
    last = err.strip().splitlines()[-1]
    said = re.fullmatch(r"terminated: kept (\d+) files? \(\d+ s of audio\); "
                        r"index the same paths again to resume", last)
    assert said and "Traceback" not in err, err
    stored = _stored_files(tmp_path / "index")
    assert 2 <= stored <= int(said[1]) < 12   # kept: stored, or encoded and waiting in parts
    doctor = run("doctor", "--index", tmp_path / "index")   # the FAISS file was saved cleanly
    assert doctor.exit_code == 0 and "ok: FAISS and database agree" in doctor.stdout, doctor.stdout
    rest = subprocess.run(args[:4] + ["0"] + args[5:] + ["--json"], capture_output=True,
                          text=True, timeout=300)
    assert rest.returncode == 0, rest.stderr
    summary = json.loads(rest.stdout)
    assert summary["added"] == 12 - stored and summary["unchanged"] == stored


# ---- the hostile corpus, in one indexing pass ----

def test_hostile_corpus_in_one_pass(tmp_path):
    from tests.hostile_corpus import make_hostile_corpus

    corpus = make_hostile_corpus(tmp_path / "corpus")
    vocab = write_vocabulary(tmp_path)
    env = {**os.environ, "CLAPDEX_ENCODER": "tests.doubles:SpectralTestEncoder"}
    code = ("import sys; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/src']\n"
            "from clapdex.cli import main; main(sys.argv[2:], prog_name='clapdex')")
    cli = [sys.executable, "-c", code, str(ROOT)]
    index_path = tmp_path / "index"
    done = subprocess.run(cli + ["index", str(tmp_path / "corpus"), "--index", str(index_path),
                                 "--vocab", str(vocab), "--json"],
                          capture_output=True, text=True, timeout=600, env=env)  # nothing hangs
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["completed"]
    skipped = {entry["path"]: entry["error"] for entry in summary["skipped"]}
    with IndexStore.open(index_path) as store:
        indexed = {row.path for row in store.files("indexed")}
    for path, expect in corpus.items():
        if expect.reason is None:
            assert path in indexed, f"{path!a} not indexed: {skipped.get(path)}"
        else:
            assert expect.reason in skipped.get(path, ""), (path, skipped.get(path))
    assert set(skipped) <= set(corpus), set(skipped) - set(corpus)

    status = subprocess.run(cli + ["status", "--index", str(index_path), "--json"],
                            capture_output=True, text=True, timeout=120, env=env)
    errors = {e["path"]: e["error"] for e in json.loads(status.stdout)["errors"]}
    assert errors == skipped                                   # every reason is in status too
    for verb in (["status"], ["doctor"]):
        shown = subprocess.run(cli + verb + ["--index", str(index_path)], capture_output=True,
                               text=True, timeout=120, env=env)
        assert shown.returncode == 0, shown.stdout + shown.stderr
        assert "\x1b" not in shown.stdout and "\u202e" not in shown.stdout
        assert not any(line.startswith("INJECTED") for line in shown.stdout.splitlines())


def test_a_long_file_interrupted_late_keeps_its_encoding(tmp_path):
    """SIGTERM deep into a long file: its embedded windows are kept in a parts file, the file is
    not shown as indexed, and the next run encodes only the rest, ending where one run would."""
    import signal
    import time

    from clapdex.indexer.parts import FOLDER, PART_WINDOWS

    folder = tmp_path / "a"
    tone(folder / "long.wav", seconds=400.0, freq=300)   # 200 windows of the double's 2 s
    vocab = write_vocabulary(tmp_path)
    index_path = tmp_path / "index"
    args = [sys.executable, "-c", _CLI_WITH_SLOW_DOUBLE, str(ROOT), "0.1", "index", str(folder),
            "--index", str(index_path), "--vocab", str(vocab)]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while (not list((index_path / FOLDER).glob("*.npz")) if (index_path / FOLDER).exists()
               else True) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 143, err
    assert re.search(r"terminated: 1 file part-done \([0-9a-z ]+ of 6 min 40 s\); "
                     r"index the same paths again to resume", err), err
    saved = list((index_path / FOLDER).glob("*.npz"))
    assert len(saved) == 1
    with np.load(saved[0]) as data:
        kept = len(data["embeddings"])
    assert PART_WINDOWS <= kept < 200
    status = json.loads(run("status", "--index", index_path, "--json").stdout)
    assert status["counts"]["files"] == 0 and status["counts"]["segments"] == 0  # not "complete"

    encoder = SpectralTestEncoder()
    summary = indexer.index_paths([folder], encoder, index_path, vocabulary=str(vocab),
                                  show_progress=False)
    assert summary.added == 1 and summary.segments_added == 200
    assert encoder.audio_calls == 200 - kept                 # only the rest was encoded
    assert not list((index_path / FOLDER).glob("*"))          # stored: parts file gone
    reference = indexer.index_paths([folder], SpectralTestEncoder(), tmp_path / "one-pass",
                                    vocabulary=str(vocab), show_progress=False)
    assert reference.segments_added == 200
    with IndexStore.open(index_path) as resumed, IndexStore.open(tmp_path / "one-pass") as once:
        np.testing.assert_allclose(resumed.segment_embeddings()[1], once.segment_embeddings()[1],
                                   atol=1e-5)


# ---- 1. on PostgreSQL too ----

@pytest.fixture(scope="module")
def postgres():
    from tests.postgres import REQUIRE_ENV, PostgresServer, PostgresUnavailable

    try:
        server = PostgresServer()
    except PostgresUnavailable as why:
        if os.environ.get(REQUIRE_ENV) == "1":
            raise
        pytest.skip(f"no PostgreSQL server: {why}")
    yield server
    server.stop()


def test_names_that_are_not_utf8_on_postgresql(tmp_path, postgres, monkeypatch):
    """PostgreSQL's text columns refuse lone surrogates outright: the stored form must be valid."""
    url = postgres.new_database_url()
    create = IndexStore.create.__func__
    monkeypatch.setattr(IndexStore, "create", classmethod(
        lambda cls, *args, **kwargs: create(cls, *args, **{**kwargs, "database_url": url})))
    folder = tmp_path / "latin1"
    names = [b"caf\xe9.wav", b"\xff\xfe-invalid.wav", "marker-\ufdd0.wav".encode()]
    for i, name in enumerate(names):
        tone(os.path.join(os.fsencode(folder), name), freq=300 + 200 * i)
    (folder / os.fsdecode(b"bad\xe9.wav")).write_bytes(b"junk" * 10)
    vocab = write_vocabulary(tmp_path)
    summary = index(folder, tmp_path / "index", vocab)
    assert summary.added == 3 and len(summary.skipped) == 1
    assert (tmp_path / "index" / "database.url").exists()
    with IndexStore.open(tmp_path / "index") as store:
        stored = {row.path: row.status for row in store.files()}
    expected = {os.fsdecode(os.path.join(os.fsencode(folder), n)) for n in names}
    assert {p for p, s in stored.items() if s == "indexed"} == expected
    assert os.fsdecode(os.path.join(os.fsencode(folder), b"bad\xe9.wav")) in stored
    assert index(folder, tmp_path / "index", vocab).unchanged == 3
