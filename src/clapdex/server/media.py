"""Audio for the player: an indexed file's own bytes (range requests, nothing transcoded) for the
formats browsers play, or one segment decoded to WAV for the others."""

from __future__ import annotations

import io
import os

from fastapi.responses import FileResponse, JSONResponse, Response

# Extension -> media type of the formats Chromium, Firefox and Safari play as they are.
PLAYABLE = {".wav": "audio/wav", ".flac": "audio/flac", ".ogg": "audio/ogg", ".oga": "audio/ogg",
            ".opus": "audio/ogg", ".mp3": "audio/mpeg"}
MAX_SEGMENT_SECONDS = 600.0  # a segment is one model window; this only bounds a damaged record


def playable(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in PLAYABLE


def _missing(record: dict) -> JSONResponse | None:
    if record["status"] != "indexed":
        return JSONResponse({"error": f"{record['path']} is not indexed (status "
                                      f"{record['status']}): no audio to play"}, status_code=404)
    if not os.path.isfile(record["path"]):
        return JSONResponse({"error": f"file missing: {record['path']} is no longer on disk "
                                      "(moved or deleted since it was indexed)",
                             "missing": True}, status_code=404)
    return None


def file_response(record: dict) -> Response:
    """The whole file; Starlette's FileResponse answers Range requests (206, Content-Range; 416
    for a range past the end)."""
    refused = _missing(record)
    if refused is not None:
        return refused
    path = record["path"]
    media_type = PLAYABLE.get(os.path.splitext(path)[1].lower())
    if media_type is None:
        return JSONResponse({"error": f"{os.path.basename(path)} is in a format browsers do not "
                                      "play; ask for a segment's audio "
                                      "(/api/segments/ID/audio), decoded to WAV"},
                            status_code=415)
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "no-cache"})


def segment_wav(record: dict, start: float, end: float) -> Response:
    """The segment [start, end) of the file at its own sample rate and channels, as 16-bit WAV."""
    import soundfile

    refused = _missing(record)
    if refused is not None:
        return refused
    end = min(end, start + MAX_SEGMENT_SECONDS)
    try:
        with soundfile.SoundFile(record["path"]) as sound:
            rate = sound.samplerate
            first = max(int(start * rate), 0)
            sound.seek(min(first, sound.frames))
            samples = sound.read(max(int(end * rate) - first, 0), dtype="float32", always_2d=True)
    except (soundfile.SoundFileError, RuntimeError, ValueError) as error:
        return JSONResponse({"error": f"cannot decode {record['path']}: {error}"}, status_code=409)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return Response(buffer.getvalue(), media_type="audio/wav",
                    headers={"Cache-Control": "no-cache"})
