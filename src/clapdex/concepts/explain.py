"""Explain one audio file window by window: which concepts, with which weights, and how faithfully.

This is the Python API behind `clapdex explain`. The audio mean μ_A comes from an index when one is
given (its stored corpus mean, vocabulary and λ), otherwise from the reference signals of
concepts.reference (see docs/method.md for why not the file's own mean or zero).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from clapdex.audio import iter_windows
from clapdex.concepts.decompose import decompose
from clapdex.concepts.dictionary import ConceptDictionary
from clapdex.concepts.vocabulary import ConceptWeight
from clapdex.sparsity import Sparsity


@dataclass
class WindowExplanation:
    """One window of the file: its time range, fidelities, λ used and its strongest concepts."""

    window: int
    start: float
    end: float
    fidelity: float                     # reconstruction fidelity cos(r, â)
    lam: float
    n_concepts: int                     # non-zero weights in total (concepts lists the top ones)
    concepts: list[ConceptWeight] = field(default_factory=list)
    concept_fidelity: float = 0.0       # cos(Cw, z): how much of the window the concepts explain


def explain_file(path: str | os.PathLike, encoder, dictionary: ConceptDictionary, audio_mean: np.ndarray,
                 sparsity: Sparsity = Sparsity(), top: int = 5) -> list[WindowExplanation]:
    """Decode `path` into the encoder's windows, embed, decompose; the top concepts per window.

    Raises AudioError for unusable audio and DecompositionError for bad settings.
    """
    embeddings, windows = [], []
    for batch, times in iter_windows(path, encoder.sample_rate, encoder.window_seconds):
        embeddings.append(np.asarray(encoder.embed_audio(batch)))
        windows.extend(times)
    result = decompose(np.concatenate(embeddings), dictionary, audio_mean, sparsity=sparsity)
    explanations = []
    for i, window in enumerate(windows):
        row = result.weights.getrow(i)
        order = np.lexsort((row.indices, -row.data))[:max(top, 0)]  # by weight, ties by concept id
        concepts = [ConceptWeight(dictionary.names[row.indices[j]], float(row.data[j])) for j in order]
        explanations.append(WindowExplanation(window=i, start=window.start, end=window.end,
                                              fidelity=float(result.fidelity[i]), lam=float(result.lam[i]),
                                              n_concepts=int(row.nnz), concepts=concepts,
                                              concept_fidelity=float(result.concept_fidelity[i])))
    return explanations
