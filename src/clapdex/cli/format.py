"""Display helpers shared by the CLI verbs: times, time ranges, paths and counts in human output.

Only for text meant for people. JSON and CSV output keep raw values (float seconds, the path as
indexed).
"""

from __future__ import annotations

import math
import os
import shutil

from clapdex.printable import one_line

SHORT_RANGE_SECONDS = 2.0  # ranges shorter than this are shown to the tenth of a second
_EPSILON = 1e-6            # in display units: 6.9999999 s is 7 s, not 6 s (float noise)
MISSING = "[missing from disk]"  # after the path of an indexed file that is gone


def format_time(seconds: float, end: bool = False, *, tenths: bool | None = False,
                nearest: bool = False) -> str:
    """A time as mm:ss, or h:mm:ss from one hour on ("01:05", "1:02:05").

    Rounds down by default (a start time), up with end=True (an end time), or to the nearest unit
    with nearest=True. tenths=True adds tenths of a second ("01:05.4"); tenths=None adds them only
    when the time, rounded to a tenth, is not a whole second. Negative times show as 00:00.
    """
    per_second = 1 if tenths is False else 10
    units = _round(seconds * per_second, "nearest" if nearest else "up" if end else "down")
    if tenths is None and units % 10 == 0:
        units, per_second = units // 10, 1
    return _clock(units, per_second, show_hours=units >= 3600 * per_second)


def format_time_range(start: float, end: float) -> str:
    """A segment's time range, "mm:ss–mm:ss", drawn so that it covers the whole window.

    The start is rounded down and the end rounded up, to whole seconds ("00:54–00:57" for 54.3 to
    56.6 s). Whole seconds can stretch a range by almost 2 s, so a range shorter than
    SHORT_RANGE_SECONDS (2 s) is shown to the tenth instead, start rounded down and end up
    ("00:00.0–00:00.3" for a 0.3 s clip, not "00:00–00:01"). When the end is past an hour both
    ends are shown as h:mm:ss.
    """
    per_second = 10 if end - start < SHORT_RANGE_SECONDS else 1
    first = _round(start * per_second, "down")
    last = _round(end * per_second, "up")
    show_hours = max(first, last) >= 3600 * per_second
    return f"{_clock(first, per_second, show_hours)}–{_clock(last, per_second, show_hours)}"


def display_path(path: str | bytes | os.PathLike) -> str:
    """A path for one line of text output: non-printable characters escaped (newline as \\n, tab
    as \\t, ESC as \\x1b, other control characters as \\xNN; see clapdex.printable.one_line), so
    a file name cannot break a result over two lines or send terminal escape sequences."""
    return one_line(os.fsdecode(path))


def shown_path(path: str | bytes | os.PathLike) -> str:
    """A path as every human output shows it: relative to the current folder when it lies under
    it, else as indexed; escaped for one line (display_path)."""
    text = os.fsdecode(path)
    try:
        relative = os.path.relpath(text)
        if not relative.startswith(".."):
            text = relative
    except ValueError:  # another drive (Windows), or no current folder
        pass
    return display_path(text)


MIN_WIDTH = 40  # below this, lines stop being readable anyway


def output_width() -> int:
    """Columns that human output may use: $COLUMNS, else the terminal's width, else 80."""
    return max(shutil.get_terminal_size((80, 24)).columns, MIN_WIDTH)


def fit(line: str, width: int) -> str:
    """`line` cut to `width` characters, ending in '…' when cut."""
    return line if len(line) <= width else line[:width - 1] + "…"


def fit_list(prefix: str, items: list[str], width: int, empty: str = "") -> str:
    """prefix + comma-separated items, as many as fit in `width`, then ', +N more'."""
    if not items:
        return fit(prefix + empty, width)
    for shown in range(len(items), 0, -1):
        more = f", +{len(items) - shown} more" if shown < len(items) else ""
        line = prefix + ", ".join(items[:shown]) + more
        if len(line) <= width:
            return line
    return fit(prefix + items[0] + (f", +{len(items) - 1} more" if len(items) > 1 else ""), width)


def wrap_parts(prefix: str, parts: list[str], width: int, indent: str = "  ") -> list[str]:
    """`prefix` then the parts joined by ', ', broken between parts into lines of at most `width`
    characters; later lines start with `indent` (a part longer than a line is cut)."""
    lines, line, fresh = [], prefix, True
    for i, part in enumerate(parts):
        piece = part + ("," if i < len(parts) - 1 else "")
        if not fresh and len(line) + 1 + len(piece) > width:
            lines.append(line)
            line, fresh = indent, True
        line = line + piece if fresh else f"{line} {piece}"
        fresh = False
    lines.append(line)
    return [fit(text, width) for text in lines]


def plural(count: int, noun: str, plural_noun: str | None = None) -> str:
    """"1 file", "60 segments", "0 files"; plural_noun for irregular nouns."""
    return f"{count} {noun if count == 1 else plural_noun or noun + 's'}"


def _round(value: float, direction: str) -> int:
    if direction == "down":
        whole = math.floor(value + _EPSILON)
    elif direction == "up":
        whole = math.ceil(value - _EPSILON)
    else:
        whole = math.floor(value + 0.5)
    return max(whole, 0)


def _clock(units: int, per_second: int, show_hours: bool) -> str:
    """units of 1/per_second seconds -> [h:]mm:ss[.t]."""
    seconds, fraction = divmod(units, per_second)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{minutes:02d}:{secs:02d}" + (f".{fraction}" if per_second == 10 else "")
    return f"{hours}:{text}" if show_hours else text


def format_bytes(n: int | None) -> str:
    """"512 B", "1.5 KB", "3.2 GB"; "(none)" for None."""
    if n is None:
        return "(none)"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def flag_text(flags: list[str] | None, level_db: float | None,
              clipped_fraction: float | None) -> str:
    """A segment's flags for people: "silent (-70 dBFS)", "silent (digital silence)",
    "clipped (2.3%)"; "" when it has none (or was never measured)."""
    from clapdex.defaults import LEVEL_FLOOR_DB

    parts = []
    if flags and "silent" in flags:
        digital = level_db is not None and level_db <= LEVEL_FLOOR_DB
        parts.append("silent (digital silence)" if digital or level_db is None
                     else f"silent ({level_db:.0f} dBFS)")
    if flags and "clipped" in flags:
        parts.append(f"clipped ({100 * (clipped_fraction or 0):.1f}%)")
    return ", ".join(parts)
