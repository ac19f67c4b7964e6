"""Small synthetic indexes for the search tests, built through IndexStore with the TEST DOUBLE
encoder (tests.doubles.SpectralTestEncoder — not CLAP) and the real decomposition.

The corpus is made of pure tones and tone mixtures, and the vocabulary names tone frequencies
("a 500 hz tone"), which the test encoder embeds like the tone itself; so which concepts a clip
holds is known in advance. Two concepts with no frequency ("speech", "dog barking") get
pseudo-random text embeddings.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile

from clapdex.audio import cut_windows, load_audio
from clapdex.storage.database import FileMeta, IndexSettings, IndexStore
from tests.doubles import SpectralTestEncoder, sine

TONES = (250, 500, 750, 1000, 1500, 2000, 2500, 3000)
CONCEPTS = tuple(f"a {f} hz tone" for f in TONES) + ("speech", "dog barking")
LAMBDA = 0.02

# name -> list of (frequencies, seconds) parts played one after the other
CORPUS = {
    "tone_500.wav": [((500,), 4.0)],
    "tone_500_1500.wav": [((500, 1500), 4.0)],
    "tone_500_2500.wav": [((500, 2500), 4.0)],
    "tone_1000.wav": [((1000,), 2.0)],
    "tone_2000_then_250.wav": [((2000,), 2.0), ((250,), 2.0)],
    "sub/tone_3000.wav": [((3000,), 3.0)],
    "noise.wav": [(("noise",), 2.0)],
}


@dataclass
class SearchFixture:
    root: Path              # index folder
    audio_dir: Path         # the indexed files
    encoder: SpectralTestEncoder
    paths: dict[str, str] = field(default_factory=dict)  # corpus name -> stored absolute path


def render(parts, sample_rate: int, seed: int = 0) -> np.ndarray:
    pieces = []
    for freqs, seconds in parts:
        if freqs == ("noise",):
            rng = np.random.default_rng(seed)
            pieces.append((0.2 * rng.standard_normal(int(seconds * sample_rate))).astype(np.float32))
        else:
            pieces.append(sum(sine(f, seconds, sample_rate, 0.3) for f in freqs))
    return np.concatenate(pieces).astype(np.float32)


def write_corpus(folder: Path, sample_rate: int, corpus: dict = CORPUS) -> dict[str, Path]:
    out = {}
    for name, parts in corpus.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(os.fsencode(path), render(parts, sample_rate), sample_rate,  # any name
                        subtype="FLOAT")
        out[name] = path
    return out


def build_index(tmp_path: Path, encoder: SpectralTestEncoder | None = None,
                corpus: dict = CORPUS, lam: float = LAMBDA) -> SearchFixture:
    """Write the corpus, embed its windows with the test double, decompose, store. ~0.1 s."""
    from clapdex.concepts.decompose import audio_mean, decompose
    from clapdex.concepts.dictionary import ConceptDictionary

    encoder = encoder or SpectralTestEncoder()
    audio_dir = tmp_path / "audio"
    files = write_corpus(audio_dir, encoder.sample_rate, corpus)
    windows = {}
    for name, path in files.items():
        samples, _info = load_audio(path, encoder.sample_rate)
        batch, times = cut_windows(samples, encoder.sample_rate, encoder.window_seconds)
        windows[name] = (encoder.embed_audio(batch), times)
    text = encoder.embed_text(list(CONCEPTS))
    dictionary = ConceptDictionary.from_text_embeddings(CONCEPTS, text)
    all_windows = [emb for emb, _ in windows.values()]
    mean = audio_mean(np.concatenate(all_windows)) if all_windows else np.zeros(encoder.dimension)
    settings = IndexSettings(encoder_fingerprint=encoder.fingerprint, dimension=encoder.dimension,
                             sample_rate=encoder.sample_rate, window_seconds=encoder.window_seconds,
                             hop_seconds=encoder.window_seconds, vocabulary_name="test-tones",
                             vocabulary_hash="test-tones-v1", lam=lam,
                             audio_mean=mean.astype(np.float32))
    root = tmp_path / "index"
    fixture = SearchFixture(root=root, audio_dir=audio_dir, encoder=encoder)
    # Decompose with the mean as stored (float32), as every later reader will see it.
    stored_mean = mean.astype(np.float32).astype(np.float64)
    with IndexStore.create(root, settings, CONCEPTS, text) as store:
        for name, path in files.items():
            emb, times = windows[name]
            stat = path.stat()
            store.add_file(FileMeta(path=str(path.resolve()), size=stat.st_size,
                                    mtime_ns=stat.st_mtime_ns, duration=times[-1].end,
                                    sample_rate=encoder.sample_rate, channels=1),
                           np.array([t.start for t in times]), np.array([t.end for t in times]),
                           emb, decompose(emb, dictionary, stored_mean, lam=lam))
            fixture.paths[name] = str(path.resolve())
    return fixture


class _Decomposition:
    """The fields IndexStore.add_files reads."""

    def __init__(self, weights, fidelity, recon_norm, shift_norm, concept_fidelity):
        self.weights, self.fidelity = weights, fidelity
        self.recon_norm, self.shift_norm = recon_norm, shift_norm
        self.concept_fidelity = concept_fidelity


def build_synthetic_index(root: Path, n_segments: int, n_concepts: int, dimension: int,
                          per_segment: int = 20, per_file: int = 100, seed: int = 0,
                          noise: float = 0.6, database_url: str | None = None) -> None:
    """A large random index written in bulk (benchmarks/bench_search.py and the pruning tests):
    random atoms, random sparse non-negative weights, and embeddings a = r + noise, so the stored
    fidelity, recon_norm and shift_norm are exactly those of the stored weights. No model or
    solver is involved; `noise` sets the fidelity (0.6 gives about 0.86 at d = 1024)."""
    import scipy.sparse as sp

    from clapdex.concepts.dictionary import ConceptDictionary
    from clapdex.storage.database import NewFile

    rng = np.random.default_rng(seed)
    text = rng.standard_normal((n_concepts, dimension)).astype(np.float32)
    names = [f"concept {i}" for i in range(n_concepts)]
    atoms = ConceptDictionary.from_text_embeddings(names, text).atoms
    mean = rng.standard_normal(dimension)
    mean = (0.5 * mean / np.linalg.norm(mean)).astype(np.float32)  # ‖μ_A‖ < 1, as for real means
    settings = IndexSettings(encoder_fingerprint="synthetic-benchmark", dimension=dimension,
                             sample_rate=16000, window_seconds=7.0, hop_seconds=7.0,
                             vocabulary_name="synthetic", vocabulary_hash="synthetic", lam=0.05,
                             audio_mean=mean)
    mean = mean.astype(np.float64)
    with IndexStore.create(root, settings, names, text, database_url=database_url) as store:
        batch = []
        for first in range(0, n_segments, per_file):
            n = min(per_file, n_segments - first)
            cols = np.argsort(rng.random((n, n_concepts)), axis=1)[:, :per_segment]
            cols.sort(axis=1)
            vals = rng.exponential(0.1, size=cols.shape) + 1e-3
            weights = sp.csr_matrix((vals.ravel(), cols.ravel(),
                                     np.arange(0, n * per_segment + 1, per_segment)),
                                    shape=(n, n_concepts))
            u = weights @ atoms
            recon = np.linalg.norm(u, axis=1)
            shifted = u / recon[:, None] + mean
            shift = np.linalg.norm(shifted, axis=1)
            r = shifted / shift[:, None]
            a = r + noise * rng.standard_normal(r.shape) / np.sqrt(dimension)
            fidelity = np.sum(r * a, axis=1) / np.linalg.norm(a, axis=1)
            x = a / np.linalg.norm(a, axis=1, keepdims=True)
            z = (x - mean) / np.linalg.norm(x - mean, axis=1, keepdims=True)
            concept_fidelity = np.sum(u * z, axis=1) / recon
            starts = np.arange(n) * 7.0
            meta = FileMeta(path=f"/synthetic/file_{first // per_file:06d}.wav", size=0, mtime_ns=0,
                            duration=n * 7.0, sample_rate=16000, channels=1)
            batch.append(NewFile(meta, starts, starts + 7.0, a.astype(np.float32),
                                 _Decomposition(weights, fidelity, recon, shift,
                                                concept_fidelity)))
            if len(batch) == 50:
                store.add_files(batch)
                batch = []
        if batch:
            store.add_files(batch)
