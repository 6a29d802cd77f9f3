"""The HTTP plumbing of polyocr's API: its error shape, the body-size guard, uploads read by content.

Every error a client can cause is a 4xx with a JSON body {"error": {"message", "type", "code"}}
(the shape OpenAI clients already parse). No answer carries a stack trace or a path on the server:
error messages pass through `redact`, and an unexpected error is answered with its type only (the
details go to the server's log).

Uploads are received onto disk (the job directory's incoming/), never held whole in memory: a
multipart file is spooled by Starlette (1 MiB in memory, then a temporary file) and copied there, a
JSON body (bounded by the size cap) is decoded straight to its file.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import sys
import tempfile
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from polyocr.documents.loader import SNIFF_BYTES, sniff
from polyocr.errors import InputError
from polyocr.formats import FORMATS
from polyocr.results import DocumentResult
from polyocr.types import TaskKind

log = logging.getLogger("polyocr.server")

MIN_DPI, MAX_DPI = 50.0, 600.0  # a request's PDF resolution (the page-pixel cap still applies)
FORMAT_ALIASES = {"markdown": "md", "text": "txt", "plain": "txt"}
MEDIA_TYPES = {
    "json": "application/json",
    "md": "text/markdown; charset=utf-8",
    "txt": "text/plain; charset=utf-8",
    "hocr": "application/xhtml+xml; charset=utf-8",
    "alto": "application/xml; charset=utf-8",
    "pdf": "application/pdf",
}
# POST /v1/ocr also answers a searchable PDF (formats/pdf.py): it is made from the upload itself,
# which a job no longer has once it finishes, so a job's result comes in the text formats only.
OCR_FORMATS = (*FORMATS, "pdf")
ACCEPTED = "PDF, PNG, JPEG, TIFF, WebP, GIF or BMP"


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


_PRIVATE: list[str] = []  # path prefixes of this server that no answer may show


def private_paths(*paths: str | Path) -> list[str]:
    """Register where the server keeps things (job dir, temp dir, the installation, home) for `redact`."""
    candidates = [*paths, tempfile.gettempdir(), sys.prefix, sys.base_prefix, os.path.expanduser("~")]
    candidates += [os.path.dirname(os.path.dirname(__file__))]  # the polyocr package itself
    for path in candidates:
        for form in {str(path), os.path.realpath(path), os.path.abspath(path)}:
            if len(form) > 1 and form not in _PRIVATE:
                _PRIVATE.append(form)
    _PRIVATE.sort(key=len, reverse=True)
    return list(_PRIVATE)


def redact(message: str, paths: Iterable[str] | None = None) -> str:
    """The message with the server's own paths replaced by "<server>" (a client's file name stays)."""
    for path in _PRIVATE if paths is None else paths:
        message = message.replace(path, "<server>")
    return message


def redact_document(doc: DocumentResult) -> DocumentResult:
    """The errors in a result, redacted (engines may name their weights' or binaries' paths)."""
    doc.errors = [redact(e) for e in doc.errors]
    for page in doc.pages:
        page.errors = [redact(e) for e in page.errors]
        for attempt in page.attempts:
            attempt.error = redact(attempt.error) if attempt.error else attempt.error
    return doc


def error_response(
    status: int, message: str, kind: str = "invalid_request_error", headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(
        {"error": {"message": redact(message), "type": kind, "code": status}}, status_code=status, headers=headers
    )


def sniff_content_type(data: bytes) -> str | None:
    """The accepted content type of an upload by its first bytes, or None when it is none of them."""
    return sniff(data[:SNIFF_BYTES])


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
    """A received document: its file on the server's disk, the client's name for it, its fields."""

    path: Path
    filename: str
    fields: dict[str, str]
    size: int = 0

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()

    def head(self) -> bytes:
        with self.path.open("rb") as fh:
            return fh.read(SNIFF_BYTES)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def incoming_path(directory: Path) -> Path:
    return directory / uuid.uuid4().hex


def documented_body(description: str) -> dict[str, Any]:
    fields = {
        "engine": {"type": "string", "description": "auto, an engine name, or a chain a,b,c"},
        "task": {"type": "string", "enum": [t.value for t in TaskKind]},
        "language": {"type": "string", "description": "languages joined by + (eng+rus)"},
        "format": {"type": "string", "enum": list(OCR_FORMATS), "description": "pdf: POST /v1/ocr only"},
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


def json_upload(raw: bytes, directory: Path | None = None) -> Upload:
    """The upload of a JSON body (the file as base64), written to a new file in `directory`."""
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
    path = incoming_path(directory if directory is not None else Path(tempfile.gettempdir()))
    path.write_bytes(data)
    return Upload(path, str(payload.get("filename") or "upload"), fields, len(data))


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
        log.exception("unexpected error")  # the details stay in the server's log
        return error_response(
            500, f"internal error ({type(exc).__name__}); the server's log has the details", "server_error"
        )
