"""Audio/text encoders: the Encoder protocol and ClapEncoder, which wraps msclap's CLAP model."""

from __future__ import annotations

import hashlib
import os
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
DEVICES = ("auto", "cpu", "cuda")

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
                 batch_size: int = DEFAULT_BATCH_SIZE):
        version = str(version)
        if version not in VERSIONS:
            raise ModelError(f"unknown MS-CLAP version {version!r}; use one of {', '.join(VERSIONS)}")
        if device not in DEVICES and not str(device).startswith("cuda:"):
            raise ModelError(f"unknown device {device!r}; use auto, cpu or cuda")
        if int(batch_size) < 1:
            raise ModelError(f"batch size must be at least 1, got {batch_size}")
        self.version = version
        self.requested_device = str(device)
        self.batch_size = int(batch_size)
        self._config = msclap_config(version)
        self.dimension = int(self._config["d_proj"])
        # The rate msclap resamples audio to before its audio encoder (not HTSAT's internal 32 kHz).
        self.sample_rate = int(self._config["sampling_rate"])
        self.window_seconds = float(self._config["duration"])
        self.text_length = int(self._config["text_len"])

        self._weights_path, self.weights_source = self._locate_weights(weights)
        self.text_model, self.text_model_is_folder = self._locate_text_model(text_model)
        self._text_model_to_load = self._resolve_text_model_offline()
        self._check_text_model_family(self._text_model_to_load)

        self._model = None
        self._tokenizer = None
        self._device = None
        self._fingerprint: str | None = None

    @classmethod
    def from_settings(cls, version: str | None = None, weights: str | os.PathLike | None = None,
                      text_model: str | os.PathLike | None = None, device: str | None = None,
                      batch_size: int | None = None) -> "ClapEncoder":
        """Options first, then $CLAPDEX_MODEL_VERSION, $CLAPDEX_CLAP_WEIGHTS, $CLAPDEX_TEXT_MODEL,
        $CLAPDEX_DEVICE, then the defaults (2023, msclap's download, msclap's text model, auto)."""
        env = os.environ
        return cls(
            version=version or env.get("CLAPDEX_MODEL_VERSION") or DEFAULT_VERSION,
            weights=weights or env.get("CLAPDEX_CLAP_WEIGHTS") or None,
            text_model=text_model or env.get("CLAPDEX_TEXT_MODEL") or None,
            device=device or env.get("CLAPDEX_DEVICE") or "auto",
            batch_size=batch_size or DEFAULT_BATCH_SIZE,
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
        if hub_offline():
            raise ModelError(f"no CLAP weights: running offline (HF_HUB_OFFLINE) and msclap's "
                             f"{WEIGHTS_FILES[self.version]} is not cached; {_missing_weights_fix(self.version)}")
        return None, "download"

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

    def _resolve_text_model_offline(self) -> str:
        """What to hand to from_pretrained: offline, a hub id becomes its cached folder or an error."""
        if self.text_model_is_folder or not hub_offline():
            return self.text_model
        from huggingface_hub import snapshot_download

        try:
            return snapshot_download(self.text_model, local_files_only=True)
        except Exception:  # huggingface_hub raises several types for "not in the cache"
            raise ModelError(f"text model {self.text_model!r} is not in the Hugging Face cache and "
                             f"running offline; set CLAPDEX_TEXT_MODEL (or --text-model) to a local "
                             f"folder saved with save_pretrained") from None

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
                                 f"{_missing_weights_fix(self.version)}") from None
            finally:
                hub_logging.set_verbosity(verbosity)
            self.weights_source = "downloaded"
        return self._weights_path

    # ---------------------------------------------------------------- identity
    @property
    def fingerprint(self) -> str:
        """msclap-<version>:<weights sha256 prefix>:<text model id or folder hash prefix>.

        Cheap after the first call: file hashes are cached by (path, size, mtime). Downloads the
        weights first if they are neither given nor cached (and the hub is not switched off).
        """
        if self._fingerprint is None:
            from clapdex.filehash import file_sha256

            weights_hash = file_sha256(self._ensure_weights())[:16]
            if self.text_model_is_folder:
                text_id = "folder-" + _folder_sha256(Path(self.text_model))[:16]
            else:
                text_id = self.text_model
            self._fingerprint = f"msclap-{self.version}:{weights_hash}:{text_id}"
        return self._fingerprint

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def device(self) -> str:
        """The device the model runs on ('auto' resolved once loaded)."""
        return self._device or self.requested_device

    @property
    def loaded(self) -> bool:
        return self._model is not None

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
            "batch_size": self.batch_size,
            "sample_rate": self.sample_rate,
            "window_seconds": self.window_seconds,
            "window_samples": self.window_samples,
            "dimension": self.dimension,
            "offline": hub_offline(),
            "fingerprint": self.fingerprint if self._weights_path else None,
        }

    # ---------------------------------------------------------------- loading
    def load(self) -> "ClapEncoder":
        """Build msclap's CLAP model and tokenizer and load the weights (once)."""
        if self._model is not None:
            return self
        import torch

        device = self._pick_device(torch)
        state = _read_checkpoint(self._ensure_weights())
        from msclap.models.clap import CLAP  # heavy import, only when the model is needed
        from transformers import AutoTokenizer

        config = self._config
        try:
            model = CLAP(audioenc_name=config["audioenc_name"], sample_rate=config["sampling_rate"],
                         window_size=config["window_size"], hop_size=config["hop_size"],
                         mel_bins=config["mel_bins"], fmin=config["fmin"], fmax=config["fmax"],
                         classes_num=config["num_classes"], out_emb=config["out_emb"],
                         text_model=self._text_model_to_load,
                         transformer_embed_dim=config["transformer_embed_dim"], d_proj=config["d_proj"])
            tokenizer = AutoTokenizer.from_pretrained(self._text_model_to_load)
        except (OSError, ValueError) as error:
            raise ModelError(f"cannot load text model {self.text_model!r}: {_first_line(error)}") from None
        if self.version == "2023":
            tokenizer.add_special_tokens({"pad_token": "!"})  # as msclap does for GPT-2

        # strict=False as in msclap: the text model's own weights may come from from_pretrained.
        # But every audio-encoder and projection weight must come from the file, or the file is
        # not a checkpoint of this model version.
        try:
            result = model.load_state_dict(state, strict=False)
        except RuntimeError as error:
            raise ModelError(f"weights file {self._weights_path} does not fit the msclap "
                             f"{self.version} model and text model: {_first_line(error)}") from None
        missing = [key for key in result.missing_keys if _must_come_from_checkpoint(key)]
        if missing:
            raise ModelError(f"weights file {self._weights_path} is not an msclap {self.version} "
                             f"checkpoint ({len(missing)} weights missing, e.g. {missing[0]}); "
                             f"check --model-version")
        model.eval()
        self._model = model.to(device)
        self._tokenizer = tokenizer
        self._device = str(device)
        return self

    def _pick_device(self, torch):
        wanted = self.requested_device
        if wanted == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if wanted.startswith("cuda") and not torch.cuda.is_available():
            raise ModelError("device cuda was asked for but torch sees no CUDA GPU; use --device cpu")
        return torch.device(wanted)

    @property
    def model(self):
        """msclap's CLAP module (loads it on first use)."""
        return self.load()._model

    @property
    def tokenizer(self):
        return self.load()._tokenizer

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
        import torch

        model = self.model
        with torch.inference_mode():
            for start in range(0, len(windows), self.batch_size):
                batch = torch.from_numpy(np.ascontiguousarray(windows[start:start + self.batch_size]))
                # audio_encoder returns (projected embedding, AudioSet class probabilities).
                embedding = model.audio_encoder(batch.to(self._device))[0]
                out[start:start + len(batch)] = embedding.float().cpu().numpy()
        return out

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        """n strings -> (n, 1024) float32, raw; tokenised exactly as msclap's preprocess_text."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return out
        import torch

        model = self.model
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                tokens = self._tokenize(texts[start:start + self.batch_size])
                tokens = {key: value.to(self._device) for key, value in tokens.items()}
                out[start:start + len(texts[start:start + self.batch_size])] = (
                    model.caption_encoder(tokens).float().cpu().numpy())
        return out

    def _tokenize(self, texts: list[str]) -> dict:
        """msclap's preprocess_text for a batch: GPT-2 texts get ' <|endoftext|>' appended and all
        are padded to text_len. msclap fails on longer texts; here they are cut, keeping the final
        <|endoftext|> that the GPT-2 pooling reads."""
        tokenizer = self._tokenizer
        gpt = self.version == "2023"
        if gpt:
            texts = [text + " <|endoftext|>" for text in texts]
        tokens = tokenizer(texts, add_special_tokens=True, max_length=self.text_length,
                           padding="max_length", truncation=True, return_tensors="pt")
        keys = ["input_ids", "attention_mask"] if gpt else ["input_ids", "token_type_ids", "attention_mask"]
        tokens = {key: tokens[key] for key in keys}
        if gpt:
            cut = tokens["attention_mask"].sum(dim=1) == self.text_length
            tokens["input_ids"][cut, -1] = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        # Note: msclap's GPT-2 pooling finds the last token by counting ids != 0, and the pad token
        # '!' is id 0, so a '!' inside a text shifts the pooled position. That is how the model was
        # trained and used by msclap, so it is kept.
        return tokens


def _must_come_from_checkpoint(key: str) -> bool:
    if key.startswith("caption_encoder.base."):
        return False  # the pretrained text model, loaded by from_pretrained
    # STFT / mel filter banks are fixed functions of the config, not learned.
    return not any(part in key for part in ("spectrogram_extractor", "logmel_extractor"))


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
