"""One-line notices from library code to the person running it (e.g. "index upgraded").

Library code calls `notify(text)`; by default the text goes to stderr as "note: ...", so a CLI
command says it without any wiring. A program embedding clapdex can take them instead with
`set_handler(callable)` (or `set_handler(None)` for the default).
"""

from __future__ import annotations

import sys
from typing import Callable

_handler: Callable[[str], None] | None = None


def set_handler(handler: Callable[[str], None] | None) -> None:
    global _handler
    _handler = handler


def notify(text: str) -> None:
    if _handler is not None:
        _handler(text)
    else:
        print(f"note: {text}", file=sys.stderr, flush=True)
