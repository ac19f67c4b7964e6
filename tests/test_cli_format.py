"""clapdex.cli.format: times, time ranges and printable paths for human output."""

from __future__ import annotations

from pathlib import Path

import pytest

from clapdex.cli.format import display_path, format_time, format_time_range, plural
from clapdex.printable import one_line


@pytest.mark.parametrize("seconds, kwargs, text", [
    (0.0, {}, "00:00"),
    (7.0, {}, "00:07"),
    (65.4, {}, "01:05"),                      # a start rounds down
    (65.4, {"end": True}, "01:06"),           # an end rounds up
    (7.0, {"end": True}, "00:07"),
    (6.9999999999, {}, "00:07"),              # float noise is not a second less
    (7.0000000001, {"end": True}, "00:07"),   # ... nor a second more
    (599.5, {}, "09:59"),
    (3599.9, {}, "59:59"),
    (3600.0, {}, "1:00:00"),                  # h:mm:ss from one hour on
    (3725.0, {}, "1:02:05"),
    (36125.0, {}, "10:02:05"),
    (-0.5, {}, "00:00"),
    (65.44, {"tenths": True}, "01:05.4"),
    (65.44, {"tenths": True, "end": True}, "01:05.5"),
    (65.0, {"tenths": True}, "01:05.0"),
    (3725.25, {"tenths": True}, "1:02:05.2"),
    # tenths=None, nearest=True: what `clapdex search` printed before (tenths only when needed)
    (5.26, {"tenths": None, "nearest": True}, "00:05.3"),
    (5.98, {"tenths": None, "nearest": True}, "00:06"),
    (59.96, {"tenths": None, "nearest": True}, "01:00"),
    (3725.0, {"tenths": None, "nearest": True}, "1:02:05"),
    (5.5, {"nearest": True}, "00:06"),
])
def test_format_time(seconds, kwargs, text):
    assert format_time(seconds, **kwargs) == text


@pytest.mark.parametrize("start, end, text", [
    (54.0, 56.0, "00:54–00:56"),
    (54.3, 56.6, "00:54–00:57"),              # covers the window: start down, end up
    (0.0, 0.3, "00:00.0–00:00.3"),            # a short clip keeps its length visible
    (1.25, 2.5, "00:01.2–00:02.5"),
    (10.0, 11.99, "00:10.0–00:12.0"),         # just under 2 s: tenths
    (10.0, 12.0, "00:10–00:12"),              # 2 s: whole seconds
    (5.0, 5.0, "00:05.0–00:05.0"),
    (3598.0, 3602.0, "0:59:58–1:00:02"),      # both ends h:mm:ss when the end passes an hour
    (3661.0, 3663.0, "1:01:01–1:01:03"),
])
def test_format_time_range(start, end, text):
    assert format_time_range(start, end) == text


def test_a_range_always_covers_its_window():
    for start, end in [(0.05, 0.35), (1.01, 2.99), (59.95, 62.05), (120.4, 130.6)]:
        text = format_time_range(start, end)
        first, last = (_seconds(part) for part in text.split("–"))
        assert first <= start and last >= end, text


def _seconds(clock: str) -> float:
    total = 0.0
    for part in clock.split(":"):
        total = total * 60 + float(part)
    return total


@pytest.mark.parametrize("path, shown", [
    ("/music/kick.wav", "/music/kick.wav"),
    ("/music/ünïcode 音.wav", "/music/ünïcode 音.wav"),   # printable non-ASCII stays
    ("/a/line\nbreak.wav", "/a/line\\nbreak.wav"),
    ("/a/tab\there.wav", "/a/tab\\there.wav"),
    ("/a/\x1b[31mred.wav", "/a/\\x1b[31mred.wav"),
    ("/a/cr\r.wav", "/a/cr\\r.wav"),
    ("/a/bell\x07\x7f.wav", "/a/bell\\x07\\x7f.wav"),
    ("/a/\u202etxt.wav", "/a/\\u202etxt.wav"),             # bidi override cannot reorder the line
    ("/a/bad\udcff.wav", "/a/bad\\xff.wav"),               # undecodable byte (surrogateescape)
    ("C:\\music\\kick.wav", "C:\\music\\kick.wav"),        # backslashes are left alone
])
def test_display_path(path, shown):
    assert display_path(path) == shown
    assert "\n" not in display_path(path) and display_path(path).isprintable()


def test_display_path_takes_path_objects_and_bytes():
    assert display_path(Path("/a/b\nc.wav")) == "/a/b\\nc.wav"
    assert display_path(b"/a/b\tc.wav") == "/a/b\\tc.wav"


def test_one_line_escapes_error_texts_too():
    assert one_line("could not decode\nffmpeg: \x1b[1mbad") == "could not decode\\nffmpeg: \\x1b[1mbad"


def test_plural():
    assert plural(1, "file") == "1 file" and plural(0, "file") == "0 files"
    assert plural(60, "segment") == "60 segments" and plural(2, "match", "matches") == "2 matches"


def test_command_list_does_not_cut_a_summary_after_eg(monkeypatch):
    from click.testing import CliRunner

    from clapdex.cli import main

    monkeypatch.setenv("COLUMNS", "80")
    lines = CliRunner().invoke(main, ["--help"]).output.splitlines()
    audit = next(line for line in lines if line.strip().startswith("audit "))
    assert audit.rstrip().endswith("concept expression.")
    assert not any(line.rstrip().endswith("e.g.") for line in lines)
