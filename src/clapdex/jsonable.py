"""One JSON conversion for every front end (the CLI's --json, the web app)."""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Any


def to_jsonable(value: Any) -> Any:
    """Dataclasses, numpy scalars/arrays and paths -> plain JSON values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # not dataclasses.asdict: it deep-copies first (most of the cost for a page of results)
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    return _leaf(value)


def _leaf(value: Any) -> Any:
    """Numpy arrays and scalars and paths as plain values; anything else unchanged."""
    import numpy as np

    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return value


def dumps(value: Any, **options) -> str:
    """json.dumps(to_jsonable(value)), the same text, faster: the C encoder walks the lists and
    dicts and calls back only for dataclasses, numpy values and paths (the web app's responses)."""
    import json

    return json.dumps(value, default=_shallow, **options)


def _shallow(value: Any) -> Any:
    """One level of to_jsonable, for json.dumps(default=...)."""
    names = _field_names(type(value))
    if names is not None:
        return {name: getattr(value, name) for name in names}
    plain = _leaf(value)
    if plain is value:  # json.dumps asks only for what it cannot encode itself
        raise TypeError(f"{type(value).__name__} is not JSON serialisable")
    return plain


@functools.lru_cache(maxsize=None)
def _field_names(cls: type) -> tuple[str, ...] | None:
    return tuple(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else None
