"""The two representations every evaluation compares: dense embeddings and concept reconstructions.

Concept reconstruction of an audio embedding a (design.md, concepts.decompose): decompose
z = normalize(normalize(a) − μ_A) over the centred concept atoms, then recompose
r = normalize(normalize(C w) + μ_A). A vector with no active concept recomposes to normalize(μ_A).

μ_A is the mean of the L2-normalised embeddings of the evaluated dataset itself (as SpLiCE does for
its benchmarks), so an evaluation needs no index. The sparsity is set either by λ (our convention,
½‖Cw − z‖² + λ‖w‖₁, i.e. half of SpLiCE's λ) or by a target number of concepts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np

from clapdex.sparsity import Sparsity


ConceptSetting = Sparsity  # one sparsity setting of a sweep (the name evaluation uses)


def default_setting() -> ConceptSetting:
    from clapdex.concepts import decompose as decomposition  # lazy: the solver loads numba

    return ConceptSetting(lam=decomposition.DEFAULT_LAMBDA)


@dataclass
class ConceptView:
    """Concept reconstructions of a batch of embeddings under one setting."""

    setting: ConceptSetting
    reconstructions: np.ndarray  # (n, d) unit rows r
    active: np.ndarray           # (n,) number of non-zero weights
    fidelity: np.ndarray         # (n,) reconstruction fidelity cos(r, normalize(a))
    concept_fidelity: np.ndarray  # (n,) cos(Cw, z) on the centred vector, 0 without concepts

    @property
    def mean_active(self) -> float:
        return float(self.active.mean()) if self.active.size else 0.0

    @property
    def median_active(self) -> float:
        return float(np.median(self.active)) if self.active.size else 0.0

    @property
    def mean_fidelity(self) -> float:
        return float(self.fidelity.mean()) if self.fidelity.size else 0.0

    @property
    def mean_concept_fidelity(self) -> float:
        return float(self.concept_fidelity.mean()) if self.concept_fidelity.size else 0.0


def concept_view(embeddings: np.ndarray, dictionary, audio_mean: np.ndarray,
                 setting: ConceptSetting) -> ConceptView:
    """Decompose raw embeddings under `setting` and recompose them (see module docstring)."""
    return next(concept_views(embeddings, dictionary, audio_mean, [setting]))


def concept_views(embeddings: np.ndarray, dictionary, audio_mean: np.ndarray,
                  settings: Sequence[ConceptSetting]) -> Iterator[ConceptView]:
    """One ConceptView per setting, in order. The λ settings of a sweep are solved together, from the
    largest λ down with warm starts (decompose_path): about the cost of the smallest λ alone; the
    max-concepts settings share one walk down the path (decompose_max_concepts_path)."""
    from clapdex.concepts import decompose as decomposition

    lams = sorted({s.lam for s in settings if s.max_concepts is None and s.lam is not None}, reverse=True)
    by_lam = {}
    if len(lams) > 1:
        by_lam = dict(zip(lams, decomposition.decompose_path(embeddings, dictionary, audio_mean, lams)))
    counts = sorted({s.max_concepts for s in settings if s.max_concepts is not None})
    by_count = {}
    if len(counts) > 1:  # one walk down the path serves every N
        by_count = dict(zip(counts, decomposition.decompose_max_concepts_path(embeddings, dictionary,
                                                                              audio_mean, counts)))
    for setting in settings:
        result = by_lam.get(setting.lam) if setting.max_concepts is None else by_count.get(setting.max_concepts)
        if result is None:
            result = decomposition.decompose(embeddings, dictionary, audio_mean, lam=setting.lam,
                                             max_concepts=setting.max_concepts)
        weights = result.weights.tocsr()
        reconstructions = decomposition.recompose(weights, dictionary, audio_mean)
        yield ConceptView(setting, reconstructions, np.diff(weights.indptr).astype(np.int64),
                          np.asarray(result.fidelity, dtype=np.float64),
                          np.asarray(result.concept_fidelity, dtype=np.float64))
