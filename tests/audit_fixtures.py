"""Synthetic indexes with KNOWN concept weights for the audit tests (no audio, no model).

`build_index` writes a real SQLite index through IndexStore.add_file. Each "decomposition" is a
SimpleNamespace with the attributes add_file reads (weights, fidelity, recon_norm, shift_norm): a
test stand-in, not the output of the real solver. The same numbers are returned as numpy arrays
(`Truth`) so tests can recompute every answer by brute force.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import scipy.sparse as sp

from clapdex.storage.database import FileMeta, IndexSettings, IndexStore

CONCEPTS = ("dog", "cat", "siren", "music", "speech", "rain on roof", "dog bark", "traffic",
            "wind", "birdsong", "engine", "applause")


@dataclass
class Truth:
    """Everything written to the index, one row per segment, in segment-id order."""

    paths: list[str]            # per file
    file_of: np.ndarray         # (n,) index into paths
    segment_ids: np.ndarray     # (n,) ids given by the database
    starts: np.ndarray          # (n,)
    ends: np.ndarray            # (n,)
    weights: np.ndarray         # (n, K) dense, 0 = no posting
    fidelity: np.ndarray        # (n,)
    names: tuple[str, ...]


def settings(dimension: int = 4) -> IndexSettings:
    return IndexSettings(encoder_fingerprint="audit-test", dimension=dimension, sample_rate=8000,
                         window_seconds=2.0, hop_seconds=1.0, vocabulary_name="audit-test",
                         vocabulary_hash="audit-test", lam=0.05)


def decomposition(weights: np.ndarray, fidelity: np.ndarray) -> SimpleNamespace:
    """`fidelity` is stored as the concept fidelity (what the audit lists by); the reconstruction
    fidelity gets other numbers (0.5 + f/2, as μ_A lifts it), so a test can tell them apart."""
    n = len(weights)
    return SimpleNamespace(weights=sp.csr_matrix(weights), fidelity=0.5 + fidelity / 2,
                           concept_fidelity=fidelity, recon_norm=np.ones(n), shift_norm=np.ones(n))


def file_segments(rng: np.random.Generator, n_windows: int) -> tuple[np.ndarray, np.ndarray]:
    """Windows of 2 s every 1 s (overlapping), plus sometimes a last window ending off the grid."""
    starts = np.arange(n_windows, dtype=np.float64)
    ends = starts + 2.0
    if rng.random() < 0.5:  # a final window that overlaps the previous one, like audio.py's
        tail = ends[-1] + rng.uniform(0.1, 1.5)
        starts, ends = np.append(starts, tail - 2.0), np.append(ends, tail)
    return starts, ends


def random_weights(rng: np.random.Generator, n: int, k: int) -> np.ndarray:
    """Sparse non-negative weights with correlated concepts (dog with dog bark, rain with wind)."""
    active = rng.random((n, k)) < 0.22
    active[:, 6] |= active[:, 0] & (rng.random(n) < 0.7)   # dog bark mostly with dog
    active[:, 8] |= active[:, 5] & (rng.random(n) < 0.8)   # wind mostly with rain on roof
    weights = np.where(active, np.round(rng.uniform(0.01, 0.6, (n, k)), 6), 0.0)
    return weights


def build_index(root: Path, n_files: int = 14, seed: int = 0, names: tuple[str, ...] = CONCEPTS,
                file_name: str = "clip_{:02d}.wav") -> tuple[IndexStore, Truth]:
    rng = np.random.default_rng(seed)
    store = IndexStore.create(root, settings(), names, rng.normal(size=(len(names), 4)).astype("f4"))
    paths, file_of, ids, all_starts, all_ends, all_weights, all_fid = [], [], [], [], [], [], []
    for f in range(n_files):
        starts, ends = file_segments(rng, int(rng.integers(1, 9)))
        n = len(starts)
        weights = random_weights(rng, n, len(names))
        fidelity = np.round(rng.uniform(0.2, 0.95, n), 6)
        path = str(root / "audio" / file_name.format(f))
        _, segment_ids = store.add_file(FileMeta(path, size=1000, mtime_ns=1, duration=float(ends.max())),
                                        starts, ends, rng.normal(size=(n, 4)).astype("f4"),
                                        decomposition(weights, fidelity))
        paths.append(path)
        file_of.append(np.full(n, f))
        ids.append(segment_ids)
        all_starts.append(starts)
        all_ends.append(ends)
        all_weights.append(weights)
        all_fid.append(fidelity)
    truth = Truth(paths, np.concatenate(file_of), np.concatenate(ids), np.concatenate(all_starts),
                  np.concatenate(all_ends), np.vstack(all_weights), np.concatenate(all_fid), names)
    return store, truth


def union_seconds(intervals) -> float:
    """Brute force: total length of a union of intervals (simple sort-and-merge)."""
    total, current_start, current_end = 0.0, None, None
    for start, end in sorted(intervals):
        if current_end is None or start > current_end:
            if current_end is not None:
                total += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        total += current_end - current_start
    return total
