"""The ONNX backend of ClapEncoder's audio side: msclap's own audio encoder, with the user's weights,
exported once with torch.onnx.export and run by ONNX Runtime.

The exported graph is cached in the cache dir under a name derived from the model fingerprint and
the tool versions that made it, next to a JSON record of what it is (and its sha256). Nothing cached
is trusted: a graph whose record is missing, different or whose bytes do not hash to it is rebuilt
with a warning. Every build is checked against PyTorch on a probe batch (several batch sizes): the
exact graph must agree to MAX_ABS_DIFF, the int8 one (approximate, its own fingerprint) must keep
cosine >= MIN_COSINE, else the backend is refused with a one-line error.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import importlib.util
import json
import warnings
from pathlib import Path

import numpy as np

from clapdex.errors import ModelError
from clapdex.fileio import atomic_path, cache_dir, sha256_file

FORMAT = 1                # bump when the export itself changes: old caches are then rebuilt
OPSET = 17
MAX_ABS_DIFF = 1e-4       # exact backend vs PyTorch on the probe batch
PROBE_BATCH_SIZES = (3, 1)   # the graph's batch axis is dynamic: check a full and a short batch


class OnnxCacheWarning(UserWarning):
    """A cached ONNX graph could not be used and was rebuilt."""


def onnxruntime_importable() -> bool:
    try:
        return (importlib.util.find_spec("onnxruntime") is not None
                and importlib.util.find_spec("onnx") is not None)
    except (ImportError, ValueError):
        return False


def require_onnxruntime(backend: str = "onnx") -> None:
    """A one-line ModelError with the fix if the ONNX backend cannot run here."""
    if not onnxruntime_importable():
        raise ModelError(f"--backend {backend} needs onnxruntime and onnx, which cannot be imported; "
                         f"install them with `pip install onnxruntime onnx`, or use --backend torch")


def onnx_audio_runner(encoder, quantized: bool = False):
    """A batch runner ((n, samples) float32 -> (n, d) float32) on the cached (or newly built) graph."""
    session = cached_session(encoder, quantized)

    def run(batch: np.ndarray) -> np.ndarray:
        return session.run(None, {"windows": batch})[0]

    return run


# ------------------------------------------------------------------------------------ the cache
def cache_paths(encoder, quantized: bool) -> tuple[Path, Path, dict]:
    """(graph file, record file, identity): what must match for a cached graph to be used."""
    identity = {"format": FORMAT, "part": "audio", "fingerprint": encoder.model_fingerprint,
                "int8": quantized, "opset": OPSET, "torch": _version("torch"),
                "msclap": _version("msclap"), "onnx": _version("onnx")}
    if quantized:
        identity["onnxruntime"] = _version("onnxruntime")
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
    name = f"audio-{key}{'-int8' if quantized else ''}"
    folder = cache_dir("onnx")
    return folder / f"{name}.onnx", folder / f"{name}.json", identity


def cached_session(encoder, quantized: bool = False):
    """An ONNX Runtime session for the encoder's audio side: from the cache if the cached graph is
    exactly what this model needs, else built (and checked) now."""
    require_onnxruntime("onnx-int8" if quantized else "onnx")
    path, record_path, identity = cache_paths(encoder, quantized)
    problem = _cache_problem(path, record_path, identity)
    if problem is None:
        try:
            return _session(path, encoder.threads)
        except Exception as error:  # onnxruntime raises its own types for a graph it cannot load
            problem = f"onnxruntime cannot load it ({_first_line(error)})"
    if problem != "missing":
        warnings.warn(f"the cached ONNX audio encoder {path} is not usable ({problem}); rebuilding it",
                      OnnxCacheWarning, stacklevel=2)
    return _build(encoder, quantized, path, record_path, identity)


def _cache_problem(path: Path, record_path: Path, identity: dict) -> str | None:
    if not path.exists() and not record_path.exists():
        return "missing"
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return "its record is missing or unreadable"
    if not isinstance(record, dict) or record.get("identity") != identity:
        return "it was made for another model or tool version"
    try:
        digest = sha256_file(path)
    except OSError as error:
        return f"cannot read it ({error.strerror})"
    if digest != record.get("sha256"):
        return "its content does not match its record (damaged or changed)"
    return None


def _build(encoder, quantized: bool, path: Path, record_path: Path, identity: dict):
    """Export (or quantise the exact graph), check against PyTorch on the probe batch, then move
    graph and record into place atomically (temp file + rename in the same folder)."""
    import torch

    from clapdex.encoder import MIN_COSINE, cosines, probe_windows

    encoder.notify("building the ONNX audio encoder (once for this model)…")
    path.parent.mkdir(parents=True, exist_ok=True)
    module = encoder.torch_audio_encoder()
    probe = probe_windows(encoder.window_samples, encoder.sample_rate, max(PROBE_BATCH_SIZES))
    with torch.inference_mode():
        reference = module(torch.from_numpy(probe))[0].float().numpy()

    with atomic_path(path) as temporary:  # in place only once checked
        if quantized:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            exact_path = cache_paths(encoder, False)[0]
            cached_session(encoder, False)  # makes sure the exact graph is built and valid
            # Only the matrix products (attention, MLPs, projections), per output channel: int8
            # convolutions (the STFT and the patch embedding) cost far more accuracy.
            with _quiet_root_logger():  # the quantiser logs a warning per tensor it skips
                quantize_dynamic(str(exact_path), str(temporary), weight_type=QuantType.QInt8,
                                 per_channel=True, op_types_to_quantize=["MatMul", "Gemm"])
        else:
            _export(module, probe[:2], temporary)
        session = _session(temporary, encoder.threads)
        worst_diff, worst_cosine = 0.0, 1.0
        for n in PROBE_BATCH_SIZES:
            out = session.run(None, {"windows": probe[:n]})[0]
            worst_diff = max(worst_diff, float(np.abs(out - reference[:n]).max()))
            worst_cosine = min(worst_cosine, float(cosines(out, reference[:n]).min()))
        if quantized and not worst_cosine >= MIN_COSINE:
            raise ModelError(f"int8 quantisation changes this model's embeddings too much (cosine "
                             f"{worst_cosine:.5f} < {MIN_COSINE} to fp32 on the probe batch); "
                             f"use --backend onnx")
        if not quantized and not worst_diff <= MAX_ABS_DIFF:
            raise ModelError(f"the ONNX export of this model differs from PyTorch by {worst_diff:.1e} "
                             f"on the probe batch (limit {MAX_ABS_DIFF:g}); use --backend torch")
        record = {"identity": identity, "sha256": sha256_file(temporary),
                  "probe": {"max_abs_diff": worst_diff, "min_cosine": worst_cosine,
                            "batch_sizes": list(PROBE_BATCH_SIZES)}}
        with atomic_path(record_path) as record_temporary:
            record_temporary.write_text(json.dumps(record, indent=1))
    return session


@contextlib.contextmanager
def _quiet_root_logger():
    import logging

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def _batch_agnostic_htsat():
    """msclap's HTSAT window_reverse computes the batch size with int(), which the exporter records
    as a constant: the graph would then only be right for the batch size it was traced with. For
    the export only, it is replaced by the same reshape with the batch size left to -1."""
    import msclap.models.htsat as htsat

    original = htsat.window_reverse

    def window_reverse(windows, window_size, height, width):
        channels = windows.shape[-1]
        x = windows.view(-1, height // window_size, width // window_size, window_size, window_size, channels)
        return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, height, width, channels)

    htsat.window_reverse = window_reverse
    try:
        yield
    finally:
        htsat.window_reverse = original


def _embedding_only(module):
    """AudioEncoder's forward without the AudioSet class probabilities clapdex never reads."""
    import torch

    class EmbeddingOnly(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, windows):
            return self.inner(windows)[0]

    return EmbeddingOnly(module).eval()


def _export(module, example: np.ndarray, target: Path) -> None:
    import torch

    with _batch_agnostic_htsat(), warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow in HTSAT
        torch.onnx.export(_embedding_only(module), (torch.from_numpy(example),), str(target),
                          input_names=["windows"], output_names=["embedding"],
                          dynamic_axes={"windows": {0: "n"}, "embedding": {0: "n"}},
                          opset_version=OPSET, dynamo=False)


def _session(path: Path, threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    # Idle encoder threads sleep instead of spinning, so the decoding threads get the cores
    # while the encoder waits for its next batch.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
