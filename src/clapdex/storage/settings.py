"""IndexSettings: how an index was built, the messages that name a mismatch, and the conversion
to and from the index_settings row. Two indexes with different settings must never be mixed."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clapdex.errors import IndexMismatchError, Remedy
from clapdex.sparsity import Sparsity
from clapdex.storage.roots import roots_from_column, roots_to_column
from clapdex.storage.schema import IndexSettingsRow, from_blob, to_blob


@dataclass
class IndexSettings:
    """How an index was built."""

    encoder_fingerprint: str
    dimension: int
    sample_rate: int
    window_seconds: float
    hop_seconds: float
    vocabulary_name: str
    vocabulary_hash: str
    lam: float | None = None
    max_concepts: int | None = None
    audio_mean: np.ndarray | None = None
    faiss_factory: str = "Flat"
    # Optional linear projection applied to the audio embeddings before storage (d x d matrix and
    # its Projection.content_hash); the encoder fingerprint then carries "+projection:<hash16>".
    projection: np.ndarray | None = None
    projection_hash: str | None = None
    # Search's default hybrid α (dense weight), when tuned (`clapdex tune --apply`); a preference,
    # not a rebuild-relevant setting.
    alpha: float | None = None
    # Not settings one chooses: which state of the index these are (see schema.IndexSettingsRow).
    settings_version: int = 0
    build_id: str | None = None
    # Named roots {name: stored location} (storage/roots.py): where the collection is, not how it
    # was indexed, so never a mismatch.
    roots: dict[str, str] = dataclasses.field(default_factory=dict)

    # Settings whose change makes the stored data meaningless (the index must be rebuilt) ...
    _REBUILD = ("encoder_fingerprint", "dimension", "sample_rate", "window_seconds",
                "hop_seconds", "vocabulary_hash", "lam", "max_concepts", "projection_hash")
    # ... unless only these differ: a reindex then re-decomposes the stored embeddings.
    _REINDEX = {"vocabulary_hash": "vocabulary", "lam": "lam", "max_concepts": "max_concepts"}

    # What a decomposition depends on: a change moves settings_version on.
    DECOMPOSITION = ("lam", "max_concepts", "audio_mean", "vocabulary_hash", "projection_hash")

    # How each setting is named in messages: the CLI option's words, not the attribute.
    _LABELS = {
        "dimension": "embedding dimension",
        "sample_rate": "sample rate",
        "window_seconds": "window (s)",
        "hop_seconds": "hop (s)",
        "lam": "lambda",
        "max_concepts": "max concepts",
        "projection_hash": "projection",
    }

    @property
    def sparsity(self) -> Sparsity:
        """The stored λ or max-concepts."""
        return Sparsity(self.lam, self.max_concepts)

    def changed(self, **changes) -> "IndexSettings":
        """These settings with `changes`; settings_version moves on if a decomposition input
        changes."""
        new = dataclasses.replace(self, **changes)
        if any(not _same(getattr(self, name), getattr(new, name)) for name in self.DECOMPOSITION):
            new.settings_version = self.settings_version + 1
        return new

    def differences(self, other: "IndexSettings") -> list[str]:
        """Names of the rebuild-relevant settings that differ between self and other."""
        return [name for name in self._REBUILD if getattr(self, name) != getattr(other, name)]

    def check_compatible(self, requested: "IndexSettings", index_path: str | Path, *,
                         concepts: int | None = None, requested_concepts: int | None = None) -> None:
        """Raise IndexMismatchError naming each difference, its remedy a reindex (with those
        settings) when that suffices, else a rebuild; another model is require_model's error.
        `concepts` / `requested_concepts` (the two vocabularies' sizes) make a vocabulary
        difference readable: names and sizes instead of content hashes."""
        self.require_model(requested.encoder_fingerprint, index_path)
        diffs = self.differences(requested)
        if not diffs:
            return
        parts = [self._vocabulary_difference(requested, concepts, requested_concepts)
                 if name == "vocabulary_hash" else
                 f"{self._LABELS[name]} is {getattr(self, name)!r}, "
                 f"requested {getattr(requested, name)!r}"
                 for name in diffs]
        if all(name in self._REINDEX for name in diffs):
            remedy = Remedy("reindex", str(index_path), tuple(self._REINDEX[name] for name in diffs))
        else:
            remedy = Remedy("rebuild", str(index_path))
        raise IndexMismatchError(
            f"index {index_path} was built with other settings ({'; '.join(parts)})", remedy=remedy)

    def require_model(self, fingerprint: str, index_path: str | Path) -> None:
        """The one check that embeddings come from the model the index was built with (the
        fingerprint includes a projection's): IndexMismatchError, remedy "model", if not."""
        if fingerprint != self.encoder_fingerprint:
            raise IndexMismatchError(
                f"index {index_path} was built with model {self.encoder_fingerprint!r}, "
                f"not {fingerprint!r}", remedy=Remedy("model", str(index_path)))

    def _vocabulary_difference(self, requested: "IndexSettings", concepts: int | None,
                               requested_concepts: int | None) -> str:
        def describe(name: str, count: int | None) -> str:
            return f"{name!r}" if count is None else f"{name!r} ({count} concepts)"

        text = (f"vocabulary is {describe(self.vocabulary_name, concepts)}, requested "
                f"{describe(requested.vocabulary_name, requested_concepts)}")
        if self.vocabulary_name == requested.vocabulary_name:
            text += " (same name, other concepts)"  # e.g. an edited vocabulary file
        return text


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray) or isinstance(b, np.ndarray):
        return a is not None and b is not None and np.array_equal(
            np.asarray(a, np.float32), np.asarray(b, np.float32))
    return a == b


def settings_to_columns(settings: IndexSettings) -> dict:
    """The index_settings columns that hold `settings` (vectors as float32 blobs)."""
    values = {field.name: getattr(settings, field.name) for field in dataclasses.fields(settings)}
    mean = values.pop("audio_mean")
    values["audio_mean"] = None if mean is None else to_blob(mean)
    projection = values.pop("projection")
    values["projection"] = None if projection is None else to_blob(projection)
    values["roots"] = roots_to_column(values.pop("roots"))
    return values


def settings_from_row(row: IndexSettingsRow) -> IndexSettings:
    mean = None if row.audio_mean is None else from_blob(row.audio_mean).astype(np.float64)
    projection = (None if row.projection is None else
                  from_blob(row.projection).reshape(row.dimension, row.dimension).copy())
    return IndexSettings(
        encoder_fingerprint=row.encoder_fingerprint, dimension=row.dimension,
        sample_rate=row.sample_rate, window_seconds=row.window_seconds,
        hop_seconds=row.hop_seconds, vocabulary_name=row.vocabulary_name,
        vocabulary_hash=row.vocabulary_hash, lam=row.lam, max_concepts=row.max_concepts,
        audio_mean=mean, faiss_factory=row.faiss_factory, projection=projection,
        projection_hash=row.projection_hash, alpha=row.alpha,
        settings_version=row.settings_version or 0, build_id=row.build_id,
        roots=roots_from_column(row.roots))
