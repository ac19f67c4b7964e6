"""`clapdex model check` with the real msclap code and RANDOM weights (see clap_fixtures.py)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from clapdex.cli import main


def test_model_check_with_env_vars_loads_and_embeds(random_clap_files, monkeypatch):
    monkeypatch.setenv("CLAPDEX_CLAP_WEIGHTS", str(random_clap_files.weights))
    monkeypatch.setenv("CLAPDEX_TEXT_MODEL", str(random_clap_files.text_model))
    monkeypatch.setenv("CLAPDEX_DEVICE", "cpu")
    result = CliRunner().invoke(main, ["model", "check"])
    assert result.exit_code == 0, result.output
    assert "MS-CLAP 2023" in result.output
    assert str(random_clap_files.weights.resolve()) in result.output
    assert "tiny-gpt2" in result.output
    assert "Device:      cpu" in result.output
    assert "Test audio embedding: 1 x 1024" in result.output
    assert "Test text embedding:  1 x 1024" in result.output


def test_model_check_json_with_options(random_clap_files):
    args = ["model", "check", "--json", "--weights", str(random_clap_files.weights),
            "--text-model", str(random_clap_files.text_model), "--device", "cpu", "--batch-size", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["audio_embedding_shape"] == [1, 1024] and info["text_embedding_shape"] == [1, 1024]
    assert info["dimension"] == 1024 and info["version"] == "2023" and info["batch_size"] == 2
    assert info["weights_source"] == "file" and info["fingerprint"].startswith("msclap-2023:")


def test_model_check_offline_without_weights_is_one_line_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("CLAPDEX_CLAP_WEIGHTS", raising=False)
    result = CliRunner().invoke(main, ["model", "check"])
    assert result.exit_code != 0
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "CLAPDEX_CLAP_WEIGHTS" in lines[0] and "--weights" in lines[0]


def test_model_check_with_missing_weights_file_is_one_line_error(tmp_path):
    result = CliRunner().invoke(main, ["model", "check", "--weights", str(tmp_path / "gone.pth")])
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not found" in lines[0]
