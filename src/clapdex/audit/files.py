"""Which indexed file a user means: moved to clapdex.storage.naming (search needs it too);
re-exported here for the audit verbs."""

from clapdex.storage.naming import (AmbiguousFileError, FileNotIndexedError,  # noqa: F401
                                    FileNotInIndexError, IndexedFile, find_indexed_file,
                                    resolve_indexed_file)
