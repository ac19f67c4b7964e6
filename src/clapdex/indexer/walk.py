"""Finding the audio files under the given paths, and hashing their content."""

from __future__ import annotations

import os
from stat import S_ISREG
from typing import Callable, Iterable

from clapdex.errors import PathNotFoundError
from clapdex.fileio import sha256_file

HASH_BLOCK = 1 << 20
UNLISTED = "cannot list folder"   # how a folder the walk could not read is reported


def find_audio_files(paths: Iterable[str | os.PathLike],
                     on_error: Callable[[str, str], None] | None = None) -> list[str]:
    """Absolute paths of the audio files under `paths`, in a deterministic order.

    Folders are walked recursively in sorted name order; only files with an audio extension
    (audio.AUDIO_EXTENSIONS) are taken, names starting with "." are skipped (hidden files, macOS
    "._" companions). Files named directly are taken whatever their extension. Only regular files
    are taken: reading a FIFO blocks and a device (a symlink to /dev/zero) never ends. Symlinks are
    followed; a folder already visited (a symlink loop) is not entered twice, and a file reached
    twice is listed once. A path that does not exist raises PathNotFoundError; an unreadable
    folder (reason starting with UNLISTED), a symlink with an audio name that leads nowhere, and
    a special file given directly or with an audio name, are reported through
    `on_error(path, reason)` and skipped.
    """
    from clapdex.audio import AUDIO_EXTENSIONS, special_file_kind

    given = [os.path.abspath(os.fspath(p)) for p in paths]
    for path in given:
        if not os.path.exists(path):
            raise PathNotFoundError(f"{path}: no such file or folder")
    found: list[str] = []
    seen_files: set[tuple[int, int]] = set()
    seen_dirs: set[tuple[int, int]] = set()

    def take(path: str) -> None:
        try:
            stat = os.stat(path)
        except OSError:
            return
        if not S_ISREG(stat.st_mode):
            if on_error:
                on_error(path, f"not a regular file ({special_file_kind(stat.st_mode)})")
            return
        key = (stat.st_dev, stat.st_ino)
        if key not in seen_files:
            seen_files.add(key)
            found.append(path)

    for path in given:
        if not os.path.isdir(path):
            take(path)
            continue
        stack = [path]
        while stack:
            folder = stack.pop()
            try:
                stat = os.stat(folder)
                if (stat.st_dev, stat.st_ino) in seen_dirs:
                    continue
                seen_dirs.add((stat.st_dev, stat.st_ino))
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError as error:
                if on_error:
                    on_error(folder, f"{UNLISTED} ({error.strerror or error})")
                continue
            subfolders = []
            for entry in entries:
                if entry.name.startswith("."):
                    continue
                is_audio_name = os.path.splitext(entry.name)[1].lower() in AUDIO_EXTENSIONS
                try:
                    if is_audio_name and entry.is_symlink() and not os.path.exists(entry.path):
                        if on_error:  # dangling, or a loop: say so rather than drop it silently
                            on_error(entry.path, "broken symlink")
                    elif entry.is_dir(follow_symlinks=True):
                        subfolders.append(entry.path)
                    elif is_audio_name:  # take() reports FIFOs, devices and sockets
                        take(entry.path)
                except OSError:
                    continue
            stack.extend(reversed(subfolders))  # pop() then visits them in sorted order
    return found


def content_hash(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file's bytes (what the manifest's content_hash column holds)."""
    return sha256_file(path, HASH_BLOCK)


def hash_or_error(path: str) -> tuple[str | None, str | None]:
    try:
        return content_hash(path), None
    except OSError as error:
        return None, f"cannot read file ({error.strerror or error})"
