"""Text-audio retrieval: dense embeddings vs concept reconstructions of the audio.

Only the audio side is decomposed; captions stay dense text embeddings (normalised, not centred),
as in SpLiCE's retrieval experiments. Scores are cosines. A hybrid row scores like `clapdex search`
does: α·cos(a, t) + (1 − α)·cos(r, t) (α the dense weight, r the concept reconstruction).

Metrics (each caption belongs to exactly one file; a file may have several captions):
- text→audio, per caption: R@k = 1 if its file ranks in the top k; AP@10 = 1/rank if rank ≤ 10
  else 0 (one relevant item, so mAP@10 is the truncated mean reciprocal rank, as in DCASE task 6b).
- audio→text, per file: R@k = 1 if any of its captions ranks in the top k;
  AP@10 = Σ_{i≤10} P@i·rel_i / min(#relevant, 10).
All are averaged over queries (for audio→text, over the files that have at least one caption).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from clapdex.evaluation.representations import ConceptSetting, concept_views
from clapdex.vectors import unit_rows


def _ranked_relevance(scores: np.ndarray, relevant: np.ndarray, depth: int) -> np.ndarray:
    """(queries, depth) booleans: is the item at each of the top `depth` ranks relevant?"""
    depth = min(depth, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :depth]
    return np.take_along_axis(relevant, top, axis=1)


def _metrics(scores: np.ndarray, relevant: np.ndarray, prefix: str) -> dict[str, float]:
    hits = _ranked_relevance(scores, relevant, 10)
    precision = np.cumsum(hits, axis=1) / np.arange(1, hits.shape[1] + 1)
    n_relevant = np.minimum(relevant.sum(axis=1), 10)
    ap = (precision * hits).sum(axis=1) / np.maximum(n_relevant, 1)
    return {f"{prefix}_r1": float(hits[:, :1].any(axis=1).mean()),
            f"{prefix}_r10": float(hits.any(axis=1).mean()),
            f"{prefix}_map10": float(ap.mean())}


def retrieval_metrics(audio: np.ndarray, text: np.ndarray, caption_file: Sequence[int]) -> dict[str, float]:
    """All six metrics for audio vectors (files) and caption embeddings (see module docstring)."""
    return score_metrics(unit_rows(text) @ unit_rows(audio).T, caption_file)


def score_metrics(scores: np.ndarray, caption_file: Sequence[int]) -> dict[str, float]:
    """All six metrics for a (captions, files) score matrix."""
    caption_file = np.asarray(caption_file)
    relevant = caption_file[:, None] == np.arange(scores.shape[1])[None, :]  # (captions, files)
    captioned = relevant.any(axis=0)  # audio→text averages over files that have a caption
    return {**_metrics(scores, relevant, "t2a"),
            **_metrics(scores.T[captioned], relevant.T[captioned], "a2t")}


@dataclass
class RetrievalRow:
    representation: str          # "dense" | "concepts" | "hybrid"
    setting: str
    lam: float | None
    max_concepts: int | None
    t2a_r1: float
    t2a_r10: float
    t2a_map10: float
    a2t_r1: float
    a2t_r10: float
    a2t_map10: float
    mean_active: float | None = None
    median_active: float | None = None
    mean_fidelity: float | None = None           # reconstruction fidelity cos(r, â)
    mean_concept_fidelity: float | None = None   # cos(Cw, z): how much the concepts explain
    alpha: float | None = None                   # hybrid rows: the dense weight


def evaluate_retrieval(audio_embeddings: np.ndarray, text_embeddings: np.ndarray,
                       caption_file: Sequence[int], dictionary=None, audio_mean: np.ndarray | None = None,
                       settings: Sequence[ConceptSetting] = (),
                       alphas: Sequence[float] = ()) -> list[RetrievalRow]:
    """The dense row, then per setting one concept row and one hybrid row per α in `alphas`."""
    text = unit_rows(text_embeddings)
    dense = text @ unit_rows(audio_embeddings).T
    rows = [RetrievalRow("dense", "", None, None, **score_metrics(dense, caption_file))]
    for setting, view in zip(settings, concept_views(audio_embeddings, dictionary, audio_mean, settings)):
        concept = text @ view.reconstructions.T
        stats = dict(mean_active=view.mean_active, median_active=view.median_active,
                     mean_fidelity=view.mean_fidelity,
                     mean_concept_fidelity=view.mean_concept_fidelity)
        rows.append(RetrievalRow("concepts", setting.label, setting.lam, setting.max_concepts,
                                 **score_metrics(concept, caption_file), **stats))
        for alpha in alphas:
            rows.append(RetrievalRow("hybrid", setting.label, setting.lam,
                                     setting.max_concepts,
                                     **score_metrics(alpha * dense + (1 - alpha) * concept,
                                                     caption_file), **stats, alpha=float(alpha)))
    return rows
