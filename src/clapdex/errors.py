"""Errors that users see, all of them (one module, so a caller can catch by kind).

Every user-facing failure is a ClapdexError: its message is one line that says what went wrong.
The library does not name CLI commands: where a known action fixes the error, `error.remedy` is a
Remedy naming it, and the front end phrases it as its own command (the CLI prints
`error: <message>; <how to fix it>` without a traceback and exits 1; the web app adds the same
words and the remedy as JSON).

    ClapdexError
    ├── AudioError            a file that cannot be used as audio (.path, .reason)
    ├── ModelError            the model cannot be loaded or used; an unknown encoder name
    ├── VocabularyError       a vocabulary or tag file that cannot be used
    ├── DecompositionError    input or settings the decomposition refuses (λ and max-concepts)
    ├── PathNotFoundError     a file or folder to index does not exist
    ├── IndexNotFoundError    no index at the given location
    ├── IndexDamagedError     the database cannot be read as a clapdex index
    │   └── UnknownRootError      a file stored under a root the index does not define
    ├── ReadOnlyIndexError    a write to an index (or a place for one) that cannot be written
    ├── IndexMismatchError    the index was built with other settings (model, vocabulary, ...)
    ├── IndexChangedError     another process rebuilt the index while this one was writing it
    ├── RootError             a root (--root) that cannot be used: name, location, nesting
    ├── DenseIndexError       a FAISS factory string or FAISS file that cannot be used
    │   └── DenseSaveError        the FAISS file could not be written; the old one is kept
    ├── ProjectionError       a projection file that cannot be used
    ├── QueryError            a search or audit query that cannot be answered as written
    │   ├── ExpressionError       an audit expression that does not parse (.text, .position)
    │   ├── UnknownConceptError   a concept name not in the vocabulary
    │   ├── NotFoundError         no file or segment with the given id (the web app's 404)
    │   ├── FileNotInIndexError   no indexed path matches a file name
    │   ├── AmbiguousFileError    a file name that is the end of several indexed paths
    │   └── FileNotIndexedError   a file recorded but not indexed (.path, .status, .error)
    ├── DatasetError          an evaluation dataset that cannot be used
    ├── SweepError            sweep settings or a plot request that cannot be used
    └── PromptError           a class-prompt template that cannot be filled

The modules that raise them re-export them (e.g. clapdex.storage.naming.AmbiguousFileError).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from clapdex.printable import one_line


@dataclass(frozen=True)
class Remedy:
    """What fixes an error, for a front end to phrase as its command.

    action:
      "rebuild"   rebuild the index from its audio (`index`)
      "reindex"   re-decompose the index with new `settings` ("vocabulary", "lam", "max_concepts")
      "model"     use the model the index was built with (or rebuild it)
      "projection" give the index's projection or none (it applies its own), or rebuild it
      "create"    no index yet: create one (`index`)
      "finetune"  train the projection again with this model
      "open-writable" open the index once where it can be written (it is upgraded in place)
      "list-concepts" see the index's concept names
      "list-vocabulary" see a vocabulary's concept names
    """

    action: str
    index: str | None = None
    settings: tuple[str, ...] = ()


class ClapdexError(Exception):
    """A failure caused by input or setup, explained in one line; `remedy` (a Remedy or None)
    names what fixes it."""

    remedy: Remedy | None = None

    def __init__(self, *args, remedy: Remedy | None = None):
        super().__init__(*args)
        self.remedy = remedy


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


class UnknownRootError(IndexDamagedError):
    """A file row stored under a root (storage/roots.py) that the index does not define."""


class RootError(ClapdexError):
    """A root that cannot be used: a bad name, a location that is not a folder, roots that nest."""


class IndexChangedError(ClapdexError):
    """Another process rebuilt the index while this one was writing to it."""


class ReadOnlyIndexError(ClapdexError):
    """A command that writes was given an index (or a place for one) that cannot be written."""


class DatasetError(ClapdexError):
    """An evaluation dataset (folder or CSV) that cannot be used as written."""


class SweepError(ClapdexError):
    """Sweep settings or a plot request that cannot be used."""


class PromptError(ClapdexError):
    """A class-prompt template that cannot be filled."""


class PathNotFoundError(ClapdexError):
    """A file or folder given on the command line does not exist."""


class ExpressionError(QueryError):
    """A concept expression that cannot be parsed; `position` is 0-based in the text."""

    def __init__(self, message: str, text: str, position: int):
        self.text = text
        self.position = position
        shown = text if len(text) <= 200 else text[:200] + "..."
        super().__init__(f"{message} at character {position + 1} of {shown!r}")


class UnknownConceptError(QueryError):
    """A concept name that is not in the index's vocabulary."""


class ProjectionError(ClapdexError):
    """A projection file that cannot be used (unreadable, wrong encoder, wrong dimension)."""


class DenseIndexError(ClapdexError):
    """A FAISS factory string or a dense index file that cannot be used."""


class DenseSaveError(DenseIndexError):
    """The FAISS file could not be written (disk full, ...); the previous file is unchanged."""


class FileNotInIndexError(QueryError):
    """No indexed path matches the name."""


class AmbiguousFileError(QueryError):
    """The name is the end of several indexed paths."""


class FileNotIndexedError(QueryError):
    """The file is in the index's file table, but has no segments (its indexing failed)."""

    def __init__(self, path: str, status: str, error: str | None):
        self.path, self.status, self.error = path, status, error
        if status == "error":
            reason = one_line(error or "no reason recorded")
            message = f"{one_line(path)} could not be indexed: {reason}"
        else:
            message = f"{one_line(path)} is not indexed (status {status!r})"
        super().__init__(message)
