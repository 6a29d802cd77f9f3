"""The HTTP plumbing of polyocr's API: its error shape, the body-size guard, uploads read by content.

Every error a client can cause is a 4xx with a JSON body {"error": {"message", "type", "code"}}
(the shape OpenAI clients already parse).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from polyocr.errors import InputError
from polyocr.results import DocumentResult
from polyocr.types import TaskKind

log = logging.getLogger("polyocr.server")

MIN_DPI, MAX_DPI = 50.0, 600.0  # a request's PDF resolution (the page-pixel cap still applies)
FORMAT_ALIASES = {"markdown": "md", "text": "txt", "plain": "txt"}
MEDIA_TYPES = {"json": "application/json", "md": "text/markdown; charset=utf-8", "txt": "text/plain; charset=utf-8"}
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


class TooLarge(Exception):
    """The body grew past the size cap while it was being read."""


def error_response(
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
                await error_response(400, "invalid Content-Length header")(scope, receive, send)
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
                    raise TooLarge
            return message

        await self.app(scope, limited, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            f"request body is over the limit of {self.limit:,} bytes (the server's --max-request-mb)",
            "request_too_large",
        )
        await response(scope, receive, send)


@dataclass
class Upload:
    data: bytes
    filename: str
    fields: dict[str, str]


def documented_body(description: str) -> dict[str, Any]:
    fields = {
        "engine": {"type": "string", "description": "auto, an engine name, or a chain a,b,c"},
        "task": {"type": "string", "enum": [t.value for t in TaskKind]},
        "language": {"type": "string", "description": "languages joined by + (eng+rus)"},
        "format": {"type": "string", "enum": ["json", "md", "txt"]},
        "dpi": {"type": "number", "description": f"PDF rendering resolution, {MIN_DPI:g} to {MAX_DPI:g}"},
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


def json_upload(raw: bytes) -> Upload:
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
    fields = {k: str(payload[k]) for k in ("engine", "task", "language", "format", "dpi") if payload.get(k) is not None}
    return Upload(data, str(payload.get("filename") or "upload"), fields)


def request_dpi(value: str | None) -> float | None:
    """A request's PDF resolution, or None for the server's; 400 outside MIN_DPI..MAX_DPI (or NaN)."""
    if not value:
        return None
    try:
        dpi = float(value)
    except ValueError:
        dpi = float("nan")
    if not MIN_DPI <= dpi <= MAX_DPI:
        raise ApiError(400, f"invalid dpi {value!r}; use a number from {MIN_DPI:g} to {MAX_DPI:g}")
    return dpi


def input_error(exc: InputError) -> ApiError:
    return refusal(str(exc))


def unreadable(doc: DocumentResult) -> ApiError:
    """A document whose pages could not be decoded (a PDF page is checked only when rendered)."""
    return refusal("; ".join(doc.errors))


def refusal(message: str) -> ApiError:
    # The loader words every cap it enforces (pages, pixels) as "over the limit".
    if "over the limit" in message:
        return ApiError(413, message, "request_too_large")
    return ApiError(422, message, "invalid_input")


def install_error_handlers(app: FastAPI, max_request_bytes: int) -> None:
    """Every error as the JSON error shape; an unexpected one is logged and answered 500."""

    @app.exception_handler(ApiError)
    async def _apierror_response(_request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.kind, exc.headers)

    @app.exception_handler(TooLarge)
    async def _too_large(_request: Request, _exc: TooLarge) -> JSONResponse:
        return error_response(
            413, f"request body is over the limit of {max_request_bytes:,} bytes", "request_too_large"
        )

    @app.exception_handler(StarletteHTTPException)
    async def _httperror_response(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validationerror_response(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        return error_response(422, f"invalid request: {details}")

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return error_response(500, f"internal error: {type(exc).__name__}: {exc}", "server_error")
