"""CSV export of audit rows. JSON output goes through clapdex.to_jsonable.

A list of concepts ({"concept", "weight"} dicts) becomes one cell, "dog=0.41; bark=0.2". Text cells
that a spreadsheet would run as a formula get a leading ' (clapdex.printable.spreadsheet_safe).
File names that are not UTF-8 are written as their original bytes (lossless)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Iterable

from clapdex.errors import ClapdexError
from clapdex.printable import spreadsheet_safe


def write_csv(rows: Iterable[dict], path: str | Path) -> int:
    """Write rows (dicts with the same keys, new keys appended as columns) to `path`; returns count."""
    rows = list(rows)
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    try:
        with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows({k: csv_cell(v) for k, v in row.items()} for row in rows)
    except OSError as error:
        raise ClapdexError(f"cannot write {path}: {error.strerror}") from None
    return len(rows)


def csv_cell(value):
    """A value as one CSV cell: concept lists joined as name=weight (full float precision), text
    that could start a formula prefixed with '."""
    if isinstance(value, list):
        value = "; ".join(f"{item['concept']}={item['weight']!r}" for item in value)
    return spreadsheet_safe(value)
