"""Progress reporting: the library reports, the caller renders.

Long-running library calls take `progress: ProgressCallback | None`: a function called with a
ProgressEvent whenever work advances (None: report nothing). The CLI renders the events as one
line on stderr (`terminal_progress`: a bar with rate, ETA and the file being worked on, redrawn
in place on a terminal; `plain_progress`: a plain line now and then where stderr is a log file);
a web app can forward them to its clients.

Inside the library, `Progress` is the one object that work loops talk to: `update(n)`,
`set_description_str(text)` (the task changes, e.g. while the audio mean is estimated),
`set_item(text)` (the file being worked on) and `close()`; each turns into an event. Indexing
counts seconds of audio (unit AUDIO_SECONDS), so a 1-hour file moves the bar as it is encoded.
"""

from __future__ import annotations

import math
import shutil
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

AUDIO_SECONDS = "s of audio"   # the unit of work counted in seconds of audio


@dataclass(frozen=True)
class ProgressEvent:
    """Where one task stands: `done` of `total` (None: unknown) `unit`s; `item` is what is being
    worked on (a file's path, "" when nothing in particular); `finished` on the last event."""

    task: str
    done: float
    total: float | None
    unit: str
    finished: bool = False
    item: str = ""


ProgressCallback = Callable[[ProgressEvent], None]


class Progress:
    """A progress counter that reports to a callback (or nowhere)."""

    def __init__(self, callback: ProgressCallback | None, total: float | None = None,
                 desc: str = "", unit: str = "it"):
        self.callback = callback
        self.total = total
        self.task = desc
        self.unit = unit
        self.item = ""
        self.done = 0
        self.closed = False
        self._emit()

    def _emit(self, finished: bool = False) -> None:
        if self.callback is not None:
            self.callback(ProgressEvent(self.task, self.done, self.total, self.unit, finished,
                                        self.item))

    def update(self, n: float = 1) -> None:
        if n:
            self.done += n
            self._emit()

    def set_description_str(self, text: str) -> None:
        self.task = text
        self._emit()

    def set_item(self, text: str) -> None:
        if text != self.item:
            self.item = text
            self._emit()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._emit(finished=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ---------------------------------------------------------------------------- human formats
def clock(seconds: float) -> str:
    """"0:07", "13:48", "1:00:00" (whole seconds, rounded down)."""
    seconds = max(int(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def duration_words(seconds: float) -> str:
    """"45 s", "12 min", "4 h 10 min" (rounded to the nearest second, minute from 10 min on)."""
    seconds = max(float(seconds), 0.0)
    if seconds < 60:
        return f"{seconds:.0f} s" if seconds >= 1 or seconds == 0 else f"{seconds:.1f} s"
    if seconds < 600:
        minutes, secs = divmod(int(round(seconds)), 60)
        return f"{minutes} min {secs} s" if secs else f"{minutes} min"
    minutes = int(round(seconds / 60))
    hours, minutes = divmod(minutes, 60)
    if not hours:
        return f"{minutes} min"
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def shorten_path(path: str, width: int) -> str:
    """`path` in at most `width` characters, cut where it hurts least: leading folders first
    ("…/folder/name.flac"), then the middle of the file name, keeping its extension."""
    if len(path) <= width:
        return path
    if width <= 1:
        return "…"[:width]
    parts = path.split("/")
    name = parts[-1]
    for first in range(1, len(parts)):
        candidate = "…/" + "/".join(parts[first:])
        if len(candidate) <= width:
            return candidate
    if len(name) <= width:
        return name
    stem, dot, extension = name.rpartition(".")
    if not dot or len(extension) > 8:
        stem, extension = name, ""
    tail = f".{extension}" if extension else ""
    room = width - len(tail) - 1
    if room < 1:
        return name[:width - 1] + "…"
    return stem[:room] + "…" + tail


_BAR = " ▏▎▍▌▋▊▉█"
MIN_BAR = 10


def _bar(fraction: float, width: int) -> str:
    eighths = int(round(min(max(fraction, 0.0), 1.0) * width * 8))
    full, part = divmod(eighths, 8)
    return ("█" * full + (_BAR[part] if part else "")).ljust(width)


def _count(value: float, unit: str) -> str:
    return clock(value) if unit == AUDIO_SECONDS else f"{value:g}"


def _plural(unit: str, count: float | None) -> str:
    """"file" -> "files" (counted things: file, segment, tag, epoch)."""
    return unit if count == 1 or unit.endswith("s") else unit + "s"


def _rate(rate: float, unit: str, short: bool) -> str:
    if unit == AUDIO_SECONDS:  # seconds of audio per second of work
        number = f"{rate:.1f}" if rate < 100 else f"{rate:.0f}"
        return f"{number}×" if short else f"{number}× real time"
    return f"{rate:.2g}/s" if rate < 10 else f"{rate:.0f}/s"


def progress_line(event: ProgressEvent, rate: float | None, width: int,
                  show_path: Callable[[str], str] = lambda path: path, bar: bool = True) -> str:
    """One line of at most `width` characters for `event`: task, percentage, bar, counts, rate,
    ETA, then the item (a path shortened by shorten_path, never cut elsewhere). When room is
    short the words go first ("41× real time" becomes "41×"), then the bar; the item keeps at
    least its file name where it can. `rate` is units per second (None: not known yet)."""
    total = event.total if event.total and event.total > 0 else None
    unit = event.unit
    head = f"{event.task}:"
    fraction = min(event.done / total, 1.0) if total is not None else None
    if fraction is not None:
        head += f" {math.floor(fraction * 100):3d}%"
    item = show_path(event.item) if event.item else ""
    wanted = min(len(item), len(item.rsplit("/", 1)[-1])) + 2 if item else 0

    def stats(short: bool) -> str:
        label = "" if short else " audio" if unit == AUDIO_SECONDS else f" {_plural(unit, total)}"
        done = _count(event.done, unit)
        parts = [f"{done}/{_count(total, unit)}{label}" if total is not None else done + label]
        if rate:
            parts.append(_rate(rate, unit, short))
            if total is not None and not event.finished:
                parts.append(f"ETA {clock(max(total - event.done, 0.0) / rate)}")
        return (" " if short else ", ").join(parts)

    # What gives way, in order: the words, then the bar, then the item's folders and name.
    can_bar = bar and fraction is not None
    for numbers, with_bar in ((stats(False), can_bar), (stats(True), can_bar), (stats(True), False)):
        if len(head) + 1 + len(numbers) + wanted + (MIN_BAR + 1 if with_bar else 0) <= width:
            break
    text = f"{head} {numbers}"
    room = width - len(text) - (MIN_BAR + 1 if with_bar else 0)
    tail = ""
    if item and room >= 10:
        tail = "  " + shorten_path(item, min(len(item), room - 2))
    room = width - len(text) - len(tail)
    if with_bar and room >= MIN_BAR + 1:
        text = f"{head} {_bar(fraction, min(30, room - 2))} {numbers}"
    line = text + tail
    return line if len(line) <= width else line[:width - 1] + "…"


class _Rate:
    """Units per second over the last WINDOW seconds (once at least a second has passed)."""

    WINDOW = 30.0

    def __init__(self) -> None:
        self.samples: deque[tuple[float, float]] = deque()

    def add(self, now: float, done: float) -> float | None:
        if self.samples and done < self.samples[-1][1]:
            self.samples.clear()  # a new task
        self.samples.append((now, done))
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.WINDOW:
            self.samples.popleft()
        then, before = self.samples[0]
        if now - then < 1.0 or done <= before:
            return None
        return (done - before) / (now - then)


def terminal_progress(show: bool | None = None, show_path: Callable[[str], str] | None = None,
                      stream=None) -> ProgressCallback | None:
    """A callback drawing each task as one line on `stream` (stderr), redrawn in place at most
    10 times a second and ended by a newline when the task finishes. `show`: True or False
    forces it on or off; None draws only when the stream is a terminal (None is returned when it
    is not). `show_path` turns an event's item (a path) into what is printed (default: as is,
    escaped for one line)."""
    stream = stream or sys.stderr
    if show is None:
        show = stream.isatty()
    if not show:
        return None
    from clapdex.printable import one_line

    shown = show_path or one_line
    state = {"drawn": 0.0, "task": None, "rate": _Rate(), "open": False}

    def render(event: ProgressEvent) -> None:
        now = time.monotonic()
        rate = state["rate"].add(now, event.done)
        if not event.finished and event.task == state["task"] and now - state["drawn"] < 0.1:
            return
        state["drawn"], state["task"] = now, event.task
        width = max(shutil.get_terminal_size((80, 24)).columns - 1, 20)  # the last column wraps
        line = progress_line(event, rate, width, shown)
        stream.write("\r" + line + "\x1b[K" + ("\n" if event.finished else ""))
        stream.flush()
        state["open"] = not event.finished
        if event.finished:
            state["rate"] = _Rate()

    return render


def plain_progress(every: float = 30.0, show_path: Callable[[str], str] | None = None,
                   stream=None) -> ProgressCallback:
    """A callback for a stderr that is not a terminal (a log file, a service's journal): a plain
    line every `every` seconds while a task runs, none for a task that ends sooner."""
    stream = stream or sys.stderr
    from clapdex.printable import one_line

    shown = show_path or one_line
    state = {"started": None, "printed": None, "rate": _Rate()}

    def render(event: ProgressEvent) -> None:
        now = time.monotonic()
        rate = state["rate"].add(now, event.done)
        if state["started"] is None:
            state["started"] = state["printed"] = now
        if event.finished:
            state["started"] = None
            state["rate"] = _Rate()
            return
        if now - state["printed"] >= every:
            state["printed"] = now
            stream.write(progress_line(event, rate, 200, shown, bar=False) + "\n")
            stream.flush()

    return render


def reporter(progress: ProgressCallback | None, show_progress: bool | None) -> ProgressCallback | None:
    """The callback of a library function that takes both `progress` and the older
    `show_progress` (True/False/None as for terminal_progress): `progress` wins when given."""
    return progress if progress is not None else terminal_progress(show_progress)
