"""`clapdex explain FILE`: the concepts of each window of one audio file."""

from __future__ import annotations

import os
from pathlib import Path

import click

from clapdex.cli.common import emit_ndjson, encoder_options, index_encoder, json_option, projection_option
from clapdex.cli.format import display_path, format_time_range, plural
from clapdex.cli.lambda_option import DefaultLambdaHelp
from clapdex.errors import DecompositionError, IndexMismatchError


def _from_index(index_path, encoder):
    """Dictionary, μ_A, λ and max-concepts stored in an index (refusing another model's index;
    `encoder` already carries the index's projection, if it has one)."""
    from clapdex.storage.database import IndexStore

    with IndexStore.open(index_path) as store:
        settings = store.settings
        if settings.encoder_fingerprint != encoder.fingerprint:
            raise IndexMismatchError(
                f"index {index_path} was built with model {settings.encoder_fingerprint}, not "
                f"{encoder.fingerprint}; pass the same --weights/--model-version or drop --index")
        if settings.audio_mean is None:
            raise IndexMismatchError(f"index {index_path} has no audio mean yet; index some files first")
        return store.dictionary(), settings.audio_mean, settings.lam, settings.max_concepts


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
    concepts by weight. --json prints one object per window, "file" being FILE's absolute path.
    """
    from clapdex.concepts.dictionary import build_dictionary
    from clapdex.concepts.explain import explain_file
    from clapdex.concepts.reference import reference_audio_mean
    from clapdex.concepts.vocabulary import load_vocabulary

    if lam is not None and max_concepts is not None:
        raise DecompositionError("give --lambda or --max-concepts, not both")
    encoder = index_encoder(kwargs, projection_path, Path(index_path) if index_path is not None else None)
    if index_path is not None and vocabulary is None:
        dictionary, mean, index_lam, index_max = _from_index(index_path, encoder)
        if lam is None and max_concepts is None:
            lam, max_concepts = index_lam, index_max
    else:
        if index_path is not None:
            _, mean, _, _ = _from_index(index_path, encoder)
        else:
            mean = reference_audio_mean(encoder)
        dictionary = build_dictionary(encoder, load_vocabulary(vocabulary or "default"))
    windows = explain_file(file, encoder, dictionary, mean, lam=lam, max_concepts=max_concepts, top=top)
    path = os.path.abspath(file)
    if as_json:
        emit_ndjson({"file": path, **_row(w)} for w in windows)
        return
    click.echo(f"{display_path(path)}, {plural(len(windows), 'window')}")
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
