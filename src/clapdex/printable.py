"""Text from files and file systems made safe to print on one terminal line.

Paths and error texts may hold newlines, tabs, terminal escape sequences or bidi controls; printed
raw they break a result over several lines or restyle the terminal. `one_line` escapes them.
Library code uses it in error messages; the CLI's display helpers (clapdex.cli.format) build on it.
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
