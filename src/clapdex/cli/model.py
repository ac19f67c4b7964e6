"""CLI verbs about the CLAP model: `clapdex model check`."""

from __future__ import annotations

import click

from clapdex.cli.common import emit_json, encoder_options, encoder_settings, json_option

_WEIGHTS_SOURCES = {
    "file": "local file",
    "hf-cache": "Hugging Face cache",
    "downloaded": "downloaded by msclap from microsoft/msclap",
}


@click.group("model")
def model_group() -> None:
    """The CLAP model: where its weights come from and whether it runs."""


@model_group.command("check")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@click.option("--compare", is_flag=True,
              help="Embed FILES with the chosen backend and with PyTorch fp32 on the CPU, and report "
                   "their cosine (how close onnx-int8 or CUDA autocast is on your own sounds).")
@encoder_options
@json_option
def check(files: tuple[str, ...], compare: bool, as_json: bool, **kwargs) -> None:
    """Load the model and embed one test window and one text; print the setup and timings.

    Offline, the weights must be a local file (--weights or $CLAPDEX_CLAP_WEIGHTS) and the text
    model a local folder or already in the Hugging Face cache (--text-model or $CLAPDEX_TEXT_MODEL).
    With --compare FILES, also how close the backend's embeddings of FILES are to PyTorch's.
    """
    from clapdex import check_model

    if bool(files) != compare:
        raise click.UsageError("--compare needs audio FILES, and FILES need --compare")
    info = check_model(compare=files, **encoder_settings(kwargs))  # ModelError (one line) on bad setup
    if as_json:
        emit_json(info)
        return
    for line in _plain_report(info):
        click.echo(line)
    if "compare" in info:
        for line in _compare_report(info["compare"]):
            click.echo(line)


def _plain_report(info: dict) -> list[str]:
    from clapdex import TEST_TEXT

    lines = []
    if "version" in info:
        lines.append(f"Model:       MS-CLAP {info['version']} ({info['audio_encoder']} audio encoder), "
                     f"{info['dimension']}-d embeddings")
        source = _WEIGHTS_SOURCES.get(info["weights_source"], info["weights_source"])
        lines.append(f"Weights:     {info['weights']} ({source})")
        kind = "local folder" if info["text_model_source"] == "folder" else "Hugging Face model"
        lines.append(f"Text model:  {info['text_model']} ({kind})")
        lines.append(f"Device:      {info['device']}, backend {info.get('backend', '-')} ({info.get('precision', '-')}), "
                     f"{info.get('threads', '-')} threads, batches of {info['batch_size']}")
        lines.append(f"Audio input: {info['window_seconds']:g} s windows at {info['sample_rate']} Hz "
                     f"({info['window_samples']} samples)")
        lines.append(f"Hub access:  {'off (HF_HUB_OFFLINE)' if info['offline'] else 'allowed'}")
    lines.append(f"Fingerprint: {info['fingerprint']}")
    lines.append(f"Loaded in {info['load_seconds']:.2f} s")
    audio_shape = " x ".join(str(n) for n in info["audio_embedding_shape"])
    text_shape = " x ".join(str(n) for n in info["text_embedding_shape"])
    lines.append(f"Test audio embedding: {audio_shape} in {info['audio_seconds']:.3f} s "
                 f"(norm {info['audio_norm']:.2f}; raw, not normalised)")
    lines.append(f"Test text embedding:  {text_shape} in {info['text_seconds']:.3f} s "
                 f"(\"{TEST_TEXT}\")")
    lines.append("OK: the model loads and embeds.")
    return lines



def _compare_report(result: dict) -> list[str]:
    from clapdex.printable import one_line

    lines = [f"Compared with {result['reference']} (backend {result['backend']}, {result['precision']}):"]
    for row in result["files"]:
        name = one_line(row["path"])
        if "error" in row:
            lines.append(f"  {name}: not compared ({one_line(row['error'])})")
        else:
            lines.append(f"  {name}: {row['windows']} windows, min cosine {row['min_cosine']:.5f}, "
                         f"mean {row['mean_cosine']:.5f}, max |difference| {row['max_abs_diff']:.1e}")
    if result["windows"]:
        lines.append(f"  all: {result['windows']} windows, min cosine {result['min_cosine']:.5f}, "
                     f"mean {result['mean_cosine']:.5f}, max |difference| {result['max_abs_diff']:.1e}")
    return lines


COMMANDS = [model_group]
