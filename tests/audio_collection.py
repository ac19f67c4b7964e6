"""Small generated audio collections for indexer tests (real files on disk, several formats)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from tests.doubles import sine

# Concepts the spectral TEST DOUBLE can "hear" (tones), plus a few it embeds at random.
TONE_CONCEPTS = ["a 200 hz tone", "a 400 hz tone", "a 700 hz tone", "a 1000 hz tone",
                 "a 1500 hz tone", "a 2500 hz tone", "dog", "rain", "siren", "speech"]


def write_vocabulary(folder: Path, concepts=TONE_CONCEPTS, name: str = "tones") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.txt"
    path.write_text("\n".join(concepts) + "\n")
    return path


def tone_mix(freqs, seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """A sum of sines plus a little noise (deterministic), float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    mix = sum(sine(f, seconds, sample_rate, amplitude=0.3) for f in freqs)
    noise = 0.01 * rng.standard_normal(len(mix)).astype(np.float32)
    return np.clip(mix + noise, -1, 1).astype(np.float32)


def write_audio(path: Path, samples: np.ndarray, sample_rate: int, channels: int = 1,
                subtype: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = samples if channels == 1 else np.stack([samples] * channels, axis=1)
    soundfile.write(path, data, sample_rate, subtype=subtype)
    return path


def make_collection(root: Path, sample_rate: int = 8000) -> dict[str, list[Path]]:
    """Good files in several formats/rates/channel counts, and bad files; returns both lists."""
    good = [
        write_audio(root / "tones" / "a200.wav", tone_mix([200], 5.0, sample_rate, 1), sample_rate),
        write_audio(root / "tones" / "b400.flac", tone_mix([400], 3.0, sample_rate, 2), sample_rate),
        write_audio(root / "tones" / "deep" / "c700.ogg", tone_mix([700], 2.5, sample_rate, 3),
                    sample_rate),
        write_audio(root / "mix_44k_stereo.wav", tone_mix([1000, 2500], 4.0, 44100, 4), 44100,
                    channels=2),
        write_audio(root / "short.aiff", tone_mix([1500], 0.7, 16000, 5), 16000),
    ]
    bad_dir = root / "bad"
    bad_dir.mkdir(parents=True, exist_ok=True)
    empty = bad_dir / "empty.wav"
    empty.write_bytes(b"")
    text = bad_dir / "notes.wav"
    text.write_text("this is a text file, not audio\n" * 20)
    truncated = bad_dir / "truncated.flac"
    write_audio(truncated, tone_mix([300], 3.0, sample_rate, 6), sample_rate)
    truncated.write_bytes(truncated.read_bytes()[:30])  # cut inside the header
    (root / "readme.txt").write_text("not audio, not an audio extension: ignored\n")
    return {"good": good, "bad": [empty, text, truncated]}
