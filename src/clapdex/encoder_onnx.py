"""The ONNX backend of ClapEncoder: msclap's own audio and text encoders, with the user's weights,
exported once with torch.onnx.export and run by ONNX Runtime.

Each exported graph ("part": audio or text) is cached in the cache dir under a name derived from
the model fingerprint and the tool versions that made it, next to a JSON record of what it is (and
its sha256; the text part's record also holds its tokenizer, clapdex.encoder.TextTokenizer). Once
cached, a part runs without PyTorch, transformers or msclap being imported: a cold text query
costs ONNX Runtime and the tokenizer only. Nothing cached is trusted: a graph whose record is
missing, different or whose bytes do not hash to it is rebuilt with a warning. Every build is
checked against PyTorch on a probe batch (several batch sizes): the exact graph must agree to
MAX_ABS_DIFF, the int8 one (audio only; approximate, its own fingerprint) must keep cosine >=
MIN_COSINE, else the backend is refused with a one-line error.
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
from clapdex.filehash import file_sha256

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


def onnx_text_runner(encoder):
    """A runner (texts -> (n, d) float32) on the cached (or newly built) text graph and the
    tokenizer kept in its record: neither PyTorch nor transformers is imported once cached."""
    from clapdex.encoder import TextTokenizer

    session, record = _cached(encoder, "text", False)
    tokenize = TextTokenizer(record["tokenizer"])

    def run(texts: list[str]) -> np.ndarray:
        return session.run(None, tokenize(texts))[0]

    return run


# ------------------------------------------------------------------------------------ the cache
def cache_paths(encoder, quantized: bool, part: str = "audio") -> tuple[Path, Path, dict]:
    """(graph file, record file, identity): what must match for a cached graph to be used."""
    identity = {"format": FORMAT, "part": part, "fingerprint": encoder.model_fingerprint,
                "int8": quantized, "opset": OPSET, "torch": _version("torch"),
                "msclap": _version("msclap"), "onnx": _version("onnx")}
    if quantized:
        identity["onnxruntime"] = _version("onnxruntime")
    if part == "text":  # the tokenizer and the text model come from transformers
        identity.update(transformers=_version("transformers"), tokenizers=_version("tokenizers"),
                        text_model=str(encoder._text_model_to_load), text_length=encoder.text_length)
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]
    name = f"{part}-{key}{'-int8' if quantized else ''}"
    folder = cache_dir("onnx")
    return folder / f"{name}.onnx", folder / f"{name}.json", identity


def cached_session(encoder, quantized: bool = False):
    """An ONNX Runtime session for the encoder's audio side: from the cache if the cached graph is
    exactly what this model needs, else built (and checked) now."""
    return _cached(encoder, "audio", quantized)[0]


def _cached(encoder, part: str, quantized: bool):
    """(session, record) for one part, from the cache when it is exactly what this model needs,
    else built and checked now."""
    require_onnxruntime("onnx-int8" if quantized else "onnx")
    path, record_path, identity = cache_paths(encoder, quantized, part)
    problem = _cache_problem(path, record_path, identity)
    if problem is None:
        try:
            return _session(path, encoder.threads), json.loads(record_path.read_text())
        except Exception as error:  # onnxruntime raises its own types for a graph it cannot load
            problem = f"onnxruntime cannot load it ({_first_line(error)})"
    if problem != "missing":
        warnings.warn(f"the cached ONNX {part} encoder {path} is not usable ({problem}); rebuilding it",
                      OnnxCacheWarning, stacklevel=3)
    build = _build_text if part == "text" else _build
    return build(encoder, quantized, path, record_path, identity)


def _cache_problem(path: Path, record_path: Path, identity: dict) -> str | None:
    if not path.exists() and not record_path.exists():
        return "missing"
    try:
        record = json.loads(record_path.read_text())
    except (OSError, ValueError):
        return "its record is missing or unreadable"
    if not isinstance(record, dict) or record.get("identity") != identity:
        return "it was made for another model or tool version"
    if identity["part"] == "text" and not isinstance(record.get("tokenizer"), dict):
        return "its record holds no tokenizer"
    try:  # remembered by path, size and mtime (clapdex.filehash): a cold start does not re-read it
        digest = file_sha256(path)
    except OSError as error:
        return f"cannot read it ({error.strerror})"
    if digest != record.get("sha256"):
        return "its content does not match its record (damaged or changed)"
    return None


def _save_record(record_path: Path, temporary: Path, identity: dict, probe: dict, **extra) -> dict:
    record = {"identity": identity, "sha256": sha256_file(temporary), "probe": probe, **extra}
    with atomic_path(record_path) as record_temporary:
        record_temporary.write_text(json.dumps(record, indent=1))
    return record


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
        record = _save_record(record_path, temporary, identity,
                              {"max_abs_diff": worst_diff, "min_cosine": worst_cosine,
                               "batch_sizes": list(PROBE_BATCH_SIZES)})
    return session, record


# Texts the text graph is checked on: short, with the pad token '!' inside, empty, and longer
# than text_len (cut, keeping the final <|endoftext|>).
PROBE_TEXTS = ("a dog barking", "glass breaking on a tile floor!!", "", "rain on a roof " * 40)


def _build_text(encoder, quantized: bool, path: Path, record_path: Path, identity: dict):
    """Export msclap's TextEncoder, check it against PyTorch on PROBE_TEXTS (all, and one), then
    move graph and record (with the tokenizer) into place atomically."""
    import torch

    encoder.notify("building the ONNX text encoder (once for this model)…")
    path.parent.mkdir(parents=True, exist_ok=True)
    module, tokenizer = encoder.torch_text_encoder()
    module = module.cpu()
    tokens = tokenizer(list(PROBE_TEXTS))
    with torch.inference_mode():
        reference = module({k: torch.from_numpy(v) for k, v in tokens.items()}).float().numpy()
    with atomic_path(path) as temporary:
        _export_text(module, tokenizer.keys, {k: v[:2] for k, v in tokens.items()}, temporary)
        session = _session(temporary, encoder.threads)
        worst = 0.0
        for n in (len(PROBE_TEXTS), 1):
            out = session.run(None, {k: v[:n] for k, v in tokens.items()})[0]
            worst = max(worst, float(np.abs(out - reference[:n]).max()))
        if not worst <= MAX_ABS_DIFF:
            raise ModelError(f"the ONNX export of this text model differs from PyTorch by {worst:.1e} "
                             f"on the probe texts (limit {MAX_ABS_DIFF:g}); use --backend torch")
        record = _save_record(record_path, temporary, identity,
                              {"max_abs_diff": worst, "texts": len(PROBE_TEXTS)},
                              tokenizer=tokenizer.spec)
    return session, record


def _export_text(module, keys: list[str], example: dict, target: Path) -> None:
    import torch

    class Inputs(torch.nn.Module):  # TextEncoder takes one dict; the graph takes named tensors
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *tensors):
            return self.inner(dict(zip(keys, tensors)))

    axes = {key: {0: "n"} for key in keys} | {"embedding": {0: "n"}}
    with _traceable_attention(module.base), warnings.catch_warnings(), \
            torch.inference_mode(False), torch.no_grad():
        warnings.simplefilter("ignore")  # tracer warnings about Python control flow
        torch.onnx.export(Inputs(module).eval(), tuple(torch.from_numpy(example[k]) for k in keys),
                          str(target), input_names=keys, output_names=["embedding"],
                          dynamic_axes=axes, opset_version=OPSET, dynamo=False)


@contextlib.contextmanager
def _traceable_attention(model):
    """transformers' SDPA attention builds its mask with torch.vmap, which the ONNX tracer cannot
    follow; for the export only, the model uses the same attention with transformers' own
    vmap-free mask (what its executorch export uses). Older transformers need nothing."""
    try:
        from transformers.integrations.executorch import sdpa_mask_without_vmap
        from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS
        from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    except ImportError:
        yield
        return
    config = model.config
    original = config._attn_implementation
    if original != "sdpa":
        yield
        return
    ALL_MASK_ATTENTION_FUNCTIONS.register("sdpa_without_vmap", sdpa_mask_without_vmap)
    ALL_ATTENTION_FUNCTIONS.register("sdpa_without_vmap", ALL_ATTENTION_FUNCTIONS["sdpa"])
    config._attn_implementation = "sdpa_without_vmap"
    try:
        yield
    finally:
        config._attn_implementation = original


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
