"""CLI verbs that build and look after an index: index, reindex, import-embeddings, status, doctor."""

from __future__ import annotations

import click

from clapdex.cli.common import (emit_json, encoder_options, encoder_settings, index_option,
                                json_option, progress, projection_option, resolve_index_path,
                                root_option)
from clapdex.cli.format import fit, format_bytes, output_width, plural, shown_path, wrap_parts
from clapdex.printable import one_line
from clapdex.cli.lambda_option import DefaultLambdaHelp
from clapdex.errors import ClapdexError
from clapdex.progress import duration_words


def _decomposition_options(reindex: bool = False):
    """--vocab, --lambda, --max-concepts. For `reindex` they are the new settings (default: the
    index's); for the other commands they are a new index's settings, and an existing index must
    match those given."""
    def decorate(func):
        func = click.option("--max-concepts", type=click.IntRange(min=1), default=None,
                            help="Target sparsity: at most N concepts per window "
                                 "(instead of --lambda).")(func)
        if reindex:
            func = click.option("--lambda", "lam", type=float, default=None,
                                help="New sparsity penalty λ of the decomposition "
                                     "(default: the index's).")(func)
            func = click.option("--vocab", "vocabulary", default=None, metavar="NAME|FILE",
                                help="New concept vocabulary: a built-in name or a text file "
                                     "(default: the index's).")(func)
        else:
            func = click.option("--lambda", "lam", type=float, default=None,
                                cls=DefaultLambdaHelp,
                                help="Sparsity penalty λ of the decomposition (default for a new "
                                     "index: {default_lambda}; an existing index keeps its own)."
                                )(func)
            func = click.option("--vocab", "vocabulary", default=None, metavar="NAME|FILE",
                                help="Concept vocabulary: a built-in name or a text file (default "
                                     "for a new index: the built-in 'default'; an existing index "
                                     "keeps its own).")(func)
        return func
    return decorate


def _print_failures(title: str, failures: list[dict]) -> None:
    """Each failed file on a line of its own (never cut), its reason indented below it."""
    if failures:
        width = output_width()
        click.echo(title)
        for item in failures:
            click.echo(f"  {shown_path(item['path'])}")
            click.echo(fit(f"    {one_line(item['error'])}", width))


def _print_truncated(title: str, files: list[dict]) -> None:
    _print_failures(title, [{"path": f["path"], "error": f["warning"]} for f in files])


def _print_warnings(summary) -> None:
    for warning in summary.warnings:
        click.echo(f"warning: {one_line(warning)}", err=True)


@click.command("index")
@click.argument("paths", nargs=-1, required=True, type=click.Path())
@index_option
@_decomposition_options()
@click.option("--hop", "hop_seconds", type=float, default=None,
              help="Seconds between window starts (default: the window length, no overlap).")
@click.option("--prune", is_flag=True, help="Remove indexed files under PATHS that no longer exist.")
@click.option("--strict", is_flag=True, help="Exit non-zero if any file was skipped.")
@click.option("--rebuild", is_flag=True, help="Delete the index's data and build it again.")
@click.option("--database-url", envvar="CLAPDEX_DATABASE_URL", default=None, metavar="URL",
              help="Keep a new index's data in this database (e.g. "
                   "postgresql+psycopg://user@host/db) instead of an SQLite file in the index "
                   "folder; env CLAPDEX_DATABASE_URL. See docs/indexing.md.")
@click.option("--faiss", "faiss_factory", default=None, metavar="FACTORY",
              help="FAISS index type: Flat (exact, default) or a factory string such as HNSW32 "
                   "or IVF4096,Flat (see docs/indexing.md).")
@click.option("--workers", type=click.IntRange(min=1), default=2, show_default=True,
              help="Decoding threads.")
@root_option
@projection_option
@encoder_options
@json_option
def index_command(paths, index_path, vocabulary, lam, max_concepts, hop_seconds, prune, strict,
                  rebuild, database_url, faiss_factory, workers, roots, projection_path, as_json,
                  **kwargs):
    """Index the audio files in PATHS (files or folders, recursive); only new or changed files
    are decoded and embedded."""
    from clapdex import Index

    # --rebuild starts from the options given (the stored projection is not kept).
    index = Index(resolve_index_path(index_path), **encoder_settings(kwargs))
    summary = index.add(paths, vocabulary=vocabulary, lam=lam, max_concepts=max_concepts,
                        hop_seconds=hop_seconds, projection=projection_path, prune=prune,
                        rebuild=rebuild, faiss_factory=faiss_factory, workers=workers,
                        database_url=database_url, roots=roots, progress=progress())
    if as_json:
        emit_json(summary)
    else:
        click.echo(f"index {shown_path(summary.index)}")
        counts = [(summary.added, "added"), (summary.updated, "updated"),
                  (summary.unchanged, "unchanged"), (summary.touched, "touched"),
                  (summary.moved, "moved"), (summary.copied, "copied"),
                  (summary.removed, "removed"), (len(summary.skipped), "skipped")]
        parts = [f"{n} {what}" for n, what in counts if n or what == "added"]
        audio = f" ({duration_words(summary.audio_seconds)} of audio)" if summary.audio_seconds else ""
        parts.append(f"{plural(summary.segments_added, 'segment')}{audio} added in "
                     f"{summary.seconds:.1f} s")
        for line in wrap_parts(f"  {plural(summary.files_seen, 'file')}: ", parts, output_width(),
                               indent="    "):
            click.echo(line)
        if summary.missing:
            them = "it" if summary.missing == 1 else "them"
            click.echo(fit(f"  {plural(summary.missing, 'indexed file')} no longer on disk; "
                           f"--prune removes {them} from the index", output_width()))
        _print_failures(f"skipped {plural(len(summary.skipped), 'file')}:", summary.skipped)
        _print_truncated(f"indexed truncated ({plural(len(summary.truncated), 'file')}, "
                         "what decoded):", summary.truncated)
    _print_warnings(summary)
    if strict and summary.skipped:
        raise ClapdexError(f"{plural(len(summary.skipped), 'file')} skipped (--strict)")


@click.command("reindex")
@index_option
@_decomposition_options(reindex=True)
@click.option("--recompute-mean", is_flag=True,
              help="Re-estimate the audio mean μ_A from every stored segment.")
@encoder_options
@json_option
def reindex_command(index_path, vocabulary, lam, max_concepts, recompute_mean, as_json, **kwargs):
    """Re-decompose the stored embeddings with a new λ, max-concepts or vocabulary (no audio is
    decoded or embedded; a new vocabulary loads the model's text side)."""
    from clapdex import Index

    index = Index(resolve_index_path(index_path), **encoder_settings(kwargs))
    summary = index.reindex(lam=lam, max_concepts=max_concepts, vocabulary=vocabulary,
                            recompute_mean=recompute_mean, progress=progress())
    if as_json:
        emit_json(summary)
    else:
        mode = (f"at most {summary.max_concepts} concepts" if summary.max_concepts is not None
                else f"lambda {summary.lam:g}")
        click.echo(f"index {shown_path(summary.index)}")
        for line in wrap_parts("  ", [f"re-decomposed {plural(summary.segments, 'segment')} with {mode}",
                                      f"vocabulary {one_line(summary.vocabulary)} "
                                      f"({plural(summary.concepts, 'concept')})",
                                      f"postings {summary.postings_before} -> {summary.postings_after}",
                                      f"in {summary.seconds:.1f} s"], output_width(), "    "):
            click.echo(line)


@click.command("import-embeddings")
@click.argument("embeddings_file", metavar="EMB.npy", type=click.Path(dir_okay=False))
@click.option("--manifest", "manifest_file", required=True, type=click.Path(dir_okay=False),
              metavar="FILES.csv",
              help="CSV with a header: path,start,end (one row per embedding row), optional "
                   "size,mtime_ns,content_hash,duration,sample_rate,channels.")
@click.option("--fingerprint", default=None,
              help="Fingerprint of the model that made the embeddings (`clapdex model check` "
                   "and `clapdex status` print it); default: the fingerprint of the model given "
                   "by the model options.")
@index_option
@_decomposition_options()
@click.option("--faiss", "faiss_factory", default=None, metavar="FACTORY",
              help="FAISS index type for a new index (see `clapdex index --help`).")
@root_option
@encoder_options
@json_option
def import_embeddings_command(embeddings_file, manifest_file, fingerprint, index_path, vocabulary,
                              lam, max_concepts, faiss_factory, roots, as_json, **kwargs):
    """Index precomputed window embeddings (e.g. made on a GPU cluster)."""
    from clapdex import Index

    index = Index(resolve_index_path(index_path), **encoder_settings(kwargs))
    summary = index.import_embeddings(embeddings_file, manifest_file, fingerprint=fingerprint,
                                      vocabulary=vocabulary, lam=lam, max_concepts=max_concepts,
                                      faiss_factory=faiss_factory, roots=roots,
                                      progress=progress())
    if as_json:
        emit_json(summary)
    else:
        click.echo(f"index {shown_path(summary.index)}")
        click.echo(fit(f"  imported {plural(summary.added + summary.updated, 'file')} "
                       f"({summary.updated} replaced), "
                       f"{plural(summary.segments_added, 'segment')} in {summary.seconds:.1f} s",
                       output_width()))
    _print_warnings(summary)


@click.command("status")
@index_option
@json_option
def status_command(index_path, as_json):
    """Show an index: settings, counts, files that could not be indexed, sizes on disk."""
    from clapdex import Index

    status = Index(resolve_index_path(index_path)).status()
    if as_json:
        emit_json(status)
        return
    settings, counts, disk = status.settings, status.counts, status.disk
    mode = (f"at most {settings['max_concepts']} concepts" if settings["max_concepts"] is not None
            else f"lambda {settings['lam']:g}")
    width = output_width()

    def field(label: str, *parts: str) -> None:  # "label:     part, part" wrapped to the width
        for line in wrap_parts(f"{label + ':':<12}", list(parts), width, indent=" " * 12):
            click.echo(line)

    click.echo(f"index:      {shown_path(status.index)}")
    field("model", one_line(settings["encoder_fingerprint"]))
    field("audio", f"d={settings['dimension']}", f"{settings['sample_rate']} Hz",
          f"window {settings['window_seconds']:g} s", f"hop {settings['hop_seconds']:g} s")
    field("concepts", f"{one_line(settings['vocabulary_name'])} ({counts['concepts']})", mode,
          f"audio mean {'set' if settings['audio_mean_set'] else 'not set yet'}")
    field("contents", plural(counts["files"], "file"), plural(counts["segments"], "segment"),
          plural(counts["postings"], "posting"), f"{plural(counts['errors'], 'file')} with errors")
    for root in status.roots or []:
        field(f"root {root.name}", shown_path(root.effective), plural(root.files, "file"),
              *([f"from ${root.env_var}"] if root.from_env else []),
              *([] if root.exists else ["MISSING here"]))
    flags = status.flags
    field("flags", f"{plural(flags['truncated'], 'file')} truncated",
          f"{plural(flags['silent'], 'segment')} silent",
          f"{plural(flags['clipped'], 'segment')} clipped",
          *([f"{plural(flags['unmeasured'], 'segment')} not measured (indexed before clapdex "
             "measured levels, or imported)"] if flags["unmeasured"] else []))
    field("database", one_line(status.database))
    field("disk", f"database {format_bytes(disk['database_bytes'])}",
          f"FAISS {settings['faiss_factory']} {format_bytes(disk['faiss_bytes'])}")
    ann = status.ann
    if ann:  # the type search built and its recall@10 against exact search
        recall = ann.get("recall_at_10")
        field("dense ANN", f"{ann.get('kind')} over {plural(ann.get('segments') or 0, 'segment')}",
              f"recall@10 {recall:.3f}" + ("" if ann.get("kind") == "Flat" else
                                            f" ({ann.get('recall_queries')} queries near stored "
                                            "segments)"))
    _print_failures("errors:", status.errors)
    _print_truncated("truncated (indexed with what decoded):", status.truncated)


@click.command("doctor")
@index_option
@click.option("--repair", is_flag=True,
              help="Rebuild the FAISS index from the database and delete orphan rows.")
@json_option
def doctor_command(index_path, repair, as_json):
    """Check an index: database and FAISS agree, indexed files still exist, no orphan rows.
    Exits 1 if a problem remains."""
    from clapdex import Index

    report = Index(resolve_index_path(index_path)).doctor(repair=repair)
    if as_json:
        emit_json(report)
    else:
        for line in report.lines:
            click.echo(one_line(line))  # each line quotes paths; none may forge another
    if not report.ok:
        raise click.exceptions.Exit(1)


COMMANDS = [index_command, reindex_command, import_embeddings_command, status_command,
            doctor_command]
