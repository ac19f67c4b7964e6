"""A reference audio mean μ_A for decomposing audio that belongs to no index.

An index stores the mean of its own windows' unit embeddings and every decomposition in it uses
that. A single file explained on its own (`clapdex explain FILE` without --index) has no corpus;
the mean of its own windows would be wrong (for a one-window file it equals the window itself, so
z = 0 and nothing is explained), and μ_A = 0 leaves the component that all audio embeddings share
in z, where the centred concept atoms cannot represent it.

So we use a fixed, documented set of generated signals, embedded once per model and cached by
encoder fingerprint. They are not a music or sound corpus; they only sample the directions that
audio embeddings have in common (the audio side of the modality gap). See docs/method.md.

The signals (all deterministic, peak 0.5, one window long at the encoder's rate):
  white, pink and brown noise; pure tones at 100, 250, 500, 1000, 2000, 4000 and 8000 Hz (those
  below 0.45·sample rate); a logarithmic sweep from 50 Hz to min(16 kHz, 0.45·sample rate); a
  harmonic tone (220 Hz, 10 harmonics, 1/h amplitudes); a 4 Hz click train; 4 Hz amplitude-
  modulated white noise; and noise bursts (100 ms on, 400 ms off).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from clapdex.concepts.decompose import audio_mean
from clapdex.fileio import atomic_path

REFERENCE_VERSION = 1  # bump when the signal set changes (it is part of the cache key)
_SEED = 20240601


def reference_signals(sample_rate: int, seconds: float) -> tuple[list[str], np.ndarray]:
    """The named reference signals, (n, round(seconds·sample_rate)) float32."""
    length = int(round(seconds * sample_rate))
    t = np.arange(length) / sample_rate
    rng = np.random.default_rng(_SEED)
    nyquist_cap = 0.45 * sample_rate
    names: list[str] = []
    signals: list[np.ndarray] = []

    def add(name: str, x: np.ndarray) -> None:
        peak = float(np.max(np.abs(x)))
        names.append(name)
        signals.append((0.5 * x / peak).astype(np.float32) if peak > 0 else x.astype(np.float32))

    white = rng.standard_normal(length)
    add("white noise", white)
    add("pink noise", _coloured(white, exponent=0.5))
    add("brown noise", _coloured(white, exponent=1.0))
    for freq in (100, 250, 500, 1000, 2000, 4000, 8000):
        if freq < nyquist_cap:
            add(f"{freq} Hz tone", np.sin(2 * np.pi * freq * t))
    f0, f1 = 50.0, min(16000.0, nyquist_cap)
    rate = np.log(f1 / f0) / max(seconds, 1e-9)
    add("log sweep", np.sin(2 * np.pi * f0 * (np.exp(rate * t) - 1) / rate))
    harmonic = sum(np.sin(2 * np.pi * 220 * h * t) / h for h in range(1, 11) if 220 * h < nyquist_cap)
    add("harmonic tone", harmonic)
    clicks = np.zeros(length)
    clicks[:: max(1, sample_rate // 4)] = 1.0
    add("click train", clicks)
    add("modulated noise", rng.standard_normal(length) * (0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)))
    add("noise bursts", rng.standard_normal(length) * ((t % 0.5) < 0.1))
    return names, np.stack(signals)


def _coloured(white: np.ndarray, exponent: float) -> np.ndarray:
    """White noise shaped to a 1/f^(2·exponent) power spectrum."""
    spectrum = np.fft.rfft(white)
    freqs = np.arange(spectrum.size, dtype=np.float64)
    freqs[0] = 1.0
    return np.fft.irfft(spectrum / freqs ** exponent, n=white.size)


def reference_audio_mean(encoder, cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """μ_A of the reference signals under `encoder`, (d,) float64; cached by encoder fingerprint."""
    from clapdex.concepts.dictionary import default_cache_dir

    folder = (Path(cache_dir) if cache_dir is not None else default_cache_dir().parent) / "audio_mean"
    key = hashlib.sha256(f"{REFERENCE_VERSION}\n{encoder.fingerprint}".encode()).hexdigest()[:32]
    path = folder / f"{key}.npy"
    try:
        cached = np.load(path, allow_pickle=False)
        if cached.shape == (int(encoder.dimension),) and np.all(np.isfinite(cached)):
            return cached.astype(np.float64)
    except (OSError, ValueError, EOFError):
        pass  # missing or corrupt: recompute
    _, signals = reference_signals(int(encoder.sample_rate), float(encoder.window_seconds))
    mean = audio_mean(np.asarray(encoder.embed_audio(signals)))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, mean)
    except OSError:
        pass  # an unwritable cache only costs recomputing next time
    return mean
