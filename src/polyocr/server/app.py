"""polyocr's HTTP API (FastAPI): its own endpoints, jobs, and an OpenAI-compatible chat endpoint.

The app is a thin layer over polyocr's calls: uploads are opened by content with
documents.image_source, recognised by a Router, and returned as the DocumentResult JSON or rendered
by formats.render. Every error a client can cause is a 4xx with a JSON body
{"error": {"message", "type", "code"}} (the shape OpenAI clients already parse); nothing a client
sends can stop the server.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from polyocr import __version__
from polyocr.documents import Page
from polyocr.engines.base import create_engine, engine_class, engine_names
from polyocr.errors import ChatRequestError, InputError, PolyOCRError
from polyocr.formats import FORMATS, render
from polyocr.results import DocumentResult, PageStatus
from polyocr.router import load_config, resolve_chain
from polyocr.runtime.probe import get_profile
from polyocr.server.chat import ChatAsk, completion, parse_chat
from polyocr.server.jobs import JobStatus, JobStore
from polyocr.server.runner import JobRunner
from polyocr.server.service import OCRParams, OCRService
from polyocr.server.settings import ServerSettings
from polyocr.types import Task, TaskKind

log = logging.getLogger("polyocr.server")
T = TypeVar("T")

_FORMAT_ALIASES = {"markdown": "md", "text": "txt", "plain": "txt"}
_MEDIA_TYPES = {
    "json": "application/json",
    "md": "text/markdown; charset=utf-8",
    "txt": "text/plain; charset=utf-8",
    "hocr": "application/xhtml+xml; charset=utf-8",
    "alto": "application/xml; charset=utf-8",
}
# Content types accepted, recognised by their first bytes (the loader then validates them fully).
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"BM", "image/bmp"),
)


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, kind: str = "invalid_request_error", headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.headers = headers


class _TooLarge(Exception):
    """The body grew past the size cap while it was being read."""


def _error(
    status: int, message: str, kind: str = "invalid_request_error", headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": message, "type": kind, "code": status}}, status_code=status, headers=headers
    )


def sniff_content_type(data: bytes) -> str | None:
    """The accepted content type of an upload by its bytes, or None when it is none of them."""
    if b"%PDF-" in data[:1024]:
        return "application/pdf"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for magic, kind in _MAGIC:
        if data.startswith(magic):
            return kind
    return None


class BodyLimit:
    """Refuse bodies over the cap: by Content-Length before reading, or as soon as a stream passes it."""

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None:
            try:
                too_large = int(length) > self.limit
            except ValueError:
                await _error(400, "invalid Content-Length header")(scope, receive, send)
                return
            if too_large:
                await self._refuse(scope, receive, send)
                return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge
            return message

        await self.app(scope, limited, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = _error(
            413,
            f"request body is over the limit of {self.limit:,} bytes (the server's --max-request-mb)",
            "request_too_large",
        )
        await response(scope, receive, send)


@dataclass
class _Upload:
    data: bytes
    filename: str
    fields: dict[str, str]


def _documented_body(description: str) -> dict[str, Any]:
    fields = {
        "engine": {"type": "string", "description": "auto, an engine name, or a chain a,b,c"},
        "task": {"type": "string", "enum": [t.value for t in TaskKind]},
        "language": {"type": "string", "description": "languages joined by + (eng+rus)"},
        "format": {"type": "string", "enum": ["json", "md", "txt", "hocr", "alto"]},
    }
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {"file": {"type": "string", "format": "binary"}, **fields},
                    }
                },
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "description": "base64 content (or a base64 data: URL)"},
                            "filename": {"type": "string"},
                            **fields,
                        },
                    }
                },
            },
        }
    }


def create_app(settings: ServerSettings | None = None) -> FastAPI:
    """The polyocr API for these settings; engines load in worker threads, jobs resume from SQLite."""
    settings = settings or ServerSettings()
    config = load_config(settings.engine)  # polyocr.toml and POLYOCR_* apply as they do for `polyocr ocr`
    service = OCRService(settings, config)
    store = JobStore(settings.job_dir, ttl=settings.job_ttl, max_starts=settings.job_max_starts)
    runner = JobRunner(store, service)
    default_task = Task(languages=settings.languages)
    default_chain = tuple(resolve_chain(config.engines, default_task))
    default_params = OCRParams(default_chain, TaskKind.LAYOUT, settings.languages)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if settings.warm_up:
            service.start_warm_up(default_params, min_interval=0.0)
        else:
            service.ready, service.ready_reason = True, ""
        runner.start()
        try:
            yield
        finally:
            runner.stop()
            service.close()
            store.close()

    app = FastAPI(
        title="polyocr",
        version=__version__,
        lifespan=lifespan,
        docs_url="/docs",
        description="OCR of images and PDFs with polyocr's engines, jobs for long documents, "
        "and an OpenAI-compatible chat endpoint.",
    )
    app.state.settings, app.state.service, app.state.store, app.state.runner = settings, service, store, runner
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware, allow_origins=list(settings.cors_origins), allow_methods=["*"], allow_headers=["*"]
        )
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)

    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.kind, exc.headers)

    @app.exception_handler(_TooLarge)
    async def _too_large(_request: Request, _exc: _TooLarge) -> JSONResponse:
        return _error(
            413, f"request body is over the limit of {settings.max_request_bytes:,} bytes", "request_too_large"
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return _error(422, f"invalid request: {details}")

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return _error(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")

    def authorize(request: Request) -> None:
        if not settings.api_key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.api_key.encode()):
            raise ApiError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                "authentication_error",
                {"WWW-Authenticate": "Bearer"},
            )

    api = APIRouter(prefix="/v1", dependencies=[Depends(authorize)])

    async def read_upload(request: Request) -> _Upload:
        ctype = request.headers.get("content-type", "").lower()
        if ctype.startswith("multipart/form-data"):
            form = await request.form(max_files=1, max_fields=16)
            file = form.get("file")
            if not isinstance(file, UploadFile):
                raise ApiError(400, "multipart request needs a 'file' field holding the document")
            fields = {k: v for k, v in form.items() if isinstance(v, str)}
            upload = _Upload(await file.read(), file.filename or "upload", fields)
        elif ctype.startswith("application/json"):
            upload = _json_upload(await request.body())
        else:
            raise ApiError(
                415,
                "send multipart/form-data with a 'file' field, or application/json with the file as base64 in 'file'",
                "unsupported_media_type",
            )
        for key, value in request.query_params.items():
            upload.fields.setdefault(key, value)
        if not upload.data:
            raise ApiError(400, f"{upload.filename}: the file is empty (0 bytes)")
        if sniff_content_type(upload.data) is None:
            raise ApiError(
                415,
                f"{upload.filename}: content is not PDF, PNG, JPEG, TIFF, WebP or BMP "
                "(recognised by content, not by name)",
                "unsupported_media_type",
            )
        return upload

    def params_from(fields: dict[str, str]) -> tuple[OCRParams, str]:
        try:
            task = TaskKind(fields.get("task") or TaskKind.LAYOUT.value)
        except ValueError:
            raise ApiError(
                400, f"unknown task {fields.get('task')!r}; choose one of {', '.join(t.value for t in TaskKind)}"
            ) from None
        languages = settings.languages
        if fields.get("language"):
            languages = tuple(p for p in fields["language"].replace(",", "+").split("+") if p)
            bad = [p for p in languages if not p.replace("_", "").isalnum() or len(p) > 32]
            if bad or not languages:
                raise ApiError(400, f"invalid language {fields['language']!r}; use codes joined by + (eng+rus)")
        fmt = fields.get("format") or "json"
        fmt = _FORMAT_ALIASES.get(fmt, fmt)
        if fmt not in FORMATS:
            raise ApiError(400, f"unknown format {fields.get('format')!r}; choose one of {', '.join(FORMATS)}")
        return OCRParams(chain_for(fields.get("engine"), task, languages), task, languages), fmt

    def chain_for(engine: str | None, task: TaskKind, languages: tuple[str, ...]) -> tuple[str, ...]:
        if not engine:
            return default_chain
        try:
            chain = tuple(resolve_chain(engine, Task(kind=task, languages=languages)))
        except PolyOCRError as exc:
            raise ApiError(400, str(exc)) from None
        if settings.allowed_engines is not None:
            refused = [name for name in chain if name not in settings.allowed_engines]
            if refused:
                raise ApiError(
                    403,
                    f"engine(s) {', '.join(refused)} not enabled on this server (enabled: "
                    f"{', '.join(settings.allowed_engines)})",
                    "permission_error",
                )
        return chain

    async def run_admitted(fn: Callable[..., T], *args: Any) -> T:
        if not service.admit():
            raise ApiError(
                429,
                f"server busy: {settings.capacity} request(s) already running or waiting; retry later",
                "rate_limit_error",
                {"Retry-After": "1"},
            )
        future = service.submit_admitted(fn, *args)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), settings.request_timeout)
        except TimeoutError:
            raise ApiError(
                504,
                f"OCR did not finish within the server's {settings.request_timeout:g} s "
                "request timeout; send long documents to POST /v1/jobs",
                "timeout",
            ) from None
        except InputError as exc:
            raise _input_error(exc) from None

    @api.post(
        "/ocr",
        summary="OCR one document and return its result",
        openapi_extra=_documented_body("The document (image or PDF) and options."),
    )
    async def ocr(request: Request) -> Response:
        upload = await read_upload(request)
        params, fmt = params_from(upload.fields)
        doc = await run_admitted(service.recognize, upload.data, upload.filename, params)
        if doc.errors and not doc.pages:
            raise _unreadable(doc)
        body = doc.to_json(indent=None) if fmt == "json" else render(doc, fmt)
        failed = sum(page.status == PageStatus.FAILED for page in doc.pages)
        return Response(body, media_type=_MEDIA_TYPES[fmt], headers={"X-Polyocr-Failed-Pages": str(failed)})

    @api.post(
        "/jobs",
        status_code=202,
        summary="Queue a long document; returns a job id at once",
        openapi_extra=_documented_body("The document (image or PDF) and options."),
    )
    async def submit_job(request: Request) -> JSONResponse:
        upload = await read_upload(request)
        params, _ = params_from(upload.fields)
        if store.count(JobStatus.QUEUED) >= settings.max_queued_jobs:
            raise ApiError(
                429,
                f"job queue is full ({settings.max_queued_jobs} queued); retry later",
                "rate_limit_error",
                {"Retry-After": "5"},
            )
        try:
            pages = await asyncio.to_thread(service.page_count, upload.data, upload.filename)
        except InputError as exc:
            raise _input_error(exc) from None
        job = await asyncio.to_thread(store.create, upload.data, upload.filename, params.to_dict(), pages)
        runner.wake()
        return JSONResponse(
            {**job.public(settings.job_ttl), "url": f"/v1/jobs/{job.id}", "result_url": f"/v1/jobs/{job.id}/result"},
            status_code=202,
        )

    @api.get("/jobs/{job_id}", summary="A job's status and progress")
    async def job_status(job_id: str) -> dict[str, Any]:
        job = store.get(job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id!r} (never created, or expired)", "not_found")
        return job.public(settings.job_ttl)

    @api.get("/jobs/{job_id}/result", summary="A finished job's result (json, md or txt)")
    async def job_result(job_id: str, format: str = "json") -> Response:
        fmt = _FORMAT_ALIASES.get(format, format)
        if fmt not in FORMATS:
            raise ApiError(400, f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
        job = store.get(job_id)
        if job is None:
            raise ApiError(404, f"no job {job_id!r} (never created, or expired)", "not_found")
        if job.status == JobStatus.FAILED:
            raise ApiError(409, f"job {job_id} failed: {job.error}", "job_failed")
        if job.status != JobStatus.DONE:
            raise ApiError(
                409,
                f"job {job_id} is {job.status.value} ({job.pages_done}/{job.page_count} pages); "
                f"poll GET /v1/jobs/{job_id}",
                "job_not_done",
            )
        text = await asyncio.to_thread(store.read_result, job_id)
        if fmt == "json":
            return Response(text, media_type=_MEDIA_TYPES["json"])
        return Response(render(DocumentResult.from_json(text), fmt), media_type=_MEDIA_TYPES[fmt])

    @api.get("/engines", summary="Every engine, whether it runs here, and the default chain")
    async def engines() -> dict[str, Any]:
        return {"default": list(default_chain), "engines": await asyncio.to_thread(_engine_rows, settings)}

    @api.get("/models", summary="Engines as OpenAI model ids (for clients that list models first)")
    async def models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "owned_by": "polyocr"} for name in engine_names()],
        }

    @api.post("/chat/completions", summary="OpenAI-compatible chat completion over one page image")
    async def chat(request: Request) -> JSONResponse:
        try:
            body = json.loads(await request.body())
            ask = parse_chat(body)
        except json.JSONDecodeError as exc:
            raise ApiError(400, f"request body is not JSON: {exc}") from None
        except ChatRequestError as exc:
            raise ApiError(400, str(exc)) from None
        if sniff_content_type(ask.image) is None:
            raise ApiError(
                415,
                "the image is not PDF, PNG, JPEG, TIFF, WebP or BMP (recognised by content)",
                "unsupported_media_type",
            )
        engine = ask.model if ask.model in engine_names() else None
        params = OCRParams(chain_for(engine, ask.task, settings.languages), ask.task, settings.languages)
        transform = _cropper(ask) if ask.region else None
        doc = await run_admitted(_recognize_one_page, service, ask, params, transform)
        if doc.errors and not doc.pages:
            raise _unreadable(doc)
        if doc.pages[0].status == PageStatus.FAILED:
            raise ApiError(502, "every engine failed on the image: " + "; ".join(doc.pages[0].errors), "engine_error")
        return JSONResponse(completion(doc, ask, ask.model or ",".join(params.chain)))

    @app.get("/health", summary="Liveness: the process answers")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "service": "polyocr", "version": __version__}

    @app.get("/ready", summary="Readiness (the default engine chain has loaded) and current load")
    async def ready() -> JSONResponse:
        load = {
            "requests": service.admitted,
            "capacity": settings.capacity,
            "jobs_queued": store.count(JobStatus.QUEUED),
        }
        if service.ready:
            return JSONResponse({"ready": True, "engines": list(default_chain), **load})
        if settings.warm_up:
            service.start_warm_up(default_params)
        return JSONResponse({"ready": False, "reason": service.ready_reason, **load}, status_code=503)

    app.include_router(api)
    return app


def _json_upload(raw: bytes) -> _Upload:
    try:
        payload = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not JSON: {exc}") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("file"), str):
        raise ApiError(400, "JSON request needs 'file': the document as base64 (or a base64 data: URL)")
    content = payload["file"]
    if content.startswith("data:"):
        content = content.partition(",")[2]
    try:
        data = base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ApiError(400, f"'file' is not valid base64: {exc}") from None
    fields = {k: str(payload[k]) for k in ("engine", "task", "language", "format") if payload.get(k) is not None}
    return _Upload(data, str(payload.get("filename") or "upload"), fields)


def _input_error(exc: InputError) -> ApiError:
    return _refusal(str(exc))


def _unreadable(doc: DocumentResult) -> ApiError:
    """A document whose pages could not be decoded (a PDF page is checked only when rendered)."""
    return _refusal("; ".join(doc.errors))


def _refusal(message: str) -> ApiError:
    # The loader words every cap it enforces (pages, pixels) as "over the limit".
    if "over the limit" in message:
        return ApiError(413, message, "request_too_large")
    return ApiError(422, message, "invalid_input")


def _recognize_one_page(
    service: OCRService, ask: ChatAsk, params: OCRParams, transform: Callable[[Page], Page] | None
) -> DocumentResult:
    """A chat request reads one image: a PDF or multi-page TIFF is refused rather than half-read."""
    if service.page_count(ask.image, "<image_url>") != 1:
        raise InputError("<image_url>", "has more than one page; send one page image per chat request")
    return service.recognize(ask.image, "<image_url>", params, transform=transform)


def _cropper(ask: ChatAsk) -> Callable[[Page], Page]:
    """dots.ocr's grounding prompt asks for one box's text: any engine can answer it on the crop."""
    assert ask.region is not None

    def crop(page: Page) -> Page:
        width, height = page.image.size
        x1, y1, x2, y2 = ask.region  # type: ignore[misc]
        box = (max(0, int(x1)), max(0, int(y1)), min(width, round(x2)), min(height, round(y2)))
        if box[2] <= box[0] or box[3] <= box[1]:
            raise InputError(
                "<image_url>", f"the grounding box {list(ask.region)} lies outside the {width}x{height} image"
            )
        return Page(image=page.image.crop(box), number=page.number, source=page.source, dpi=page.dpi)

    return crop


def _engine_rows(settings: ServerSettings) -> list[dict[str, Any]]:
    profile = get_profile()
    rows = []
    for name in engine_names():
        row: dict[str, Any] = {
            "name": name,
            "kind": "",
            "available": False,
            "reason": "",
            "fix": "",
            "enabled": settings.allowed_engines is None or name in settings.allowed_engines,
        }
        try:
            cls = engine_class(name)
            availability = create_engine(name).available(profile)
            row.update(
                kind=cls.kind,
                description=cls.description,
                available=availability.ok,
                reason=availability.reason,
                fix=availability.fix,
            )
        except PolyOCRError as exc:
            row.update(reason=getattr(exc, "reason", str(exc)), fix=getattr(exc, "fix", ""))
        rows.append(row)
    return rows


def serve(settings: ServerSettings, *, log_level: str = "info") -> None:
    """Run the server in this process until interrupted."""
    import uvicorn

    if not settings.is_loopback and not settings.api_key:
        log.warning(
            "polyocr serve: listening on %s without an API key; anyone who can reach it can use it", settings.host
        )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=log_level)
