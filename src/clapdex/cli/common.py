"""What every CLI verb shares: error handling, output, the index location and encoder options."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Iterable

import click

from clapdex.errors import ClapdexError
from clapdex.printable import one_line


class SafeGroup(click.Group):
    """Turns user errors into one line on stderr and a non-zero exit, never a traceback.

    Besides ClapdexError, operating-system and database errors that escape a command (a disk that
    is full, a file that vanished, a locked database) are reported the same way: they come from
    the environment, not from a bug. Any other exception keeps its traceback, so it gets reported.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ClapdexError as error:
            click.echo(f"error: {one_line(str(error))}", err=True)  # paths may hold newlines
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)
        except Exception as error:
            message = _environment_error(error)
            if message is None:
                raise
            click.echo(f"error: {message}", err=True)
            ctx.exit(1)


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


def to_jsonable(value: Any) -> Any:
    """Dataclasses, numpy scalars/arrays and paths -> plain JSON values."""
    import dataclasses

    import numpy as np

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: to_jsonable(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


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
    """--model-version, --weights, --text-model, --device, --batch-size (options, then env vars)."""
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
                     help="Windows per forward pass (default 16)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def load_encoder(model_version=None, weights=None, text_model=None, device=None, batch_size=None):
    """Build the CLAP encoder from CLI options. Tests replace this function to inject a test double."""
    from clapdex.encoder import ClapEncoder

    return ClapEncoder.from_settings(version=model_version, weights=weights, text_model=text_model,
                                     device=device, batch_size=batch_size)


def encoder_from_kwargs(kwargs: dict) -> Any:
    """Pops the encoder options out of a command's kwargs and loads the encoder."""
    keys = ("model_version", "weights", "text_model", "device", "batch_size")
    settings = {k: kwargs.pop(k, None) for k in keys}
    return load_encoder(**settings)


projection_option = click.option(
    "--projection", "projection_path", type=click.Path(dir_okay=False), default=None, metavar="FILE",
    help="Linear projection from `clapdex finetune`, applied to the audio embeddings (an index "
         "stores it: later commands on that index apply it without this option).")


def index_encoder(kwargs: dict, projection_path: str | None = None, index_root: Path | None = None) -> Any:
    """The encoder for an index: the model from the encoder options in `kwargs` (popped), projected
    by `projection_path` if given, else by the projection the index at `index_root` stores (if the
    index exists and has one). A projection that differs from the stored one is refused
    (IndexMismatchError). Index, reindex and explain use this; search applies the stored one itself."""
    from clapdex.evaluation.projection import encoder_for_index, load_projection
    from clapdex.storage.database import IndexStore

    encoder = encoder_from_kwargs(kwargs)
    projection = load_projection(projection_path) if projection_path else None
    settings = None
    if index_root is not None and IndexStore.exists(index_root):
        with IndexStore.open(index_root) as store:
            settings = store.settings
    return encoder_for_index(encoder, settings, projection, index_root)


def progress(iterable=None, total=None, desc: str = "", unit: str = "it", show: bool | None = None):
    """A progress bar on stderr. `show`: True or False forces it on or off; None (the default, and
    what the API's `show_progress=None` passes on) shows it only when stderr is a terminal."""
    from tqdm import tqdm

    if show is None:
        show = sys.stderr.isatty()
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=not show,
                dynamic_ncols=True)
