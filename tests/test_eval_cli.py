"""`clapdex eval` and `clapdex finetune` end to end on generated sine datasets.

With the spectral TEST DOUBLE, the text embedding of "N hz" is the embedding of a sine at N Hz, so
classes named "440 hz", "1000 hz", "3000 hz" with the prompt "{}" have a known perfect zero-shot
answer. A second test runs the real msclap code with RANDOM weights (wiring only, no semantics).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
from click.testing import CliRunner

from clapdex.cli import main
from tests.doubles import SpectralTestEncoder, sine, use_encoder

CLASSES = ("440 hz", "1000 hz", "3000 hz")
VOCAB = ["200 hz", "440 hz", "700 hz", "1000 hz", "1500 hz", "2000 hz", "3000 hz", "3500 hz",
         "dog", "rain", "siren"]


def _dataset(root, sample_rate=8000, per_class=3, seconds=1.0):
    rng = np.random.default_rng(0)
    for label in CLASSES:
        freq = float(label.split()[0])
        for i in range(per_class):
            tone = sine(freq, seconds + 0.25 * i, sample_rate, amplitude=0.3 + 0.1 * i)
            noise = 0.02 * rng.standard_normal(tone.shape).astype(np.float32)
            (root / label).mkdir(parents=True, exist_ok=True)
            soundfile.write(root / label / f"{i}.wav", tone + noise, sample_rate)
    return root


@pytest.fixture
def spectral(monkeypatch):
    encoder = SpectralTestEncoder(dimension=64, sample_rate=8000, window_seconds=0.5)
    use_encoder(monkeypatch, lambda **_: encoder)
    return encoder


@pytest.fixture
def one_torch_thread():
    """Tiny matrices: extra torch threads only add contention on a busy machine."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_zeroshot_sweep_end_to_end(tmp_path, spectral):
    data = _dataset(tmp_path / "data")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    args = ["eval", "zeroshot", str(data), "--prompt", "{}", "--vocab", str(tmp_path / "vocab.txt"),
            "--sweep", "0.01,0.05,0.2", "--cache-dir", str(tmp_path / "cache"),
            "--plot", str(tmp_path / "sweep.png"), "--csv", str(tmp_path / "rows.csv"), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    rows = report["rows"]
    assert report["files"] == 9 and [r["representation"] for r in rows] == ["dense"] + ["concepts"] * 3
    assert rows[0]["accuracy"] == 1.0 and rows[0]["macro_f1"] == 1.0
    assert rows[1]["accuracy"] == 1.0  # tone concepts reconstruct tones
    assert rows[1]["mean_active"] >= rows[3]["mean_active"]
    assert (tmp_path / "sweep.png").read_bytes().startswith(b"\x89PNG")
    assert len((tmp_path / "rows.csv").read_text().splitlines()) == 5

    calls = spectral.audio_calls
    table = CliRunner().invoke(main, [a for a in args if a != "--json"])
    assert table.exit_code == 0, table.output
    assert spectral.audio_calls == calls  # the second run is served from the embedding cache
    assert max(len(line) for line in table.output.splitlines()) <= 80
    assert "dense" in table.output and "λ=0.05" in table.output


def test_retrieval_end_to_end(tmp_path, spectral):
    freqs = (440, 700, 1000, 1500, 2000, 3000)  # one file per pitch: "a N hz tone" names exactly one file
    for freq in freqs:
        soundfile.write(tmp_path / f"{freq}.wav", sine(freq, 1.0, 8000), 8000)
    lines = ["path,caption"] + [f"{f}.wav,a {f} hz tone" for f in freqs] + ["440.wav,dog"]
    (tmp_path / "captions.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    result = CliRunner().invoke(main, ["eval", "retrieval", str(tmp_path / "captions.csv"), "--vocab",
                                       str(tmp_path / "vocab.txt"), "--max-concepts", "2,4", "--no-cache", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["files"], report["captions"]) == (6, 7)
    dense = report["rows"][0]
    assert dense["a2t_r1"] == 1.0 and dense["a2t_r10"] == 1.0
    assert dense["t2a_r1"] == pytest.approx(6 / 7)  # "dog" is not a pitch; it still ranks within 6 files
    assert dense["t2a_r10"] == 1.0
    assert [r["setting"] for r in report["rows"][1:]] == ["N=2", "N=4"]


def test_retrieval_hybrid_rows(tmp_path, spectral):
    freqs = (440, 700, 1000, 1500, 2000, 3000)
    for freq in freqs:
        soundfile.write(tmp_path / f"{freq}.wav", sine(freq, 1.0, 8000) + sine(1.5 * freq, 1.0, 8000, 0.2),
                        8000)
    lines = ["path,caption"] + [f"{f}.wav,a {f} hz tone" for f in freqs] + ["440.wav,dog"]
    (tmp_path / "captions.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    base = ["eval", "retrieval", str(tmp_path / "captions.csv"), "--vocab", str(tmp_path / "vocab.txt"),
            "--sweep", "0.05,0.2", "--no-cache", "--json"]
    result = CliRunner().invoke(main, base + ["--alpha", "0.2,0.5,0.8"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)["rows"]
    assert [(r["representation"], r["setting"], r["alpha"]) for r in rows] == [("dense", "", None)] + [
        (kind, f"λ={lam}", a) for lam in ("0.05", "0.2")
        for kind, a in [("concepts", None), ("hybrid", 0.2), ("hybrid", 0.5), ("hybrid", 0.8)]]
    text = CliRunner().invoke(main, base[:-1] + ["--alpha-sweep"]).output
    assert max(len(line) for line in text.splitlines()) <= 80, text
    swept = json.loads(CliRunner().invoke(main, base + ["--alpha-sweep"]).output)["rows"]
    metrics = ("t2a_r1", "t2a_r10", "t2a_map10", "a2t_r1", "a2t_r10", "a2t_map10")
    concept = {r["lam"]: r for r in swept if r["representation"] == "concepts"}
    for row in swept:
        if row["alpha"] == 1.0:    # all dense
            assert [row[m] for m in metrics] == [swept[0][m] for m in metrics]
        if row["alpha"] == 0.0:    # all concept
            assert [row[m] for m in metrics] == [concept[row["lam"]][m] for m in metrics]
    assert len(swept) == 1 + 2 * 12
    error = CliRunner().invoke(main, base + ["--alpha", "2"])
    assert error.exit_code == 1 and "between 0 and 1" in error.output


def test_audio_mean_per_dataset_reference_or_file(tmp_path, spectral):
    """--audio-mean dataset | reference | FILE.npy: a file holding the dataset's own mean gives the
    dataset rows exactly; the reference mean is another μ_A and gives other concept rows."""
    from clapdex.concepts.decompose import audio_mean
    from clapdex.evaluation.embeddings import embed_files

    data = _dataset(tmp_path / "data")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    base = ["eval", "zeroshot", str(data), "--prompt", "{}", "--vocab", str(tmp_path / "vocab.txt"),
            "--lambda", "0.02", "--cache-dir", str(tmp_path / "cache"), "--json"]
    runs = {}
    paths = sorted(str(p) for p in data.rglob("*.wav"))
    own = audio_mean(embed_files(spectral, paths, use_cache=False).embeddings)
    np.save(tmp_path / "mean.npy", own)
    for source in ("dataset", "reference", str(tmp_path / "mean.npy")):
        result = CliRunner().invoke(main, base + ["--audio-mean", source])
        assert result.exit_code == 0, result.output
        runs[source] = json.loads(result.output)
        assert runs[source]["audio mean"] == source
    concept = {k: v["rows"][1] for k, v in runs.items()}
    assert concept["dataset"]["mean_fidelity"] == pytest.approx(
        concept[str(tmp_path / "mean.npy")]["mean_fidelity"], abs=1e-6)
    assert concept["reference"]["mean_fidelity"] != pytest.approx(concept["dataset"]["mean_fidelity"])
    np.save(tmp_path / "short.npy", own[:3])
    bad = CliRunner().invoke(main, base + ["--audio-mean", str(tmp_path / "short.npy")])
    assert bad.exit_code == 1 and "expected a finite array of shape (64,)" in bad.output
    bad = CliRunner().invoke(main, base + ["--audio-mean", "nonsense"])
    assert bad.exit_code == 1 and "not dataset, reference or a readable .npy" in bad.output


def test_finetune_and_projection_end_to_end(tmp_path, spectral, one_torch_thread):
    _dataset(tmp_path / "data", per_class=4)
    # Misaligned on purpose: each pitch is labeled with the next class's name, so zero-shot with the
    # prompt "{}" gets every file wrong until a projection learns the permutation.
    relabel = dict(zip(CLASSES, CLASSES[1:] + CLASSES[:1]))
    lines = ["path,label"] + [f"data/{c}/{i}.wav,{relabel[c]}" for c in CLASSES for i in range(4)]
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    out = tmp_path / "projection.pt"
    common_args = ["--prompt", "{}", "--cache-dir", str(tmp_path / "cache"), "--json"]
    result = CliRunner().invoke(main, ["finetune", str(tmp_path / "labels.csv"), "-o", str(out),
                                       "--learning-rate", "0.05", "--epochs", "40", *common_args])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["before_train_accuracy"] == 0.0 and summary["before_validation_accuracy"] == 0.0
    assert summary["after_train_accuracy"] == 1.0 and summary["after_validation_accuracy"] == 1.0
    assert (summary["train"], summary["validation"], summary["test"]) == (6, 3, 3)  # 2/1/1 per class
    assert summary["before_test_accuracy"] == 0.0 and summary["after_test_accuracy"] == 1.0
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    args = ["eval", "zeroshot", str(tmp_path / "labels.csv"), "--vocab", str(tmp_path / "vocab.txt"), *common_args]
    before = json.loads(CliRunner().invoke(main, args).output)["rows"][0]["accuracy"]
    evaluated = CliRunner().invoke(main, args + ["--projection", str(out)])
    assert evaluated.exit_code == 0, evaluated.output
    assert before == 0.0 and json.loads(evaluated.output)["rows"][0]["accuracy"] == 1.0


def test_bad_input_is_one_line_error(tmp_path, spectral):
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n")
    result = CliRunner().invoke(main, ["eval", "zeroshot", str(tmp_path / "bad.csv")])
    assert result.exit_code == 1 and result.output.startswith("error:") and "Traceback" not in result.output
    data = _dataset(tmp_path / "data", per_class=1)
    result = CliRunner().invoke(main, ["eval", "zeroshot", str(data), "--plot", str(tmp_path / "p.jpg")])
    assert result.exit_code == 1 and "--plot" in result.output
    other = SpectralTestEncoder(dimension=64, sample_rate=8000, window_seconds=0.5, seed=9)
    from clapdex.evaluation.projection import Projection, save_projection
    save_projection(Projection(np.eye(64, dtype=np.float32), other.fingerprint), tmp_path / "p.pt")
    result = CliRunner().invoke(main, ["eval", "zeroshot", str(data), "--no-cache", "--projection",
                                       str(tmp_path / "p.pt")])
    assert result.exit_code == 1 and "trained for encoder" in result.output


def test_unreadable_files_are_named_on_one_line(tmp_path, spectral):
    data = _dataset(tmp_path / "data", per_class=1)
    (data / "440 hz" / "broken\nfile.wav").write_bytes(b"not audio")
    (tmp_path / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    result = CliRunner().invoke(main, ["eval", "zeroshot", str(data), "--no-cache", "--prompt", "{}",
                                       "--vocab", str(tmp_path / "vocab.txt")])
    assert result.exit_code == 0, result.output
    skipped = [line for line in result.stderr.splitlines() if line.startswith("skipped ")]
    assert len(skipped) == 1 and "broken\\nfile.wav: " in skipped[0]
    assert "skipped: 1 unreadable file" in result.stdout.splitlines()


@pytest.mark.parametrize("task", ["zeroshot", "retrieval"])
def test_help_names_vocab_like_the_other_verbs_and_shows_the_default_lambda(task):
    from clapdex.concepts.decompose import DEFAULT_LAMBDA

    help_text = " ".join(CliRunner().invoke(main, ["eval", task, "--help"]).output.split())
    assert "--vocab NAME|FILE" in help_text and "--vocab TEXT" not in help_text
    assert f"default {DEFAULT_LAMBDA:g})" in help_text and "{default_lambda}" not in help_text


def test_zeroshot_with_random_weights_msclap(tmp_path, monkeypatch, random_clap_encoder):
    """Real msclap code, RANDOM weights: checks wiring and shapes, not accuracy."""
    use_encoder(monkeypatch, lambda **_: random_clap_encoder)
    sample_rate = random_clap_encoder.sample_rate
    for label, freq in (("dog", 440.0), ("rain", 2000.0)):
        (tmp_path / "data" / label).mkdir(parents=True)
        soundfile.write(tmp_path / "data" / label / "0.wav", sine(freq, 1.0, sample_rate), sample_rate)
    (tmp_path / "vocab.txt").write_text("a dog barking\nrain on a roof\na siren wailing\ntraffic noise\n")
    result = CliRunner().invoke(main, ["eval", "zeroshot", str(tmp_path / "data"), "--vocab",
                                       str(tmp_path / "vocab.txt"), "--max-concepts", "1,2",
                                       "--cache-dir", str(tmp_path / "cache"), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["files"] == 2 and len(report["rows"]) == 3
    for row in report["rows"]:
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["macro_f1"] <= 1
    assert all(row["mean_active"] <= n for row, n in zip(report["rows"][1:], (1, 2)))
