"""Choosing the sparsity (λ or max-concepts) and the hybrid α on a labelled set (`clapdex tune`).

1. Sparsity: every setting of the sweep is evaluated (concept rows of `eval zeroshot` or `eval
   retrieval`); the choice is the **knee** of the metric-vs-mean-active-concepts curve: with both
   axes scaled to [0, 1] over the sweep (Kneedle, Satopää et al. 2011), the point furthest above
   the diagonal, i.e. where adding concepts stops paying for itself. A flat curve gives the
   sparsest setting.
2. α: at the chosen setting, the hybrid α·dense + (1 − α)·concept is evaluated over the α grid and
   the best metric wins (ties: the α nearest DEFAULT_ALPHA, then the smaller).

The metric is "higher is better" (accuracy, macro-F1, R@k, mAP@10).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from clapdex.evaluation.representations import ConceptSetting


def knee(active: Sequence[float], metric: Sequence[float]) -> int:
    """Index (into the given order) of the knee of metric vs active concepts (module docstring)."""
    x = np.asarray(active, dtype=np.float64)
    y = np.asarray(metric, dtype=np.float64)
    if len(x) == 0:
        raise ValueError("no points")
    order = np.argsort(x, kind="stable")
    xs, ys = x[order], y[order]
    span_x, span_y = np.ptp(xs), np.ptp(ys)
    if span_y == 0 or span_x == 0:
        return int(order[0])  # nothing to gain: the sparsest
    gain = (ys - ys.min()) / span_y - (xs - xs.min()) / span_x
    return int(order[int(np.argmax(gain))])  # argmax takes the first (sparsest) of equal gains


def best_alpha(alphas: Sequence[float], metric: Sequence[float], default: float) -> int:
    """Index of the best α (module docstring)."""
    values = np.asarray(metric, dtype=np.float64)
    best = values.max()
    candidates = [i for i, v in enumerate(values) if v == best]
    return min(candidates, key=lambda i: (abs(alphas[i] - default), alphas[i]))


@dataclass
class TuneResult:
    task: str                        # "zero-shot classification" | "text-audio retrieval"
    metric: str
    setting: ConceptSetting          # the chosen sparsity
    alpha: float                     # the chosen hybrid α
    dense: object                    # the dense row
    curve: list = field(default_factory=list)      # concept rows, by mean active concepts
    alphas: list = field(default_factory=list)     # hybrid rows at the chosen setting, by α

    @property
    def chosen_row(self):
        return next(r for r in self.curve if _setting(r) == self.setting)

    def summary(self) -> dict:
        return {"task": self.task, "metric": self.metric, "lambda": self.setting.lam,
                "max_concepts": self.setting.max_concepts, "setting": self.setting.label,
                "alpha": self.alpha, "dense": getattr(self.dense, self.metric),
                "concepts": getattr(self.chosen_row, self.metric),
                "hybrid": getattr(next(r for r in self.alphas if r.alpha == self.alpha), self.metric)}


def _setting(row) -> ConceptSetting:
    return ConceptSetting(lam=row.lam, max_concepts=row.max_concepts)


def choose(rows: Sequence, metric: str, evaluate_alphas, alphas: Sequence[float],
           default_alpha: float, task: str) -> TuneResult:
    """Pick the knee among the concept `rows`, then α: `evaluate_alphas(setting, alphas)` returns
    the hybrid rows of one setting."""
    dense = next(r for r in rows if r.representation == "dense")
    curve = sorted((r for r in rows if r.representation == "concepts"),
                   key=lambda r: r.mean_active)
    if not curve:
        raise ValueError("no concept rows to choose from")
    chosen = curve[knee([r.mean_active for r in curve], [getattr(r, metric) for r in curve])]
    setting = _setting(chosen)
    hybrid = [r for r in evaluate_alphas(setting, alphas) if r.representation == "hybrid"]
    hybrid.sort(key=lambda r: r.alpha)
    pick = best_alpha([r.alpha for r in hybrid], [getattr(r, metric) for r in hybrid], default_alpha)
    return TuneResult(task, metric, setting, float(hybrid[pick].alpha), dense, curve, hybrid)


def apply_to_index(index, result: TuneResult, progress=None):
    """Re-decompose `index` (a clapdex.Index) with the chosen sparsity (from the stored
    embeddings) and store the chosen α as its search default. Returns the ReindexSummary."""
    from clapdex.storage.database import IndexStore

    summary = index.reindex(lam=result.setting.lam, max_concepts=result.setting.max_concepts,
                            progress=progress)
    with IndexStore.open(index.path, write=True) as store:
        store.update_settings(alpha=result.alpha)
    index.refresh()
    return summary
