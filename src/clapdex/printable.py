"""Text from files and file systems made safe to print on one terminal line, or to export.

Paths and error texts may hold newlines, tabs, terminal escape sequences or bidi controls; printed
raw they break a result over several lines or restyle the terminal. `one_line` escapes them: it is
the one escaping path for human output (library error messages, every CLI verb's text output, and
the CLI's display helpers in clapdex.cli.format, which build on it). `spreadsheet_safe` is its
counterpart for CSV cells.
"""

from __future__ import annotations

_NAMED = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def one_line(text: str) -> str:
    """`text` with every non-printable character escaped: newline, tab and carriage return as \\n,
    \\t, \\r; other characters below U+0100 (ESC, DEL, C1 controls, no-break space) as \\xNN; other
    non-printables (zero-width and bidi controls, line separators) as \\uNNNN or \\UNNNNNNNN.

    A lone surrogate U+DC80..U+DCFF is how Python decodes a byte that is not valid UTF-8 in a file
    name (surrogateescape); it is shown as that byte, \\xNN. Printable text, spaces and non-ASCII
    letters are kept. Backslashes are not escaped, so Windows paths stay readable (the escaping is
    for display, not meant to be reversible).
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if 0xDC80 <= code <= 0xDCFF:  # surrogateescape: the original byte
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


FORMULA_PREFIX = "'"
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", FORMULA_PREFIX)


def spreadsheet_safe(value):
    """A CSV cell that a spreadsheet will not run as a formula (CSV injection): text starting with
    =, +, -, @, tab or carriage return gets a leading ' (FORMULA_PREFIX), so `=cmd|' /c calc'!a0`
    is written as `'=cmd|' /c calc'!a0` and shown as text. Text that already starts with ' gets
    one too, so removing one leading ' from a cell that has one always gives the original back.
    Numbers (also negative ones) and everything else are returned unchanged."""
    if isinstance(value, str) and value.startswith(_FORMULA_STARTS):
        return FORMULA_PREFIX + value
    return value
