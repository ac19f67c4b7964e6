"""Sparsity sweeps: which settings to run, and the metric-vs-active-concepts plot.

A sweep is just an evaluation with several concept settings (the embeddings are computed once);
this module parses the settings and draws the result with matplotlib (Agg backend, no display).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from clapdex.errors import SweepError
from clapdex.evaluation.representations import ConceptSetting, default_setting


PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def _numbers(text: str, kind, option: str) -> list:
    try:
        values = [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise SweepError(f"{option} takes comma-separated numbers, got {text!r}") from None
    if not values:
        raise SweepError(f"{option} needs at least one value")
    return values


def parse_settings(lam: float | None = None, sweep: str | None = None,
                   max_concepts: str | None = None) -> list[ConceptSetting]:
    """--lambda X | --sweep λ1,λ2,... | --max-concepts N1,N2,... -> settings (default: one, default λ)."""
    if sum(v is not None for v in (lam, sweep, max_concepts)) > 1:
        raise SweepError("use only one of --lambda, --sweep and --max-concepts")
    if sweep is not None:
        values = _numbers(sweep, float, "--sweep")
        if any(v <= 0 for v in values):
            raise SweepError("--sweep values (λ) must be positive")
        return [ConceptSetting(lam=v) for v in sorted(set(values))]
    if max_concepts is not None:
        values = _numbers(max_concepts, int, "--max-concepts")
        if any(v < 1 for v in values):
            raise SweepError("--max-concepts values must be at least 1")
        return [ConceptSetting(max_concepts=v) for v in sorted(set(values))]
    if lam is not None:
        if lam <= 0:
            raise SweepError("--lambda must be positive")
        return [ConceptSetting(lam=lam)]
    return [default_setting()]


ALPHA_SWEEP = tuple(round(0.1 * i, 1) for i in range(11))  # 0, 0.1, ..., 1


def parse_alphas(alpha: str | None = None, sweep: bool = False) -> list[float]:
    """--alpha a1,a2,... | --alpha-sweep -> hybrid dense weights α in [0, 1] (default: none)."""
    if alpha is not None and sweep:
        raise SweepError("use only one of --alpha and --alpha-sweep")
    if sweep:
        return list(ALPHA_SWEEP)
    if alpha is None:
        return []
    values = _numbers(alpha, float, "--alpha")
    if any(not 0 <= v <= 1 for v in values):
        raise SweepError("--alpha values must be between 0 and 1")
    return sorted(set(values))


def check_plot_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise SweepError(f"--plot must end in one of {', '.join(PLOT_SUFFIXES)}, got {path.name!r}")
    return path


def plot_sweep(rows: Sequence, metric: str, path: str | os.PathLike, title: str = "") -> Path:
    """Plot `metric` of the concept rows against their mean active concepts; dense as a line.

    `rows` are result rows (dataclasses with representation, setting, mean_active and the metric).
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    path = check_plot_path(path)
    concept_rows = sorted((r for r in rows if r.representation == "concepts"), key=lambda r: r.mean_active)
    dense = [r for r in rows if r.representation == "dense"]
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    xs = [r.mean_active for r in concept_rows]
    ys = [getattr(r, metric) for r in concept_rows]
    axes.plot(xs, ys, marker="o", label="concept reconstruction")
    for n, (r, x, y) in enumerate(zip(concept_rows, xs, ys)):
        # Alternate above/below so neighbouring labels do not overprint each other.
        axes.annotate(r.setting, (x, y), textcoords="offset points", xytext=(4, -12 if n % 2 else 6),
                      fontsize=8)
    if xs and min(xs) > 0 and max(xs) / min(xs) > 8:
        axes.set_xscale("log")  # sweeps span 1 to ~100 concepts; a log axis keeps the sparse end readable
        from matplotlib.ticker import NullFormatter

        ticks = [t for t in (1, 2, 3, 5, 10, 20, 30, 50, 100, 200, 500, 1000) if min(xs) / 1.2 <= t <= max(xs) * 1.2]
        axes.set_xticks(ticks, [str(t) for t in ticks])
        axes.xaxis.set_minor_formatter(NullFormatter())
    if dense:
        axes.axhline(getattr(dense[0], metric), color="grey", linestyle="--", label="dense embedding")
    axes.set_xlabel("mean number of active concepts")
    axes.set_ylabel(metric)
    axes.set_title(title or f"{metric} vs sparsity")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        figure.savefig(path)
    except OSError as error:
        raise SweepError(f"{path}: cannot write plot ({error.strerror or error})") from None
    finally:
        plt.close(figure)
    return path
