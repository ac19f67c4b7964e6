"""`clapdex explain FILE` with the spectral TEST DOUBLE, and once with real msclap code (random weights)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from clapdex.cli import main
from clapdex.concepts.reference import reference_audio_mean, reference_signals
from tests.doubles import SpectralTestEncoder, sine, use_encoder

CONCEPTS = ["a 110 hz tone", "a 440 hz tone", "a 1760 hz tone", "a 3000 hz tone", "rain", "dog barking"]


@pytest.fixture
def double(monkeypatch):
    encoder = SpectralTestEncoder()
    use_encoder(monkeypatch, lambda **kwargs: encoder)
    return encoder


@pytest.fixture
def vocab_file(tmp_path):
    path = tmp_path / "tones.txt"
    path.write_text("\n".join(CONCEPTS) + "\n")
    return path


@pytest.fixture
def tone_file(tmp_path):
    """5 s at 8 kHz: 440 Hz, then 1760 Hz from 2.5 s on. The double's windows are 2 s."""
    first = sine(440, 2.5, 8000)
    second = sine(1760, 2.5, 8000)
    path = tmp_path / "tones.wav"
    soundfile.write(path, np.concatenate([first, second]), 8000)
    return path


def run(args):
    return CliRunner().invoke(main, ["explain", *map(str, args)])


def test_json_windows_and_top_concepts(double, vocab_file, tone_file):
    result = run([tone_file, "--vocab", vocab_file, "--json", "--top", "3"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(r["start"], r["end"]) for r in rows] == [(0.0, 2.0), (2.0, 4.0), (3.0, 5.0)]
    assert [r["window"] for r in rows] == [0, 1, 2]
    assert rows[0]["concepts"][0]["concept"] == "a 440 hz tone"
    assert rows[2]["concepts"][0]["concept"] == "a 1760 hz tone"
    for r in rows:
        assert r["path"] == str(tone_file)
        weights = [c["weight"] for c in r["concepts"]]
        assert weights == sorted(weights, reverse=True) and all(w > 0 for w in weights)
        assert len(r["concepts"]) == min(3, r["n_concepts"])
        assert -1.0 <= r["fidelity"] <= 1.0 and r["lambda"] == 0.05


def test_text_output(double, vocab_file, tone_file):
    result = run([tone_file, "--vocab", vocab_file, "--top", "2"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"{tone_file}, 3 windows"
    headers = [line for line in lines[1:] if not line.startswith(" ")]
    assert [h.split()[0] for h in headers] == ["00:00–00:02", "00:02–00:04", "00:03–00:05"]
    for header in headers:  # fidelity to 2 decimals, then "N concept(s)"
        fidelity = header.split("fidelity ")[1].split()[0]
        assert len(fidelity.split(".")[1]) == 2 and header.endswith(("concept", "concepts"))
    assert lines[2].split()[-4:] == ["a", "440", "hz", "tone"]


def test_json_file_is_absolute_and_text_names_it_on_one_line(double, vocab_file, tmp_path,
                                                             monkeypatch):
    """A relative FILE is reported as its absolute path in --json (as show and audit do); in text,
    a newline in its name is escaped so the header stays one line."""
    odd = tmp_path / "odd\nname.wav"
    soundfile.write(odd, sine(440, 2.0, 8000), 8000)
    monkeypatch.chdir(tmp_path)
    rows = [json.loads(line) for line in run(["odd\nname.wav", "--vocab", vocab_file, "--json"])
            .stdout.splitlines()]
    assert rows and all(r["path"] == str(odd) for r in rows)
    text = run(["odd\nname.wav", "--vocab", vocab_file]).stdout.splitlines()
    assert text[0] == "odd\\nname.wav, 1 window"  # relative: it lies under the current folder
    assert text[1].startswith("00:00–00:02  concept fidelity ")


def test_time_ranges_cover_the_windows(double, vocab_file, tmp_path):
    """A 3.5 s file: windows 0–2 and 1.5–3.5 s, shown as ranges that cover them; a 0.5 s file's
    one window is shorter than 2 s and shown to the tenth. --json keeps the seconds."""
    path = tmp_path / "three_and_a_half.wav"
    soundfile.write(path, sine(440, 3.5, 8000), 8000)
    lines = run([path, "--vocab", vocab_file]).stdout.splitlines()
    headers = [line for line in lines[1:] if not line.startswith(" ")]
    assert [h.split("  concept fidelity")[0] for h in headers] == ["00:00–00:02", "00:01–00:04"]
    rows = [json.loads(line) for line in run([path, "--vocab", vocab_file, "--json"]).stdout.splitlines()]
    assert [(r["start"], r["end"]) for r in rows] == [(0.0, 2.0), (1.5, 3.5)]
    short = tmp_path / "short.wav"
    soundfile.write(short, sine(440, 0.5, 8000), 8000)
    lines = run([short, "--vocab", vocab_file]).stdout.splitlines()
    assert lines[0].endswith("short.wav, 1 window")
    assert lines[1].startswith("00:00.0–00:00.5  concept fidelity ")


def test_help_shows_the_default_lambda_and_top_needs_one(double, vocab_file, tone_file):
    from clapdex.concepts.decompose import DEFAULT_LAMBDA

    help_text = " ".join(run(["--help"]).output.split())
    assert f"default {DEFAULT_LAMBDA:g}, or the index's" in help_text
    zero = run([tone_file, "--vocab", vocab_file, "--top", "0"])
    assert zero.exit_code == 2 and "0 is not in the range x>=1" in zero.output


def test_max_concepts_and_lambda(double, vocab_file, tone_file):
    result = run([tone_file, "--vocab", vocab_file, "--json", "--max-concepts", "1"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert all(r["n_concepts"] <= 1 for r in rows) and any(r["n_concepts"] == 1 for r in rows)
    huge = run([tone_file, "--vocab", vocab_file, "--json", "--lambda", "100"])
    assert all(json.loads(line)["n_concepts"] == 0 for line in huge.stdout.splitlines())


def test_user_errors_are_one_line(double, vocab_file, tone_file, tmp_path):
    both = run([tone_file, "--vocab", vocab_file, "--lambda", "0.1", "--max-concepts", "3"])
    assert both.exit_code == 1 and both.output.startswith("error:") and len(both.output.splitlines()) == 1
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("hello")
    bad = run([not_audio, "--vocab", vocab_file])
    assert bad.exit_code == 1 and bad.output.startswith("error:") and "Traceback" not in bad.output
    missing = run([tmp_path / "missing.wav", "--vocab", vocab_file])
    assert missing.exit_code == 1 and missing.output.startswith("error:")
    no_index = run([tone_file, "--index", tmp_path / "no-index"])
    assert no_index.exit_code == 1 and no_index.output.startswith("error:")
    negative = run([tone_file, "--vocab", vocab_file, "--lambda", "-1"])
    assert negative.exit_code == 1 and negative.output.startswith("error:")


def test_reference_signals_are_fixed_and_mean_is_cached(tmp_path):
    names, signals = reference_signals(8000, 2.0)
    again = reference_signals(8000, 2.0)[1]
    np.testing.assert_array_equal(signals, again)
    assert signals.shape == (len(names), 16000) and np.all(np.abs(signals).max(axis=1) > 0.49)
    assert "8000 Hz tone" not in names  # above 0.45 · sample rate
    encoder = SpectralTestEncoder()
    mean = reference_audio_mean(encoder, cache_dir=tmp_path)
    assert mean.shape == (encoder.dimension,) and encoder.audio_calls == len(names)
    np.testing.assert_array_equal(reference_audio_mean(encoder, cache_dir=tmp_path), mean)
    assert encoder.audio_calls == len(names)  # second call read the cache


def test_with_real_msclap_code_and_random_weights(random_clap_encoder, monkeypatch, tmp_path, vocab_file):
    """Wiring only: random weights mean the concepts themselves are meaningless."""
    use_encoder(monkeypatch, lambda **kwargs: random_clap_encoder)
    # Keep the test fast on CPU: the reference mean from the first two reference signals only
    # (embedded by the real model), cached in this test's own folder.
    import clapdex.concepts.reference as reference

    full = reference.reference_signals
    monkeypatch.setattr(reference, "reference_signals", lambda sr, seconds: tuple(x[:2] for x in full(sr, seconds)))
    monkeypatch.setenv("CLAPDEX_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "short.wav"
    sr = random_clap_encoder.sample_rate
    soundfile.write(path, sine(440, 3.0, sr), sr)
    result = run([path, "--vocab", vocab_file, "--json"])
    assert result.exit_code == 0, result.output
    (row,) = [json.loads(line) for line in result.stdout.splitlines()]
    assert (row["start"], row["end"]) == (0.0, 3.0)
    assert np.isfinite(row["fidelity"]) and -1.0 <= row["fidelity"] <= 1.0
    assert all(c["concept"] in CONCEPTS for c in row["concepts"])
    assert len(list((tmp_path / "cache" / "audio_mean").glob("*.npy"))) == 1
    assert len(list((tmp_path / "cache" / "concepts").glob("*.npz"))) == 1


def test_error_naming_a_path_with_a_newline_stays_on_one_line(tmp_path, monkeypatch):
    from tests.doubles import SpectralTestEncoder

    use_encoder(monkeypatch, lambda **_: SpectralTestEncoder())
    bad = tmp_path / "bad\nname.wav"
    bad.write_text("not audio")
    result = CliRunner().invoke(main, ["explain", str(bad)])
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "bad\\nname.wav" in lines[0]
