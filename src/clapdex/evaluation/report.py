"""Result rows as an 80-column text table or a CSV file."""

from __future__ import annotations

import dataclasses
import os
from typing import Sequence

from clapdex import fileio


def _cell(value, digits: int) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(rows: Sequence, columns: Sequence[tuple[str, str, int]]) -> str:
    """columns: (attribute, header, decimals). Widths fit the content; keep ≤ 8 columns for 80 chars."""
    cells = [[header for _, header, _ in columns]]
    cells += [[_cell(getattr(row, attr), digits) for attr, _, digits in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = []
    for n, line in enumerate(cells):
        parts = [line[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(line[1:], widths[1:])]
        lines.append("  ".join(parts).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_csv(rows: Sequence, path: str | os.PathLike) -> int:
    """All fields of the result rows (dataclasses), one row each (clapdex.fileio.write_csv)."""
    return fileio.write_csv([dataclasses.asdict(row) for row in rows], path)
