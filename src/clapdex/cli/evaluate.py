"""CLI verbs: `clapdex eval zeroshot|retrieval DATA` and `clapdex finetune DATA -o projection.pt`."""

from __future__ import annotations

import click

from clapdex.cli.common import (emit_json, encoder_from_kwargs, encoder_options, json_option, progress,
                                SafeGroup)
from clapdex.cli.format import display_path, plural
from clapdex.cli.lambda_option import DefaultLambdaHelp
from clapdex.printable import one_line


def _concept_options(func):
    """Vocabulary, sparsity (one setting or a sweep), plot, projection, cache and output options."""
    options = [
        click.option("--vocab", "vocab_spec", default="default", show_default=True, metavar="NAME|FILE",
                     help="Concept vocabulary: a built-in name or a text file (one concept a line)."),
        click.option("--lambda", "lam", type=float, default=None, cls=DefaultLambdaHelp,
                     help="Sparsity λ for the concept reconstruction (½‖Cw−z‖² + λ‖w‖₁; "
                          "default {default_lambda})."),
        click.option("--sweep", default=None, metavar="L1,L2,...",
                     help="Sparsity sweep over these λ values."),
        click.option("--max-concepts", default=None, metavar="N1,N2,...",
                     help="At most N concepts per file instead of λ; several values make a sweep."),
        click.option("--plot", type=click.Path(dir_okay=False), default=None,
                     help="Write the metric vs mean active concepts plot here (.png/.svg/.pdf)."),
        click.option("--projection", "projection_path", type=click.Path(dir_okay=False), default=None,
                     help="Apply a projection trained by `clapdex finetune` to the audio embeddings."),
        click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                     help="Embedding cache folder (default: the user cache dir, clapdex/embeddings)."),
        click.option("--no-cache", is_flag=True, help="Neither read nor write the embedding cache."),
        click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None,
                     help="Also write the result rows to this CSV file."),
        json_option,
    ]
    func = encoder_options(func)
    for option in reversed(options):
        func = option(func)
    return func


def _embed(encoder, paths, cache_dir, no_cache):
    from clapdex.evaluation.embeddings import embed_files
    from clapdex.evaluation.datasets import DatasetError

    embedded = embed_files(encoder, paths, cache_dir=cache_dir, use_cache=not no_cache,
                           wrap=lambda it: progress(it, total=len(paths), desc="embedding", unit="file"))
    for path, reason in embedded.skipped[:5]:
        click.echo(f"skipped {display_path(path)}: {one_line(str(reason))}", err=True)
    if len(embedded.skipped) > 5:
        click.echo(f"... and {plural(len(embedded.skipped) - 5, 'more unreadable file')}", err=True)
    if not embedded.kept:
        raise DatasetError("no readable audio files in the dataset")
    return embedded


def _prepare(encoder, embeddings, kw):
    """Projection, settings, dictionary and μ_A shared by both evaluations."""
    from clapdex.concepts.decompose import audio_mean
    from clapdex.concepts.dictionary import build_dictionary
    from clapdex.concepts.vocabulary import load_vocabulary
    from clapdex.evaluation.projection import apply_projection, load_projection
    from clapdex.evaluation.sweep import check_plot_path, parse_settings

    settings = parse_settings(kw["lam"], kw["sweep"], kw["max_concepts"])
    if kw["plot"]:
        check_plot_path(kw["plot"])
    if kw["projection_path"]:
        embeddings = apply_projection(embeddings, load_projection(kw["projection_path"], encoder.fingerprint))
    vocabulary = load_vocabulary(kw["vocab_spec"])
    dictionary = build_dictionary(encoder, vocabulary)
    return embeddings, settings, vocabulary, dictionary, audio_mean(embeddings)


def _output(kw, header: dict, rows, columns, metric: str, title: str) -> None:
    from clapdex.evaluation.report import format_table, write_csv
    from clapdex.evaluation.sweep import plot_sweep

    if kw["csv_path"]:
        write_csv(rows, kw["csv_path"])
    if kw["plot"]:
        plot_sweep(rows, metric, kw["plot"], title)
    if kw["as_json"]:
        emit_json({**header, "rows": rows})
        return
    for key, value in header.items():
        if key != "skipped":
            text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            click.echo(f"{key}: {one_line(text)}")  # data and projection are paths
    if header.get("skipped"):
        click.echo(f"skipped: {plural(len(header['skipped']), 'unreadable file')}")
    click.echo()
    click.echo(format_table(rows, columns))
    if kw["plot"]:
        click.echo(f"\nplot: {display_path(kw['plot'])}")


@click.group("eval", cls=SafeGroup)
def eval_group() -> None:
    """Evaluate dense vs concept representations on labeled audio (zero-shot, retrieval)."""


@eval_group.command("zeroshot")
@click.argument("data", type=click.Path(exists=True))
@click.option("--prompt", default="this is the sound of {}", show_default=True,
              help="Class prompt template; {} is replaced by the class name.")
@click.option("--metric", type=click.Choice(["accuracy", "macro_f1"]), default="accuracy",
              show_default=True, help="Metric plotted by --plot.")
@_concept_options
def zeroshot(data, prompt, metric, **kw):
    """Zero-shot classification of DATA (class sub-folders, or a CSV with path,label).

    Files are embedded once (mean of their unit window embeddings, cached); μ_A is the mean of this
    dataset's unit embeddings. Prints accuracy and macro-F1 for the dense embeddings and for the
    concept reconstruction at each sparsity setting.
    """
    from clapdex.evaluation.datasets import load_labeled
    from clapdex.evaluation.zeroshot import class_prompts, class_text_embeddings, evaluate_zeroshot

    encoder = encoder_from_kwargs(kw)
    dataset = load_labeled(data)
    class_prompts(dataset.classes, prompt)  # reject a bad template before any encoding
    embedded = _embed(encoder, dataset.paths, kw["cache_dir"], kw["no_cache"])
    dataset = dataset.subset(embedded.kept)
    embeddings, settings, vocabulary, dictionary, mean = _prepare(encoder, embedded.embeddings, kw)
    rows = evaluate_zeroshot(embeddings, dataset.targets, class_text_embeddings(encoder, dataset.classes, prompt),
                             dictionary, mean, settings)
    header = {"task": "zero-shot classification", "data": str(data), "files": len(dataset.paths),
              "classes": list(dataset.classes), "prompt": prompt,
              "vocabulary": f"{vocabulary.name} ({len(vocabulary.concepts)} concepts)",
              "projection": kw["projection_path"] or "none",
              "skipped": [{"path": p, "reason": r} for p, r in embedded.skipped]}
    columns = [("representation", "repr", 0), ("setting", "setting", 0), ("mean_active", "active", 1),
               ("median_active", "median", 1), ("mean_concept_fidelity", "c-fid", 3),
               ("mean_fidelity", "r-fid", 3),
               ("accuracy", "accuracy", 3), ("macro_f1", "macro-F1", 3)]
    _output(kw, header, rows, columns, metric, f"zero-shot {metric} vs sparsity")


@eval_group.command("retrieval")
@click.argument("data", type=click.Path(exists=True, dir_okay=False))
@click.option("--metric", default="t2a_r10", show_default=True,
              type=click.Choice(["t2a_r1", "t2a_r10", "t2a_map10", "a2t_r1", "a2t_r10", "a2t_map10"]),
              help="Metric plotted by --plot.")
@_concept_options
def retrieval(data, metric, **kw):
    """Text-audio retrieval on DATA, a CSV with path,caption (a path may have several captions).

    Reports text-to-audio and audio-to-text R@1, R@10 and mAP@10 for the dense audio embeddings and
    for their concept reconstructions (captions stay dense text embeddings).
    """
    from clapdex.evaluation.datasets import load_captions
    from clapdex.evaluation.retrieval import evaluate_retrieval

    encoder = encoder_from_kwargs(kw)
    dataset = load_captions(data)
    embedded = _embed(encoder, dataset.paths, kw["cache_dir"], kw["no_cache"])
    new_index = {old: new for new, old in enumerate(embedded.kept)}
    keep = [j for j, f in enumerate(dataset.caption_file) if f in new_index]
    captions = [dataset.captions[j] for j in keep]
    caption_file = [new_index[dataset.caption_file[j]] for j in keep]
    embeddings, settings, vocabulary, dictionary, mean = _prepare(encoder, embedded.embeddings, kw)
    text = encoder.embed_text(captions)
    rows = evaluate_retrieval(embeddings, text, caption_file, dictionary, mean, settings)
    header = {"task": "text-audio retrieval", "data": str(data), "files": len(embedded.kept),
              "captions": len(captions),
              "vocabulary": f"{vocabulary.name} ({len(vocabulary.concepts)} concepts)",
              "projection": kw["projection_path"] or "none",
              "skipped": [{"path": p, "reason": r} for p, r in embedded.skipped]}
    columns = [("representation", "repr", 0), ("setting", "setting", 0), ("mean_active", "active", 1),
               ("t2a_r1", "T→A R@1", 3), ("t2a_r10", "R@10", 3), ("t2a_map10", "mAP@10", 3),
               ("a2t_r1", "A→T R@1", 3), ("a2t_r10", "R@10", 3), ("a2t_map10", "mAP@10", 3)]
    _output(kw, header, rows, columns, metric, f"retrieval {metric} vs sparsity")


@click.command("finetune")
@click.argument("data", type=click.Path(exists=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the projection (e.g. projection.pt).")
@click.option("--prompt", default="this is the sound of {}", show_default=True,
              help="Class prompt template; {} is replaced by the class name.")
@click.option("--temperature", type=float, default=0.05, show_default=True,
              help="Softmax temperature on the cosines to the class prompts.")
@click.option("--validation-fraction", type=float, default=0.2, show_default=True,
              help="Share of each class held out for early stopping and the after-accuracy.")
@click.option("--epochs", type=click.IntRange(min=1), default=200, show_default=True, help="At most this many epochs.")
@click.option("--patience", type=click.IntRange(min=1), default=10, show_default=True,
              help="Stop after this many epochs without a better held-out loss.")
@click.option("--learning-rate", type=float, default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the split and the batch order.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Embedding cache folder.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the embedding cache.")
@json_option
@encoder_options
def finetune(data, output, prompt, temperature, validation_fraction, epochs, patience, learning_rate, seed,
             cache_dir, no_cache, as_json, **kw):
    """Train a linear projection of audio embeddings towards their class prompts (DATA as in eval zeroshot).

    The d×d matrix starts at the identity; training minimises cross-entropy over cosines to the
    class prompts, stops early on a held-out split and keeps the best matrix. Use the file with
    `--projection` in `clapdex eval`.
    """
    from clapdex.evaluation.datasets import load_labeled
    from clapdex.evaluation.projection import save_projection, train_projection
    from clapdex.evaluation.zeroshot import class_prompts, class_text_embeddings

    encoder = encoder_from_kwargs(kw)
    dataset = load_labeled(data)
    class_prompts(dataset.classes, prompt)
    embedded = _embed(encoder, dataset.paths, cache_dir, no_cache)
    dataset = dataset.subset(embedded.kept)
    bar = progress(total=epochs, desc="training", unit="epoch")
    result = train_projection(embedded.embeddings, dataset.targets,
                              class_text_embeddings(encoder, dataset.classes, prompt), encoder.fingerprint,
                              classes=dataset.classes, prompt=prompt, temperature=temperature,
                              validation_fraction=validation_fraction, learning_rate=learning_rate,
                              max_epochs=epochs, patience=patience, seed=seed,
                              on_epoch=lambda *_: bar.update(1))
    bar.close()
    save_projection(result.projection, output)
    summary = {"output": str(output), "files": len(dataset.paths), "classes": len(dataset.classes),
               "train": result.train_size, "validation": result.validation_size, "epochs": result.epochs,
               "best_epoch": result.best_epoch, "before_train_accuracy": result.before_train,
               "before_validation_accuracy": result.before_validation,
               "after_train_accuracy": result.after_train,
               "after_validation_accuracy": result.after_validation}
    if as_json:
        emit_json(summary)
        return
    click.echo(f"trained on {result.train_size} files, held out {result.validation_size}; "
               f"{result.epochs} epochs, kept "
               + (f"epoch {result.best_epoch}" if result.best_epoch else "the identity (no epoch did better)"))
    click.echo(f"{'zero-shot accuracy':<20}{'before':>8}{'after':>8}")
    click.echo(f"{'train':<20}{result.before_train:>8.3f}{result.after_train:>8.3f}")
    click.echo(f"{'held-out':<20}{result.before_validation:>8.3f}{result.after_validation:>8.3f}")
    click.echo(f"projection written to {display_path(output)}")


COMMANDS = [eval_group, finetune]
