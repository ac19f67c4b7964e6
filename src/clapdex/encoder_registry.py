"""Choosing an encoder by name: one registry for the CLAP model, the test double, and future
models (an ONNX backend, LAION-CLAP).

An encoder is made by a factory: a callable taking the encoder options that were given
(`model_version`, `weights`, `text_model`, `device`, `batch_size`, `backend`, `threads`; only those
not None, as keyword
arguments) and returning an object with the clapdex.encoder.Encoder protocol.

`load(name=None, **options)` finds the factory for `name`, in this order:
1. a name registered in this process with `register(name, factory)`;
2. an entry point of the group "clapdex.encoders" (a package declares
   `[project.entry-points."clapdex.encoders"] myclap = "mypkg.encoders:make"`);
3. a "module:attr" spec (e.g. "tests.doubles:SpectralTestEncoder"), imported.
`name=None` means $CLAPDEX_ENCODER, else "clap" (ClapEncoder.from_settings: options, then its own
environment variables). Subprocesses inherit $CLAPDEX_ENCODER, so tests can run the CLI as a real
process with the test double.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Callable

from clapdex.errors import ModelError

ENTRY_POINT_GROUP = "clapdex.encoders"
ENV = "CLAPDEX_ENCODER"
DEFAULT = "clap"
OPTIONS = ("model_version", "weights", "text_model", "device", "batch_size", "backend", "threads")

Factory = Callable[..., Any]


def _clap(model_version=None, weights=None, text_model=None, device=None, batch_size=None,
          backend=None, threads=None):
    from clapdex.encoder import ClapEncoder

    return ClapEncoder.from_settings(version=model_version, weights=weights, text_model=text_model,
                                     device=device, batch_size=batch_size, backend=backend,
                                     threads=threads)


FACTORIES: dict[str, Factory] = {DEFAULT: _clap}  # what register() writes to


def register(name: str, factory: Factory) -> None:
    """Make `factory` the encoder called `name` in this process (replacing any before)."""
    FACTORIES[name] = factory


def unregister(name: str) -> None:
    """Forget a name registered with `register` (the built-in "clap" stays)."""
    if name != DEFAULT:
        FACTORIES.pop(name, None)


def names() -> list[str]:
    """The registered names and the installed entry points' names."""
    return sorted(set(FACTORIES) | {ep.name for ep in _entry_points()})


def default_name() -> str:
    return os.environ.get(ENV) or DEFAULT


def factory(name: str | None = None) -> Factory:
    """The factory for `name` (see the module docstring); ModelError for an unknown name."""
    name = name or default_name()
    if name in FACTORIES:
        return FACTORIES[name]
    for entry_point in _entry_points():
        if entry_point.name == name:
            return entry_point.load()
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            target: Any = importlib.import_module(module)
            for part in attr.split("."):
                target = getattr(target, part)
        except (ImportError, AttributeError) as error:
            raise ModelError(f"encoder {name!r} cannot be loaded ({error})") from None
        return target
    raise ModelError(f"unknown encoder {name!r}; known: {', '.join(names())}, or a "
                     f"'module:attr' spec")


def load(name: str | None = None, **options) -> Any:
    """Make the encoder `name` (default: $CLAPDEX_ENCODER, else "clap") with the given options."""
    given = {key: value for key, value in options.items() if value is not None}
    unknown = sorted(set(given) - set(OPTIONS))
    if unknown:
        raise TypeError(f"unknown encoder option(s): {', '.join(unknown)}")
    return factory(name)(**given)


def _entry_points():
    from importlib.metadata import entry_points

    return entry_points(group=ENTRY_POINT_GROUP)
