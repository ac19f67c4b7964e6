"""CLI verbs for auditing a collection: concepts, audit, show, report (thin layer over clapdex.Index).

Human output shows times as mm:ss ranges, paths with non-printable characters escaped and numbers
with 2 decimals; --json and --csv keep the raw values (absolute paths, float seconds).
"""

from __future__ import annotations

import click

from clapdex.cli.common import emit_json, emit_ndjson, index_option, json_option, resolve_index_path
from clapdex.cli.format import (MISSING, fit, fit_list, flag_text, format_time, format_time_range,
                                output_width, plural, shown_path)
from clapdex.defaults import FLAGS
from clapdex.errors import QueryError
from clapdex.printable import one_line

csv_option = click.option("--csv", "csv_path", metavar="PATH", type=click.Path(dir_okay=False),
                          default=None, help="Write the rows to a CSV file instead of printing them.")


def _open(index_path: str | None):
    from clapdex import open_index

    return open_index(resolve_index_path(index_path))


_MAX_WIDTH = 40  # characters of a column that the rows are padded to


def _table(rows: list[dict], columns: list[tuple[str, str]]) -> None:
    """Print rows as aligned columns: columns = [(key, header)]; floats shown with 2 decimals."""
    def cell(value) -> str:
        return f"{value:.2f}" if isinstance(value, float) else one_line(str(value))

    cells = [[cell(row[key]) for key, _ in columns] for row in rows]
    # One very long name must not pad every other row to its length: it overflows its column.
    widths = [min(_MAX_WIDTH, max([len(header)] + [len(c[i]) for c in cells]))
              for i, (_, header) in enumerate(columns)]
    click.echo("  ".join(h.ljust(w) for (_, h), w in zip(columns, widths)).rstrip())
    for line in cells:
        click.echo("  ".join(c.ljust(w) if i == len(widths) - 1 or not _numeric(c) else c.rjust(w)
                             for i, (c, w) in enumerate(zip(line, widths))).rstrip())


def _numeric(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _output(rows: list[dict], as_json: bool, csv_path: str | None, columns) -> None:
    """Rows to a CSV file, as NDJSON, or as a table."""
    if csv_path:
        from clapdex import write_csv

        count = write_csv(rows, csv_path)
        click.echo(f"wrote {plural(count, 'row')} to {shown_path(csv_path)}", err=True)
    elif as_json:
        emit_ndjson(rows)
    elif rows:
        _table(rows, columns)


def _concept_items(pairs: list[tuple[str, float]]) -> list[str]:
    return [f"{one_line(name)} {weight:.2f}" for name, weight in pairs]


def _segments_in_files(n_segments: int, n_files: int) -> str:
    return f"{plural(n_segments, 'segment')} in {plural(n_files, 'file')}"


def _ranges(segments) -> list[str]:
    """Each segment's time range, padded to a common width so the columns after it line up."""
    ranges = [format_time_range(s.start, s.end) for s in segments]
    width = max(map(len, ranges), default=0)
    return [r.ljust(width) for r in ranges]


# ---- concepts ------------------------------------------------------------------------------------

@click.command("concepts")
@click.option("--top", type=click.IntRange(min=1), default=None, help="Only the N most prevalent.")
@click.option("--sort", type=click.Choice(["files", "segments", "time", "weight"]), default="files",
              show_default=True, help="Order by files, segments, share of time or mean weight.")
@index_option
@json_option
@csv_option
def concepts_command(top, sort, index_path, as_json, csv_path):
    """Prevalence of each concept: files, segments, share of audio time, mean and max weight."""
    with _open(index_path) as index:
        rows = [r.to_row() for r in index.concepts(top=top, sort=sort)]
    for row in rows:
        row["time_pct"] = 100.0 * row["time_share"]
    if not rows and not as_json:
        click.echo("no concept is active in this index (is it empty?)", err=True)
    if rows and not (as_json or csv_path):
        _table(rows, [("concept", "concept"), ("files", "files"), ("segments", "segments"),
                      ("time_pct", "time %"), ("mean_weight", "mean w"), ("max_weight", "max w")])
        return
    for row in rows:
        del row["time_pct"]
    _output(rows, as_json, csv_path, None)


# ---- audit ---------------------------------------------------------------------------------------

@click.command("audit", short_help="Files and segments that match a concept expression.")
@click.argument("expression", required=False)
@click.option("--count", "count_only", is_flag=True, help="Print only the number of matches.")
@click.option("--limit", type=click.IntRange(min=0), default=100, show_default=True,
              help="Rows to list (0: all).")
@click.option("--cooccur", is_flag=True,
              help="Concept pairs that occur together more than chance; EXPRESSION may name one concept.")
@click.option("--min-count", type=click.IntRange(min=1), default=3, show_default=True,
              help="With --cooccur: ignore pairs seen together in fewer segments.")
@click.option("--poorly-explained", is_flag=True,
              help="Segments whose concept fidelity (cos(Cw, z), how much of the window the "
                   "concepts explain) is below --below: sounds the vocabulary misses, silence.")
@click.option("--below", type=click.FloatRange(-1.0, 1.0), default=0.5, show_default=True,
              help="With --poorly-explained: the concept fidelity threshold.")
@click.option("--flag", type=click.Choice(FLAGS), default=None,
              help="Damaged and silent audio: files indexed truncated (with what their header "
                   "claimed), or segments flagged silent or clipped.")
@index_option
@json_option
@csv_option
def audit_command(expression, count_only, limit, cooccur, min_count, poorly_explained, below,
                  flag, index_path, as_json, csv_path):
    """Files and segments matching a concept EXPRESSION, e.g. "siren AND NOT music", "dog:0.2 OR cat:0.2".

    AND, OR, NOT (NOT binds tightest, then AND), parentheses, NAME:MIN_WEIGHT, quoted multi-word
    names ("rain on roof"). Matches are segments; rows are ordered by the summed weight of the
    expression's (non-negated) concepts.
    """
    if sum(map(bool, (cooccur, poorly_explained, flag))) > 1:
        raise QueryError("use one of --cooccur, --poorly-explained and --flag")
    if flag and expression:
        raise QueryError("--flag takes no expression")
    with _open(index_path) as index:
        if flag:
            _flagged(index, flag, count_only, limit, as_json, csv_path)
        elif cooccur:
            _cooccur(index, expression, min_count, limit, as_json, csv_path)
        elif poorly_explained:
            if expression:
                raise QueryError("--poorly-explained takes no expression")
            _poorly_explained(index, below, count_only, limit, as_json, csv_path)
        else:
            if not expression:
                raise QueryError('give a concept expression, e.g. clapdex audit "siren AND NOT music"')
            _matches(index, expression, count_only, limit, as_json, csv_path)


def _matches(index, expression, count_only, limit, as_json, csv_path):
    if count_only:
        count = index.count(expression)
        if as_json:
            emit_json(count)
        else:
            click.echo(_segments_in_files(count.segments, count.files))
        return
    result = index.audit(expression, limit=limit or None)
    if as_json or csv_path:
        _output([m.to_row() for m in result.matches], as_json, csv_path, None)
        return
    shown = "" if len(result.matches) == result.n_segments else f" (showing the best {len(result.matches)})"
    verb = "matches" if result.n_segments == 1 else "match"
    width = output_width()
    click.echo(fit(f"{_segments_in_files(result.n_segments, result.n_files)} {verb} "
                   f"{one_line(expression)}{shown}", width))
    for path, segments in result.by_file():
        click.echo(shown_path(path))
        for m, span in zip(segments, _ranges(segments)):
            click.echo(fit_list(f"  {span}  score {m.score:.2f}  ",
                                _concept_items(list(m.weights.items())), width).rstrip())


def _cooccur(index, concept, min_count, limit, as_json, csv_path):
    pairs = index.cooccurrence(concept or None, min_count=min_count, limit=limit or None)
    _output([p.to_row() for p in pairs], as_json, csv_path,
            [("concept_a", "concept"), ("concept_b", "with"), ("count", "together"),
             ("count_a", "n a"), ("count_b", "n b"), ("lift", "lift")])
    if not pairs and not as_json:
        click.echo(f"no pair occurs together more than chance in at least "
                   f"{plural(min_count, 'segment')}",
                   err=True)


def _poorly_explained(index, below, count_only, limit, as_json, csv_path):
    result = index.poorly_explained(below=below, limit=1 if count_only else (limit or None))
    total, rows = result.total, result.segments
    if count_only:
        if as_json:
            emit_json({"segments": total})
        else:
            click.echo(f"{plural(total, 'segment')} with concept fidelity below {below:g}")
        return
    if not (as_json or csv_path):
        shown = "" if len(rows) == total else f" (showing the lowest {len(rows)})"
        width = output_width()
        click.echo(fit(f"{plural(total, 'segment')} with concept fidelity below {below:g}{shown}",
                       width))
        previous = None
        for r, span in zip(rows, _ranges(rows)):
            if r.path != previous:  # the file on its own line; consecutive rows share it
                click.echo(f"  {shown_path(r.path)}")
                previous = r.path
            click.echo(fit_list(f"    {span}  concept fidelity {r.concept_fidelity:.2f}  closest: ",
                                _concept_items(r.concepts), width, "(none)"))
        return
    _output([r.to_row() for r in rows], as_json, csv_path, None)


def _flagged(index, flag, count_only, limit, as_json, csv_path):
    result = index.flagged(flag, limit=1 if count_only else (limit or None))
    what = (plural(result.total, "file") if flag == "truncated" else
            _segments_in_files(result.total, result.files))
    if count_only:
        if as_json:
            emit_json({"files": result.files} if flag == "truncated" else
                      {"segments": result.total, "files": result.files})
        else:
            click.echo(f"{what} {flag}")
        return
    if as_json or csv_path:
        _output([r.to_row() for r in result.rows], as_json, csv_path, None)
        return
    width = output_width()
    shown = "" if len(result.rows) == result.total else f" (showing the first {len(result.rows)})"
    click.echo(fit(f"{what} {flag}{shown}", width))
    previous = None
    for r in result.rows:
        if r.path != previous:
            click.echo(f"  {shown_path(r.path)}")
            previous = r.path
        if flag == "truncated":
            click.echo(fit(f"    {one_line(r.warning)}", width))
            continue
        span = format_time_range(r.start, r.end)
        click.echo(fit_list(f"    {span}  {flag_text(r.flags, r.level_db, r.clipped_fraction)}  ",
                            _concept_items(r.concepts), width, "(no concept)"))


# ---- show ----------------------------------------------------------------------------------------

@click.command("show")
@click.argument("file")
@click.option("--top", type=click.IntRange(min=1), default=5, show_default=True,
              help="Concepts listed per segment.")
@index_option
@json_option
@csv_option
def show_command(file, top, index_path, as_json, csv_path):
    """One file's concept profile: the top concepts of each segment, in time order."""
    with _open(index_path) as index:
        profile = index.file(file, top=top)
    rows = profile.rows()
    if as_json or csv_path:
        _output(rows, as_json, csv_path, None)
        return
    about = [plural(len(profile.segments), "segment")]
    if profile.duration is not None:
        about.insert(0, format_time(profile.duration, tenths=None, nearest=True))
    width = output_width()
    click.echo(shown_path(profile.path) + (f"  {MISSING}" if profile.missing else ""))
    click.echo(fit(f"  {', '.join(about)}", width))
    if profile.warning:
        click.echo(fit(f"  truncated: {one_line(profile.warning)}", width))
    for s, span in zip(profile.segments, _ranges(profile.segments)):
        flags = flag_text(s.flags, s.level_db, s.clipped_fraction)
        if s.flags and "silent" in s.flags:  # no concepts by design: say why instead
            click.echo(fit(f"  {span}  {flags}", width))
            continue
        click.echo(fit_list(f"  {span}  concept fidelity {s.concept_fidelity:.2f}  "
                            + (f"{flags}  " if flags else ""),
                            _concept_items(s.concepts), width, "(no concept)"))


# ---- duplicates ----------------------------------------------------------------------------------

@click.command("duplicates")
@click.option("--threshold", type=click.FloatRange(-1.0, 1.0), default=None,
              help="Near-duplicates: least cosine of two files' mean embeddings (default 0.98).")
@click.option("--exact", "exact_only", is_flag=True, help="Only exact copies (same content).")
@index_option
@json_option
@csv_option
def duplicates_command(threshold, exact_only, index_path, as_json, csv_path):
    """Exact copies and near-duplicates (the same audio in another format, level or trim)."""
    with _open(index_path) as index:
        pairs = index.duplicates(threshold=threshold, near=not exact_only)
    if as_json or csv_path:
        from clapdex import to_jsonable

        _output([to_jsonable(p) for p in pairs], as_json, csv_path, None)
        return
    if not pairs:
        click.echo("no duplicates" + (" (exact copies only)" if exact_only else ""))
        return
    for kind, title in (("exact", "exact copies"), ("near", "near-duplicates")):
        rows = [p for p in pairs if p.kind == kind]
        if rows:
            click.echo(f"{title}: {plural(len(rows), 'file')}")
        for p in rows:
            how = "same content as" if kind == "exact" else f"{p.similarity:.3f} similar to"
            click.echo(f"  {shown_path(p.path)}")
            click.echo(f"    {how} {shown_path(p.duplicate_of)}")


# ---- report --------------------------------------------------------------------------------------

@click.command("report")
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the HTML report.")
@click.option("--top", type=click.IntRange(min=2), default=20, show_default=True,
              help="Concepts in the bar chart and the co-occurrence heatmap.")
@click.option("--files", "n_files", type=click.IntRange(min=0), default=3, show_default=True,
              help="Longest files drawn as concepts over time.")
@index_option
@json_option
def report_command(output, top, n_files, index_path, as_json):
    """A self-contained HTML report (charts and tables; opens offline)."""
    with _open(index_path) as index:
        summary = index.report(output, top=top, n_files=n_files)
    if as_json:
        emit_json(summary)
    else:
        click.echo(f"wrote {shown_path(output)} "
                   f"({plural(summary['files'], 'file')}, {plural(summary['segments'], 'segment')})")


COMMANDS = [concepts_command, audit_command, show_command, duplicates_command, report_command]
