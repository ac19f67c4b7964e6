"""The ONNX backend of ClapEncoder, with the REAL msclap code and RANDOM weights (clap_fixtures.py):
the exported graph equals PyTorch, its cache is keyed by the model and never trusted blindly, a
missing onnxruntime is a one-line error, and an index built with one backend is searched with the
other. (The session's random_clap_encoder runs the default backend, which is onnx here.)"""

from __future__ import annotations

import copy
import json
import shutil
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from clapdex.encoder import ClapEncoder, cosines, probe_windows
from clapdex.encoder_onnx import OnnxCacheWarning, cache_paths
from clapdex.errors import ModelError
from tests.audio_collection import tone_mix, write_audio, write_vocabulary


def windows(encoder, n, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(encoder.window_samples) / encoder.sample_rate
    return np.asarray([0.2 * np.sin(2 * np.pi * 330.0 * (i + 1) * t) + 0.02 * rng.standard_normal(t.size)
                       for i in range(n)], dtype=np.float32)


@pytest.fixture(scope="module")
def torch_encoder(random_clap_encoder):
    encoder = random_clap_encoder.with_backend("torch", device="cpu")
    encoder.batch_size = 8
    return encoder


def test_default_backend_on_the_cpu_is_onnx_with_the_same_fingerprint(random_clap_encoder, torch_encoder):
    random_clap_encoder.embed_audio(windows(random_clap_encoder, 1))
    assert random_clap_encoder.backend == "onnx"
    assert random_clap_encoder.fingerprint == torch_encoder.fingerprint  # same model, same index


@pytest.mark.parametrize("batch_size,n", [(1, 2), (4, 4), (4, 5), (8, 8), (3, 7)])
def test_onnx_equals_pytorch_for_batch_sizes_and_the_last_short_batch(random_clap_encoder, torch_encoder,
                                                                      batch_size, n):
    encoder = copy.copy(random_clap_encoder)
    encoder.batch_size = batch_size
    batch = windows(encoder, n, seed=batch_size)
    ours, reference = encoder.embed_audio(batch), torch_encoder.embed_audio(batch)
    assert np.abs(ours - reference).max() <= 1e-4
    assert not np.allclose(ours[0], ours[-1])  # distinct windows stay distinct


def test_the_cache_is_keyed_by_the_model_fingerprint(random_clap_encoder, random_clap_files, tmp_path):
    random_clap_encoder.embed_audio(windows(random_clap_encoder, 1))
    graph, record, _ = cache_paths(random_clap_encoder, quantized=False)
    assert graph.is_file() and json.loads(record.read_text())["probe"]["max_abs_diff"] <= 1e-4
    before = graph.stat().st_mtime_ns

    state = torch.load(random_clap_files.weights, weights_only=True)["model"]
    state["audio_encoder.projection.linear1.weight"] = state["audio_encoder.projection.linear1.weight"] * 1.5
    other_weights = tmp_path / "other.pth"
    torch.save({"model": state}, other_weights)
    other = ClapEncoder(weights=other_weights, text_model=random_clap_files.text_model, device="cpu")
    assert other.fingerprint != random_clap_encoder.fingerprint
    other_graph = cache_paths(other, quantized=False)[0]
    assert other_graph != graph and not other_graph.exists()

    batch = windows(other, 2, seed=9)
    out = other.embed_audio(batch)
    assert other.backend == "onnx" and other_graph.is_file()   # built for these weights
    reference = other.with_backend("torch").embed_audio(batch)
    assert np.abs(out - reference).max() <= 1e-4
    assert not np.allclose(out, random_clap_encoder.embed_audio(batch), atol=1e-3)
    assert graph.stat().st_mtime_ns == before  # the first model's graph was left alone


@pytest.mark.parametrize("damage", ["graph bytes", "record", "stale record"])
def test_a_damaged_or_stale_cache_is_rebuilt_with_a_warning(random_clap_encoder, torch_encoder, damage):
    random_clap_encoder.embed_audio(windows(random_clap_encoder, 1))
    graph, record, _ = cache_paths(random_clap_encoder, quantized=False)
    if damage == "graph bytes":
        data = bytearray(graph.read_bytes())
        data[len(data) // 2:len(data) // 2 + 64] = b"\x00" * 64  # same size, different weights
        graph.write_bytes(bytes(data))
    elif damage == "record":
        record.write_text("{not json")
    else:
        content = json.loads(record.read_text())
        content["identity"]["fingerprint"] = "msclap-2023:0000000000000000:gpt2"
        record.write_text(json.dumps(content))

    fresh = copy.copy(random_clap_encoder)
    fresh._audio = None
    batch = windows(fresh, 2, seed=4)
    with pytest.warns(OnnxCacheWarning, match="rebuilding"):
        out = fresh.embed_audio(batch)
    assert np.abs(out - torch_encoder.embed_audio(batch)).max() <= 1e-4

    again = copy.copy(random_clap_encoder)  # the rebuilt cache is used as it is, without a warning
    again._audio = None
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", OnnxCacheWarning)
        np.testing.assert_allclose(again.embed_audio(batch), out, atol=1e-6, rtol=0)


def test_onnx_backend_without_onnxruntime_is_a_one_line_error_with_the_fix(random_clap_files, monkeypatch):
    from clapdex.cli import main

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    with pytest.raises(ModelError, match="pip install onnxruntime onnx"):
        ClapEncoder(weights=random_clap_files.weights, text_model=random_clap_files.text_model,
                    backend="onnx")
    result = CliRunner().invoke(main, ["model", "check", "--backend", "onnx", "--weights",
                                       str(random_clap_files.weights), "--text-model",
                                       str(random_clap_files.text_model)])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --backend onnx needs onnxruntime")
    assert "pip install onnxruntime onnx" in lines[0] and "--backend torch" in lines[0]

    from clapdex.encoder_onnx import onnxruntime_importable

    assert not onnxruntime_importable()  # so the default (auto) falls back to torch


def test_an_index_built_with_torch_is_searched_with_onnx(random_clap_encoder, torch_encoder, tmp_path):
    from clapdex.api import open_index
    from clapdex.indexer import index_paths

    audio = tmp_path / "audio"
    write_audio(audio / "low.wav", tone_mix([220], 8.0, 44100), 44100)
    write_audio(audio / "high.wav", tone_mix([3000, 5000], 8.0, 44100, seed=1), 44100)
    query = write_audio(tmp_path / "query" / "high-copy.wav", tone_mix([3000, 5000], 8.0, 44100, seed=1), 44100)
    vocab = write_vocabulary(tmp_path, ["a dog barking", "rain on a roof", "a siren wailing"], "v")
    index_paths([audio], torch_encoder, tmp_path / "ix", vocabulary=str(vocab), show_progress=False)

    assert random_clap_encoder.backend == "onnx"
    with open_index(tmp_path / "ix", encoder=random_clap_encoder) as index:
        results = index.search(audio=str(query), mode="dense")
    assert results.results[0].path.endswith("high.wav")
    assert results.results[0].dense > 0.9999  # the same audio, embedded by the other backend


def test_int8_is_approximate_with_its_own_fingerprint_or_refused(random_clap_encoder, random_clap_files):
    """Random weights cannot tell how quantisation treats the real ones: either the probe keeps
    cosine >= 0.999 and int8 runs under its own fingerprint, or it is refused with the fix."""
    encoder = ClapEncoder(weights=random_clap_files.weights, text_model=random_clap_files.text_model,
                          device="cpu", backend="onnx-int8")
    assert encoder.fingerprint == random_clap_encoder.fingerprint + ":int8"
    batch = probe_windows(encoder.window_samples, encoder.sample_rate, 2)
    try:
        out = encoder.embed_audio(batch)
    except ModelError as error:
        assert "cosine" in str(error) and "--backend onnx" in str(error)
        return
    assert encoder.precision == "int8"
    assert cosines(out, random_clap_encoder.embed_audio(batch)).min() >= 0.999


def test_threads_and_backend_come_from_options_then_env(random_clap_files, monkeypatch):
    files = random_clap_files
    monkeypatch.setenv("CLAPDEX_BACKEND", "torch")
    monkeypatch.setenv("CLAPDEX_THREADS", "1")
    encoder = ClapEncoder.from_settings(weights=files.weights, text_model=files.text_model)
    assert (encoder.requested_backend, encoder.threads) == ("torch", 1)
    encoder = ClapEncoder.from_settings(weights=files.weights, text_model=files.text_model,
                                        backend="onnx", threads=2)
    assert (encoder.requested_backend, encoder.threads) == ("onnx", 2)
    monkeypatch.setenv("CLAPDEX_BACKEND", "tensorrt")
    with pytest.raises(ModelError, match="unknown backend"):
        ClapEncoder.from_settings(weights=files.weights, text_model=files.text_model)
    with pytest.raises(ModelError, match="CPU"):
        ClapEncoder(weights=files.weights, text_model=files.text_model, backend="onnx", device="cuda")


def test_threads_are_honoured_by_onnx_runtime(random_clap_encoder, monkeypatch):
    import onnxruntime

    from clapdex import encoder_onnx

    seen = []
    real = onnxruntime.InferenceSession

    def spy(path, options, **kwargs):
        seen.append(options.intra_op_num_threads)
        return real(path, options, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", spy)
    two = copy.copy(random_clap_encoder)
    two._audio, two.threads = None, 2
    two.embed_audio(windows(two, 1))
    assert seen == [2]


def test_model_check_compare_reports_the_backends_cosine_on_given_files(random_clap_files, tmp_path):
    from clapdex.cli import main

    clip = write_audio(tmp_path / "clip.wav", tone_mix([440, 660], 9.0, 44100), 44100)
    common = ["--weights", str(random_clap_files.weights), "--text-model", str(random_clap_files.text_model),
              "--device", "cpu", "--backend", "onnx"]
    result = CliRunner().invoke(main, ["model", "check", "--compare", str(clip), "--json", *common])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)["compare"]
    assert report["backend"] == "onnx" and report["windows"] == 2   # 9 s -> two 7 s windows
    assert report["files"][0]["windows"] == 2
    assert report["min_cosine"] >= 0.9999 and report["max_abs_diff"] <= 1e-4
    plain = CliRunner().invoke(main, ["model", "check", "--compare", str(clip), *common])
    assert plain.exit_code == 0 and "min cosine" in plain.stdout and "backend onnx (fp32)" in plain.stdout
    refused = CliRunner().invoke(main, ["model", "check", str(clip), *common])
    assert refused.exit_code == 2 and "--compare" in refused.output
