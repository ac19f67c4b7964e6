"""The concept dictionary: concept text embeddings turned into centred unit atoms.

    t̂_k = normalize(text_emb(concept_k));  μ_C = mean_k t̂_k;  c_k = normalize(t̂_k − μ_C).

Centring removes what all concept texts share (the text side of CLAP's modality gap), so the
atoms describe what distinguishes one concept from another. Two edge cases:
  * K = 1: centring would leave nothing (t̂_1 − μ_C = 0), so a one-concept dictionary is not
    centred: c_1 = t̂_1.
  * a concept whose t̂_k equals μ_C (e.g. every concept is the same text) gets a zero atom; a zero
    atom never receives weight in the decomposition (its KKT gradient is lam >= 0).
A concept whose text embedding is exactly zero or not finite is refused (the encoder is broken).

Text embeddings are cached on disk, keyed by the encoder fingerprint and the vocabulary content
hash, so a vocabulary is embedded once per model. The cache folder is kept under
clapdex.cache.CONCEPT_CACHE_MAX_BYTES (least recently used files go first); `clapdex cache info`
shows it, `clapdex cache clear` empties it.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from clapdex.errors import DecompositionError
from clapdex.fileio import atomic_path, cache_dir
from clapdex.vectors import unit_rows as normalize_rows  # the name decompose.py uses

if TYPE_CHECKING:
    from clapdex.concepts.solver import Gram

CACHE_FORMAT = 1


@dataclass(eq=False)
class ConceptDictionary:
    """K named concepts: raw text embeddings (float32) and centred unit atoms c_k (float64 rows)."""

    names: tuple[str, ...]
    text_embeddings: np.ndarray  # (K, d) float32, raw as the encoder returned them
    atoms: np.ndarray            # (K, d) float64, rows c_k
    _gram: "Gram | None" = field(default=None, repr=False)

    @classmethod
    def from_text_embeddings(cls, names: Sequence[str], embeddings: np.ndarray) -> "ConceptDictionary":
        names = tuple(str(n) for n in names)
        emb = np.asarray(embeddings)
        if emb.ndim != 2 or emb.shape[0] != len(names):
            raise DecompositionError(
                f"expected one text embedding per concept ({len(names)}), got an array of shape {emb.shape}")
        if emb.shape[0] == 0:
            raise DecompositionError("a concept dictionary needs at least one concept")
        if not np.all(np.isfinite(emb)):
            raise DecompositionError("concept text embeddings contain NaN or infinite values")
        raw = emb.astype(np.float32)
        t = raw.astype(np.float64)
        norms = np.linalg.norm(t, axis=1)
        if np.any(norms == 0):
            bad = names[int(np.flatnonzero(norms == 0)[0])]
            raise DecompositionError(f"concept {bad!r} has an all-zero text embedding")
        t /= norms[:, None]
        if t.shape[0] > 1:
            t = t - t.mean(axis=0)
        atoms = normalize_rows(t)
        return cls(names=names, text_embeddings=raw, atoms=atoms)

    @property
    def size(self) -> int:
        return len(self.names)

    @property
    def dimension(self) -> int:
        return int(self.atoms.shape[1])

    def gram(self) -> np.ndarray:
        """G = C Cᵀ (K, K) float64, computed once."""
        return self.solver_gram().matrix

    def solver_gram(self) -> "Gram":
        """G checked and prepared for the solver (with its int16 screening copy), once per
        dictionary: what decompose passes to every solver call."""
        if self._gram is None:
            from clapdex.concepts.solver import Gram  # numba: imported when first needed

            self._gram = Gram(self.atoms @ self.atoms.T)
        return self._gram

    def correlations(self, z: np.ndarray) -> np.ndarray:
        """b = Z Cᵀ for rows z (n, d) -> (n, K)."""
        return np.asarray(z, dtype=np.float64) @ self.atoms.T


def default_cache_dir() -> Path:
    """$CLAPDEX_CACHE_DIR/concepts, else the user cache directory's clapdex/concepts."""
    return cache_dir("concepts")


def text_fingerprint(encoder) -> str:
    """What an encoder's text embeddings depend on. Usually its fingerprint; an encoder that only
    changes the audio side (a projection) says so with `text_fingerprint`, so the vocabulary is
    not embedded again for it."""
    return str(getattr(encoder, "text_fingerprint", encoder.fingerprint))


def build_dictionary(encoder, vocabulary, cache_dir: str | os.PathLike | None = None,
                     batch_size: int = 256) -> ConceptDictionary:
    """Embed the vocabulary's concepts with `encoder.embed_text` (cached) and build the dictionary.

    The cache file is keyed by the encoder's text fingerprint and the vocabulary content hash. A
    missing, unreadable or mismatching cache file is recomputed; writes are atomic (temp file +
    rename).
    """
    names = tuple(vocabulary.concepts)
    if not names:
        raise DecompositionError(f"vocabulary {getattr(vocabulary, 'name', '?')!r} has no concepts")
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    fingerprint = text_fingerprint(encoder)
    vocab_hash = str(vocabulary.content_hash)
    key = hashlib.sha256(f"{CACHE_FORMAT}\n{fingerprint}\n{vocab_hash}".encode()).hexdigest()[:32]
    path = folder / f"{key}.npz"

    embeddings = _read_cache(path, fingerprint, vocab_hash, len(names), int(encoder.dimension))
    if embeddings is None:
        parts = [np.asarray(encoder.embed_text(list(names[i:i + batch_size])), dtype=np.float32)
                 for i in range(0, len(names), batch_size)]
        embeddings = np.concatenate(parts, axis=0)
        _write_cache(path, embeddings, fingerprint, vocab_hash)
    return ConceptDictionary.from_text_embeddings(names, embeddings)


def _read_cache(path: Path, fingerprint: str, vocab_hash: str, k: int, d: int) -> np.ndarray | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            if str(data["fingerprint"]) != fingerprint or str(data["vocabulary_hash"]) != vocab_hash:
                return None
            emb = np.asarray(data["embeddings"], dtype=np.float32)
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # missing or corrupt: recompute
    if emb.shape != (k, d) or not np.all(np.isfinite(emb)):
        return None
    try:
        os.utime(path)  # recently used: the size bound evicts the oldest files first
    except OSError:
        pass
    return emb


def _write_cache(path: Path, embeddings: np.ndarray, fingerprint: str, vocab_hash: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, embeddings=embeddings, fingerprint=np.array(fingerprint),
                     vocabulary_hash=np.array(vocab_hash))
    except OSError:
        return  # a read-only cache location only costs re-embedding next time
    from clapdex.cache import CONCEPT_CACHE_MAX_BYTES, bound_folder

    bound_folder(path.parent, CONCEPT_CACHE_MAX_BYTES, keep=path)
