"""What every CLI verb shares: error handling, output, the index location and encoder options."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import threading
from pathlib import Path
from typing import Any, Iterable

import click

from clapdex import to_jsonable
from clapdex.encoder_registry import OPTIONS as ENCODER_OPTIONS
from clapdex.errors import ClapdexError, Remedy
from clapdex.printable import one_line


class SafeGroup(click.Group):
    """Turns user errors into one line on stderr and a non-zero exit, never a traceback.

    Besides ClapdexError, operating-system and database errors that escape a command (a disk that
    is full, a file that vanished, a locked database) are reported the same way: they come from
    the environment, not from a bug. Any other exception keeps its traceback, so it gets reported.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            with _sigterm_as_interrupt():
                return super().invoke(ctx)
        except ClapdexError as error:
            click.echo(f"error: {one_line(error_text(error))}", err=True)  # paths may hold newlines
            ctx.exit(1)
        except KeyboardInterrupt as interrupt:  # Ctrl-C, or SIGTERM (Terminated)
            # The library notes what was kept (indexing: files stored, files part-done).
            word = "terminated" if isinstance(interrupt, Terminated) else "interrupted"
            notes = [one_line(note) for note in getattr(interrupt, "__notes__", ())]
            click.echo(f"{word}: {'; '.join(notes)}" if notes else word, err=True)
            ctx.exit(143 if isinstance(interrupt, Terminated) else 130)
        except Exception as error:
            message = _environment_error(error)
            if message is None:
                raise
            click.echo(f"error: {message}", err=True)
            ctx.exit(1)


def error_text(error: ClapdexError) -> str:
    """The library's message, and the command that fixes it (from `error.remedy`)."""
    if error.remedy is None:
        return str(error)
    return f"{error}; {remedy_text(error.remedy)}"


def remedy_text(remedy: Remedy) -> str:
    """A clapdex.errors.Remedy in the CLI's words: the command to run."""
    index = f" --index {shlex.quote(remedy.index)}" if remedy.index else ""
    rebuild = f"clapdex index --rebuild{index} FOLDER"
    if remedy.action == "reindex":
        options = {"vocabulary": "--vocab NAME", "lam": "--lambda L", "max_concepts": "--max-concepts N"}
        given = " ".join(options[name] for name in remedy.settings if name in options)
        return f"run clapdex reindex {given}{index} to re-decompose it, or use another --index"
    if remedy.action == "model":
        return ("pass the model options it was built with (--model-version, --weights, "
                "--backend; or --fingerprint, as `clapdex status` shows it), or use another --index")
    if remedy.action == "projection":
        return (f"drop --projection (the index applies its own), or rebuild it with: "
                f"clapdex index --rebuild --projection FILE{index} FOLDER")
    texts = {
        "rebuild": f"rebuild it with: {rebuild}",
        "create": f"create one with: clapdex index{index} FOLDER",
        "finetune": "run clapdex finetune again with this model",
        "open-writable": (f"open it once where it can be written (any clapdex command, e.g. "
                          f"clapdex status{index}) to upgrade it in place, or use a writable copy"),
        "list-concepts": "list them with: clapdex concepts",
        "list-vocabulary": "see the vocabulary with: clapdex vocab show NAME",
    }
    return texts.get(remedy.action, remedy.action)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a service stop, `kill`), raised like Ctrl-C so that every command cleans up the
    same way: whole files stay stored, the FAISS file is saved."""


@contextlib.contextmanager
def _sigterm_as_interrupt():
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return

    def terminate(signum, frame):
        raise Terminated()
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _environment_error(error: Exception) -> str | None:
    """A one-line description of an OSError or a database driver error, else None."""
    if isinstance(error, BrokenPipeError):
        return None  # `clapdex ... | head`: click's own handling exits quietly
    if isinstance(error, OSError):
        text = error.strerror or str(error) or type(error).__name__
        if error.filename is not None:
            text = f"{error.filename}: {text}"
        return one_line(str(text))
    from sqlalchemy.exc import DBAPIError

    if not isinstance(error, DBAPIError):
        return None
    return " ".join(f"database error ({error.orig or type(error).__name__})".split())


def _json_line(obj: Any) -> str:
    """JSON text; a lone surrogate (a file name byte that is not UTF-8) is written as its \\uXXXX
    escape, which cannot be printed raw and which a JSON reader turns back into the same str."""
    text = json.dumps(to_jsonable(obj), ensure_ascii=False)
    return re.sub("[\ud800-\udfff]", lambda m: f"\\u{ord(m[0]):04x}", text)


def emit_json(obj: Any) -> None:
    """One JSON document on stdout."""
    click.echo(_json_line(obj))


def emit_ndjson(rows: Iterable[Any]) -> None:
    """One JSON object per line on stdout (for lists)."""
    for row in rows:
        click.echo(_json_line(row))


json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output (NDJSON for lists).")


def default_index_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("clapdex")) / "index"


def resolve_index_path(value: str | None) -> Path:
    """--index, else $CLAPDEX_INDEX, else the user data directory."""
    if value:
        return Path(value).expanduser()
    env = os.environ.get("CLAPDEX_INDEX")
    if env:
        return Path(env).expanduser()
    return default_index_path()


index_option = click.option(
    "--index", "index_path", metavar="PATH", default=None,
    help="Index folder (default: $CLAPDEX_INDEX, else the user data directory).")


def encoder_options(func):
    """--model-version, --weights, --text-model, --device, --batch-size, --backend, --threads
    (options, then env vars)."""
    options = [
        click.option("--model-version", type=click.Choice(["2022", "2023"]), default=None,
                     help="MS-CLAP model version (default: $CLAPDEX_MODEL_VERSION, else 2023)."),
        click.option("--weights", type=click.Path(dir_okay=False), default=None,
                     help="Local CLAP weights file (default: $CLAPDEX_CLAP_WEIGHTS, else msclap downloads them)."),
        click.option("--text-model", type=click.Path(file_okay=False), default=None,
                     help="Local text-model folder for air-gapped use (default: $CLAPDEX_TEXT_MODEL)."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
                     help="Where the model runs (default: $CLAPDEX_DEVICE, else auto)."),
        click.option("--batch-size", type=click.IntRange(min=1), default=None,
                     help="Windows per forward pass (default 16 on the CPU, 64 on a GPU)."),
        click.option("--backend", type=click.Choice(["auto", "torch", "onnx", "onnx-int8"]), default=None,
                     help="How the audio encoder runs: torch, onnx (same embeddings, faster on the "
                          "CPU) or onnx-int8 (approximate, its own fingerprint) (default: "
                          "$CLAPDEX_BACKEND, else onnx on the CPU when installed)."),
        click.option("--threads", type=click.IntRange(min=1), default=None,
                     help="CPU threads for the model (default: $CLAPDEX_THREADS, else all cores)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def encoder_settings(kwargs: dict) -> dict:
    """Pops the encoder options out of a command's kwargs (for the API's **encoder_options)."""
    return {key: kwargs.pop(key, None) for key in ENCODER_OPTIONS}


projection_option = click.option(
    "--projection", "projection_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
    help="Linear projection from `clapdex finetune`, applied to the audio embeddings (an index "
         "stores it: later commands on that index apply it without this option).")

root_option = click.option(
    "--root", "roots", multiple=True, metavar="NAME=PATH",
    help="Store files under PATH relative to the root NAME, so the index keeps working when the "
         "collection moves (repeatable; a bare PATH is named after its folder; given again with "
         "another PATH, the root moves). See `clapdex roots`.")


def progress():
    """The progress callback the CLI gives the library: a line redrawn in place on stderr when it
    is a terminal, else a plain line every 30 s of a long task (log files stay readable)."""
    import sys

    from clapdex.cli.format import shown_path
    from clapdex.progress import plain_progress, terminal_progress

    if sys.stderr.isatty():
        return terminal_progress(True, show_path=shown_path)
    return plain_progress(show_path=shown_path)
