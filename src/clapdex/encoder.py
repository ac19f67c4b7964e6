"""Audio/text encoders: the Encoder protocol and ClapEncoder, which wraps msclap's CLAP model."""

from __future__ import annotations

import glob
import hashlib
import os
import sys
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from clapdex.errors import ModelError


@runtime_checkable
class Encoder(Protocol):
    """What clapdex needs from an audio-text embedding model.

    Embeddings are returned as float32 arrays, *not* normalised; callers normalise where the math
    says so (see concepts.decompose).
    """

    dimension: int          # embedding size (1024 for MS-CLAP)
    sample_rate: int        # audio is resampled to this rate before embed_audio
    window_seconds: float   # length of one window fed to embed_audio

    @property
    def fingerprint(self) -> str:
        """Changes whenever the model, its version or its weights change."""

    def embed_audio(self, windows: np.ndarray) -> np.ndarray:
        """(n, window_samples) float32 mono windows -> (n, dimension) float32."""

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """n strings -> (n, dimension) float32."""


# --------------------------------------------------------------------------------------------------
# ClapEncoder: msclap's CLAP model, fed with clapdex's own deterministic windows.
# --------------------------------------------------------------------------------------------------

VERSIONS = ("2022", "2023")
DEFAULT_VERSION = "2023"
DEFAULT_BATCH_SIZE = 16
CUDA_BATCH_SIZE = 64      # a GPU wants bigger batches; 64 windows of 7 s are ~80 MB of input
DEVICES = ("auto", "cpu", "cuda")
# How the audio encoder runs. "onnx" is msclap's own model exported to ONNX and run by ONNX Runtime
# (same embeddings to 1e-4, faster on CPU); "onnx-int8" is its dynamically quantised, approximate
# variant (its own fingerprint). "auto": onnx on CPU when onnxruntime is importable, else torch.
BACKENDS = ("auto", "torch", "onnx", "onnx-int8")
MIN_COSINE = 0.999        # approximate modes (int8, CUDA autocast) must keep this on the probe

# Where msclap itself downloads the weights from (CLAPWrapper.model_repo / model_name).
WEIGHTS_REPO = "microsoft/msclap"
WEIGHTS_FILES = {"2022": "CLAP_weights_2022.pth", "2023": "CLAP_weights_2023.pth"}

_TRUE = {"1", "on", "yes", "true"}


def hub_offline() -> bool:
    """True when Hugging Face access is switched off (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE)."""
    return any(os.environ.get(name, "").strip().lower() in _TRUE
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def msclap_config(version: str) -> dict:
    """msclap's own model config (configs/config_<version>.yml), read without importing msclap."""
    import importlib.util

    import yaml

    spec = importlib.util.find_spec("msclap")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("the msclap package is not installed; install it with `pip install msclap`")
    path = Path(list(spec.submodule_search_locations)[0]) / "configs" / f"config_{version}.yml"
    try:
        return yaml.safe_load(path.read_text())
    except OSError as error:
        raise ModelError(f"msclap has no config for version {version} ({path}): {error.strerror}") from None


def _missing_weights_fix(version: str) -> str:
    return (f"download {WEIGHTS_FILES[version]} from https://huggingface.co/{WEIGHTS_REPO} and pass "
            f"--weights FILE or set CLAPDEX_CLAP_WEIGHTS=FILE")


def _missing_text_model_fix(encoder) -> str:
    name = " whose name contains 'gpt'" if encoder.version == "2023" else ""
    return (f"save it with save_pretrained where there is network, see the README's Offline use, "
            f"and pass --text-model FOLDER or set CLAPDEX_TEXT_MODEL=FOLDER, a folder{name}")


def _hub_unreachable(timeout: float = 5.0) -> str | None:
    """None if the Hugging Face hub answers at all within `timeout` s, else why not (one word)."""
    import urllib.error
    import urllib.request

    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    try:
        urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=timeout).close()
    except urllib.error.HTTPError:
        return None  # it answered
    except Exception as error:
        reason = getattr(error, "reason", error)
        return _first_line(reason) if isinstance(reason, BaseException) else str(reason)
    return None


class ClapEncoder:
    """MS-CLAP (package msclap) as a clapdex Encoder.

    The model is built with msclap's own classes and config (`msclap.models.clap.CLAP`), from a
    local weights file or the one msclap downloads, and a text model that is either a Hugging Face id
    or a local folder (air-gapped use). clapdex feeds it waveform windows itself: msclap's file
    loader crops long files at random, so the same file would embed differently twice.

    Outputs are what msclap's `get_audio_embeddings` / `get_text_embeddings` return: the projected
    1024-d embeddings, *not* L2-normalised (msclap normalises only inside `compute_similarity`),
    as float32 numpy arrays.

    The model loads lazily on first use (or `load()`); everything that can be checked without
    loading it (files exist, nothing to download while offline) is checked by the constructor, so
    a bad setup fails at once with a ModelError whose one-line message says how to fix it.
    """

    def __init__(self, version: str = DEFAULT_VERSION, weights: str | os.PathLike | None = None,
                 text_model: str | os.PathLike | None = None, device: str = "auto",
                 batch_size: int | None = None, backend: str = "auto", threads: int | None = None,
                 notify=None):
        version = str(version)
        if version not in VERSIONS:
            raise ModelError(f"unknown MS-CLAP version {version!r}; use one of {', '.join(VERSIONS)}")
        if device not in DEVICES and not str(device).startswith("cuda:"):
            raise ModelError(f"unknown device {device!r}; use auto, cpu or cuda")
        if batch_size is not None and int(batch_size) < 1:
            raise ModelError(f"batch size must be at least 1, got {batch_size}")
        if backend not in BACKENDS:
            raise ModelError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
        if backend.startswith("onnx"):
            if str(device).startswith("cuda"):
                raise ModelError(f"backend {backend} runs on the CPU; with --device cuda use --backend torch")
            from clapdex.encoder_onnx import require_onnxruntime

            require_onnxruntime(backend)  # fails at once, with the fix, if it cannot be imported
        if threads is not None and int(threads) < 1:
            raise ModelError(f"threads must be at least 1, got {threads}")
        self.version = version
        self.requested_device = str(device)
        self.requested_backend = backend
        self._batch_size = int(batch_size) if batch_size is not None else None
        self.threads = int(threads) if threads is not None else available_cores()
        # Messages worth a line on stderr ("loading the model…"); replace to route them elsewhere.
        self.notify = notify or _stderr_notice
        self._config = msclap_config(version)
        self.dimension = int(self._config["d_proj"])
        # The rate msclap resamples audio to before its audio encoder (not HTSAT's internal 32 kHz).
        self.sample_rate = int(self._config["sampling_rate"])
        self.window_seconds = float(self._config["duration"])
        self.text_length = int(self._config["text_len"])

        self._weights_path, self.weights_source = self._locate_weights(weights)
        self.text_model, self.text_model_is_folder = self._locate_text_model(text_model)
        # A folder, the cached copy of a hub model, or the hub id itself when it is to be downloaded.
        cached_text_model = self._cached_text_model()
        self._text_model_to_load = cached_text_model or self.text_model
        self._check_text_model_family(self._text_model_to_load)
        self._check_downloads(text_cached=cached_text_model is not None)

        self._audio = None        # (n, samples) float32 array -> (n, d) float32 array
        self._text = None         # list of texts -> (n, d) float32 array (torch or ONNX Runtime)
        self._device = None
        self.backend: str | None = None     # the audio backend in use, once resolved
        self.precision = "fp32"             # or "fp16"/"bf16" (CUDA autocast) / "int8"
        self._fingerprint: str | None = None

    @classmethod
    def from_settings(cls, version: str | None = None, weights: str | os.PathLike | None = None,
                      text_model: str | os.PathLike | None = None, device: str | None = None,
                      batch_size: int | None = None, backend: str | None = None,
                      threads: int | None = None) -> "ClapEncoder":
        """Options first, then $CLAPDEX_MODEL_VERSION, $CLAPDEX_CLAP_WEIGHTS, $CLAPDEX_TEXT_MODEL,
        $CLAPDEX_DEVICE, $CLAPDEX_BACKEND, $CLAPDEX_THREADS, then the defaults (2023, msclap's
        download, msclap's text model, auto device, auto backend, all cores)."""
        env = os.environ
        threads = threads or env.get("CLAPDEX_THREADS") or None
        try:
            threads = int(threads) if threads is not None else None
        except ValueError:
            raise ModelError(f"CLAPDEX_THREADS must be a whole number, got {threads!r}") from None
        return cls(
            version=version or env.get("CLAPDEX_MODEL_VERSION") or DEFAULT_VERSION,
            weights=weights or env.get("CLAPDEX_CLAP_WEIGHTS") or None,
            text_model=text_model or env.get("CLAPDEX_TEXT_MODEL") or None,
            device=device or env.get("CLAPDEX_DEVICE") or "auto",
            batch_size=batch_size or None,
            backend=backend or env.get("CLAPDEX_BACKEND") or "auto",
            threads=threads,
        )

    # ---------------------------------------------------------------- where the parts come from
    def _locate_weights(self, weights) -> tuple[Path | None, str]:
        """(path or None, source): a local file, a copy in the Hugging Face cache, or a download."""
        if weights:
            path = Path(weights).expanduser()
            if not path.is_file():
                raise ModelError(f"CLAP weights file not found: {path}; {_missing_weights_fix(self.version)}")
            return path.resolve(), "file"
        from huggingface_hub import try_to_load_from_cache  # looks in the cache only, no network

        cached = try_to_load_from_cache(WEIGHTS_REPO, WEIGHTS_FILES[self.version])
        if isinstance(cached, str) and Path(cached).is_file():
            return Path(cached), "hf-cache"
        return None, "download"  # _check_downloads says whether that can work

    def _locate_text_model(self, text_model) -> tuple[str, bool]:
        """(name or folder, is_folder). msclap picks how to read the text model from its name."""
        if not text_model:
            return str(self._config["text_model"]), False
        text_model = str(text_model)
        folder = Path(text_model).expanduser()
        if folder.is_dir():
            name = str(folder.resolve())
            is_folder = True
        elif folder.exists() or os.sep in text_model or text_model.startswith((".", "~")):
            raise ModelError(f"text model folder not found: {text_model}; set CLAPDEX_TEXT_MODEL "
                             f"to a folder holding a Hugging Face model and tokenizer")
        else:
            name, is_folder = text_model, False
        return name, is_folder

    def _check_text_model_family(self, name: str) -> None:
        """msclap's TextEncoder picks its pooling from substrings of the name it is given: 'clip'
        first, then 'gpt' (last token), else BERT-style (first token). The name must lead it to
        the text model this version was trained with."""
        lowered = name.lower()
        if "clip" in lowered:
            raise ModelError(f"msclap would treat {name!r} as a CLIP text model (its path contains "
                             f"'clip'); move or rename the text-model folder")
        if self.version == "2023" and "gpt" not in lowered:
            raise ModelError(f"the 2023 model needs a GPT-2 text model, and msclap recognises it by "
                             f"'gpt' in its name; rename {name!r} (e.g. to gpt2)")
        if self.version == "2022" and "gpt" in lowered:
            raise ModelError(f"the 2022 model needs a BERT text model (bert-base-uncased), not {name!r}")

    def _cached_text_model(self) -> str | None:
        """The text model's folder: the one given, or a hub model's copy in the Hugging Face cache
        (used even online, so a cached model never waits on the network); None if not cached."""
        if self.text_model_is_folder:
            return self.text_model
        from huggingface_hub import snapshot_download

        try:
            return snapshot_download(self.text_model, local_files_only=True)
        except Exception:  # huggingface_hub raises several types for "not in the cache"
            return None

    def _check_downloads(self, text_cached: bool) -> None:
        """Everything that would have to be downloaded must be downloadable, or the one error names
        every missing piece with its fix: offline at once, online after one quick probe of the hub
        (seconds, instead of a minute or more of retries per file)."""
        missing = []
        if self._weights_path is None:
            missing.append(f"the CLAP weights ({_missing_weights_fix(self.version)})")
        if not text_cached:
            missing.append(f"the text model {self.text_model!r} ({_missing_text_model_fix(self)})")
        if not missing:
            return
        if hub_offline():
            raise ModelError(f"running offline (HF_HUB_OFFLINE) and not on this machine: {'; '.join(missing)}")
        problem = _hub_unreachable()
        if problem:
            raise ModelError(f"cannot reach the Hugging Face hub ({problem}) to download "
                             f"{'; '.join(missing)}; then set HF_HUB_OFFLINE=1 so that nothing "
                             f"tries the network")

    @property
    def weights_path(self) -> Path | None:
        """The weights file, or None while it is still to be downloaded."""
        return self._weights_path

    def _ensure_weights(self) -> Path:
        if self._weights_path is None:
            from huggingface_hub import hf_hub_download
            from huggingface_hub.utils import logging as hub_logging

            # Without a network the hub retries for ~25 s, logging a warning per retry; the one
            # line below says it all. The download progress bar is not logging and stays visible.
            verbosity = hub_logging.get_verbosity()
            hub_logging.set_verbosity_error()
            try:
                self._weights_path = Path(hf_hub_download(WEIGHTS_REPO, WEIGHTS_FILES[self.version]))
            except Exception as error:
                raise ModelError(f"could not download msclap's {WEIGHTS_FILES[self.version]} "
                                 f"({type(error).__name__}; no network?); "
                                 f"{_missing_weights_fix(self.version)}, and set HF_HUB_OFFLINE=1") from None
            finally:
                hub_logging.set_verbosity(verbosity)
            self.weights_source = "downloaded"
        return self._weights_path

    # ---------------------------------------------------------------- identity
    @property
    def fingerprint(self) -> str:
        """msclap-<version>:<weights sha256 prefix>:<text model id or folder hash prefix>, plus
        ':int8' for the approximate onnx-int8 backend. The exact backends (torch, onnx) give the
        same embeddings to 1e-4, so they share a fingerprint: an index built with one is searched
        with the other.

        Cheap after the first call: file hashes are cached by (path, size, mtime). Downloads the
        weights first if they are neither given nor cached (and the hub is not switched off).
        """
        if self._fingerprint is None:
            self._fingerprint = self.model_fingerprint + (":int8" if self.requested_backend == "onnx-int8" else "")
        return self._fingerprint

    @property
    def model_fingerprint(self) -> str:
        """The fingerprint of the fp32 model itself, whatever the backend."""
        from clapdex.filehash import file_sha256

        weights_hash = file_sha256(self._ensure_weights())[:16]
        if self.text_model_is_folder:
            text_id = "folder-" + _folder_sha256(Path(self.text_model))[:16]
        else:
            text_id = self.text_model
        return f"msclap-{self.version}:{weights_hash}:{text_id}"

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def device(self) -> str:
        """The device the model runs on ('auto' resolved once loaded)."""
        return self._device or self.requested_device

    @property
    def batch_size(self) -> int:
        """Windows (or texts) per forward pass: as set, else 64 on a GPU and 16 on the CPU."""
        if self._batch_size is not None:
            return self._batch_size
        return CUDA_BATCH_SIZE if self._resolve_device().startswith("cuda") else DEFAULT_BATCH_SIZE

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self._batch_size = int(value)

    @property
    def loaded(self) -> bool:
        return self._audio is not None or self._text is not None

    def describe(self) -> dict:
        """What `clapdex model check` reports. Never downloads anything."""
        return {
            "version": self.version,
            "audio_encoder": self._config["audioenc_name"],
            "weights": str(self._weights_path) if self._weights_path else None,
            "weights_source": self.weights_source,
            "text_model": self.text_model,
            "text_model_source": "folder" if self.text_model_is_folder else "hugging-face",
            "device": self.device,
            "backend": self.backend or self.requested_backend,
            "precision": self.precision,
            "threads": self.threads,
            "batch_size": self.batch_size,
            "sample_rate": self.sample_rate,
            "window_seconds": self.window_seconds,
            "window_samples": self.window_samples,
            "dimension": self.dimension,
            "offline": hub_offline(),
            "fingerprint": self.fingerprint if self._weights_path else None,
        }

    def with_backend(self, backend: str, device: str | None = None) -> "ClapEncoder":
        """The same model and settings, unloaded, run by another backend (and device)."""
        other = ClapEncoder(version=self.version, weights=self._ensure_weights(),
                            text_model=self.text_model, device=device or self.requested_device,
                            batch_size=self._batch_size, backend=backend, threads=self.threads,
                            notify=self.notify)
        other._text_model_to_load = self._text_model_to_load
        return other

    # ---------------------------------------------------------------- loading
    # Each side loads on first use: a text query never builds the HTSAT audio encoder, and the
    # ONNX backend, once its graphs are cached, runs either side without PyTorch or transformers
    # (a cold text query then imports neither).
    def load(self) -> "ClapEncoder":
        """Load both sides now (audio backend, text encoder and tokenizer)."""
        self._load_audio()
        self._load_text()
        return self

    def _resolve_device(self) -> str:
        """'cpu' or 'cuda[:n]'. 'auto' asks torch only where a CUDA GPU could exist at all."""
        if self._device is None:
            wanted = self.requested_device
            if wanted == "cpu" or (wanted == "auto" and (self.requested_backend.startswith("onnx")
                                                         or not _cuda_possible())):
                self._device = "cpu"
            else:
                import torch

                available = torch.cuda.is_available()
                if wanted == "auto":
                    self._device = "cuda" if available else "cpu"
                elif not available:
                    raise ModelError("device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
                else:
                    self._device = wanted
        return self._device

    def _torch(self):
        """torch, with its thread count set (once) to this encoder's."""
        import torch

        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        return torch

    def _resolve_backend(self) -> str:
        """'torch', 'onnx' or 'onnx-int8' ('auto': onnx on the CPU when onnxruntime is there)."""
        backend = self.requested_backend
        if backend == "auto":
            from clapdex.encoder_onnx import onnxruntime_importable

            cpu = self._resolve_device() == "cpu"
            backend = "onnx" if cpu and onnxruntime_importable() else "torch"
        return backend

    def _load_audio(self):
        if self._audio is not None:
            return self._audio
        device = self._resolve_device()
        backend = self._resolve_backend()
        if backend == "torch":
            module = self.torch_audio_encoder()
            if device.startswith("cuda"):
                self.precision = _pick_cuda_precision(self, module)
            self._audio = _torch_audio_runner(self, module)
        else:
            from clapdex.encoder_onnx import onnx_audio_runner

            self._audio = onnx_audio_runner(self, quantized=backend == "onnx-int8")
            if backend == "onnx-int8":
                self.precision = "int8"
        self.backend = backend
        return self._audio

    def torch_audio_encoder(self):
        """msclap's AudioEncoder (HTSAT + projection) with the checkpoint's weights, in eval mode,
        on this encoder's device. Built anew on every call (the ONNX export uses it once)."""
        self.notify("loading the audio model…")
        torch = self._torch()
        models = _msclap_models()
        config = self._config
        module = models.AudioEncoder(config["audioenc_name"], config["out_emb"], config["d_proj"],
                                     config["sampling_rate"], config["window_size"], config["hop_size"],
                                     config["mel_bins"], config["fmin"], config["fmax"], config["num_classes"])
        _load_part(module, "audio_encoder.", _read_checkpoint(self._ensure_weights()), self)
        return module.eval().to(torch.device(self._resolve_device()))

    def _load_text(self):
        """The text side: msclap's TextEncoder with the checkpoint's weights, run by PyTorch, or
        (ONNX backends) its exported graph, which is exact (no int8 for text)."""
        if self._text is None:
            if self._resolve_backend() == "torch":
                self._text = _torch_text_runner(self, *self.torch_text_encoder())
            else:
                from clapdex.encoder_onnx import onnx_text_runner

                self._text = onnx_text_runner(self)
        return self._text

    def torch_text_encoder(self):
        """(msclap's TextEncoder with the checkpoint's weights, in eval mode, on this encoder's
        device; its TextTokenizer). Built anew on every call (the ONNX export uses it once)."""
        self.notify("loading the text model…")
        torch = self._torch()
        state = _read_checkpoint(self._ensure_weights())
        models = _msclap_models()
        from transformers import AutoTokenizer

        config = self._config
        try:
            text = models.TextEncoder(config["d_proj"], self._text_model_to_load, config["transformer_embed_dim"])
            tokenizer = AutoTokenizer.from_pretrained(self._text_model_to_load)
        except (OSError, ValueError) as error:
            raise ModelError(f"cannot load text model {self.text_model!r}: {_first_line(error)}") from None
        if self.version == "2023":
            tokenizer.add_special_tokens({"pad_token": "!"})  # as msclap does for GPT-2
        _load_part(text, "caption_encoder.", state, self)
        return (text.eval().to(torch.device(self._resolve_device())),
                TextTokenizer.from_transformers(tokenizer, self.version == "2023", self.text_length))

    # ---------------------------------------------------------------- embedding
    def embed_audio(self, windows: np.ndarray) -> np.ndarray:
        """(n, window_samples) float32 windows at sample_rate -> (n, 1024) float32, raw."""
        windows = np.asarray(windows, dtype=np.float32)
        if windows.ndim != 2 or windows.shape[1] != self.window_samples:
            raise ModelError(f"audio windows must have shape (n, {self.window_samples}) "
                             f"({self.window_seconds:g} s at {self.sample_rate} Hz), got {windows.shape}")
        if not np.isfinite(windows).all():
            raise ModelError("audio windows contain NaN or infinite samples")
        out = np.empty((len(windows), self.dimension), dtype=np.float32)
        if len(windows) == 0:
            return out
        run = self._load_audio()
        step = self.batch_size
        for start in range(0, len(windows), step):
            out[start:start + step] = run(np.ascontiguousarray(windows[start:start + step]))
        return out

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """n strings -> (n, 1024) float32, raw; tokenised exactly as msclap's preprocess_text."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        run = self._load_text()
        step = self.batch_size
        for start in range(0, len(texts), step):
            out[start:start + step] = run(texts[start:start + step])
        return out


class TextTokenizer:
    """msclap's preprocess_text, on the `tokenizers` tokenizer that transformers' (fast)
    AutoTokenizer wraps, so that it also runs without transformers (the ONNX text side keeps it
    with its graph: `spec`).

    GPT-2 texts get ' <|endoftext|>' appended and all are padded to text_len, exactly as
    transformers' tokenizer(..., padding="max_length", truncation=True) configures the same
    tokenizer. msclap fails on longer texts; here they are cut, keeping the final <|endoftext|>
    that the GPT-2 pooling reads. (msclap's GPT-2 pooling finds the last token by counting ids
    != 0, and the pad token '!' is id 0, so a '!' inside a text shifts the pooled position. That
    is how the model was trained and used by msclap, so it is kept.)
    """

    def __init__(self, spec: dict):
        from tokenizers import Tokenizer

        self.spec = spec
        self.gpt = bool(spec["gpt"])
        self.length = int(spec["length"])
        self.keys = list(spec["keys"])
        backend = Tokenizer.from_str(spec["tokenizer"])
        backend.enable_truncation(self.length, stride=0, strategy="longest_first",
                                  direction=spec["truncation_side"])
        backend.enable_padding(length=self.length, direction=spec["padding_side"],
                               pad_id=int(spec["pad_id"]), pad_type_id=int(spec["pad_type_id"]),
                               pad_token=spec["pad_token"])
        self.backend = backend
        self.end_id = backend.token_to_id("<|endoftext|>") if self.gpt else None

    @classmethod
    def from_transformers(cls, tokenizer, gpt: bool, length: int) -> "TextTokenizer":
        if not getattr(tokenizer, "is_fast", False):
            raise ModelError(f"the text model's tokenizer ({type(tokenizer).__name__}) has no fast "
                             f"(tokenizers) version; save the text model with its tokenizer.json")
        keys = ["input_ids", "attention_mask"] if gpt else ["input_ids", "token_type_ids", "attention_mask"]
        return cls({"tokenizer": tokenizer.backend_tokenizer.to_str(), "gpt": gpt, "length": length,
                    "keys": keys, "pad_id": tokenizer.pad_token_id, "pad_token": tokenizer.pad_token,
                    "pad_type_id": tokenizer.pad_token_type_id,
                    "padding_side": tokenizer.padding_side,
                    "truncation_side": tokenizer.truncation_side})

    def __call__(self, texts: list[str]) -> dict[str, np.ndarray]:
        if self.gpt:
            texts = [text + " <|endoftext|>" for text in texts]
        encodings = self.backend.encode_batch(texts, add_special_tokens=True)
        field = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
        tokens = {key: np.asarray([getattr(e, field[key]) for e in encodings], dtype=np.int64)
                  for key in self.keys}
        if self.gpt:
            cut = tokens["attention_mask"].sum(axis=1) == self.length
            tokens["input_ids"][cut, -1] = self.end_id
        return tokens


def _torch_text_runner(encoder: "ClapEncoder", module, tokenizer: TextTokenizer):
    """A runner (texts -> (n, d) float32) for msclap's TextEncoder in PyTorch."""
    torch = encoder._torch()
    device = torch.device(encoder._resolve_device())

    def run(texts: list[str]) -> np.ndarray:
        tokens = {key: torch.from_numpy(value).to(device) for key, value in tokenizer(texts).items()}
        with torch.inference_mode():
            return module(tokens).float().cpu().numpy()

    return run


def available_cores() -> int:
    """CPU cores this process may run on (the default thread count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _stderr_notice(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _cuda_possible() -> bool:
    """False where no CUDA GPU can exist (no NVIDIA device on Linux, macOS), so that 'auto' does
    not import torch just to hear so; True means: ask torch."""
    if sys.platform == "darwin":
        return False
    if sys.platform.startswith("linux"):
        return bool(glob.glob("/dev/nvidia[0-9]*"))
    return True


def _msclap_models():
    """msclap.models.clap (AudioEncoder, TextEncoder) without running msclap/__init__.py, which
    imports msclap's CLAPWrapper and with it torchaudio, scikit-learn and GPT-2 generation code
    (~7 s) that the encoders never use. The package module is registered without executing its
    __init__; its submodules then import as usual. Where msclap is already imported, it is used."""
    if "msclap" not in sys.modules:
        import importlib.util
        import types

        spec = importlib.util.find_spec("msclap")
        if spec is None or not spec.submodule_search_locations:
            raise ModelError("the msclap package is not installed; install it with `pip install msclap`")
        package = types.ModuleType("msclap")
        package.__path__ = list(spec.submodule_search_locations)
        package.__spec__ = spec
        package.__file__ = spec.origin
        sys.modules["msclap"] = package
    import msclap.models.clap as models

    return models


def _load_part(module, prefix: str, state: dict, encoder: "ClapEncoder") -> None:
    """Load the checkpoint's `prefix` weights into one of msclap's encoders, as msclap does
    (strict=False: the text model's own weights may come from from_pretrained). Every other
    learned weight must come from the file, or it is not a checkpoint of this model version."""
    part = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    try:
        result = module.load_state_dict(part, strict=False)
    except RuntimeError as error:
        raise ModelError(f"weights file {encoder.weights_path} does not fit the msclap "
                         f"{encoder.version} model and text model: {_first_line(error)}") from None
    missing = [prefix + key for key in result.missing_keys if _must_come_from_checkpoint(prefix + key)]
    if missing:
        raise ModelError(f"weights file {encoder.weights_path} is not an msclap {encoder.version} "
                         f"checkpoint ({len(missing)} weights missing, e.g. {missing[0]}); "
                         f"check --model-version")


def _must_come_from_checkpoint(key: str) -> bool:
    if key.startswith("caption_encoder.base."):
        return False  # the pretrained text model, loaded by from_pretrained
    # STFT / mel filter banks are fixed functions of the config, not learned.
    return not any(part in key for part in ("spectrogram_extractor", "logmel_extractor"))


def probe_windows(window_samples: int, sample_rate: int, n: int = 3) -> np.ndarray:
    """A fixed batch of n windows (tones, a sweep and noise) that backends are checked on."""
    rng = np.random.default_rng(12345)
    t = np.arange(window_samples) / sample_rate
    rows = []
    for i in range(n):
        tone = 0.3 * np.sin(2 * np.pi * (110.0 * (i + 1)) * t * (1.0 + 0.05 * i * t))
        rows.append(tone + (0.02 + 0.05 * i) * rng.standard_normal(t.size))
    return np.asarray(rows, dtype=np.float32)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two (n, d) arrays."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)


def _torch_audio_runner(encoder: "ClapEncoder", module):
    """A batch runner for msclap's AudioEncoder in PyTorch (autocast when the probe allowed it)."""
    torch = encoder._torch()
    device = torch.device(encoder._resolve_device())
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(encoder.precision)

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            # audio_encoder returns (projected embedding, AudioSet class probabilities).
            return module(torch.from_numpy(batch).to(device))[0].float().cpu().numpy()

    return run


def _pick_cuda_precision(encoder: "ClapEncoder", module) -> str:
    """fp16, else bf16 autocast if it keeps cosine >= MIN_COSINE to fp32 on the probe batch
    (and is finite), else fp32. Measured once per load, on this model's own weights."""
    torch = encoder._torch()
    probe = torch.from_numpy(probe_windows(encoder.window_samples, encoder.sample_rate)).to(encoder.device)
    with torch.inference_mode():
        reference = module(probe)[0].float().cpu().numpy()
        for name, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
            if dtype is torch.bfloat16 and not torch.cuda.is_bf16_supported():
                continue
            with torch.autocast("cuda", dtype=dtype):
                out = module(probe)[0].float().cpu().numpy()
            if np.isfinite(out).all() and cosines(out, reference).min() >= MIN_COSINE:
                return name
    return "fp32"


def _read_checkpoint(path: Path) -> dict:
    """The state dict of an msclap checkpoint: torch.save({'model': state_dict}, path)."""
    import pickle

    import torch

    try:
        try:  # memory-mapped: the 700 MB of weights are not held twice while the model fills up
            checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as error:
            if "mmap" not in str(error):
                raise
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)  # legacy format
    except pickle.UnpicklingError as error:
        if "global" not in str(error).lower():  # not a pickle of objects, just not a checkpoint
            raise ModelError(f"cannot read weights file {path}: not a PyTorch checkpoint") from None
        raise ModelError(f"weights file {path} holds more than tensors, so it is not loaded "
                         f"(torch weights_only); if you trust it, re-save its tensors with "
                         f"torch.save({{'model': torch.load(FILE, weights_only=False)['model']}}, NEW_FILE)") from None
    except Exception as error:  # torch raises RuntimeError / EOFError / zip errors for bad files
        raise ModelError(f"cannot read weights file {path}: {_first_line(error)}") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise ModelError(f"weights file {path} is not an msclap checkpoint (expected a dict with a "
                         f"'model' state dict)")
    return checkpoint["model"]


def _folder_sha256(folder: Path) -> str:
    """Hash of a text-model folder: names and content hashes of its top-level files."""
    from clapdex.filehash import file_sha256

    digest = hashlib.sha256()
    for path in sorted(folder.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            digest.update(f"{path.name}:{file_sha256(path)}\n".encode())
    return digest.hexdigest()


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


def mean_window_embedding(encoder: Encoder, path, hop_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """(mean of the unit window embeddings of one audio file, float64 (d,), number of windows).

    Streams the file through `clapdex.audio.iter_windows` in the encoder's windows; an all-zero
    embedding adds nothing to the sum. Raises AudioError for a file that cannot be decoded.
    """
    from clapdex.audio import iter_windows
    from clapdex.vectors import unit_rows

    total = np.zeros(encoder.dimension, dtype=np.float64)
    count = 0
    for windows, _times in iter_windows(path, encoder.sample_rate, encoder.window_seconds, hop_seconds):
        embedded = np.asarray(encoder.embed_audio(windows), dtype=np.float64)
        total += unit_rows(embedded).sum(axis=0)
        count += len(embedded)
    return (total / count if count else total), count


def compare_with_pytorch(encoder: ClapEncoder, paths) -> dict:
    """How close the encoder's backend is to msclap's PyTorch fp32 on the CPU, on the windows of
    the given audio files: per file and overall min/mean cosine and max |difference|. This is the
    measure for approximate modes (onnx-int8, CUDA autocast) on the user's own weights and sounds,
    which random weights cannot predict."""
    from clapdex.audio import iter_windows
    from clapdex.errors import AudioError

    reference = encoder.with_backend("torch", device="cpu")
    rows, all_cosines, worst_diff = [], [], 0.0
    for path in paths:
        ours, theirs = [], []
        try:
            for windows, _times in iter_windows(path, encoder.sample_rate, encoder.window_seconds):
                ours.append(encoder.embed_audio(windows))
                theirs.append(reference.embed_audio(windows))
        except AudioError as error:
            rows.append({"path": str(path), "error": error.reason})
            continue
        if not ours:
            rows.append({"path": str(path), "error": "no audio windows"})
            continue
        ours, theirs = np.concatenate(ours), np.concatenate(theirs)
        similarity = cosines(ours, theirs)
        diff = float(np.abs(ours - theirs).max())
        rows.append({"path": str(path), "windows": len(ours), "min_cosine": float(similarity.min()),
                     "mean_cosine": float(similarity.mean()), "max_abs_diff": diff})
        all_cosines.append(similarity)
        worst_diff = max(worst_diff, diff)
    joined = np.concatenate(all_cosines) if all_cosines else np.zeros(0)
    return {"backend": encoder.backend, "precision": encoder.precision,
            "reference": "torch fp32 on the cpu", "files": rows, "windows": int(joined.size),
            "min_cosine": float(joined.min()) if joined.size else None,
            "mean_cosine": float(joined.mean()) if joined.size else None,
            "max_abs_diff": worst_diff if joined.size else None}
