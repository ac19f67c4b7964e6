"""`clapdex explain FILE`: the concepts of each window of one audio file."""

from __future__ import annotations

import os

import click

from clapdex.cli.common import (emit_ndjson, encoder_options, encoder_settings, json_option,
                                projection_option)
from clapdex.cli.format import shown_path, format_time_range, plural
from clapdex.cli.lambda_option import DefaultLambdaHelp


@click.command("explain")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--lambda", "lam", type=float, default=None, cls=DefaultLambdaHelp,
              help="Sparsity penalty λ (½‖Cw−z‖² + λ‖w‖₁; default {default_lambda}, or the index's).")
@click.option("--max-concepts", type=click.IntRange(min=1), default=None,
              help="At most N concepts per window (instead of --lambda).")
@click.option("--vocab", "vocabulary", default=None, metavar="NAME|FILE",
              help="Concept vocabulary: a built-in name or a text file (default: default, or the index's).")
@click.option("--index", "index_path", metavar="PATH", default=None,
              help="Use this index's vocabulary, λ, audio mean and projection (default: no index; "
                   "the audio mean of clapdex's reference signals).")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True,
              help="Concepts listed per window.")
@projection_option
@encoder_options
@json_option
def explain(file, lam, max_concepts, vocabulary, index_path, top, projection_path, as_json, **kwargs):
    """Show the concepts of each window of FILE, their weights and how well they explain it.

    The first line names FILE (escaped to stay on one line) and its number of windows; each window
    then shows its time range (covering the window), its concept fidelity (cos(Cw, z): how much of
    the window the concepts explain) and number of concepts, and its top
    concepts by weight. --json prints one object per window, "path" being FILE's absolute path.
    """
    from clapdex import explain_file

    windows = explain_file(file, index=index_path, lam=lam, max_concepts=max_concepts,
                           vocabulary=vocabulary, top=top, projection=projection_path,
                           **encoder_settings(kwargs))
    path = os.path.abspath(file)
    if as_json:
        emit_ndjson({"path": path, **_row(w)} for w in windows)
        return
    click.echo(f"{shown_path(path)}, {plural(len(windows), 'window')}")
    ranges = [format_time_range(w.start, w.end) for w in windows]
    width = max(map(len, ranges), default=0)  # pad so the columns after the range line up
    for w, span in zip(windows, ranges):
        click.echo(f"{span.ljust(width)}  concept fidelity {w.concept_fidelity:.2f}  "
                   f"{plural(w.n_concepts, 'concept')}")
        for c in w.concepts:
            click.echo(f"    {c.weight:7.4f}  {c.concept}")


def _row(w) -> dict:
    return {"window": w.window, "start": w.start, "end": w.end, "fidelity": w.fidelity,
            "concept_fidelity": w.concept_fidelity, "lambda": w.lam,
            "n_concepts": w.n_concepts, "concepts": [{"concept": c.concept, "weight": c.weight} for c in w.concepts]}


COMMANDS = [explain]
