"""A generator of hostile input for the indexer (issue 18): odd names, sample-rate bombs, odd sizes
and special files, each with what indexing must do with it.

    corpus = make_hostile_corpus(folder)   # {path: Expect}

`Expect.reason` None means the file must be indexed; otherwise it is a piece of the reason the run
must report for it (in the summary and in `clapdex status`). Paths are str (a name that is not
UTF-8 is a str with surrogate escapes, as os.fsdecode gives it). Audio is real (soundfile or
hand-written WAV headers); FIFOs, devices and symlinks are real too.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from tests.audio_collection import tone_mix


@dataclass(frozen=True)
class Expect:
    reason: str | None   # None: indexed


INDEXED = Expect(None)


def _wav(path: bytes, rate: int, frames: int, data: bytes | None = None) -> None:
    """A 16-bit mono PCM WAV whose header says `rate` Hz and `frames` frames."""
    data = np.zeros(frames, np.int16).tobytes() if data is None else data
    header = struct.pack("<4sI4s4sIHHIIHH4sI", b"RIFF", 36 + len(data), b"WAVE", b"fmt ", 16, 1, 1,
                         rate, rate * 2, 2, 16, b"data", len(data))
    with open(path, "wb") as handle:
        handle.write(header + data)


def _tone(path: bytes, seconds: float = 1.0, rate: int = 8000, freq: int = 440, **kwargs) -> None:
    soundfile.write(path, tone_mix([freq], seconds, rate, seed=freq), rate, **kwargs)


def make_hostile_corpus(root: str | os.PathLike) -> dict[str, Expect]:
    root_b = os.fsencode(root)
    os.makedirs(root_b, exist_ok=True)
    corpus: dict[str, Expect] = {}

    def at(*parts: bytes) -> bytes:
        path = os.path.join(root_b, *parts)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return path

    def expect(path: bytes, what: Expect) -> None:
        corpus[os.fsdecode(path)] = what

    # Names: not UTF-8, terminal escapes, forged lines, bidi, TeX, formulas, long, leading dash.
    names = [b"latin1-caf\xe9.wav", b"invalid-\xff\xfe.wav", b"esc-\x1b[2J-clear.wav",
             b"newline\nINJECTED LINE: all files ok.wav", b"tab\tname.wav",
             "bidi-\u202egnp.wav".encode(), b"tex-$x^2$.wav", b"=cmd|' calc'!a0.wav",
             b"-rf.wav", b"@sum.wav", "emoji-\U0001f600.wav".encode(),
             "nfd-cafe\u0301.wav".encode(), b"l" * 240 + b".wav", b"marker-\xef\xb7\x90.wav"]
    for i, name in enumerate(names):
        path = at(b"names", name)
        _tone(path, seconds=0.5 + 0.1 * i, freq=300 + 37 * i)
        expect(path, INDEXED)

    # Sample rates: plausible ones are indexed, absurd headers refused.
    for rate in (1000, 8000, 192000):
        path = at(b"rates", f"ok-{rate}.wav".encode())
        _tone(path, seconds=0.5, rate=rate, freq=400)
        expect(path, INDEXED)
    for rate, frames in ((1, 2000), (2, 70000), (800_000, 1000)):
        path = at(b"rates", f"bomb-{rate}hz.wav".encode())
        _wav(path, rate, frames)
        expect(path, Expect("implausible sample rate"))

    # Sizes.
    empty = at(b"sizes", b"empty.wav")
    open(empty, "wb").close()
    expect(empty, Expect("empty file (0 bytes)"))
    with open(at(b"sizes", b"one-byte.wav"), "wb") as handle:
        handle.write(b"R")
    expect(at(b"sizes", b"one-byte.wav"), Expect("not a readable audio file"))
    _wav(at(b"sizes", b"header-only.wav"), 8000, 0)
    expect(at(b"sizes", b"header-only.wav"), Expect("zero-length audio"))
    truncated = at(b"sizes", b"truncated.wav")
    _tone(truncated, seconds=3.0)
    with open(truncated, "r+b") as handle:
        handle.truncate(os.path.getsize(truncated) // 2)   # WAV data cut: what is left is used
    expect(truncated, INDEXED)
    _tone(at(b"sizes", b"long-20s.flac"), seconds=20.0, freq=900)
    expect(at(b"sizes", b"long-20s.flac"), INDEXED)
    with open(at(b"sizes", b"random.mp3"), "wb") as handle:
        handle.write(np.random.default_rng(1).bytes(4000))
    expect(at(b"sizes", b"random.mp3"), Expect("not a readable audio file"))
    with open(at(b"sizes", b"text.wav"), "w") as handle:
        handle.write("not audio\n" * 50)
    expect(at(b"sizes", b"text.wav"), Expect("not a readable audio file"))

    # Duplicates: a copy of an indexed file is indexed; a copy of an empty file is empty too.
    _tone(at(b"dups", b"a.wav"), freq=1234)
    _tone(at(b"dups", b"b.wav"), freq=1234)
    expect(at(b"dups", b"a.wav"), INDEXED)
    expect(at(b"dups", b"b.wav"), INDEXED)
    open(at(b"dups", b"empty-twin.wav"), "wb").close()
    expect(at(b"dups", b"empty-twin.wav"), Expect("empty file (0 bytes)"))

    # Special files: only regular files are read.
    fifo = at(b"special", b"fifo.wav")
    os.mkfifo(fifo)
    expect(fifo, Expect("not a regular file (a FIFO or pipe)"))
    os.symlink(b"/dev/zero", at(b"special", b"zero.flac"))
    expect(at(b"special", b"zero.flac"), Expect("not a regular file (a character device)"))
    os.symlink(b"/nowhere/at/all.wav", at(b"special", b"broken.wav"))
    expect(at(b"special", b"broken.wav"), Expect("broken symlink"))
    os.makedirs(at(b"special", b"folder.wav", b"x"), exist_ok=True)   # a folder named like audio
    os.symlink(b"..", at(b"special", b"loop"))                         # a symlink loop
    _tone(at(b"special", b"after-all-that.wav"), freq=777)
    expect(at(b"special", b"after-all-that.wav"), INDEXED)
    return corpus
