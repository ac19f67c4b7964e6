"""Result rows as an 80-column text table or a CSV file."""

from __future__ import annotations

import csv
import dataclasses
import os
from typing import Sequence

from clapdex.errors import ClapdexError
from clapdex.printable import spreadsheet_safe


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


def write_csv(rows: Sequence, path: str | os.PathLike) -> None:
    """All fields of the result rows, one row each."""
    if not rows:
        return
    fields = [f.name for f in dataclasses.fields(rows[0])]
    try:
        with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            for row in rows:  # labels come from user files: no cell may run as a formula
                writer.writerow({k: ("" if v is None else spreadsheet_safe(v))
                                 for k, v in dataclasses.asdict(row).items()})
    except OSError as error:
        raise ClapdexError(f"{path}: cannot write CSV ({error.strerror or error})") from None
