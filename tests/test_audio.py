"""Tests for clapdex.audio: decoding, downmix, resampling, windows, streaming, bad input.

Every fixture is a real file written with soundfile into tmp_path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
import soundfile

from clapdex import audio
from clapdex.audio import (AUDIO_EXTENSIONS, AudioInfo, DecodeReport, Window, cut_windows,
                           iter_windows, load_audio, probe)
from clapdex.errors import AudioError, ClapdexError


def sine(freq: float, seconds: float, rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def write(path, samples, rate, **kwargs):
    soundfile.write(str(path), samples, rate, **kwargs)
    return path


def peak_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


# --- decoding ------------------------------------------------------------------------------------

LOSSLESS = [  # (file name, format, subtype, largest quantisation error for a 0.5 sine)
    ("u8.wav", "WAV", "PCM_U8", 1 / 64),
    ("s16.wav", "WAV", "PCM_16", 1e-4),
    ("s24.wav", "WAV", "PCM_24", 1e-6),
    ("s32.wav", "WAV", "PCM_32", 1e-7),
    ("f32.wav", "WAV", "FLOAT", 0.0),
    ("f64.wav", "WAV", "DOUBLE", 1e-7),
    ("s16.flac", "FLAC", "PCM_16", 1e-4),
    ("s24.flac", "FLAC", "PCM_24", 1e-6),
    ("s8.aiff", "AIFF", "PCM_S8", 1 / 64),
]


@pytest.mark.parametrize("name,fmt,subtype,tolerance", LOSSLESS)
def test_lossless_formats_round_trip(tmp_path, name, fmt, subtype, tolerance):
    rate = 16000
    original = sine(440, 0.5, rate)
    path = write(tmp_path / name, original, rate, format=fmt, subtype=subtype)
    samples, info = load_audio(path, rate)  # same rate: no resampling involved
    assert info == AudioInfo(duration=0.5, sample_rate=rate, channels=1, frames=len(original))
    assert samples.dtype == np.float32 and samples.shape == original.shape
    assert np.max(np.abs(samples - original)) <= tolerance


@pytest.mark.parametrize("name,fmt,subtype,rate", [
    ("a.ogg", "OGG", "VORBIS", 44100),
    ("a.opus", "OGG", "OPUS", 48000),
    ("a.mp3", "MP3", "MPEG_LAYER_III", 44100),  # libsndfile 1.2 here writes MP3 (LAME)
])
def test_lossy_formats_round_trip(tmp_path, name, fmt, subtype, rate):
    original = sine(1000, 1.0, rate)
    path = write(tmp_path / name, original, rate, format=fmt, subtype=subtype)
    samples, info = load_audio(path, rate)
    assert info.frames == len(original) and info.sample_rate == rate
    assert len(samples) == len(original)
    assert peak_frequency(samples, rate) == pytest.approx(1000, abs=2)
    # Lossy but aligned: nearly the same waveform away from the edges.
    middle = slice(rate // 10, -rate // 10)
    assert np.corrcoef(samples[middle], original[middle])[0, 1] > 0.999


def test_sine_keeps_its_frequency_when_resampled_48k_to_44k1(tmp_path):
    path = write(tmp_path / "tone.wav", sine(1000, 2.0, 48000), 48000, subtype="FLOAT")
    samples, info = load_audio(path, 44100)
    assert info.sample_rate == 48000 and info.duration == pytest.approx(2.0)
    assert len(samples) == 2 * 44100
    assert peak_frequency(samples, 44100) == pytest.approx(1000, abs=1)
    # High-quality resampling keeps the amplitude (away from the filter's edge effects).
    assert np.max(np.abs(samples[4410:-4410])) == pytest.approx(0.5, abs=1e-3)


def test_resampling_removes_tones_above_the_new_nyquist_frequency(tmp_path):
    # 23 kHz fits at 48 kHz but not at 44.1 kHz: a good resampler filters it out, not aliases it.
    path = write(tmp_path / "high.wav", sine(23000, 1.0, 48000), 48000, subtype="FLOAT")
    samples, _ = load_audio(path, 44100)
    assert np.max(np.abs(samples[4410:-4410])) < 1e-4


def test_stereo_is_downmixed_to_the_mean_of_its_channels(tmp_path):
    rate = 8000
    left, right = sine(300, 1.0, rate), sine(700, 1.0, rate, amplitude=0.25)
    path = write(tmp_path / "stereo.wav", np.stack([left, right], axis=1), rate, subtype="FLOAT")
    samples, info = load_audio(path, rate)
    assert info.channels == 2
    np.testing.assert_allclose(samples, (left + right) / 2, atol=1e-7)


def test_many_channels_are_downmixed(tmp_path):
    rate = 8000
    channels = np.stack([sine(100 * (k + 1), 0.5, rate) for k in range(6)], axis=1)
    path = write(tmp_path / "six.flac", channels, rate, subtype="PCM_24")
    samples, info = load_audio(path, rate)
    assert info.channels == 6
    np.testing.assert_allclose(samples, channels.mean(axis=1), atol=1e-5)


def test_probe_reads_the_header(tmp_path):
    path = write(tmp_path / "p.wav", np.zeros((22050 * 3, 2), np.float32), 22050)
    assert probe(path) == AudioInfo(duration=3.0, sample_rate=22050, channels=2, frames=66150)


def test_extensions_are_lower_case_with_a_dot():
    assert {".wav", ".flac", ".ogg", ".mp3", ".aiff"} <= AUDIO_EXTENSIONS
    assert all(ext.startswith(".") and ext == ext.lower() for ext in AUDIO_EXTENSIONS)


# --- windows -------------------------------------------------------------------------------------

RATE = 8000  # window tests use a low rate to stay fast; the logic is in samples anyway


def starts_ends(windows):
    return [(round(w.start, 6), round(w.end, 6)) for w in windows]


@pytest.mark.parametrize("seconds,expected", [
    (0.3, [(0, 0.3)]),
    (7.0, [(0, 7)]),
    (7.1, [(0, 7), (0.1, 7.1)]),
    (30.0, [(0, 7), (7, 14), (14, 21), (21, 28), (23, 30)]),
])
def test_window_count_and_times_for_a_7_second_window(seconds, expected):
    samples = np.random.default_rng(0).uniform(-1, 1, round(seconds * RATE)).astype(np.float32)
    windows, times = cut_windows(samples, RATE, 7.0)
    assert windows.shape == (len(expected), 7 * RATE) and windows.dtype == np.float32
    assert starts_ends(times) == expected
    for data, window in zip(windows, times):
        if window.end - window.start >= 7.0 - 1e-9:  # a full window holds exactly its audio
            start = round(window.start * RATE)
            assert np.array_equal(data, samples[start:start + 7 * RATE])


def test_short_audio_is_repeat_padded():
    samples = np.random.default_rng(1).uniform(-1, 1, round(0.3 * RATE)).astype(np.float32)
    windows, times = cut_windows(samples, RATE, 7.0)
    assert times == [Window(0.0, 0.3)]
    n = len(samples)
    tiled = windows[0]
    assert np.array_equal(tiled[:n], samples) and np.array_equal(tiled[n:2 * n], samples)
    assert np.array_equal(tiled[(7 * RATE // n) * n:], samples[: 7 * RATE % n])


def test_hop_shorter_than_window_overlaps_and_covers_everything():
    samples = np.arange(round(10.5 * RATE), dtype=np.float32)
    windows, times = cut_windows(samples, RATE, 4.0, hop_seconds=2.5)
    assert starts_ends(times) == [(0, 4), (2.5, 6.5), (5, 9), (6.5, 10.5)]
    for data, window in zip(windows, times):
        assert data[0] == window.start * RATE  # each window starts at its sample position
    assert windows.shape == (4, 4 * RATE)


def test_hop_that_divides_the_audio_adds_no_extra_window():
    windows, times = cut_windows(np.ones(10 * RATE, np.float32), RATE, 4.0, hop_seconds=1.5)
    assert starts_ends(times) == [(0, 4), (1.5, 5.5), (3, 7), (4.5, 8.5), (6, 10)]


def test_bad_window_settings_are_refused():
    samples = np.ones(RATE, np.float32)
    with pytest.raises(ValueError):
        cut_windows(samples, RATE, 1.0, hop_seconds=2.0)  # would leave gaps
    with pytest.raises(ValueError):
        cut_windows(samples, RATE, 0.0)
    with pytest.raises(ValueError):
        cut_windows(np.zeros(0, np.float32), RATE, 1.0)


def test_same_file_gives_the_same_windows_bit_for_bit(tmp_path):
    noise = np.random.default_rng(2).uniform(-0.5, 0.5, (48000 * 3, 2)).astype(np.float32)
    path = write(tmp_path / "noise.flac", noise, 48000, subtype="PCM_24")
    first = cut_windows(load_audio(path, 44100)[0], 44100, 1.3, 0.7)
    second = cut_windows(load_audio(path, 44100)[0], 44100, 1.3, 0.7)
    assert np.array_equal(first[0], second[0]) and first[1] == second[1]


@pytest.mark.parametrize("source_rate,target_rate,hop", [(48000, 44100, 0.7), (16000, 16000, None)])
def test_iter_windows_equals_cut_windows_of_load_audio(tmp_path, source_rate, target_rate, hop):
    # 5 s of stereo spans several decode blocks, so block joins are exercised.
    seconds = 5.05
    noise = np.random.default_rng(3).uniform(-0.5, 0.5, (round(seconds * source_rate), 2))
    path = write(tmp_path / "long.wav", noise.astype(np.float32), source_rate, subtype="FLOAT")
    assert round(seconds * source_rate) > 3 * audio._BLOCK_FRAMES or source_rate == 16000

    expected_windows, expected_times = cut_windows(load_audio(path, target_rate)[0], target_rate,
                                                   1.3, hop)
    batches = list(iter_windows(path, target_rate, 1.3, hop, batch=3))
    assert all(len(times) <= 3 for _, times in batches)
    streamed = np.concatenate([windows for windows, _ in batches])
    assert [t for _, times in batches for t in times] == expected_times
    assert np.array_equal(streamed, expected_windows)  # exact, not merely close
    assert expected_times[-1].end == pytest.approx(seconds, abs=1 / target_rate)


def test_iter_windows_of_short_audio_is_one_padded_window(tmp_path):
    path = write(tmp_path / "blip.wav", sine(500, 0.3, 16000), 16000)
    batches = list(iter_windows(path, 16000, 7.0))
    assert len(batches) == 1
    windows, times = batches[0]
    assert windows.shape == (1, 7 * 16000) and starts_ends(times) == [(0, 0.3)]


def test_load_audio_refuses_files_too_long_to_hold_but_iter_windows_streams_them(tmp_path):
    path = write(tmp_path / "long.wav", np.zeros(8000 * 3, np.float32), 8000)
    with pytest.raises(AudioError, match="iter_windows"):
        load_audio(path, 8000, max_seconds=2.0)
    assert sum(len(times) for _, times in iter_windows(path, 8000, 1.0)) == 3


# --- silence ---------------------------------------------------------------------------------------

def test_silence_is_valid_audio_and_is_measured_as_silent(tmp_path):
    path = write(tmp_path / "silence.wav", np.zeros(8000, np.float32), 8000)
    samples, info = load_audio(path, 16000)
    assert info.frames == 8000 and len(samples) == 16000 and info.warning is None
    report = DecodeReport()
    times = [t for _, batch in iter_windows(path, 16000, 0.25, report=report) for t in batch]
    levels = report.levels(times)
    assert levels.silent.all() and (levels.level_db == -120.0).all()
    loud = write(tmp_path / "tone.wav", sine(440, 1.0, 8000, amplitude=0.01), 8000)
    report = DecodeReport()
    times = [t for _, batch in iter_windows(loud, 16000, 0.25, report=report) for t in batch]
    assert not report.levels(times).silent.any()  # -43 dBFS RMS is quiet, not silent


# --- bad input ------------------------------------------------------------------------------------

def assert_audio_error(path, reason_part):
    for attempt in (lambda: load_audio(path, 16000), lambda: list(iter_windows(path, 16000, 1.0))):
        with pytest.raises(AudioError) as caught:
            attempt()
        message = str(caught.value)
        assert str(path) in message and reason_part in message
        assert isinstance(caught.value, ClapdexError) and "\n" not in message


def test_missing_file(tmp_path):
    assert_audio_error(tmp_path / "nope.wav", "not found")
    with pytest.raises(AudioError):
        probe(tmp_path / "nope.wav")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    assert_audio_error(path, "empty file")


def test_zero_length_audio(tmp_path):
    path = write(tmp_path / "zero.wav", np.zeros(0, np.float32), 16000)
    assert path.stat().st_size > 0  # a valid header with no samples
    assert_audio_error(path, "zero-length")


def test_text_file_named_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio\n" * 20)
    assert_audio_error(path, "not a readable audio file")


def test_directory(tmp_path):
    path = tmp_path / "folder.wav"
    path.mkdir()
    assert_audio_error(path, "directory")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples_are_refused(tmp_path, bad):
    samples = sine(440, 0.5, 16000)
    samples[1234] = bad
    path = write(tmp_path / "bad.wav", samples, 16000, subtype="FLOAT")
    assert_audio_error(path, "NaN or infinite")


def test_truncated_wav_uses_the_audio_that_is_there(tmp_path):
    full = write(tmp_path / "full.wav", sine(440, 2.0, 16000), 16000, subtype="PCM_16")
    data = full.read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[: len(data) // 2])  # header still claims 2 s
    samples, info = load_audio(cut, 16000)
    assert 0.9 < info.duration < 1.1 and len(samples) == info.frames
    reference, _ = load_audio(full, 16000)
    assert np.array_equal(samples, reference[: len(samples)])


def test_truncated_flac_uses_the_audio_before_the_damage(tmp_path):
    noise = np.random.default_rng(4).uniform(-0.5, 0.5, 16000 * 8).astype(np.float32)
    full = write(tmp_path / "full.flac", noise, 16000, subtype="PCM_16")
    data = full.read_bytes()
    cut = tmp_path / "cut.flac"
    cut.write_bytes(data[: len(data) // 2])
    samples, info = load_audio(cut, 16000)
    assert 3.5 < info.duration < 4.0  # up to the last whole FLAC block before the cut
    assert info.warning.startswith("header says 8.0 s, decoded 3.")
    reference, _ = load_audio(full, 16000)
    assert np.array_equal(samples, reference[: len(samples)])


def test_permission_denied(tmp_path):
    if os.geteuid() == 0:
        return _permission_denied_as_unprivileged_user()
    path = write(tmp_path / "locked.wav", sine(440, 0.2, 16000), 16000)
    path.chmod(0)
    try:
        assert_audio_error(path, "permission denied")
    finally:
        path.chmod(0o644)


def _permission_denied_as_unprivileged_user():
    # Root reads any file, so the real OS refusal is checked in a child process that drops to
    # the unprivileged user "nobody" (util-linux setpriv), reading a file in a folder it can enter.
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to test permissions when running as root"
    folder = Path(tempfile.mkdtemp(prefix="clapdex-perm-"))
    try:
        folder.chmod(0o755)
        path = write(folder / "locked.wav", sine(440, 0.2, 16000), 16000)
        path.chmod(0)
        code = ("import sys\nfrom clapdex import audio\nfrom clapdex.errors import AudioError\n"
                "try:\n    audio.load_audio(sys.argv[1], 16000)\nexcept AudioError as e:\n"
                "    print(e)\n")
        as_nobody = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]
        probe = subprocess.run(as_nobody + ["-c", "import clapdex.audio"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip("user nobody cannot read this checkout; covered by the OS-refusal double")
        result = subprocess.run(as_nobody + ["-c", code, str(path)], capture_output=True,
                                text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert str(path) in result.stdout and "permission denied" in result.stdout.lower()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_permission_denied_reported_by_the_os(tmp_path, monkeypatch):
    # TEST DOUBLE: stands in for the OS refusing to open the file, so that this path is also
    # covered when the tests run as root (who may read any file).
    path = write(tmp_path / "locked.wav", sine(440, 0.2, 16000), 16000)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(audio, "open", refuse, raising=False)
    assert_audio_error(path, "permission denied")
