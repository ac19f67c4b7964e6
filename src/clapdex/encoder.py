"""Audio/text encoders: the Encoder protocol and ClapEncoder, which wraps msclap's CLAP model."""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np


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
