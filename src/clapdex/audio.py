"""Decode audio files and cut them into deterministic, fixed-length windows.

Decoding uses soundfile (libsndfile: WAV, AIFF, FLAC, OGG/Vorbis/Opus, MP3), sample rates from
1 kHz to 768 kHz (MIN_SAMPLE_RATE, MAX_SAMPLE_RATE), any channel count, integer or float samples. Channels are downmixed to mono (their mean) and resampled
with soxr (quality "HQ"; deterministic).

Windows (`window_seconds` long, starting every `hop_seconds`, hop defaults to the window):
- Windows start at 0, hop, 2*hop, ... as long as they fit in the audio.
- If those windows do not reach the end of the audio, one more window is added that ends exactly at
  the end of the audio. It holds only real audio and overlaps the previous window; its Window has
  its true start and end times. So every sample of the file lies in at least one window.
- Audio shorter than one window gives a single window filled by repeating the audio (as msclap
  does); its Window is (0, duration).
Window times are sample positions at the target rate divided by that rate.

Streaming: `iter_windows` reads the file in blocks and resamples with `soxr.ResampleStream`.
`load_audio` decodes through the same blocks and both cut with the same code, so
`iter_windows(path, ...)` yields exactly (bit for bit) what `cut_windows(load_audio(path, ...))`
returns. soxr's streamed output does not depend on how the input is split into chunks.

Bad input raises AudioError(path, reason): missing file, directory, not a regular file (a FIFO would
block the reader, a device never ends), permission denied, empty file, not audio, a header claiming
an implausible sample rate or more than 1 s of audio per MIN_BYTES_PER_SECOND bytes (a few KB must
not become hours of audio at the model's rate), zero-length audio, NaN/inf samples, decoder errors.
Memory stays bounded whatever a header says (blocks shrink with the channel count and upsampling).
Damaged files (docs/indexing.md "Damaged, silent and clipped audio"): the header's length is not
trusted. Decoding goes on until the data really ends or the decoder reports damage (e.g. FLAC
"lost sync"); then the part before the damage is re-read in small steps, so what decodes is used
whatever the format. `DecodeReport.warning` tells the truth about it ("header says 12.0 s, decoded
6.0 s"): the claim is the WAV data chunk, the AIFF COMM chunk, FLAC's STREAMINFO or an MP3's
Xing/Info frame count (an MP3 without one has no claim to compare); an OGG stream whose last page
lacks its end-of-stream mark was cut short. Nothing decodable, or less than MIN_AUDIO_SECONDS, is
refused with AudioError (short audio is not repeated from a few samples into a buzz).
`DecodeReport.levels` measures each window's RMS level and clipped samples (at the source rate,
before downmixing and resampling), which the indexer turns into silent / clipped flags.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import soundfile
import soxr

from clapdex.defaults import (CLIP_LEVEL, CLIP_RUN, CLIPPED_FRACTION, LEVEL_FLOOR_DB,
                              MIN_AUDIO_SECONDS, SILENT_LEVEL_DB, TRUNCATION_TOLERANCE_SECONDS)
from clapdex.errors import AudioError
from clapdex.native_stderr import quiet_native_stderr

AUDIO_EXTENSIONS: frozenset[str] = frozenset(
    {".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff"}
)

MAX_LOAD_SECONDS = 3600.0    # load_audio refuses longer files (use iter_windows): ~0.6 GB at 44.1 kHz
_BLOCK_FRAMES = 1 << 16      # source frames decoded per block (fewer for many channels or upsampling)
_BLOCK_SAMPLES = 1 << 19     # at most this many samples per block, in and out of the resampler
_RECOVER_FRAMES = 1024       # read size when re-reading up to damage (FLAC blocks are 4096 frames)
_LEVEL_BIN_SECONDS = 0.01    # levels are kept per 10 ms of source audio (bounded memory for 1 h)
# Limits on what a header may claim (a 4 KB WAV at 1 Hz would otherwise become 33 minutes of audio
# at the model's rate). Real audio lies far inside: 8 kHz is the lowest common rate, 768 kHz the
# highest; FLAC of digital silence at 8 kHz still takes ~23 bytes per second.
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 768_000
MIN_BYTES_PER_SECOND = 4


@dataclass(frozen=True)
class Window:
    """Where a window lies in its file, in seconds."""
    start: float
    end: float


@dataclass(frozen=True)
class AudioInfo:
    """The source file: its duration, native sample rate, channel count and frame count, and
    (load_audio) the truncation warning of DecodeReport.warning."""
    duration: float
    sample_rate: int
    channels: int
    frames: int
    warning: str | None = None


@dataclass(frozen=True)
class WindowLevels:
    """Per window: RMS level in dBFS (LEVEL_FLOOR_DB for digital silence) and the fraction of its
    source samples that are clipped. The flags' thresholds live in clapdex.defaults."""
    level_db: np.ndarray          # (n,) float64
    clipped_fraction: np.ndarray  # (n,) float64, 0..1

    @property
    def silent(self) -> np.ndarray:
        return self.level_db < SILENT_LEVEL_DB

    @property
    def clipped(self) -> np.ndarray:
        return self.clipped_fraction >= CLIPPED_FRACTION


def probe(path: str | os.PathLike) -> AudioInfo:
    """Read the header only. Frames are what the header claims (a truncated file may hold fewer)."""
    with _open(path) as sound:
        return _info_of(path, sound)


def load_audio(path: str | os.PathLike, sample_rate: int,
               max_seconds: float = MAX_LOAD_SECONDS) -> tuple[np.ndarray, AudioInfo]:
    """Decode the whole file as float32 mono at `sample_rate`.

    The AudioInfo returned describes what was actually decoded (a truncated file reports fewer
    frames than its header). Files longer than `max_seconds` are refused: stream them with
    iter_windows instead.
    """
    chunks: list[np.ndarray] = []
    decoded = DecodeReport()
    for chunk in _decode(path, sample_rate, decoded, max_seconds=max_seconds):
        chunks.append(chunk)
    samples = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    info = decoded.info
    info = AudioInfo(duration=decoded.frames / info.sample_rate, sample_rate=info.sample_rate,
                     channels=info.channels, frames=decoded.frames, warning=decoded.warning)
    return samples, info


def cut_windows(samples: np.ndarray, sample_rate: int, window_seconds: float,
                hop_seconds: float | None = None) -> tuple[np.ndarray, list[Window]]:
    """Cut mono audio into windows (see the module docstring). Returns ((n, window_samples), times)."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim != 1 or samples.size == 0:
        raise ValueError("cut_windows needs non-empty mono audio (a 1-d array)")
    cutter = _WindowCutter(sample_rate, window_seconds, hop_seconds)
    pairs = [*cutter.feed(samples), *cutter.finish()]
    return _stack(pairs, cutter.window_samples)


def iter_windows(path: str | os.PathLike, sample_rate: int, window_seconds: float,
                 hop_seconds: float | None = None,
                 batch: int = 64, report: "DecodeReport | None" = None
                 ) -> Iterator[tuple[np.ndarray, list[Window]]]:
    """Stream a file's windows in batches of at most `batch`, in bounded memory.

    Yields exactly what cut_windows(load_audio(path, sample_rate)[0], ...) returns, split in batches.
    Pass a DecodeReport to learn, once iteration ends, what decoding found (warning, levels).
    """
    if batch < 1:
        raise ValueError("batch must be at least 1")
    cutter = _WindowCutter(sample_rate, window_seconds, hop_seconds)
    pending: list[tuple[np.ndarray, Window]] = []
    for chunk in _decode(path, sample_rate, DecodeReport() if report is None else report):
        for pair in cutter.feed(chunk):
            pending.append(pair)
            if len(pending) == batch:
                yield _stack(pending, cutter.window_samples)
                pending = []
    pending.extend(cutter.finish())
    if pending:
        yield _stack(pending, cutter.window_samples)


# --- decoding -----------------------------------------------------------------------------------

class DecodeReport:
    """What decoding one file found: its header, the frames really decoded, what the header
    claimed, whether damage stopped the decoder (and why), and per 10 ms of source audio the
    energy and the clipped samples that `levels` turns into per-window measures."""

    def __init__(self) -> None:
        self.info: AudioInfo | None = None
        self.frames = 0
        self.claimed_frames: int | None = None  # None: the format states no length (OGG)
        self.no_end_mark = False                # OGG: the last page lacks its end-of-stream flag
        self.stopped: str | None = None         # the decoder's reason, when damage ended decoding
        self._bin = 1
        self._bins: list[tuple[int, np.ndarray, np.ndarray]] = []  # (first bin, energy, clipped)

    @property
    def truncated(self) -> bool:
        return self.warning is not None

    @property
    def warning(self) -> str | None:
        """One line when the file is damaged or cut short: "header says 12.0 s, decoded 6.0 s"."""
        if self.info is None:
            return None
        rate = self.info.sample_rate
        decoded = _duration(self.frames / rate)
        short = (self.claimed_frames is not None and
                 (self.claimed_frames - self.frames) / rate > TRUNCATION_TOLERANCE_SECONDS)
        if short:
            text = f"header says {_duration(self.claimed_frames / rate)}, decoded {decoded}"
        elif self.no_end_mark:
            text = f"cut short (the stream has no end-of-stream mark), decoded {decoded}"
        elif self.stopped:
            text = f"decoded {decoded}"
        else:
            return None
        return text + (f"; decoding stopped: {self.stopped}" if self.stopped else "")

    def _measure(self, block: np.ndarray, mono: np.ndarray) -> None:
        """Energy (mono) and clipped frames (any channel at full scale for CLIP_RUN samples) of a
        block that starts at frame self.frames, summed per bin."""
        n, first = len(block), self.frames // self._bin
        # offsets in the block where a new bin starts (bins are contiguous runs of frames)
        edges = np.arange(first * self._bin, self.frames + n, self._bin) - self.frames
        edges[0] = 0
        energy = np.add.reduceat(np.square(mono, dtype=np.float64), edges)
        clipped = np.zeros(len(edges))
        hot = np.abs(block) >= CLIP_LEVEL
        if n >= CLIP_RUN and hot.any():
            run = hot[: n - CLIP_RUN + 1].copy()
            for k in range(1, CLIP_RUN):
                run &= hot[k: n - CLIP_RUN + 1 + k]
            marked = np.zeros_like(hot)
            for k in range(CLIP_RUN):
                marked[k: n - CLIP_RUN + 1 + k] |= run
            clipped = np.add.reduceat(marked.any(axis=1).astype(np.float64), edges)
        self._bins.append((first, energy, clipped))

    def levels(self, windows: list[Window]) -> WindowLevels:
        """RMS level and clipped fraction of each window (times in seconds), from the source audio
        it covers (to 10 ms at its edges; a short file's one window: the file itself)."""
        total = -(-self.frames // self._bin) if self.frames else 0
        energy, clipped, count = np.zeros(total), np.zeros(total), np.full(total, float(self._bin))
        if total:
            count[-1] = self.frames - (total - 1) * self._bin
        for first, e, c in self._bins:
            energy[first:first + len(e)] += e
            clipped[first:first + len(c)] += c
        sums = [np.concatenate([[0.0], np.cumsum(a)]) for a in (energy, clipped, count)]
        rate = self.info.sample_rate if self.info else 1
        starts = np.array([w.start for w in windows], np.float64) * rate / self._bin
        ends = np.array([w.end for w in windows], np.float64) * rate / self._bin
        lo = np.clip(np.floor(starts + 1e-9).astype(np.int64), 0, total)
        hi = np.clip(np.ceil(ends - 1e-9).astype(np.int64), 0, total)
        hi = np.maximum(hi, np.minimum(lo + 1, total))
        e, c, n = (s[hi] - s[lo] for s in sums)
        n = np.maximum(n, 1.0)
        with np.errstate(divide="ignore"):
            level = 10 * np.log10(e / n)
        return WindowLevels(level_db=np.maximum(level, LEVEL_FLOOR_DB),
                            clipped_fraction=np.minimum(c / n, 1.0))


def _duration(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _open(path: str | os.PathLike) -> soundfile.SoundFile:
    """Open a file for decoding, turning every way it can fail into AudioError."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise AudioError(path, "file not found") from None
    except OSError as error:
        raise AudioError(path, f"cannot read file ({error.strerror or error})") from None
    if stat.S_ISDIR(mode):
        raise AudioError(path, "is a directory, not an audio file")
    if not stat.S_ISREG(mode):  # reading a FIFO blocks, /dev/zero never ends
        raise AudioError(path, f"not a regular file ({special_file_kind(mode)})")
    try:
        with open(path, "rb") as handle:  # fails early and plainly on permissions
            if not handle.read(1):
                raise AudioError(path, "empty file (0 bytes)")
    except PermissionError:
        raise AudioError(path, "permission denied") from None
    except OSError as error:
        raise AudioError(path, f"cannot read file ({error.strerror or error})") from None
    try:
        # Bytes: soundfile encodes a str name strictly, which fails on names that are not UTF-8.
        with quiet_native_stderr():  # libmpg123's notes on a file that is not MP3
            return soundfile.SoundFile(os.fsencode(path))
    except (soundfile.SoundFileError, OSError, ValueError) as error:
        reason = _short(error)
        if "possibly a pipe" in reason:  # libsndfile's guess; we checked it is a regular file
            reason = "not recognised as audio: damaged, or not the format its name says"
        raise AudioError(path, f"not a readable audio file ({reason})") from None


def special_file_kind(mode: int) -> str:
    """What a file that is not a regular file is, for a reason shown to people."""
    for test, kind in ((stat.S_ISFIFO, "a FIFO or pipe"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISDIR, "a directory")):
        if test(mode):
            return kind
    return "a special file"


def _info_of(path: str | os.PathLike, sound: soundfile.SoundFile) -> AudioInfo:
    if sound.samplerate <= 0 or sound.channels <= 0:
        raise AudioError(path, "invalid header (no sample rate or channels)")
    if sound.frames <= 0:
        raise AudioError(path, "zero-length audio (no samples; empty or truncated)")
    if not MIN_SAMPLE_RATE <= sound.samplerate <= MAX_SAMPLE_RATE:
        raise AudioError(path, f"implausible sample rate {sound.samplerate} Hz in the header "
                               f"(accepted: {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz)")
    claimed, size = sound.frames / sound.samplerate, os.stat(path).st_size
    if claimed * MIN_BYTES_PER_SECOND > size:
        raise AudioError(path, f"implausible header: {claimed:.0f} s of audio in {size} bytes")
    return AudioInfo(duration=sound.frames / sound.samplerate, sample_rate=sound.samplerate,
                     channels=sound.channels, frames=sound.frames)


def _decode(path: str | os.PathLike, sample_rate: int, decoded: DecodeReport,
            max_seconds: float | None = None) -> Iterator[np.ndarray]:
    """Yield float32 mono chunks at `sample_rate`; fills `decoded` as it goes."""
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    with _open(path) as sound:
        info = decoded.info = _info_of(path, sound)
        decoded.claimed_frames, decoded.no_end_mark = _header_claim(path, sound)
        decoded._bin = max(1, round(info.sample_rate * _LEVEL_BIN_SECONDS))
        if max_seconds is not None and info.duration > max_seconds:
            raise AudioError(path, f"too long to load whole ({info.duration:.0f} s > "
                                   f"{max_seconds:.0f} s); stream it with iter_windows")
        resampler = None
        if info.sample_rate != sample_rate:
            resampler = soxr.ResampleStream(info.sample_rate, sample_rate, 1,
                                            dtype="float32", quality="HQ")
        # Read until the data really ends: headers of truncated files overstate the length.
        for block in _blocks(path, sound, _block_frames(info, sample_rate), decoded):
            mono = _downmix(block)
            if not np.isfinite(mono).all():
                raise AudioError(path, "contains NaN or infinite samples")
            decoded._measure(block, mono)
            decoded.frames += len(block)
            if max_seconds is not None and decoded.frames > max_seconds * info.sample_rate:
                raise AudioError(path, f"too long to load whole (> {max_seconds:.0f} s); "
                                       "stream it with iter_windows")
            out = resampler.resample_chunk(mono, last=False) if resampler else mono
            if out.size:
                yield out
        if decoded.frames == 0 and decoded.stopped:
            raise AudioError(path, f"decoding failed, file damaged or truncated ({decoded.stopped})")
        if decoded.frames == 0:
            raise AudioError(path, "zero-length audio (no samples could be decoded)")
        if decoded.frames < MIN_AUDIO_SECONDS * info.sample_rate:
            least = f"at least {_duration(MIN_AUDIO_SECONDS)}"
            raise AudioError(path, f"{decoded.warning}: too short to index ({least})"
                             if decoded.warning else f"too short to index: only "
                             f"{_duration(decoded.frames / info.sample_rate)} of audio ({least})")
        if resampler:
            out = resampler.resample_chunk(np.zeros(0, np.float32), last=True)
            if out.size:
                yield out


def _block_frames(info: AudioInfo, sample_rate: int) -> int:
    """Source frames per block such that neither the block nor its resampled output holds more
    than _BLOCK_SAMPLES samples: memory stays bounded whatever the channel count or rate ratio."""
    upsampling = max(1.0, sample_rate / info.sample_rate)
    return max(1, min(_BLOCK_FRAMES, _BLOCK_SAMPLES // info.channels,
                      int(_BLOCK_SAMPLES / upsampling)))


def _blocks(path: str | os.PathLike, sound: soundfile.SoundFile, frames: int,
            decoded: DecodeReport) -> Iterator[np.ndarray]:
    """The file's blocks until its data ends. When the decoder reports damage, the audio from the
    last whole block up to the damage is re-read in small steps (a failed read returns nothing)
    and decoding stops there, with the reason in `decoded.stopped`."""
    while True:
        try:
            block = sound.read(frames, dtype="float32", always_2d=True)
        except (soundfile.SoundFileError, OSError, ValueError) as error:
            decoded.stopped = _short(error)
            yield from _reread_up_to_damage(path, decoded.frames)
            return
        if len(block):
            yield block
        if len(block) < frames:
            return


def _reread_up_to_damage(path: str | os.PathLike, start: int) -> Iterator[np.ndarray]:
    try:  # a fresh decoder: the failed one may be unable even to seek
        with soundfile.SoundFile(os.fsencode(path)) as sound:
            sound.seek(start)
            while True:
                block = sound.read(_RECOVER_FRAMES, dtype="float32", always_2d=True)
                if len(block):
                    yield block
                if len(block) < _RECOVER_FRAMES:
                    return
    except (soundfile.SoundFileError, OSError, ValueError):
        return  # the damage: what came before it has been yielded


def _header_claim(path: str | os.PathLike, sound: soundfile.SoundFile) -> tuple[int | None, bool]:
    """(frames the header claims, whether an OGG stream lacks its end mark). libsndfile reports
    what a cut WAV or AIFF file holds, so their headers are read here; FLAC and MP3 (Xing/Info)
    lengths are what libsndfile reports; OGG states no length."""
    try:
        with open(path, "rb") as handle:
            if sound.format in ("WAV", "WAVEX"):
                return _riff_frames(handle) or sound.frames, False
            if sound.format == "AIFF":
                return _aiff_frames(handle) or sound.frames, False
            if sound.format == "OGG":
                return None, not _ogg_ends_cleanly(handle)
    except (OSError, ValueError, IndexError):
        pass
    return sound.frames, False


def _riff_frames(handle) -> int | None:
    """Frames the 'data' chunk claims (its byte size / block align), None when unknown."""
    head = handle.read(12)
    if head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return None
    align = None
    for _ in range(64):
        chunk = handle.read(8)
        if len(chunk) < 8:
            return None
        kind, size = chunk[:4], int.from_bytes(chunk[4:], "little")
        if kind == b"fmt ":
            body = handle.read(size + (size & 1))
            align = int.from_bytes(body[12:14], "little")
        elif kind == b"data":
            if not align or size in (0, 0xFFFFFFFF):  # streamed WAVs leave the size open
                return None
            return size // align
        else:
            handle.seek(size + (size & 1), os.SEEK_CUR)
    return None


def _aiff_frames(handle) -> int | None:
    """numSampleFrames of the COMM chunk."""
    head = handle.read(12)
    if head[:4] != b"FORM" or head[8:12] not in (b"AIFF", b"AIFC"):
        return None
    for _ in range(64):
        chunk = handle.read(8)
        if len(chunk) < 8:
            return None
        kind, size = chunk[:4], int.from_bytes(chunk[4:], "big")
        if kind == b"COMM":
            return int.from_bytes(handle.read(6)[2:6], "big") or None
        handle.seek(size + (size & 1), os.SEEK_CUR)
    return None


def _ogg_ends_cleanly(handle) -> bool:
    """Whether the file ends with a whole OGG page that carries the end-of-stream flag."""
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    handle.seek(max(0, size - 65536))  # a page is at most 65,307 bytes
    tail = handle.read()
    at = tail.rfind(b"OggS")
    while at >= 0:
        if at + 27 <= len(tail):
            segments = tail[at + 26]
            table = tail[at + 27: at + 27 + segments]
            if len(table) == segments and at + 27 + segments + sum(table) == len(tail):
                return bool(tail[at + 5] & 0x04)
        at = tail.rfind(b"OggS", 0, at)
    return False


def _downmix(block: np.ndarray) -> np.ndarray:
    if block.shape[1] == 1:
        return np.ascontiguousarray(block[:, 0])
    return block.mean(axis=1, dtype=np.float64).astype(np.float32)


def _short(error: Exception) -> str:
    text = getattr(error, "error_string", None) or str(error)  # libsndfile's reason, without the path
    text = " ".join(text.split()).rstrip(".").removeprefix("Error : ")
    return text or type(error).__name__


# --- windowing ----------------------------------------------------------------------------------

class _WindowCutter:
    """Cuts audio fed in chunks into windows; the one implementation behind cut_windows and
    iter_windows. Keeps only the last window's worth of samples between chunks."""

    def __init__(self, sample_rate: int, window_seconds: float, hop_seconds: float | None):
        if sample_rate <= 0:
            raise ValueError("sample_rate must be positive")
        hop_seconds = window_seconds if hop_seconds is None else hop_seconds
        self.sample_rate = sample_rate
        self.window_samples = round(window_seconds * sample_rate)
        self.hop_samples = round(hop_seconds * sample_rate)
        if self.window_samples < 1:
            raise ValueError(f"window_seconds={window_seconds} is shorter than one sample")
        if not 1 <= self.hop_samples <= self.window_samples:
            raise ValueError("hop_seconds must be positive and at most window_seconds "
                             "(a longer hop would leave audio uncovered)")
        self._tail = np.zeros(0, np.float32)  # the most recent samples, at most one window
        self._tail_start = 0                  # position of _tail[0] in the audio
        self._next_start = 0                  # start of the next regular window
        self._covered = 0                     # end of the last window emitted

    def feed(self, chunk: np.ndarray) -> Iterator[tuple[np.ndarray, Window]]:
        audio = np.concatenate([self._tail, chunk]) if self._tail.size else chunk
        total = self._tail_start + len(audio)
        while self._next_start + self.window_samples <= total:
            yield self._window(audio, self._next_start)
            self._next_start += self.hop_samples
        keep = min(len(audio), self.window_samples)
        self._tail = audio[len(audio) - keep:]
        self._tail_start = total - keep

    def finish(self) -> Iterable[tuple[np.ndarray, Window]]:
        total = self._tail_start + len(self._tail)
        if total == 0 or self._covered == total:
            return []
        if total < self.window_samples:  # short audio: repeat it to fill one window
            repeats = math.ceil(self.window_samples / total)
            filled = np.tile(self._tail, repeats)[: self.window_samples]
            return [(filled, Window(0.0, total / self.sample_rate))]
        return [self._window(self._tail, total - self.window_samples)]  # aligned to the end

    def _window(self, audio: np.ndarray, start: int) -> tuple[np.ndarray, Window]:
        offset = start - self._tail_start
        self._covered = start + self.window_samples
        return (audio[offset: offset + self.window_samples],
                Window(start / self.sample_rate, self._covered / self.sample_rate))


def _stack(pairs: list[tuple[np.ndarray, Window]], window_samples: int
           ) -> tuple[np.ndarray, list[Window]]:
    if not pairs:
        return np.zeros((0, window_samples), np.float32), []
    return np.stack([samples for samples, _ in pairs]), [window for _, window in pairs]
