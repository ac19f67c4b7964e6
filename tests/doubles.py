"""TEST DOUBLES. Nothing here is CLAP or pretends to understand sound.

SpectralTestEncoder is a small, fast, deterministic stand-in used by behaviour tests of the indexer,
search and audit code. Its "audio embedding" is the square root of the window's energy share in
`dimension` frequency bands, rotated by a fixed random orthogonal matrix; so windows with the same
spectrum embed identically and a pure tone is closest to itself. Its "text embedding" of a phrase that
names a frequency ("a 440 hz tone") is the audio embedding of a sine at that frequency; any other
text gets a pseudo-random vector seeded by its hash. That gives tests a known ground truth.
"""

from __future__ import annotations

import hashlib
import re
from typing import Sequence

import numpy as np

_HZ = re.compile(r"(\d+(?:\.\d+)?)\s*hz", re.IGNORECASE)


class SpectralTestEncoder:
    """Test double implementing clapdex.encoder.Encoder. Not a model of anything."""

    def __init__(self, dimension: int = 64, sample_rate: int = 8000, window_seconds: float = 2.0,
                 seed: int = 0):
        self.dimension = dimension
        self.sample_rate = sample_rate
        self.window_seconds = window_seconds
        self._seed = seed
        rng = np.random.default_rng(seed)
        q, _ = np.linalg.qr(rng.standard_normal((dimension, dimension)))
        self._rotation = q.astype(np.float64)
        self.audio_calls = 0  # how many windows were embedded (tests check caching / no re-encoding)

    @property
    def fingerprint(self) -> str:
        return f"test-double-spectral:d{self.dimension}:sr{self.sample_rate}:w{self.window_seconds}:s{self._seed}"

    @property
    def window_samples(self) -> int:
        return int(round(self.window_seconds * self.sample_rate))

    def embed_audio(self, windows: np.ndarray) -> np.ndarray:
        windows = np.asarray(windows, dtype=np.float64)
        if windows.ndim != 2:
            raise ValueError("windows must be (n, samples)")
        self.audio_calls += windows.shape[0]
        spectrum = np.abs(np.fft.rfft(windows, axis=1)) ** 2
        edges = np.linspace(0, spectrum.shape[1], self.dimension + 1).astype(int)
        bands = np.add.reduceat(spectrum, edges[:-1], axis=1)
        eps = 1e-9 * windows.shape[1]
        share = (bands + eps) / (bands.sum(axis=1, keepdims=True) + eps * self.dimension)
        return (np.sqrt(share) @ self._rotation).astype(np.float32)

    def embed_text(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty((len(texts), self.dimension), dtype=np.float32)
        for i, text in enumerate(texts):
            match = _HZ.search(text)
            if match:
                out[i] = self.embed_audio(sine(float(match.group(1)), self.window_seconds,
                                               self.sample_rate)[None, :])[0]
                self.audio_calls -= 1  # text queries are not audio work
            else:
                seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
                out[i] = np.random.default_rng(seed).standard_normal(self.dimension)
        return out


def sine(freq: float, seconds: float, sample_rate: int, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def use_encoder(monkeypatch, factory, name: str = "test-double") -> None:
    """Make every model load in this test return `factory(**options)`, through the encoder seam
    (clapdex.encoder_registry): `name` is registered for the test and $CLAPDEX_ENCODER names it."""
    from clapdex import encoder_registry

    monkeypatch.setitem(encoder_registry.FACTORIES, name, factory)
    monkeypatch.setenv(encoder_registry.ENV, name)
