"""CLI verbs: `clapdex eval zeroshot|retrieval DATA` and `clapdex finetune DATA -o projection.pt`."""

from __future__ import annotations

import click

from clapdex.cli.common import (emit_json, encoder_options, encoder_settings, progress,
                                SafeGroup)
from clapdex.cli.format import shown_path, plural
from clapdex.cli.lambda_option import DefaultLambdaHelp
from clapdex.printable import one_line

# An evaluation is one report (its settings and a table), not a list: one JSON document.
report_json_option = click.option("--json", "as_json", is_flag=True,
                                  help="Machine-readable output: one JSON document, the settings "
                                       "and the rows (docs/output.md).")


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
        click.option("--audio-mean", "mean_source", default="dataset", show_default=True,
                     metavar="dataset|reference|FILE.npy",
                     help="μ_A: this dataset's own mean, the model's fixed reference mean (one for "
                          "every dataset, as SpLiCE's precomputed mean), or a saved (d,) array."),
        click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                     help="Embedding cache folder (default: the user cache dir, clapdex/embeddings)."),
        click.option("--no-cache", is_flag=True, help="Neither read nor write the embedding cache."),
        click.option("--csv", "csv_path", type=click.Path(dir_okay=False), default=None,
                     help="Also write the result rows to this CSV file."),
        report_json_option,
    ]
    func = encoder_options(func)
    for option in reversed(options):
        func = option(func)
    return func


def _print_skipped(skipped) -> None:
    """Unreadable files of the dataset, on stderr (at most 5 named)."""
    for path, reason in skipped[:5]:
        click.echo(f"skipped {shown_path(path)}: {one_line(str(reason))}", err=True)
    if len(skipped) > 5:
        click.echo(f"... and {plural(len(skipped) - 5, 'more unreadable file')}", err=True)


def _evaluation_options(kw) -> dict:
    """The keyword arguments of clapdex.evaluate_* from the shared options (popped from `kw`)."""
    return dict(vocabulary=kw.pop("vocab_spec"), lam=kw.pop("lam"), sweep=kw.pop("sweep"),
                max_concepts=kw.pop("max_concepts"), plot=kw["plot"],
                projection=kw.pop("projection_path"), audio_mean=kw.pop("mean_source"),
                cache_dir=kw.pop("cache_dir"),
                use_cache=not kw.pop("no_cache"), csv=kw.pop("csv_path"), progress=progress(),
                on_skipped=_print_skipped, **encoder_settings(kw))


def _output(kw, evaluation) -> None:
    header = evaluation.header
    if kw["as_json"]:
        emit_json({**header, "rows": evaluation.rows})
        return
    for key, value in header.items():
        if key != "skipped":
            text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
            click.echo(f"{key}: {one_line(text)}")  # data and projection are paths
    if header.get("skipped"):
        click.echo(f"skipped: {plural(len(header['skipped']), 'unreadable file')}")
    click.echo()
    click.echo(evaluation.table())
    if kw["plot"]:
        click.echo(f"\nplot: {shown_path(kw['plot'])}")


def _alpha_options(func):
    func = click.option("--alpha-sweep", is_flag=True, help="Hybrid rows at α = 0, 0.1, ..., 1.")(func)
    return click.option("--alpha", "alphas", default=None, metavar="A1,A2,...",
                        help="Also hybrid rows, α·dense + (1 − α)·concept as search scores, at "
                             "these α.")(func)


def _alphas(kw) -> list[float]:
    from clapdex import parse_alphas

    return parse_alphas(kw.pop("alphas"), kw.pop("alpha_sweep"))


@click.group("eval", cls=SafeGroup)
def eval_group() -> None:
    """Evaluate dense vs concept representations on labeled audio (zero-shot, retrieval)."""


@eval_group.command("zeroshot")
@click.argument("data", type=click.Path(exists=True))
@click.option("--prompt", default="this is the sound of {}", show_default=True,
              help="Class prompt template; {} is replaced by the class name.")
@click.option("--metric", type=click.Choice(["accuracy", "macro_f1"]), default="accuracy",
              show_default=True, help="Metric plotted by --plot.")
@_alpha_options
@_concept_options
def zeroshot(data, prompt, metric, **kw):
    """Zero-shot classification of DATA (class sub-folders, or a CSV with path,label).

    Files are embedded once (mean of their unit window embeddings, cached); μ_A is the mean of this
    dataset's unit embeddings (see --audio-mean). Prints accuracy and macro-F1 for the dense
    embeddings, for the concept reconstruction at each sparsity setting and, with --alpha or
    --alpha-sweep, for the hybrid score at each α and setting.
    """
    from clapdex import evaluate_zeroshot

    alphas = _alphas(kw)
    evaluation = evaluate_zeroshot(data, prompt=prompt, metric=metric, alphas=alphas,
                                   **_evaluation_options(kw))
    _output(kw, evaluation)


@eval_group.command("retrieval")
@click.argument("data", type=click.Path(exists=True, dir_okay=False))
@click.option("--metric", default="t2a_r10", show_default=True,
              type=click.Choice(["t2a_r1", "t2a_r10", "t2a_map10", "a2t_r1", "a2t_r10", "a2t_map10"]),
              help="Metric plotted by --plot.")
@_alpha_options
@_concept_options
def retrieval(data, metric, **kw):
    """Text-audio retrieval on DATA, a CSV with path,caption (a path may have several captions).

    Reports text-to-audio and audio-to-text R@1, R@10 and mAP@10 for the dense audio embeddings,
    for their concept reconstructions (captions stay dense text embeddings) and, with --alpha or
    --alpha-sweep, for the hybrid score at each α and sparsity setting.
    """
    from clapdex import evaluate_retrieval

    alphas = _alphas(kw)
    evaluation = evaluate_retrieval(data, metric=metric, alphas=alphas, **_evaluation_options(kw))
    _output(kw, evaluation)


@click.command("tune")
@click.argument("data", type=click.Path(exists=True))
@click.option("--task", type=click.Choice(["auto", "zeroshot", "retrieval"]), default="auto",
              show_default=True, help="auto: retrieval for a CSV with a caption column, else zero-shot.")
@click.option("--prompt", default="this is the sound of {}", show_default=True,
              help="Zero-shot class prompt template.")
@click.option("--metric", default=None,
              type=click.Choice(["accuracy", "macro_f1", "t2a_r1", "t2a_r10", "t2a_map10", "a2t_r1",
                                 "a2t_r10", "a2t_map10"]),
              help="What to maximise (default: accuracy, or t2a_r10 for retrieval).")
@click.option("--alpha", "alphas", default=None, metavar="A1,A2,...",
              help="α grid for the hybrid (default 0, 0.1, ..., 1).")
@click.option("--apply", "apply_index", type=click.Path(file_okay=False), default=None,
              metavar="INDEX",
              help="Tune with this index's concepts, then reindex it with the chosen sparsity and "
                   "store the chosen α as its search default.")
@_concept_options
def tune(data, task, prompt, metric, alphas, apply_index, **kw):
    """Choose λ (or max-concepts) and the hybrid α on labelled DATA.

    Sweeps the sparsity (--sweep, default λ in 0.02 ... 0.3, or --max-concepts N1,N2,...), picks
    the knee of the metric-vs-active-concepts curve, then the α that scores best there. Prints the
    curve, the α rows and the choice; --apply INDEX puts the choice into an index.
    """
    from clapdex import parse_alphas, tune as choose

    alpha_values = None if alphas is None else parse_alphas(alphas)
    outcome = choose(data, task=task, prompt=prompt, metric=metric, alphas=alpha_values,
                     apply=apply_index, **_evaluation_options(kw))
    result = outcome.choice
    if kw["as_json"]:
        emit_json({**outcome.header, "choice": result.summary(), "applied": outcome.applied,
                   "rows": outcome.rows})
        return
    _output(kw, outcome)
    choice = result.summary()
    click.echo(f"\nchoice: {result.setting.label} (knee of {result.metric} vs active concepts: "
               f"{choice['concepts']:.3f} at {result.chosen_row.mean_active:.1f} concepts; "
               f"dense {choice['dense']:.3f}), α={result.alpha:g} (hybrid {choice['hybrid']:.3f})")
    if outcome.applied:
        click.echo(f"applied to {shown_path(str(apply_index))}: reindexed "
                   f"{plural(outcome.applied['segments'], 'segment')}, search α={result.alpha:g}")
    else:
        option = (f"--max-concepts {result.setting.max_concepts}"
                  if result.setting.max_concepts is not None else f"--lambda {result.setting.lam:g}")
        click.echo(f"to use it: clapdex reindex {option}, clapdex search --alpha {result.alpha:g} "
                   f"(or tune --apply INDEX)")


@click.command("finetune")
@click.argument("data", type=click.Path(exists=True))
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Where to write the projection (e.g. projection.pt).")
@click.option("--prompt", default="this is the sound of {}", show_default=True,
              help="Class prompt template; {} is replaced by the class name.")
@click.option("--temperature", type=float, default=0.05, show_default=True,
              help="Softmax temperature on the cosines to the class prompts.")
@click.option("--validation-fraction", type=float, default=0.2, show_default=True,
              help="Share of each class held out for early stopping.")
@click.option("--test-fraction", type=float, default=0.2, show_default=True,
              help="Share of each class held out for the reported accuracy only (0: none).")
@click.option("--epochs", type=click.IntRange(min=1), default=200, show_default=True, help="At most this many epochs.")
@click.option("--patience", type=click.IntRange(min=1), default=10, show_default=True,
              help="Stop after this many epochs without a better held-out loss.")
@click.option("--learning-rate", type=float, default=1e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the split and the batch order.")
@click.option("--cache-dir", type=click.Path(file_okay=False), default=None, help="Embedding cache folder.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the embedding cache.")
@report_json_option
@encoder_options
def finetune(data, output, prompt, temperature, validation_fraction, test_fraction, epochs, patience,
             learning_rate, seed, cache_dir, no_cache, as_json, **kw):
    """Train a linear projection of audio embeddings towards their class prompts (DATA as in eval zeroshot).

    The d×d matrix starts at the identity; training minimises cross-entropy over cosines to the
    class prompts, stops early on a validation split and keeps the best matrix; the before/after
    accuracy that counts is on a third, test split that training never sees. Use the file with
    `--projection` in `clapdex eval`.
    """
    from clapdex import finetune as train

    summary = train(data, output, prompt=prompt, temperature=temperature,
                    validation_fraction=validation_fraction, test_fraction=test_fraction,
                    epochs=epochs, patience=patience,
                    learning_rate=learning_rate, seed=seed, cache_dir=cache_dir,
                    use_cache=not no_cache, progress=progress(), on_skipped=_print_skipped,
                    **encoder_settings(kw))
    if as_json:
        emit_json(summary)
        return
    tested = f" (early stopping) and {summary.test} (test)" if summary.test else ""
    click.echo(f"trained on {summary.train} files, held out {summary.validation}{tested}; "
               f"{summary.epochs} epochs, kept "
               + (f"epoch {summary.best_epoch}" if summary.best_epoch
                  else "the identity (no epoch did better)"))
    click.echo(f"{'zero-shot accuracy':<20}{'before':>8}{'after':>8}")
    click.echo(f"{'train':<20}{summary.before_train_accuracy:>8.3f}"
               f"{summary.after_train_accuracy:>8.3f}")
    click.echo(f"{'validation':<20}{summary.before_validation_accuracy:>8.3f}"
               f"{summary.after_validation_accuracy:>8.3f}")
    if summary.test:
        click.echo(f"{'test (held out)':<20}{summary.before_test_accuracy:>8.3f}"
                   f"{summary.after_test_accuracy:>8.3f}")
    else:
        click.echo("no test split: the validation accuracy was chosen by early stopping")
    click.echo(f"projection written to {shown_path(output)}")


COMMANDS = [eval_group, finetune, tune]
