"""The linear projection of audio embeddings at run time: loading, applying, the projected encoder.

A d×d matrix P (trained by `clapdex finetune`, clapdex.evaluation.projection) maps audio
embeddings: `apply_projection(emb, proj)` = normalize(emb) · Pᵀ (raw output; consumers normalise).
An index built with a projection stores the matrix in its settings and holds projected window
embeddings (FAISS and the decomposition both see them); `encoder_for_index` wraps the model in
`ProjectedEncoder` (whose fingerprint includes the projection's hash) for index, search and
explain, from the stored matrix when no file is given. Text embeddings are never projected:
training aligns P·a with the unprojected text embeddings of the class prompts, so text queries and
concept atoms stay as they are.

The file (torch.save, loadable with weights_only=True) stores the matrix, the fingerprint of the
encoder it was trained for, the classes, prompt, temperature and the before/after accuracies.
Loading it for another encoder is refused.
"""


from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from clapdex.errors import IndexMismatchError, ProjectionError, Remedy
from clapdex.fileio import atomic_path
from clapdex.vectors import unit_rows

FORMAT = "clapdex-projection"
FORMAT_VERSION = 1


@dataclass
class Projection:
    matrix: np.ndarray                 # (d, d) float32
    encoder_fingerprint: str
    classes: tuple[str, ...] = ()
    prompt: str = ""
    temperature: float = 0.0
    metrics: dict = field(default_factory=dict)

    @property
    def dimension(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def content_hash(self) -> str:
        """sha256 over the matrix and the encoder fingerprint (store it with an index's settings)."""
        digest = hashlib.sha256(self.encoder_fingerprint.encode())
        digest.update(np.ascontiguousarray(self.matrix, dtype="<f4").tobytes())
        return digest.hexdigest()

    def check_encoder(self, encoder_fingerprint: str) -> None:
        if encoder_fingerprint != self.encoder_fingerprint:
            raise ProjectionError(
                f"projection was trained for encoder {self.encoder_fingerprint!r}, not "
                f"{encoder_fingerprint!r}", remedy=Remedy("finetune"))


def apply_projection(embeddings: np.ndarray, projection: Projection) -> np.ndarray:
    """normalize(rows) · Pᵀ as float32 (n, d); a single vector (d,) gives (d,)."""
    embeddings = np.asarray(embeddings)
    if embeddings.shape[-1] != projection.dimension:
        raise ProjectionError(f"projection is {projection.dimension}-d but embeddings are "
                              f"{embeddings.shape[-1]}-d")
    return (unit_rows(embeddings) @ projection.matrix.T.astype(np.float64)).astype(np.float32)


def save_projection(projection: Projection, path: str | os.PathLike) -> Path:
    import torch

    path = Path(path)
    payload = {"format": FORMAT, "version": FORMAT_VERSION,
               "matrix": torch.from_numpy(np.ascontiguousarray(projection.matrix, dtype=np.float32)),
               "encoder_fingerprint": projection.encoder_fingerprint,
               "classes": list(projection.classes), "prompt": projection.prompt,
               "temperature": float(projection.temperature),
               "metrics": {k: float(v) for k, v in projection.metrics.items()}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as partial:
            torch.save(payload, partial)
    except OSError as error:
        raise ProjectionError(f"{path}: cannot write projection ({error.strerror or error})") from None
    return path


def load_projection(path: str | os.PathLike, encoder_fingerprint: str | None = None) -> Projection:
    """Read a projection file; with `encoder_fingerprint`, refuse one trained for another encoder."""
    import torch

    try:
        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ProjectionError(f"{path}: no such projection file") from None
    except Exception as error:  # torch.load raises many types on junk (struct.error, UnpicklingError, ...)
        raise ProjectionError(f"{path}: not a readable projection file ({type(error).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ProjectionError(f"{path}: not a clapdex projection file")
    if payload.get("version") != FORMAT_VERSION:
        raise ProjectionError(f"{path}: projection format version {payload.get('version')} is not supported")
    matrix = payload["matrix"].numpy().astype(np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
        raise ProjectionError(f"{path}: projection matrix must be square, got {matrix.shape}")
    projection = Projection(matrix, str(payload["encoder_fingerprint"]), tuple(payload.get("classes", ())),
                            str(payload.get("prompt", "")), float(payload.get("temperature", 0.0)),
                            dict(payload.get("metrics", {})))
    if encoder_fingerprint is not None:
        projection.check_encoder(encoder_fingerprint)
    return projection


class ProjectedEncoder:
    """An encoder whose audio embeddings are projected; text embeddings are unchanged."""

    def __init__(self, encoder, projection: Projection) -> None:
        projection.check_encoder(encoder.fingerprint)
        if projection.dimension != encoder.dimension:
            raise ProjectionError(f"projection is {projection.dimension}-d, encoder is {encoder.dimension}-d")
        self.base = encoder
        self.projection = projection
        self.dimension = encoder.dimension
        self.sample_rate = encoder.sample_rate
        self.window_seconds = encoder.window_seconds

    @property
    def fingerprint(self) -> str:
        return f"{self.base.fingerprint}+projection:{self.projection.content_hash[:16]}"

    @property
    def text_fingerprint(self) -> str:
        """Text embeddings are not projected: they are the base encoder's."""
        return getattr(self.base, "text_fingerprint", self.base.fingerprint)

    def __getattr__(self, name: str):
        # Anything else (batch_size, device, ...) is the model's: the indexer batches by it.
        if name == "base":
            raise AttributeError(name)
        return getattr(self.base, name)

    def embed_audio(self, windows: np.ndarray) -> np.ndarray:
        return apply_projection(self.base.embed_audio(windows), self.projection)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        return self.base.embed_text(texts)


def encoder_for_index(encoder, settings=None, projection: Projection | None = None,
                      index_path: str | os.PathLike = "the index"):
    """The encoder whose audio embeddings an index holds: `encoder` projected by `projection` (a
    file the user gave), else by the projection stored in `settings` (IndexSettings of an existing
    index, or None); unchanged when there is neither, or when it already is the index's encoder.

    A given projection must be the one the index was built with (with or without), else
    IndexMismatchError (remedy "projection"); another model is IndexSettings.require_model's.
    """
    stored = None if settings is None else settings.projection_hash
    if projection is not None:
        projected = ProjectedEncoder(encoder, projection)  # refuses another model's projection
        if settings is not None and stored != projection.content_hash:
            built = "without a projection" if stored is None else f"with projection {stored[:16]}"
            raise IndexMismatchError(
                f"index {index_path} was built {built}, not with projection "
                f"{projection.content_hash[:16]}", remedy=Remedy("projection", str(index_path)))
        return projected
    if stored is None or encoder.fingerprint == settings.encoder_fingerprint:
        return encoder
    recovered = Projection(settings.projection, encoder.fingerprint)
    if recovered.content_hash != stored:  # the hash covers the model: this is another model
        settings.require_model(encoder.fingerprint, index_path)
    return ProjectedEncoder(encoder, recovered)
