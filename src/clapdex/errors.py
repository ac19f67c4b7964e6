"""Errors that users see.

Every user-facing failure is a ClapdexError: its message is one line that says what went wrong and,
where there is one, the fix. The CLI prints it without a traceback and exits non-zero.
"""

from __future__ import annotations

import os


class ClapdexError(Exception):
    """A failure caused by input or setup, explained in one line."""


class AudioError(ClapdexError):
    """A file that cannot be used as audio. Carries the path and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ModelError(ClapdexError):
    """The CLAP model cannot be loaded or used (missing weights, bad text model, ...)."""


class VocabularyError(ClapdexError):
    """A concept vocabulary or tag file that cannot be used."""


class DecompositionError(ClapdexError):
    """Input that the concept decomposition refuses (NaN/inf, wrong shape, ...)."""


class IndexNotFoundError(ClapdexError):
    """No index exists at the given location."""


class IndexMismatchError(ClapdexError):
    """The index was built with other settings (model, vocabulary, window, lambda)."""


class QueryError(ClapdexError):
    """A search or audit query that cannot be answered as written."""


class NotFoundError(QueryError):
    """A file or segment id that the index does not hold."""


class IndexDamagedError(ClapdexError):
    """The index's database cannot be read as a clapdex index (corrupt, empty, not a database)."""


class ReadOnlyIndexError(ClapdexError):
    """A command that writes was given an index (or a place for one) that cannot be written."""
