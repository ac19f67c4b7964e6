"""Long files stored in parts, so that an interrupted run does not lose their encoding.

Encoding a 2-hour file takes many minutes. While a file is being encoded, the embeddings of its
first windows are saved in the index folder, `partial/<content hash>.npz`, every PART_WINDOWS
windows and when the run is interrupted (Ctrl-C, SIGTERM). The next run that meets the same
content with the same model settings takes those windows from the file instead of the encoder and
encodes only the rest. The database gets a file's rows only once all its windows are embedded,
so a part-stored file never shows as indexed (nor in any search); its parts file is deleted once
the file is stored, or when it no longer matches the index's settings.
"""

from __future__ import annotations

import os
import tempfile
import zipfile
from pathlib import Path

import numpy as np

PART_WINDOWS = 128   # save every this many embedded windows (~15 minutes of audio at 7 s)
FOLDER = "partial"


class Parts:
    """The parts files of one index, for the settings the run encodes with."""

    def __init__(self, index_root: str | os.PathLike, settings):
        self.folder = Path(index_root) / FOLDER
        self.key = "|".join(str(v) for v in (
            settings.encoder_fingerprint, settings.sample_rate, settings.window_seconds,
            settings.hop_seconds, settings.projection_hash))

    def _path(self, content_hash: str) -> Path:
        return self.folder / f"{content_hash}.npz"

    def load(self, content_hash: str | None) -> tuple[np.ndarray, np.ndarray] | None:
        """(embeddings (n, d), window starts (n,)) saved for this content, if they match."""
        if not content_hash:
            return None
        try:
            with np.load(self._path(content_hash), allow_pickle=False) as data:
                if str(data["key"]) != self.key:
                    return None
                return np.asarray(data["embeddings"], np.float32), np.asarray(data["starts"])
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None

    def save(self, content_hash: str | None, embeddings: np.ndarray, starts) -> bool:
        """Whether the embeddings were saved. Short files too: on an interrupt, the files that
        wait for the audio mean of a first run are saved, so that none of them is lost and the
        resumed run estimates μ_A from the same windows as one uninterrupted run."""
        if not content_hash or not len(embeddings):
            return False
        try:
            self.folder.mkdir(exist_ok=True)
            fd, temporary = tempfile.mkstemp(prefix=".part-", suffix=".tmp", dir=self.folder)
            try:
                with os.fdopen(fd, "wb") as handle:
                    np.savez(handle, key=np.array(self.key), embeddings=embeddings,
                             starts=np.asarray(starts[:len(embeddings)], np.float64))
                os.replace(temporary, self._path(content_hash))
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        except OSError:
            return False  # only costs encoding the file again
        return True

    def forget(self, content_hash: str) -> None:
        self._path(content_hash).unlink(missing_ok=True)

    def clean(self, store) -> None:
        """Delete parts files of files now stored, of other settings, and leftover temporaries."""
        if not self.folder.is_dir():
            return
        for path in self.folder.iterdir():
            if path.suffix == ".tmp":
                path.unlink(missing_ok=True)
            elif path.suffix == ".npz":
                stored = any(row.status == "indexed" for row in store.files_by_hash(path.stem))
                if stored or self.load(path.stem) is None:
                    path.unlink(missing_ok=True)
