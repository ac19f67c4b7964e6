"""CLI verbs: `clapdex search` (text, audio, concepts) and `clapdex similar FILE`.

A thin layer over clapdex.api: parse options, call Index.search, print. The model is loaded
only when the query needs it (text, or audio that is not in the index).
"""

from __future__ import annotations

import os

import click

from clapdex import DEFAULT_ALPHA, MODES, to_jsonable
from clapdex.cli.common import (emit_ndjson, encoder_options, encoder_settings, index_option,
                                json_option, resolve_index_path)
from clapdex.cli.format import (MISSING, fit, fit_list, format_time_range, output_width,
                                shown_path)

INDENT = "    "


SEARCH_CONCEPT_HELP = ("Concept to search for or steer by; repeatable. '-NAME' pushes away, "
                       "NAME:2 weights it. Alone: pure concept search (no model needed).")
SIMILAR_CONCEPT_HELP = ("Concept to steer the results by; repeatable. '-NAME' pushes away from it, "
                        "NAME:2 weights it.")
SEARCH_MODE_HELP = ("Ranking: hybrid (default), dense (FAISS) or concept (exact sparse). "
                    "Concept-only queries use concept.")
SIMILAR_MODE_HELP = "Ranking: hybrid (default), dense (FAISS) or concept (exact sparse)."
PATH_HELP = ("Only files whose path matches GLOB (e.g. '*.flac', 'drums/*'; '*' also matches '/'; "
             "case is ignored); repeatable: files matching any. '[[]' matches a literal '['.")
INCLUDE_SELF_HELP = "Keep the query file's own segments (an indexed file is left out by default)."


def _search_options(concept_help: str, mode_help: str):
    """The options search and similar share, with -c's and --mode's help for that verb."""
    return lambda func: _add_search_options(func, concept_help, mode_help)


def _add_search_options(func, concept_help: str, mode_help: str):
    options = [
        click.option("--concept", "-c", "concepts", multiple=True, metavar="NAME[:W]",
                     help=concept_help),
        click.option("--mode", type=click.Choice(MODES), default=None, help=mode_help),
        click.option("-k", "--limit", "k", type=click.IntRange(min=1), default=10, show_default=True,
                     help="Number of results."),
        click.option("--offset", type=click.IntRange(min=0), default=0, help="Skip this many results."),
        click.option("--min-score", type=float, default=None, help="Drop results scoring below this."),
        click.option("--path", "path_glob", metavar="GLOB", multiple=True, help=PATH_HELP),
        click.option("--segments", is_flag=True, help="List segments instead of files."),
        click.option("--alpha", type=click.FloatRange(0.0, 1.0), default=None,
                     help="Hybrid: weight of the dense score (rest: concept); default: the "
                          f"index's tuned α (clapdex tune --apply), else {DEFAULT_ALPHA}."),
        json_option,
        index_option,
    ]
    for option in reversed(options):
        func = option(func)
    return encoder_options(func)


@click.command("search")
@click.argument("text", nargs=-1)
@click.option("--audio", metavar="FILE", default=None,
              help="Search by example: an audio file, or an indexed file named as for "
                   "`clapdex show` (its stored embeddings are used).")
@click.option("--include-self", is_flag=True, help=INCLUDE_SELF_HELP)
@_search_options(SEARCH_CONCEPT_HELP, SEARCH_MODE_HELP)
def search_command(text, audio, **kwargs) -> None:
    """Search the index by TEXT, by --audio FILE, and/or by --concept."""
    query_text = " ".join(text) if text else None
    _run(kwargs, text=query_text, audio=audio)


@click.command("similar")
@click.argument("file", metavar="FILE")
@click.option("--include-self", is_flag=True, help=INCLUDE_SELF_HELP)
@_search_options(SIMILAR_CONCEPT_HELP, SIMILAR_MODE_HELP)
def similar_command(file, **kwargs) -> None:
    """Files that sound like FILE: an audio file, or an indexed file named as for `clapdex show`
    (e.g. by the end of its path; its stored embeddings are used, no model needed)."""
    _run(kwargs, text=None, audio=file)


def _run(kwargs: dict, text: str | None, audio: str | None) -> None:
    from clapdex import open_index

    as_json = kwargs.pop("as_json")
    index_path = resolve_index_path(kwargs.pop("index_path"))
    search_options = {name: kwargs.pop(name) for name in
                      ("concepts", "mode", "k", "offset", "min_score", "segments", "alpha",
                       "include_self")}
    search_options["path"] = kwargs.pop("path_glob")

    with open_index(index_path, **encoder_settings(kwargs)) as index:  # loads the model if needed
        results = index.search(text=text, audio=audio, **search_options)
    if as_json:
        emit_ndjson(_json_rows(results))
    else:
        for line in format_results(results):
            click.echo(line)


def _json_rows(results):
    query = to_jsonable(results.query)
    for result in results:
        row = to_jsonable(result)
        row["mode"] = results.mode
        row["alpha"] = results.alpha
        row["query"] = query
        yield row


# ---- human output (the file on a line of its own, never cut; other lines fit the terminal) ----

def format_results(results, width: int | None = None) -> list[str]:
    if not results.results:
        return ["no results"]
    width = width or output_width()
    lines = []
    if results.query.query_concepts:
        lines.append(fit_list("query concepts: ", [f"{c.concept} {c.weight:.2f}"
                                                    for c in results.query.query_concepts], width))
    for result in results:
        lines += format_result(result, width)
    return lines


def format_result(result, width: int | None = None) -> list[str]:
    width = width or output_width()
    explanation = result.explanation
    span = format_time_range(result.start, result.end)
    lines = [f"{result.rank}. {shown_path(result.path)}" + (f"  {MISSING}" if result.missing else ""),
             fit(f"{INDENT}{span}  score {result.score:.2f} (dense {result.dense:.2f}, "
                 f"concept {result.concept:.2f})", width),
             _contribution_line(result, width)]
    own = [f"{c.concept} {c.weight:.2f}" for c in explanation.concepts]
    lines.append(fit_list(f"{INDENT}concept fidelity {explanation.concept_fidelity:.2f} · ", own,
                          width, "no concepts"))
    if explanation.shared is not None:
        shared = [c.concept for c in explanation.shared]
        lines.append(fit_list(f"{INDENT}shared with query: ", shared, width, "none"))
    for flag in result.flags:  # a silent segment has no concepts by design: not a poor fit
        lines.append(fit(f"{INDENT}! {flag}" + (" (no concepts)" if flag == "silent" else ""),
                         width))
    if explanation.low_fidelity and "silent" not in result.flags:
        from clapdex import LOW_FIDELITY_NOTE

        lines.append(fit(f"{INDENT}! {LOW_FIDELITY_NOTE} "
                         f"(concept fidelity {explanation.concept_fidelity:.2f})", width))
    return lines


def _contribution_line(result, width: int) -> str:
    """'= 0.42 dog + 0.31 bark + 0.02 (3 more) − 0.19 baseline': terms that add up to the concept
    score, as many as fit; the rest summed."""
    explanation = result.explanation
    terms = [(t.contribution, t.concept) for t in explanation.contributions]
    tail = "" if explanation.baseline == 0 else f" {_signed(explanation.baseline)} baseline"
    for shown in range(len(terms), -1, -1):
        parts = [f"{_leading(c)} {name}" if i == 0 else f"{_signed(c)} {name}"
                 for i, (c, name) in enumerate(terms[:shown])]
        rest = terms[shown:]
        if rest:
            total = sum(c for c, _ in rest)
            more = f"({len(rest)} more)" if shown else f"({len(rest)} concepts)"
            parts.append(f"{_signed(total)} {more}" if parts else f"{_leading(total)} {more}")
        line = f"{INDENT}= " + (" ".join(parts) or "0.00") + tail
        if len(line) <= width or shown == 0:
            return fit(line, width)
    return f"{INDENT}="  # unreachable


def _signed(value: float) -> str:
    return f"+ {value:.2f}" if value >= 0 else f"− {-value:.2f}"


def _leading(value: float) -> str:
    """The first term of a sum: '0.42' or '−0.42' (no operator to set apart from it)."""
    return f"{value:.2f}" if value >= 0 else f"−{-value:.2f}"


COMMANDS = [search_command, similar_command]
