"""Progress reporting: the library reports, the caller renders.

Long-running library calls take `progress: ProgressCallback | None`: a function called with a
ProgressEvent whenever work advances (None: report nothing). The CLI renders the events as a tqdm
bar on stderr (`terminal_progress`); a web app can forward them to its clients.

Inside the library, `Progress` is the one object that work loops talk to: `update(n)`,
`set_description_str(text)` (the task changes, e.g. while the audio mean is estimated) and
`close()`; each turns into an event.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class ProgressEvent:
    """Where one task stands: `done` of `total` (None: unknown) `unit`s; `finished` on the last."""

    task: str
    done: int
    total: int | None
    unit: str
    finished: bool = False


ProgressCallback = Callable[[ProgressEvent], None]


class Progress:
    """A progress counter that reports to a callback (or nowhere)."""

    def __init__(self, callback: ProgressCallback | None, total: int | None = None,
                 desc: str = "", unit: str = "it"):
        self.callback = callback
        self.total = total
        self.task = desc
        self.unit = unit
        self.done = 0
        self.closed = False
        self._emit()

    def _emit(self, finished: bool = False) -> None:
        if self.callback is not None:
            self.callback(ProgressEvent(self.task, self.done, self.total, self.unit, finished))

    def update(self, n: int = 1) -> None:
        self.done += int(n)
        self._emit()

    def set_description_str(self, text: str) -> None:
        self.task = text
        self._emit()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._emit(finished=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def terminal_progress(show: bool | None = None) -> ProgressCallback | None:
    """A callback drawing each task as a tqdm bar on stderr. `show`: True or False forces it on or
    off; None shows it only when stderr is a terminal (then None is returned when it is not)."""
    if show is None:
        show = sys.stderr.isatty()
    if not show:
        return None
    bars: dict = {}

    def render(event: ProgressEvent) -> None:
        from tqdm import tqdm

        bar = bars.get("bar")
        if bar is None:
            bar = bars["bar"] = tqdm(total=event.total, desc=event.task, unit=event.unit,
                                     file=sys.stderr, dynamic_ncols=True)
        if bar.desc != event.task:
            bar.set_description_str(event.task)
        if event.done != bar.n:
            bar.update(event.done - bar.n)
        if event.finished:
            bar.close()
            del bars["bar"]

    return render


def reporter(progress: ProgressCallback | None, show_progress: bool | None) -> ProgressCallback | None:
    """The callback of a library function that takes both `progress` and the older
    `show_progress` (True/False/None as for terminal_progress): `progress` wins when given."""
    return progress if progress is not None else terminal_progress(show_progress)
