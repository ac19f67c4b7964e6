"""CSV export of audit rows: clapdex.fileio.write_csv (one copy for audit and evaluation),
re-exported here. JSON output goes through clapdex.to_jsonable."""

from clapdex.fileio import csv_cell, write_csv  # noqa: F401
