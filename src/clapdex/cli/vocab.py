"""CLI verbs about concept vocabularies: `clapdex vocab list | show | build`."""

from __future__ import annotations

import click

from clapdex import (VOCAB_DEFAULT_CANDIDATES_PER_CONCEPT, VOCAB_DEFAULT_DUPLICATE_THRESHOLD,
                     VOCAB_DEFAULT_SIZE, VOCAB_METHODS)
from clapdex.cli.common import (emit_json, emit_ndjson, encoder_options, encoder_settings, json_option,
                                progress)


@click.group("vocab")
def vocab_group() -> None:
    """Concept vocabularies: the built-in lists, user files, and building new ones from tags."""


@vocab_group.command("list")
@json_option
def list_vocabularies(as_json: bool) -> None:
    """List the built-in vocabularies with their sizes."""
    from clapdex import builtin_vocabularies, load_vocabulary

    rows = []
    for name in builtin_vocabularies():
        vocabulary = load_vocabulary(name)
        rows.append({"name": name, "size": len(vocabulary), "content_hash": vocabulary.content_hash})
    if as_json:
        emit_ndjson(rows)
        return
    for row in rows:
        click.echo(f"{row['name']}\t{row['size']} concepts")


@vocab_group.command("show")
@click.argument("name")
@json_option
def show(name: str, as_json: bool) -> None:
    """Print the concepts of a vocabulary (a built-in NAME or a text file), one per line."""
    from clapdex import load_vocabulary

    vocabulary = load_vocabulary(name)
    if as_json:
        emit_json({"name": vocabulary.name, "size": len(vocabulary), "content_hash": vocabulary.content_hash,
                   "concepts": list(vocabulary.concepts)})
        return
    for concept in vocabulary.concepts:
        click.echo(concept)


@vocab_group.command("build")
@click.argument("tags_file", type=click.Path(dir_okay=False))
@click.option("--size", type=click.IntRange(min=1), default=VOCAB_DEFAULT_SIZE, show_default=True,
              help="Number of concepts to build (fewer if the tags run out).")
@click.option("--method", type=click.Choice(VOCAB_METHODS), default="baseline", show_default=True,
              help="baseline: most frequent tags; pruned: without junk tags and near-duplicates; "
                   "clustered: k-means of tag embeddings, each group named by its most frequent tag.")
@click.option("--threshold", type=click.FloatRange(0.0, 1.0, min_open=True),
              default=VOCAB_DEFAULT_DUPLICATE_THRESHOLD, show_default=True,
              help="pruned: cosine at or above which two tags count as near-duplicates.")
@click.option("--candidates", type=click.IntRange(min=1), default=None,
              help=f"clustered: how many of the most frequent tags to cluster "
                   f"(default {VOCAB_DEFAULT_CANDIDATES_PER_CONCEPT} x size).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="Write the vocabulary here (default: print the concepts on stdout).")
@encoder_options
@json_option
def build(tags_file: str, size: int, method: str, threshold: float, candidates: int | None,
          output: str | None, as_json: bool, **kwargs) -> None:
    """Build a vocabulary from a tag file (FSD50K clips_info JSON, other JSON, or CSV with a tags column).

    baseline needs no model; pruned and clustered embed the tags with the CLAP text encoder.
    """
    from clapdex import build_vocabulary, encoder_registry, read_tag_file, write_vocabulary
    from clapdex.progress import Progress

    tag_lists = read_tag_file(tags_file)
    encoder = None if method == "baseline" else encoder_registry.load(**encoder_settings(kwargs))
    with Progress(progress(), desc="embedding tags", unit="tag") as bar:
        result = build_vocabulary(tag_lists, size=size, method=method, encoder=encoder,
                                  threshold=threshold, candidates=candidates, progress=bar.update)
    if len(result.concepts) < size:
        click.echo(f"note: only {len(result.concepts)} concepts could be built (asked for {size})", err=True)

    summary = {"method": method, "size": len(result.concepts), "clips": len(tag_lists),
               "junk_tags_dropped": len(result.junk), "near_duplicates_dropped": len(result.duplicates),
               "output": output}
    if output is None:
        if as_json:
            emit_json({**summary, "concepts": result.concepts})
        else:
            for concept in result.concepts:
                click.echo(concept)
        return
    header = [f"clapdex vocabulary built from {click.format_filename(tags_file)} "
              f"({method}, {len(result.concepts)} concepts, {len(tag_lists)} clips)"]
    if method == "pruned":
        header.append(f"near-duplicate threshold {threshold}")
    write_vocabulary(result.concepts, output, header=header)
    if as_json:
        emit_json(summary)
    else:
        click.echo(f"wrote {len(result.concepts)} concepts to {output} ({method}; "
                   f"{len(result.junk)} junk tags and {len(result.duplicates)} near-duplicates dropped)")


COMMANDS = [vocab_group]
