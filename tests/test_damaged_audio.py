"""Damaged, silent and clipped audio (issue 15, item 4): what decodes is indexed and the truth is
told, alike for every format; silent windows get no concepts; the flags show in status, show,
audit --flag, the report and the --json records. docs/indexing.md "Damaged, silent and clipped
audio" says what is measured and the thresholds (clapdex.defaults).

Every file is real, written with soundfile and cut by bytes in the test. Indexing uses the
spectral TEST DOUBLE (not CLAP). The indexing tests run on SQLite and on PostgreSQL (conftest.py).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner
from sqlalchemy import select, text

import clapdex
from clapdex import defaults
from clapdex.audio import DecodeReport, iter_windows, load_audio
from clapdex.cli import main
from clapdex.errors import AudioError
from clapdex.storage.database import IndexStore
from clapdex.storage.schema import SCHEMA_VERSION, PostingRow, SegmentRow
from tests.doubles import SpectralTestEncoder, sine, use_encoder

RATE = 8000  # the test double's rate: windows of 2 s


def tone_and_noise(seconds: float, rate: int = RATE, seed: int = 0) -> np.ndarray:
    """A tone with some noise (the noise keeps OGG/MP3 pages many and small)."""
    noise = np.random.default_rng(seed).standard_normal(round(seconds * rate))
    return (sine(440, seconds, rate, 0.3) + 0.05 * noise).astype(np.float32)


def cut_bytes(path, fraction: float):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def decode(path, rate: int = RATE, window: float = 2.0):
    """(windows' times, DecodeReport) of streaming `path` as the indexer does."""
    report = DecodeReport()
    times = [t for _, batch in iter_windows(path, rate, window, report=report) for t in batch]
    return times, report


FORMATS = [("wav", "PCM_16"), ("flac", "PCM_16"), ("ogg", "VORBIS"), ("mp3", "MPEG_LAYER_III")]


def _supported(extension: str) -> bool:
    return {"mp3": "MP3", "ogg": "OGG"}.get(extension, extension.upper()) in \
        soundfile.available_formats()


# ---- truncation, alike for every format --------------------------------------------------------

@pytest.mark.parametrize("extension, subtype", FORMATS)
def test_a_file_cut_in_half_is_decoded_as_far_as_it_goes_with_a_warning(tmp_path, extension,
                                                                          subtype):
    if not _supported(extension):  # libsndfile < 1.1 has no MPEG: then no MP3 is indexed at all
        pytest.skip(f"this libsndfile cannot write {extension}")
    whole = tmp_path / f"whole.{extension}"
    soundfile.write(whole, tone_and_noise(12.0), RATE, subtype=subtype)
    times, report = decode(whole)
    assert report.warning is None and not report.truncated
    assert report.frames / RATE == pytest.approx(12.0, abs=0.01)

    cut = tmp_path / f"cut.{extension}"
    cut.write_bytes(whole.read_bytes())
    cut_bytes(cut, 0.5)
    times, report = decode(cut)
    decoded = report.frames / RATE
    assert 3.5 < decoded < 6.5 and times[-1].end == pytest.approx(decoded, abs=1e-3)
    if extension == "ogg":  # OGG states no length: its last page lacks the end-of-stream mark
        assert report.warning == f"cut short (the stream has no end-of-stream mark), decoded {decoded:.1f} s"
    else:  # WAV data chunk, FLAC STREAMINFO, MP3 Xing/Info frame count
        assert report.warning.startswith(f"header says 12.0 s, decoded {decoded:.1f} s")
    if extension == "flac":  # the decoder's own reason, after what it could decode
        assert "decoding stopped: " in report.warning
    samples, info = load_audio(cut, RATE)
    assert info.warning == report.warning and len(samples) == report.frames


def test_a_wav_cut_short_decodes_the_same_samples_as_the_whole_file(tmp_path):
    whole = tmp_path / "whole.wav"
    soundfile.write(whole, tone_and_noise(12.0), RATE, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole.read_bytes()[: 44 + 2 * 6 * RATE])  # the header still says 12 s
    samples, info = load_audio(cut, RATE)
    assert info.warning == "header says 12.0 s, decoded 6.0 s"
    assert np.array_equal(samples, load_audio(whole, RATE)[0][: len(samples)])


def test_an_aiff_cut_short_is_reported_from_its_comm_chunk(tmp_path):
    path = tmp_path / "cut.aiff"
    soundfile.write(path, tone_and_noise(4.0), RATE, subtype="PCM_16")
    cut_bytes(path, 0.5)
    _, report = decode(path)
    assert report.warning == "header says 4.0 s, decoded 2.0 s"


def test_a_file_a_few_milliseconds_long_is_refused_not_looped(tmp_path):
    """3 kB of a 20 s WAV (44.1 kHz stereo): 16.8 ms of audio. Repeating it 400 times to fill a
    window would index a buzz that is not in the file; it is refused with the reason."""
    path = tmp_path / "3kB.wav"
    soundfile.write(path, np.stack([tone_and_noise(20.0, 44100)] * 2, axis=1), 44100,
                    subtype="PCM_16")
    path.write_bytes(path.read_bytes()[:3000])
    with pytest.raises(AudioError) as caught:
        decode(path)
    assert caught.value.reason == ("header says 20.0 s, decoded 16.8 ms: too short to index "
                                   "(at least 20.0 ms)")
    whole_but_tiny = tmp_path / "click.wav"
    soundfile.write(whole_but_tiny, tone_and_noise(0.01, 44100), 44100)
    with pytest.raises(AudioError, match=r"too short to index: only 10\.0 ms of audio"):
        load_audio(whole_but_tiny, RATE)
    short = tmp_path / "short.wav"  # 50 ms: indexed, repeated to fill its window as msclap does
    soundfile.write(short, tone_and_noise(0.05), RATE)
    times, report = decode(short)
    assert len(times) == 1 and report.warning is None


# ---- levels: silence and clipping --------------------------------------------------------------

def test_digital_zero_and_near_silent_noise_are_silent_a_quiet_tone_is_not(tmp_path):
    rng = np.random.default_rng(1)
    cases = {"zero": np.zeros(4 * RATE, np.float32),
             "minus70": (10 ** (-70 / 20) * rng.standard_normal(4 * RATE)).astype(np.float32),
             "minus40tone": sine(440, 4.0, RATE, 10 ** (-37 / 20))}  # RMS −40 dBFS
    levels = {}
    for name, samples in cases.items():
        soundfile.write(tmp_path / f"{name}.wav", samples, RATE, subtype="FLOAT")
        times, report = decode(tmp_path / f"{name}.wav")
        levels[name] = report.levels(times)
    assert (levels["zero"].level_db == defaults.LEVEL_FLOOR_DB).all() and levels["zero"].silent.all()
    assert np.allclose(levels["minus70"].level_db, -70, atol=0.5) and levels["minus70"].silent.all()
    assert np.allclose(levels["minus40tone"].level_db, -40, atol=0.1)
    assert not levels["minus40tone"].silent.any()
    assert not any(lv.clipped.any() for lv in levels.values())


def test_clipping_is_found_per_window_in_any_channel_but_a_full_scale_peak_is_not_clipping(tmp_path):
    t = np.arange(2 * RATE) / RATE
    hot = np.clip(3 * np.sin(2 * np.pi * 300 * t), -1, 1)         # flat tops: clipped
    full = 0.9995 * np.sin(2 * np.pi * 300 * t)                    # touches full scale, never flat
    quiet = np.zeros_like(t)
    left = np.concatenate([full, hot, quiet])
    right = np.concatenate([full, 0.5 * np.sin(2 * np.pi * 300 * t), quiet])  # only left clips
    path = tmp_path / "mixed.wav"
    soundfile.write(path, np.stack([left, right], axis=1).astype(np.float32), RATE, subtype="FLOAT")
    times, report = decode(path)
    levels = report.levels(times)
    assert [(w.start, w.end) for w in times] == [(0, 2), (2, 4), (4, 6)]
    assert levels.clipped.tolist() == [False, True, False]
    assert levels.silent.tolist() == [False, False, True]
    assert 0.5 < levels.clipped_fraction[1] < 0.9  # most of a 3x sine is clipped
    assert levels.clipped_fraction[0] == 0.0


# ---- indexing ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def collection(tmp_path_factory, backend):
    """Whole, cut (every format), silent, near-silent, clipped and too-short files, indexed."""
    root = tmp_path_factory.mktemp(f"damaged-{backend}")
    audio = root / "audio"
    audio.mkdir()
    soundfile.write(audio / "tone.wav", tone_and_noise(6.0), RATE)
    for extension, subtype in FORMATS:
        if _supported(extension):
            soundfile.write(audio / f"cut.{extension}", tone_and_noise(12.0, seed=2), RATE,
                            subtype=subtype)
            cut_bytes(audio / f"cut.{extension}", 0.5)
    soundfile.write(audio / "silence.wav", np.zeros(6 * RATE, np.float32), RATE)
    rng = np.random.default_rng(3)
    soundfile.write(audio / "hiss.wav", (10 ** (-70 / 20) * rng.standard_normal(6 * RATE))
                    .astype(np.float32), RATE, subtype="FLOAT")
    t = np.arange(4 * RATE) / RATE
    soundfile.write(audio / "clipped.wav", np.clip(3 * np.sin(2 * np.pi * 300 * t), -1, 1),
                    RATE, subtype="PCM_16")
    soundfile.write(audio / "tiny.wav", tone_and_noise(20.0), RATE, subtype="PCM_16")
    tiny = (audio / "tiny.wav").read_bytes()
    (audio / "tiny.wav").write_bytes(tiny[:44 + 2 * 56])  # 56 samples (7 ms) of a 20 s header
    vocab = root / "tones.txt"
    vocab.write_text("".join(f"a {f} hz tone\n" for f in (200, 300, 440, 1000, 3000)))
    with clapdex.create_index(root / "index", SpectralTestEncoder(), vocabulary=str(vocab),
                              lam=0.02) as index:
        summary = index.add([audio])
    return root, summary


def _segments(store, name: str):
    with store.session() as session:
        return session.execute(
            text("SELECT s.id, s.n_concepts, s.concept_fidelity, s.silent, s.clipped, s.level_db "
                 "FROM segments s JOIN files f ON f.id = s.file_id WHERE f.path LIKE :name "
                 "ORDER BY s.start"), {"name": f"%/{name}"}).all()


def test_damaged_files_of_every_format_are_indexed_with_their_warning(collection):
    root, summary = collection
    cut = sorted(p for p in (root / "audio").iterdir() if p.stem == "cut")
    assert {item["path"] for item in summary.truncated} == {str(p) for p in cut}
    skipped = {item["path"].rsplit("/", 1)[-1]: item["error"] for item in summary.skipped}
    assert skipped == {"tiny.wav": "header says 20.0 s, decoded 7.0 ms: too short to index "
                                   "(at least 20.0 ms)"}
    with IndexStore.open(root / "index") as store:
        for path in cut:
            row = store.file_by_path(str(path))
            assert row.status == "indexed" and row.warning and 3.5 < row.duration < 6.5
            assert len(_segments(store, path.name)) >= 2
        assert store.file_by_path(str(root / "audio/tone.wav")).warning is None
        assert store.flag_counts() == {"truncated": len(cut), "silent": 6, "clipped": 2,
                                       "unmeasured": 0}


def test_silent_segments_get_no_concepts_and_no_say_in_the_audio_mean(collection):
    from clapdex.concepts.decompose import audio_mean

    root, _ = collection
    with IndexStore.open(root / "index") as store:
        silent = _segments(store, "silence.wav") + _segments(store, "hiss.wav")
        assert len(silent) == 6
        for row in silent:
            assert row.silent and row.n_concepts == 0 and row.concept_fidelity == 0
        ids = [row.id for row in silent]
        with store.session() as session:
            assert session.scalar(select(PostingRow.segment_id)
                                  .where(PostingRow.segment_id.in_(ids)).limit(1)) is None
        assert all(row.n_concepts > 0 and not row.silent for row in _segments(store, "tone.wav"))
        all_ids, embeddings = store.segment_embeddings()
        sounding = ~store.silent_among(all_ids)
        assert np.allclose(store.settings.audio_mean, audio_mean(embeddings[sounding]), atol=1e-6)
        assert not np.allclose(store.settings.audio_mean, audio_mean(embeddings), atol=1e-3)


def test_search_and_audit_leave_silent_segments_out_of_concept_answers(collection):
    root, _ = collection
    with clapdex.open_index(root / "index", SpectralTestEncoder()) as index:
        silent_ids = {r.segment_id for r in index.flagged("silent", limit=None).rows}
        assert len(silent_ids) == 6
        matches = index.audit("a 440 hz tone OR a 300 hz tone OR a 3000 hz tone", limit=None)
        assert matches.matches and not silent_ids & {m.segment_id for m in matches.matches}
        poor = index.poorly_explained(below=1.01, limit=None)
        assert poor.total > 0 and not silent_ids & {r.segment_id for r in poor.segments}
        # Concepts alone: a silent segment holds none, so it never scores.
        hits = index.search(concepts=["a 440 hz tone"], k=100, segments=True)
        assert hits and not silent_ids & {h.segment_id for h in hits}
        # A text query in concept mode ranks every segment by cos(r, q); a silent segment has no
        # reconstruction r (not even μ_A, which alone would rank silence first for any query
        # near the corpus's mean), so its concept score is 0, and hybrid is α·dense.
        for mode in ("concept", "hybrid"):
            hits = index.search(text="a 440 hz tone", mode=mode, k=100, segments=True)
            ranks = {h.segment_id: h for h in hits}
            tone = [ranks[r.id].rank for r in _segments(index.store, "tone.wav")]
            for segment in silent_ids:
                hit = ranks[segment]
                assert hit.explanation.contributions == [] and hit.explanation.baseline == 0
                assert hit.concept == 0 and hit.explanation.fidelity == 0
                assert hit.score == pytest.approx(hits.alpha * hit.dense if mode == "hybrid" else 0)
                assert hit.rank > max(tone)


@pytest.mark.sqlite_only  # it reindexes a copy of the index folder: a copy of the data on SQLite only
def test_reindex_and_copies_keep_the_flags(collection, tmp_path):
    import shutil

    root, _ = collection
    index_copy = tmp_path / "index"
    shutil.copytree(root / "index", index_copy)
    with clapdex.open_index(index_copy, SpectralTestEncoder()) as index:
        index.reindex(lam=0.01)  # a smaller λ: every other window gets more concepts
        shutil.copy(root / "audio/silence.wav", tmp_path / "silence copy.wav")
        shutil.copy(root / "audio/cut.wav", tmp_path / "cut copy.wav")
        summary = index.add([tmp_path / "silence copy.wav", tmp_path / "cut copy.wav"])
        assert summary.copied == 2
    with IndexStore.open(index_copy) as store:
        assert all(r.silent and r.n_concepts == 0 for r in _segments(store, "silence.wav"))
        assert all(r.silent and r.n_concepts == 0 for r in _segments(store, "silence copy.wav"))
        assert all(r.n_concepts > 0 for r in _segments(store, "tone.wav"))
        copy = store.file_by_path(str(tmp_path / "cut copy.wav"))
        assert copy.warning == store.file_by_path(str(root / "audio/cut.wav")).warning


# ---- the CLI: status, show, audit --flag, report, --json ---------------------------------------

def run(monkeypatch, root, *args):
    use_encoder(monkeypatch, lambda **options: SpectralTestEncoder())
    monkeypatch.setenv("COLUMNS", "100")
    result = CliRunner().invoke(main, [*args, "--index", str(root / "index")])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_status_shows_the_flags_and_the_truncated_files(collection, monkeypatch):
    root, _ = collection
    out = run(monkeypatch, root, "status")
    assert "flags:      4 files truncated, 6 segments silent, 2 segments clipped" in out
    listing = out.split("truncated (indexed with what decoded):\n", 1)[1].splitlines()
    assert f"  {root}/audio/cut.wav" in listing
    assert "    header says 12.0 s, decoded 6.0 s" in listing
    status = json.loads(run(monkeypatch, root, "status", "--json"))
    assert status["flags"] == {"truncated": 4, "silent": 6, "clipped": 2, "unmeasured": 0}
    assert {"path": f"{root}/audio/cut.wav", "warning": "header says 12.0 s, decoded 6.0 s"} in \
        status["truncated"]


def test_show_says_what_was_decoded_and_flags_segments(collection, monkeypatch):
    root, _ = collection
    out = run(monkeypatch, root, "show", "cut.wav").splitlines()
    assert out[2] == "  truncated: header says 12.0 s, decoded 6.0 s"
    out = run(monkeypatch, root, "show", "silence.wav").splitlines()
    assert out[2:] == [f"  {span}  silent (digital silence)"
                       for span in ("00:00–00:02", "00:02–00:04", "00:04–00:06")]
    out = run(monkeypatch, root, "show", "hiss.wav").splitlines()
    assert out[2].endswith("  silent (-70 dBFS)")
    out = run(monkeypatch, root, "show", "clipped.wav").splitlines()
    assert "clipped (" in out[2] and "a 300 hz tone" in out[2]
    rows = [json.loads(line) for line in run(monkeypatch, root, "show", "cut.wav", "--json")
            .splitlines()]
    assert {r["warning"] for r in rows} == {"header says 12.0 s, decoded 6.0 s"}
    assert all(r["flags"] == [] and r["level_db"] > -30 for r in rows)


def test_search_results_carry_the_segment_flags(collection, monkeypatch):
    root, _ = collection

    def search(glob, *more):
        return run(monkeypatch, root, "search", "a 300 hz tone", "--segments", "--path", glob,
                   *more)

    rows = [json.loads(line) for line in search("*silence.wav", "--json").splitlines()]
    assert len(rows) == 3 and all(r["flags"] == ["silent"] for r in rows)
    assert all(r["explanation"]["low_fidelity"] for r in rows)  # fidelity 0, yet no "poorly" note
    out = search("*silence.wav")
    assert out.count("    ! silent (no concepts)\n") == 3 and "poorly" not in out
    rows = [json.loads(line) for line in search("*clipped.wav", "--json").splitlines()]
    assert len(rows) == 2 and all(r["flags"] == ["clipped"] for r in rows)
    assert search("*clipped.wav").count("    ! clipped\n") == 2
    rows = [json.loads(line) for line in search("*tone.wav", "--json").splitlines()]
    assert rows and all(r["flags"] == [] for r in rows)
    assert "! silent" not in search("*tone.wav") and "! clipped" not in search("*tone.wav")


def test_audit_flag_lists_files_or_segments(collection, monkeypatch):
    root, _ = collection
    out = run(monkeypatch, root, "audit", "--flag", "truncated").splitlines()
    assert out[0] == "4 files truncated"
    assert f"  {root}/audio/cut.flac" in out
    out = run(monkeypatch, root, "audit", "--flag", "silent").splitlines()
    assert out[0] == "6 segments in 2 files silent"
    assert "    00:00–00:02  silent (digital silence)  (no concept)" in out
    assert run(monkeypatch, root, "audit", "--flag", "clipped", "--count") == \
        "2 segments in 1 file clipped\n"
    assert json.loads(run(monkeypatch, root, "audit", "--flag", "silent", "--count", "--json")) \
        == {"segments": 6, "files": 2}
    rows = [json.loads(line) for line in run(monkeypatch, root, "audit", "--flag", "clipped",
                                             "--json").splitlines()]
    assert [r["flags"] for r in rows] == [["clipped"], ["clipped"]]
    assert all(r["clipped_fraction"] > 0.5 and r["concepts"] for r in rows)
    files = [json.loads(line) for line in run(monkeypatch, root, "audit", "--flag", "truncated",
                                              "--json").splitlines()]
    assert {f["path"].rsplit("/", 1)[-1] for f in files} == {"cut.wav", "cut.flac", "cut.ogg",
                                                              "cut.mp3"}
    assert all(f["flags"] == ["truncated"] and f["warning"] for f in files)


def test_audit_flag_takes_no_expression_and_no_other_listing(collection, monkeypatch):
    root, _ = collection
    use_encoder(monkeypatch, lambda **options: SpectralTestEncoder())
    for args in (["--flag", "silent", "a 440 hz tone"], ["--flag", "silent", "--poorly-explained"],
                 ["--flag", "noisy"]):
        result = CliRunner().invoke(main, ["audit", *args, "--index", str(root / "index")])
        assert result.exit_code != 0 and "Traceback" not in result.output


def test_the_report_lists_damaged_silent_and_clipped_audio(collection, tmp_path):
    root, _ = collection
    with clapdex.open_index(root / "index") as index:
        summary = index.report(tmp_path / "report.html")
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Damaged, silent and clipped audio</h2>" in page
    assert "header says 12.0 s, decoded 6.0 s" in page and "<h3>Silent segments</h3>" in page
    assert summary["flags"]["silent"] == 6


# ---- upgrading a schema-4 index ----------------------------------------------------------------

def test_a_schema_4_index_upgrades_with_its_segments_not_measured(collection, tmp_path,
                                                                  monkeypatch):
    import shutil

    from clapdex.notices import set_handler

    root, _ = collection
    if (root / "index" / "database.url").exists():  # a PostgreSQL index: downgrade a fresh one
        target = root
    else:
        target = tmp_path
        shutil.copytree(root / "index", target / "index")
    store = IndexStore.open(target / "index")
    with store.engine.begin() as connection:  # what a schema-4 database has: none of version 5
        for index_name in ("ix_segments_silent", "ix_segments_clipped"):
            connection.execute(text(f"DROP INDEX {index_name}"))
        for table, column in (("files", "warning"), ("segments", "level_db"),
                              ("segments", "clipped_fraction"), ("segments", "silent"),
                              ("segments", "clipped")):
            connection.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        connection.execute(text("UPDATE index_settings SET schema_version = 4"))
    store.close()
    notes: list[str] = []
    set_handler(notes.append)
    try:
        with IndexStore.open(target / "index") as store:
            flags = store.flag_counts()
            assert flags["unmeasured"] == store.counts()["segments"] > 0
            assert flags["truncated"] == flags["silent"] == flags["clipped"] == 0
            with store.session() as session:
                assert set(session.scalars(select(SegmentRow.silent))) == {None}
    finally:
        set_handler(None)
    assert len(notes) == 1 and f"from schema version 4 to {SCHEMA_VERSION}" in notes[0]
    out = run(monkeypatch, target, "status")
    assert "segments not measured (indexed before clapdex measured levels, or imported)" in out
    rows = [json.loads(line) for line in run(monkeypatch, target, "show", "silence.wav", "--json")
            .splitlines()]
    assert all(r["flags"] is None and r["warning"] is None for r in rows)
