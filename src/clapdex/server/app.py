"""The web app: an HTTP JSON API under /api over one open index, and the static pages that use it.

Read-only: every endpoint answers from the index (GET, and POST for a query vector or an uploaded
audio example). Audio is served only for files the index holds, addressed by their id.
Results are the Python API's objects as JSON: the same fields as the CLI's --json.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from clapdex.jsonable import dumps, to_jsonable
from clapdex.errors import (AudioError, ClapdexError, ModelError, NotFoundError, QueryError,
                            Remedy)
from clapdex.search.results import LOW_FIDELITY, SearchResults
from clapdex.server import media
from clapdex.server.guard import Guard

STATIC = Path(__file__).parent / "static"
DEFAULT_MAX_UPLOAD = 50 * 1024 * 1024
MODES = ("hybrid", "dense", "concept")

# A page may load only this app's own scripts, styles, images and audio.
PAGE_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
               "media-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; "
               "frame-ancestors 'none'")
# The HTML report has inline styles and embedded PNG charts, and no scripts.
REPORT_POLICY = ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; base-uri 'none'; "
                 "frame-ancestors 'none'")


class ApiError(Exception):
    """A request the API refuses: status code, one-line message, extra JSON fields."""

    def __init__(self, status: int, message: str, **extra: Any):
        super().__init__(message)
        self.status, self.message, self.extra = status, message, extra


class SearchRequest(BaseModel):
    """POST /api/search: one of text, vector or file_id (more like this), and/or concepts."""

    text: str | None = None
    vector: list[float] | None = Field(None, description="a raw embedding from the index's model")
    file_id: int | None = Field(None, description="an indexed file: search by its stored embeddings")
    concepts: list[str] = Field(default_factory=list, description='"dog", "-speech", "rain:0.5"')
    mode: str | None = Field(None, description="hybrid | dense | concept")
    k: int = Field(10, ge=1, le=500)
    offset: int = Field(0, ge=0)
    path: str | list[str] | None = Field(None, description="glob on file paths, or several "
                                                            "(files matching any)")
    include_self: bool = Field(False, description="with file_id: keep that file in its results")
    segments: bool = False
    alpha: float = Field(0.5, ge=0.0, le=1.0)
    min_score: float | None = None


def json_response(value: Any, status: int = 200) -> Response:
    body = dumps(value, ensure_ascii=False, allow_nan=False)
    return Response(body, status_code=status, media_type="application/json")


def create_app(index, *, token: str | None = None, allowed_hosts: list[str] | None = None,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
               remedy_text: Callable[[Remedy], str] | None = None) -> FastAPI:
    """The ASGI app over an open index.

    token: when given, every request must carry it (header `Authorization: Bearer TOKEN`, or
    `?token=TOKEN`). allowed_hosts: Host header values accepted (None: any); the CLI passes the
    loopback names when it serves 127.0.0.1 without a token, against DNS rebinding.
    remedy_text: phrases an error's Remedy as the command to run (`clapdex serve` passes the
    CLI's); an error response carries the remedy as JSON either way.
    """
    # Index calls run concurrently (FastAPI runs these endpoints in a thread pool): the Index
    # builds its lazy parts once under its lock, each search uses one immutable engine of the
    # current generation (search.Searcher guards the refresh and the model), and every database
    # read has its own session. Only the report is drawn one at a time: pyplot's state is global.
    report_lock = threading.Lock()

    def file_info(file_id: int) -> dict:
        """The file's record as JSON, with whether it is still on disk and browser-playable."""
        record = to_jsonable(index.file_info(file_id))
        return {**record, "on_disk": os.path.isfile(record["path"]),
                "playable": media.playable(record["path"])}

    app = FastAPI(title="clapdex", version=_version(),
                  description="Search, listen to and audit an audio collection through named "
                              "sound concepts. Read-only. See docs/http-api.md.",
                  docs_url=None, redoc_url=None)
    app.state.index = index
    _error_handlers(app, remedy_text)

    # ---- search ---------------------------------------------------------------------------

    def search(**options) -> Response:
        file_id = options.pop("file_id", None)
        if file_id is not None:
            options["audio"] = index.file_info(file_id).path
        if options.get("mode") is not None and options["mode"] not in MODES:
            raise ApiError(400, f"unknown mode {options['mode']!r}; choose one of "
                                f"{', '.join(MODES)}")
        if isinstance(options.get("text"), str) and not options["text"].strip():
            if not options.get("concepts") and options.get("audio") is None:
                raise ApiError(400, "empty query: type some text, or add a concept")
            options["text"] = None
        return json_response(index.search(**options))

    @app.get("/api/search", response_model=SearchResults, tags=["search"])
    def search_get(text: str | None = Query(None, description="text-to-audio query"),
                   concept: list[str] = Query([], description='steering or concept-only terms: '
                                                          '"dog", "-speech", "rain:0.5"'),
                   mode: str | None = Query(None, description="hybrid | dense | concept"),
                   k: int = Query(10, ge=1, le=500), offset: int = Query(0, ge=0),
                   path: list[str] = Query([], description="glob on file paths; repeatable "
                                                           "(files matching any)"),
                   segments: bool = False, alpha: float = Query(0.5, ge=0.0, le=1.0),
                   min_score: float | None = None):
        """Search by text and/or concepts. Same results as `clapdex search --json`."""
        return search(text=text, concepts=concept, mode=mode, k=k, offset=offset, path=path,
                      segments=segments, alpha=alpha, min_score=min_score)

    @app.post("/api/search", response_model=SearchResults, tags=["search"])
    def search_post(request: SearchRequest):
        """Search by text, a raw query vector, or an indexed file (more like this), and/or
        concepts."""
        return search(**request.model_dump())

    @app.get("/api/similar", response_model=SearchResults, tags=["search"])
    def similar(file_id: int = Query(..., description="an indexed file"),
                concept: list[str] = Query([]), mode: str | None = None,
                k: int = Query(10, ge=1, le=500), offset: int = Query(0, ge=0),
                path: list[str] = Query([]), segments: bool = False,
                alpha: float = Query(0.5, ge=0.0, le=1.0), include_self: bool = False):
        """More like this: files that sound like an indexed file (its stored embeddings), the
        file itself left out unless include_self."""
        return search(file_id=file_id, concepts=concept, mode=mode, k=k, offset=offset,
                      path=path, segments=segments, alpha=alpha, include_self=include_self)

    @app.post("/api/search/upload", response_model=SearchResults, tags=["search"])
    async def search_upload(request: Request, file: UploadFile = File(...),
                            concept: list[str] = Form([]), mode: str | None = Form(None),
                            k: int = Form(10, ge=1, le=500), offset: int = Form(0, ge=0),
                            path: str | None = Form(None), segments: bool = Form(False),
                            alpha: float = Form(0.5, ge=0.0, le=1.0)):
        """Query by example: an uploaded audio file (kept only for the request, then deleted)."""
        suffix = Path(file.filename or "").suffix.lower()[:10]
        if not suffix.isascii() or not suffix[1:].isalnum():
            suffix = ""
        with tempfile.TemporaryDirectory(prefix="clapdex-upload-") as folder:
            target = Path(folder) / f"upload{suffix}"
            size = 0
            with open(target, "wb") as out:
                while chunk := await file.read(1 << 20):
                    size += len(chunk)
                    if size > max_upload_bytes:
                        raise ApiError(413, f"upload too large: the limit is "
                                            f"{max_upload_bytes // (1024 * 1024)} MB")
                    out.write(chunk)
            if size == 0:
                raise ApiError(400, "the uploaded file is empty")
            try:
                import starlette.concurrency

                return await starlette.concurrency.run_in_threadpool(
                    search, audio=str(target), concepts=concept, mode=mode, k=k, offset=offset,
                    path=path or None, segments=segments, alpha=alpha)
            except AudioError as error:
                raise ApiError(415, f"{file.filename or 'the upload'} is not audio clapdex can "
                                    f"read ({error.reason})") from None

    @app.get("/api/vocabulary", tags=["concepts"])
    def vocabulary(q: str = Query("", description="part of a concept name"),
                   limit: int = Query(20, ge=1, le=1000)):
        """Concept names for autocomplete: names starting with q first, then containing it."""
        names = index.concept_names()
        needle = q.strip().lower()
        starts = [n for n in names if n.lower().startswith(needle)]
        contains = [n for n in names if needle in n.lower() and not n.lower().startswith(needle)]
        return json_response({"total": len(names), "concepts": (starts + contains)[:limit]})

    # ---- audit ----------------------------------------------------------------------------

    @app.get("/api/concepts", tags=["audit"])
    def concepts(sort: str = Query("files", description="files | segments | time | weight"),
                 offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=5000)):
        """Concept prevalence (as `clapdex concepts --json`), one page of it."""
        if sort not in ("files", "segments", "time", "weight"):
            raise ApiError(400, f"unknown sort {sort!r}; choose files, segments, time or weight")
        rows = index.concepts(sort=sort)
        return json_response({"total": len(rows), "offset": offset, "sort": sort,
                              "rows": rows[offset:offset + limit]})

    @app.get("/api/audit", tags=["audit"])
    def audit(expression: str = Query(..., description='e.g. "siren AND NOT music"'),
              offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=5000)):
        """Segments matching a concept expression (the language of `clapdex audit`)."""
        if not expression.strip():
            raise ApiError(400, 'empty expression: write one, e.g. siren AND NOT music')
        result = index.audit(expression, limit=offset + limit)
        return json_response({"expression": result.expression, "segments": result.n_segments,
                              "files": result.n_files, "offset": offset,
                              "matches": [m.to_row() for m in result.matches[offset:]]})

    @app.get("/api/cooccurrence", tags=["audit"])
    def cooccurrence(concept: str | None = Query(None, description="one concept, or none: all pairs"),
                     min_count: int = Query(3, ge=1), limit: int = Query(50, ge=1, le=5000)):
        """Concept pairs found in the same segments more often than chance (lift)."""
        pairs = index.cooccurrence(concept=(concept or "").strip() or None, min_count=min_count,
                     limit=limit)
        return json_response({"concept": concept, "min_count": min_count, "pairs": pairs})

    @app.get("/api/poorly-explained", tags=["audit"])
    def poorly_explained(below: float = Query(0.5, ge=-1.0, le=1.0),
                         offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=5000)):
        """Segments whose fidelity is below a threshold, lowest first."""
        result = index.poorly_explained(below=below, limit=offset + limit)
        return json_response({"below": below, "total": result.total, "offset": offset,
                              "rows": [r.to_row() for r in result.segments[offset:]]})

    @app.get("/api/report", response_class=HTMLResponse, tags=["audit"])
    def report(top: int = Query(20, ge=2, le=200), files: int = Query(3, ge=0, le=50)):
        """The self-contained HTML audit report (as `clapdex report`), built for this request."""
        with report_lock:
            page = index.report_html(top=top, n_files=files)
        return HTMLResponse(page, headers={"Content-Security-Policy": REPORT_POLICY})

    # ---- files and audio ------------------------------------------------------------------

    @app.get("/api/files", tags=["files"])
    def files(status: str | None = Query(None, description="indexed | error"),
              offset: int = Query(0, ge=0), limit: int = Query(50, ge=1, le=5000)):
        """Files in the index (e.g. status=error: the ones that could not be indexed, with why)."""
        if status not in (None, "indexed", "error"):
            raise ApiError(400, f"unknown status {status!r}; choose indexed or error")
        rows = index.files(status=status, offset=offset, limit=limit)
        counts = index.counts()
        total = {None: counts["files"] + counts["errors"], "indexed": counts["files"],
                 "error": counts["errors"]}[status]
        return json_response({"total": total, "offset": offset, "files": rows})

    @app.get("/api/files/{file_id}", tags=["files"])
    def file(file_id: int, top: int = Query(5, ge=1, le=100)):
        """One file: its record (status, error, on_disk) and, if indexed, its concepts over time
        (as `clapdex show --json`)."""
        record = file_info(file_id)
        segments = []
        if record["status"] == "indexed":
            segments = [s.to_row() for s in index.file(record["path"], top=top).segments]
        return json_response({**record, "profile": segments, "low_fidelity_below": LOW_FIDELITY})

    @app.get("/api/files/{file_id}/audio", tags=["files"],
             responses={206: {"description": "a byte range"},
                        416: {"description": "range past the end"}})
    def file_audio(file_id: int):
        """The indexed file's bytes, untranscoded, with HTTP range requests (WAV, FLAC, OGG,
        MP3; other formats: use a segment's audio)."""
        return media.file_response(file_info(file_id))

    @app.get("/api/segments/{segment_id}", tags=["files"])
    def segment(segment_id: int):
        """A segment's file id and time range."""
        return json_response(index.segment(segment_id))

    @app.get("/api/segments/{segment_id}/audio", tags=["files"])
    def segment_audio(segment_id: int):
        """One segment decoded to WAV (for formats browsers do not play)."""
        seg = index.segment(segment_id)
        return media.segment_wav(file_info(seg.file_id), seg.start, seg.end)

    @app.get("/api/status", tags=["status"])
    def status():
        """The index as `clapdex status --json` (settings, counts, files that could not be
        indexed, sizes), and `server`: what the pages need (playable extensions, upload limit)."""
        return json_response({**to_jsonable(index.status()), "server": {
            "playable_extensions": sorted(media.PLAYABLE), "max_upload_bytes": max_upload_bytes,
            "token_required": token is not None}})

    # ---- pages ----------------------------------------------------------------------------

    for route, page in (("/", "search.html"), ("/file", "file.html"), ("/audit", "audit.html")):
        app.add_api_route(route, _page(page), include_in_schema=False, methods=["GET"])
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    app.add_middleware(Guard, token=token, allowed_hosts=allowed_hosts, page_policy=PAGE_POLICY)
    return app


def _page(name: str):
    def page():
        return FileResponse(STATIC / name, media_type="text/html")
    page.__name__ = f"page_{name.split('.')[0]}"
    return page


def _version() -> str:
    from clapdex import __version__

    return __version__


def _error_handlers(app: FastAPI, remedy_text: Callable[[Remedy], str] | None) -> None:
    """Every refusal is JSON {"error": message, ...} with a 4xx status; never a traceback."""

    def error(status: int, message: str, **extra) -> JSONResponse:
        return JSONResponse({"error": message, **extra}, status_code=status)

    @app.exception_handler(ApiError)
    def api_error(_request, exc: ApiError):
        return error(exc.status, exc.message, **exc.extra)

    @app.exception_handler(ClapdexError)
    def clapdex_error(_request, exc: ClapdexError):
        from clapdex.audit.expression import ExpressionError

        extra = {"type": type(exc).__name__}
        if isinstance(exc, ExpressionError):
            extra.update(position=exc.position, text=exc.text)
        status = 400
        if isinstance(exc, NotFoundError):
            status = 404
        elif isinstance(exc, ModelError):
            status = 503  # the server was started without a usable model for text queries
        elif not isinstance(exc, (QueryError, AudioError)):
            status = 409  # e.g. the model does not match the index
        message = str(exc)
        if exc.remedy is not None:
            extra["remedy"] = to_jsonable(exc.remedy)
            if remedy_text is not None:
                message = f"{message}; {remedy_text(exc.remedy)}"
        return error(status, message, **extra)

    @app.exception_handler(RequestValidationError)
    def validation_error(_request, exc: RequestValidationError):
        problems = []
        for item in exc.errors():
            where = ".".join(str(p) for p in item.get("loc", ()) if p not in ("query", "body", "path"))
            problems.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
        return error(422, "; ".join(problems) or "invalid request",
                     detail=json.loads(json.dumps(exc.errors(), default=str)))

    @app.exception_handler(StarletteHTTPException)
    def http_error(_request, exc: StarletteHTTPException):
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        return error(exc.status_code, message)

    @app.exception_handler(Exception)
    def internal_error(_request, exc: Exception):  # a bug: still JSON, never a traceback page
        return error(500, f"internal error ({type(exc).__name__}); see the server's log")

    @app.exception_handler(OSError)
    def os_error(_request, exc: OSError):
        name = f"{exc.filename}: " if exc.filename else ""
        return error(404 if isinstance(exc, FileNotFoundError) else 409,
                     f"{name}{exc.strerror or exc}")
