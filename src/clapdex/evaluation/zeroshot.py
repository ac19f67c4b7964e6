"""Zero-shot classification: dense embeddings vs concept reconstructions.

Each class c gets the text embedding of its prompt (e.g. "this is the sound of dog"), normalised
and *not* centred (design.md). A file is assigned the class whose text embedding has the highest
cosine with its dense embedding a, or with its concept reconstruction r, or (hybrid, as search
scores) the highest α·cos(a, t) + (1 − α)·cos(r, t).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from clapdex.errors import PromptError
from clapdex.evaluation.representations import ConceptSetting, concept_views
from clapdex.vectors import unit_rows

DEFAULT_PROMPT = "this is the sound of {}"


def class_prompts(classes: Sequence[str], template: str = DEFAULT_PROMPT) -> list[str]:
    """Fill the template's `{}` with each class name (underscores read as spaces)."""
    if template.count("{}") != 1:
        raise PromptError(f"prompt template must contain exactly one {{}}, got {template!r}")
    return [template.replace("{}", name.replace("_", " ")) for name in classes]


def class_text_embeddings(encoder, classes: Sequence[str], template: str = DEFAULT_PROMPT) -> np.ndarray:
    return np.asarray(encoder.embed_text(class_prompts(classes, template)), dtype=np.float32)


def classify(vectors: np.ndarray, class_embeddings: np.ndarray) -> np.ndarray:
    """Index of the class with the highest cosine for each row."""
    scores = unit_rows(vectors) @ unit_rows(class_embeddings).T
    return np.argmax(scores, axis=1)


def accuracy(targets: Sequence[int], predictions: Sequence[int]) -> float:
    targets, predictions = np.asarray(targets), np.asarray(predictions)
    return float(np.mean(targets == predictions)) if targets.size else 0.0


def macro_f1(targets: Sequence[int], predictions: Sequence[int], n_classes: int) -> float:
    """Unweighted mean over all n_classes of per-class F1 (0 for a class never hit nor predicted right)."""
    targets, predictions = np.asarray(targets), np.asarray(predictions)
    scores = []
    for c in range(n_classes):
        true_pos = np.sum((predictions == c) & (targets == c))
        predicted, actual = np.sum(predictions == c), np.sum(targets == c)
        scores.append(2 * true_pos / (predicted + actual) if predicted + actual else 0.0)
    return float(np.mean(scores)) if scores else 0.0


@dataclass
class ZeroShotRow:
    """One line of results: dense, or concepts under one sparsity setting."""

    representation: str               # "dense" | "concepts" | "hybrid"
    setting: str                      # "" for dense, "λ=0.25" / "N=20" for concepts and hybrid
    lam: float | None
    max_concepts: int | None
    accuracy: float
    macro_f1: float
    mean_active: float | None = None
    median_active: float | None = None
    mean_fidelity: float | None = None           # reconstruction fidelity cos(r, â)
    mean_concept_fidelity: float | None = None   # cos(Cw, z): how much the concepts explain
    alpha: float | None = None                   # hybrid rows: the dense weight


def evaluate_zeroshot(embeddings: np.ndarray, targets: Sequence[int], class_embeddings: np.ndarray,
                      dictionary=None, audio_mean: np.ndarray | None = None,
                      settings: Sequence[ConceptSetting] = (),
                      alphas: Sequence[float] = ()) -> list[ZeroShotRow]:
    """The dense row, then per setting one concept row and one hybrid row per α in `alphas`
    (needs dictionary and audio_mean)."""
    n_classes = len(class_embeddings)
    text = unit_rows(class_embeddings)
    dense = unit_rows(embeddings) @ text.T
    predictions = np.argmax(dense, axis=1)
    rows = [ZeroShotRow("dense", "", None, None, accuracy(targets, predictions),
                        macro_f1(targets, predictions, n_classes))]
    for setting, view in zip(settings, concept_views(embeddings, dictionary, audio_mean, settings)):
        concept = unit_rows(view.reconstructions) @ text.T
        stats = (view.mean_active, view.median_active, view.mean_fidelity,
                 view.mean_concept_fidelity)
        for alpha in [None, *alphas]:
            scores = concept if alpha is None else alpha * dense + (1 - alpha) * concept
            predictions = np.argmax(scores, axis=1)
            rows.append(ZeroShotRow(
                "concepts" if alpha is None else "hybrid",
                setting.label,
                setting.lam, setting.max_concepts, accuracy(targets, predictions),
                macro_f1(targets, predictions, n_classes), *stats,
                alpha=None if alpha is None else float(alpha)))
    return rows
