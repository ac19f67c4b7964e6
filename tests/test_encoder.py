"""Contract tests of ClapEncoder with the REAL msclap code and RANDOM weights (see clap_fixtures.py).

Random weights mean the embeddings carry no meaning; these tests check wiring, shapes, determinism,
batching, msclap equivalence, fingerprints and the offline / settings behaviour.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

from clapdex.encoder import ClapEncoder, Encoder
from clapdex.errors import ModelError
from tests.clap_fixtures import msclap_wrapper


def windows(encoder, n, seed=0):
    """n distinct test windows: sines at different pitches plus a little noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(encoder.window_samples) / encoder.sample_rate
    rows = [0.3 * np.sin(2 * np.pi * (220.0 * (i + 1)) * t) + 0.01 * rng.standard_normal(t.size)
            for i in range(n)]
    return np.asarray(rows, dtype=np.float32)


def test_is_an_encoder_with_msclap_2023_settings(random_clap_encoder):
    encoder = random_clap_encoder
    assert isinstance(encoder, Encoder)
    assert (encoder.dimension, encoder.sample_rate, encoder.window_seconds) == (1024, 44100, 7.0)
    assert encoder.window_samples == 7 * 44100


def test_audio_embeddings_are_1024d_finite_and_distinct(random_clap_encoder):
    out = random_clap_encoder.embed_audio(windows(random_clap_encoder, 2))
    assert out.shape == (2, 1024) and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert not np.allclose(out[0], out[1])


def test_text_embeddings_are_1024d_finite_and_distinct(random_clap_encoder):
    out = random_clap_encoder.embed_text(["a dog barking", "rain on a roof", ""])
    assert out.shape == (3, 1024) and out.dtype == np.float32
    assert np.isfinite(out).all()
    assert not np.allclose(out[0], out[1])


def test_empty_inputs_give_empty_arrays(random_clap_encoder):
    assert random_clap_encoder.embed_audio(np.zeros((0, random_clap_encoder.window_samples))).shape == (0, 1024)
    assert random_clap_encoder.embed_text([]).shape == (0, 1024)


def test_same_input_embeds_identically_twice(random_clap_encoder):
    batch = windows(random_clap_encoder, 1, seed=1)
    np.testing.assert_array_equal(random_clap_encoder.embed_audio(batch), random_clap_encoder.embed_audio(batch))
    texts = ["glass breaking", "a siren wailing"]
    np.testing.assert_array_equal(random_clap_encoder.embed_text(texts), random_clap_encoder.embed_text(texts))


def test_batch_size_does_not_change_results(random_clap_encoder):
    one, eight = copy.copy(random_clap_encoder), copy.copy(random_clap_encoder)
    one.batch_size, eight.batch_size = 1, 8
    batch = windows(random_clap_encoder, 3, seed=2)
    np.testing.assert_allclose(one.embed_audio(batch), eight.embed_audio(batch), atol=1e-5, rtol=0)
    texts = ["a dog barking", "traffic noise", "a kick drum", "birds singing"]
    np.testing.assert_allclose(one.embed_text(texts), eight.embed_text(texts), atol=1e-5, rtol=0)


def test_outputs_equal_msclaps_own_loading_and_embedding_path(random_clap_encoder, random_clap_files):
    """msclap's CLAPWrapper loads the same files with its own code; the same tensors through its
    _get_audio_embeddings / get_text_embeddings must give what the encoder returns (raw, not
    normalised)."""
    wrapper = msclap_wrapper(random_clap_files)
    batch = windows(random_clap_encoder, 2, seed=3)
    theirs = wrapper._get_audio_embeddings(torch.from_numpy(batch)[:, None, :]).numpy()
    np.testing.assert_allclose(random_clap_encoder.embed_audio(batch), theirs, atol=1e-5, rtol=0)
    texts = ["a dog barking", "rain on a roof"]
    theirs = wrapper.get_text_embeddings(texts).numpy()
    np.testing.assert_allclose(random_clap_encoder.embed_text(texts), theirs, atol=1e-5, rtol=0)


def test_the_tokenizer_is_msclaps_preprocess_text_on_transformers(random_clap_encoder, random_clap_files):
    """TextTokenizer (which the ONNX text side runs without transformers) gives exactly the
    tokens of transformers' own call that msclap's preprocess_text makes, also for '!' (the pad
    token), non-ASCII and texts past text_len (cut, the last token then <|endoftext|>)."""
    from transformers import AutoTokenizer

    from clapdex.encoder import TextTokenizer

    length = random_clap_encoder.text_length
    tokenizer = AutoTokenizer.from_pretrained(random_clap_files.text_model)
    tokenizer.add_special_tokens({"pad_token": "!"})
    texts = ["a dog barking", "glass!! breaking!", "", "ünïcödé ☂ rain", "rain on a roof " * 30]
    theirs = tokenizer([t + " <|endoftext|>" for t in texts], add_special_tokens=True,
                       max_length=length, padding="max_length", truncation=True, return_tensors="np")
    ours = TextTokenizer.from_transformers(tokenizer, True, length)(texts)
    np.testing.assert_array_equal(ours["attention_mask"], theirs["attention_mask"])
    expected = theirs["input_ids"].copy()
    full = theirs["attention_mask"].sum(axis=1) == length
    assert full.tolist() == [False, False, False, False, True]
    expected[full, -1] = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    np.testing.assert_array_equal(ours["input_ids"], expected)


def test_texts_longer_than_msclaps_limit_are_cut_not_refused(random_clap_encoder):
    out = random_clap_encoder.embed_text(["a dog barking " * 60])
    assert out.shape == (1, 1024) and np.isfinite(out).all()


@pytest.mark.parametrize("bad", [np.zeros((2, 1000), np.float32), np.zeros(7 * 44100, np.float32),
                                 np.full((1, 7 * 44100), np.nan, np.float32)])
def test_bad_windows_are_a_model_error(random_clap_encoder, bad):
    with pytest.raises(ModelError):
        random_clap_encoder.embed_audio(bad)


def test_fingerprint_names_version_and_follows_weight_content(random_clap_files, tmp_path):
    files = random_clap_files
    base = ClapEncoder(weights=files.weights, text_model=files.text_model, device="cpu")
    assert base.fingerprint.startswith("msclap-2023:")
    assert base.fingerprint == base.fingerprint  # cached, stable

    same_content = tmp_path / "copy.pth"
    same_content.write_bytes(files.weights.read_bytes())
    assert ClapEncoder(weights=same_content, text_model=files.text_model).fingerprint == base.fingerprint

    other = tmp_path / "other.pth"  # the fingerprint hashes the file; it need not be loadable
    other.write_bytes(b"other weights")
    assert ClapEncoder(weights=other, text_model=files.text_model).fingerprint != base.fingerprint


def test_fingerprint_follows_text_model_folder_content(random_clap_files, tmp_path):
    import shutil

    folder = tmp_path / "my-gpt2"
    shutil.copytree(random_clap_files.text_model, folder)
    before = ClapEncoder(weights=random_clap_files.weights, text_model=folder).fingerprint
    (folder / "config.json").write_text((folder / "config.json").read_text().replace("768", "768 "))
    after = ClapEncoder(weights=random_clap_files.weights, text_model=folder).fingerprint
    assert before != after


def test_missing_weights_offline_is_a_model_error_with_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as raised:
        ClapEncoder(version="2023", weights=None)
    message = str(raised.value)
    assert "CLAPDEX_CLAP_WEIGHTS" in message and "\n" not in message


def test_weights_file_that_does_not_exist_is_a_model_error(random_clap_files, tmp_path):
    with pytest.raises(ModelError, match="not found"):
        ClapEncoder(weights=tmp_path / "nope.pth", text_model=random_clap_files.text_model)


def test_file_that_is_not_an_msclap_checkpoint_is_refused_on_load(random_clap_files, tmp_path):
    bogus = tmp_path / "bogus.pth"
    torch.save({"state": {}}, bogus)
    with pytest.raises(ModelError, match="not an msclap checkpoint"):
        ClapEncoder(weights=bogus, text_model=random_clap_files.text_model).load()


def test_unreadable_or_unsafe_weights_files_are_refused_on_load(random_clap_files, tmp_path):
    import argparse

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read weights file"):
        ClapEncoder(weights=junk, text_model=random_clap_files.text_model).load()
    pickled = tmp_path / "pickled.pth"  # arbitrary Python objects are never unpickled
    torch.save({"model": {}, "args": argparse.Namespace(lr=1)}, pickled)
    with pytest.raises(ModelError, match="more than tensors"):
        ClapEncoder(weights=pickled, text_model=random_clap_files.text_model).load()


def test_checkpoint_without_audio_weights_is_refused_on_load(random_clap_files, tmp_path):
    state = torch.load(random_clap_files.weights, weights_only=True)["model"]
    partial = {k: v for k, v in state.items() if not k.startswith("audio_encoder.projection")}
    path = tmp_path / "partial.pth"
    torch.save({"model": partial}, path)
    with pytest.raises(ModelError, match="weights missing"):
        ClapEncoder(weights=path, text_model=random_clap_files.text_model).load()


def test_text_model_must_be_recognisable_as_gpt2_for_2023(random_clap_files, tmp_path):
    import shutil

    folder = tmp_path / "tiny-text-model"
    shutil.copytree(random_clap_files.text_model, folder)
    with pytest.raises(ModelError, match="gpt"):
        ClapEncoder(weights=random_clap_files.weights, text_model=folder)
    with pytest.raises(ModelError, match="not found"):
        ClapEncoder(weights=random_clap_files.weights, text_model=tmp_path / "missing-gpt2")


def test_hub_text_model_offline_without_cache_is_a_model_error(random_clap_files):
    with pytest.raises(ModelError, match="CLAPDEX_TEXT_MODEL"):
        ClapEncoder(weights=random_clap_files.weights, text_model=None)  # msclap's default: gpt2


def test_bad_settings_are_model_errors(random_clap_files):
    files = random_clap_files
    for kwargs in ({"version": "2021"}, {"device": "tpu"}, {"batch_size": 0}):
        with pytest.raises(ModelError):
            ClapEncoder(weights=files.weights, text_model=files.text_model, **kwargs)


def test_settings_come_from_options_then_env_then_defaults(random_clap_files, tmp_path, monkeypatch):
    files = random_clap_files
    monkeypatch.setenv("CLAPDEX_CLAP_WEIGHTS", str(files.weights))
    monkeypatch.setenv("CLAPDEX_TEXT_MODEL", str(files.text_model))
    monkeypatch.delenv("CLAPDEX_MODEL_VERSION", raising=False)
    monkeypatch.delenv("CLAPDEX_DEVICE", raising=False)

    from_env = ClapEncoder.from_settings()
    assert from_env.weights_path == files.weights.resolve()
    assert from_env.text_model == str(files.text_model.resolve())
    assert (from_env.version, from_env.requested_device, from_env.batch_size) == ("2023", "auto", 16)
    assert not from_env.loaded  # settings alone never load the model

    monkeypatch.setenv("CLAPDEX_DEVICE", "cpu")
    assert ClapEncoder.from_settings().requested_device == "cpu"
    monkeypatch.setenv("CLAPDEX_MODEL_VERSION", "2021")
    with pytest.raises(ModelError, match="2021"):
        ClapEncoder.from_settings()
    monkeypatch.setenv("CLAPDEX_MODEL_VERSION", "2023")

    other = tmp_path / "other.pth"
    other.write_bytes(b"x")
    from_options = ClapEncoder.from_settings(weights=str(other), device="cuda", batch_size=3)
    assert from_options.weights_path == other.resolve()
    assert (from_options.requested_device, from_options.batch_size) == ("cuda", 3)


def test_describe_reports_the_setup(random_clap_encoder, random_clap_files):
    info = random_clap_encoder.describe()
    assert info["version"] == "2023" and info["dimension"] == 1024
    assert info["weights"] == str(random_clap_files.weights.resolve())
    assert info["weights_source"] == "file" and info["text_model_source"] == "folder"
    assert info["device"] == "cpu" and info["window_seconds"] == 7.0
    assert info["fingerprint"] == random_clap_encoder.fingerprint


def test_offline_first_run_error_names_every_missing_piece(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as raised:
        ClapEncoder(version="2023", weights=None, text_model=None)
    message = str(raised.value)
    assert "\n" not in message and "HF_HUB_OFFLINE" in message
    assert "CLAPDEX_CLAP_WEIGHTS" in message and "CLAPDEX_TEXT_MODEL" in message


def test_unreachable_hub_fails_at_once_naming_every_missing_piece(random_clap_files, monkeypatch):
    """Online settings but no network: one probe of the hub (here a closed local port), then one
    error with every fix, instead of minutes of retries per file."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ModelError) as raised:
        ClapEncoder(version="2023", weights=None, text_model=None)
    message = str(raised.value)
    assert message.startswith("cannot reach the Hugging Face hub") and "\n" not in message
    assert "CLAPDEX_CLAP_WEIGHTS" in message and "CLAPDEX_TEXT_MODEL" in message
    assert "HF_HUB_OFFLINE=1" in message
    with pytest.raises(ModelError) as raised:  # weights given: only the text model is missing
        ClapEncoder(version="2023", weights=random_clap_files.weights, text_model=None)
    assert "CLAPDEX_TEXT_MODEL" in str(raised.value) and "CLAPDEX_CLAP_WEIGHTS" not in str(raised.value)
    # Everything local: no probe, no error, online or not.
    ClapEncoder(weights=random_clap_files.weights, text_model=random_clap_files.text_model)


def test_a_text_query_builds_only_the_text_side(random_clap_files, tmp_path):
    """A fresh process embeds a text: the audio encoder is never built. With torch, neither
    msclap's wrapper (torchaudio, GPT-2 generation code) nor ONNX Runtime is imported; with the
    default ONNX backend, once the text graph is cached (the first process exports it), a fresh
    process imports neither torch nor transformers nor msclap, and embeds the same vector."""
    import json
    import subprocess
    import sys

    code = ("import json, sys\n"
            "from clapdex.encoder import ClapEncoder\n"
            "e = ClapEncoder(weights=sys.argv[1], text_model=sys.argv[2], device='cpu', backend=sys.argv[3])\n"
            "out = e.embed_text(['a dog barking', 'glass breaking!'])\n"
            "heavy = [m for m in ('msclap.CLAPWrapper', 'torchaudio', 'onnxruntime', 'torch',\n"
            "                     'transformers', 'msclap') if m in sys.modules]\n"
            "print(json.dumps([e._audio is None, heavy, out.tolist()]))\n")
    env = {**os.environ, "CLAPDEX_CACHE_DIR": str(tmp_path / "cache")}

    def fresh(backend):
        result = subprocess.run([sys.executable, "-c", code, str(random_clap_files.weights),
                                 str(random_clap_files.text_model), backend],
                                capture_output=True, text=True, env=env)
        assert result.returncode == 0, result.stderr
        no_audio, heavy, out = json.loads(result.stdout.strip().splitlines()[-1])
        assert no_audio
        return set(heavy), np.asarray(out), result.stderr

    heavy, by_torch, said = fresh("torch")
    assert heavy == {"torch", "transformers", "msclap"} and "loading the text model" in said
    heavy, first, said = fresh("onnx")                       # exports and caches the text graph
    assert "building the ONNX text encoder" in said and "audio" not in said
    heavy, cached, said = fresh("onnx")
    assert heavy == {"onnxruntime"} and said == ""           # no torch, transformers, msclap
    assert np.abs(cached - by_torch).max() <= 1e-4 and np.array_equal(cached, first)


def test_concept_and_indexed_file_queries_load_no_model(tmp_path, test_encoder):
    """`clapdex search -c ...` and `clapdex similar <indexed file>` in a fresh process import
    neither torch nor transformers nor onnxruntime."""
    import subprocess
    import sys

    from clapdex.indexer import index_paths
    from tests.audio_collection import tone_mix, write_audio, write_vocabulary

    write_audio(tmp_path / "audio" / "a.wav", tone_mix([440], 3.0, 16000), 16000)
    write_audio(tmp_path / "audio" / "b.wav", tone_mix([900], 3.0, 16000), 16000)
    vocab = write_vocabulary(tmp_path, ["440 hz tone", "900 hz tone"], "v")
    index_paths([tmp_path / "audio"], test_encoder, tmp_path / "ix", vocabulary=str(vocab), show_progress=False)
    code = ("import sys\n"
            "from clapdex.cli import main\n"
            "for args in (['search', '-c', '440 hz tone'], ['similar', 'a.wav']):\n"
            "    try:\n"
            "        main(args + ['--index', sys.argv[1], '--json'], standalone_mode=False)\n"
            "    except SystemExit as stop:\n"
            "        assert not stop.code, stop.code\n"
            "print([m for m in ('torch', 'transformers', 'msclap', 'onnxruntime') if m in sys.modules])\n")
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "ix")], capture_output=True,
                            text=True, cwd=tmp_path / "audio")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) >= 3 and lines[-1] == "[]"
