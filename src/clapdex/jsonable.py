"""One JSON conversion for every front end (the CLI's --json, the web app)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any


def to_jsonable(value: Any) -> Any:
    """Dataclasses, numpy scalars/arrays and paths -> plain JSON values."""
    import numpy as np

    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        # not dataclasses.asdict: it deep-copies first (most of the cost for a page of results)
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
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
