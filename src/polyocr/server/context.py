"""What every request handler shares: the settings, the OCR service, the job store and runner, the
default chain, and the steps common to several endpoints (auth, reading an upload, its options,
admission with a time limit)."""

from __future__ import annotations

import asyncio
import hmac
import shutil
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from starlette.datastructures import UploadFile

from polyocr.config import RouterConfig, ServerSettings, load_config
from polyocr.engines.dots.prompts import PromptMode
from polyocr.errors import InputError, PolyOCRError
from polyocr.router import resolve_chain
from polyocr.server.http import (
    ACCEPTED,
    FORMAT_ALIASES,
    OCR_FORMATS,
    ApiError,
    Upload,
    incoming_path,
    input_error,
    json_upload,
    private_paths,
    request_dpi,
    sniff_content_type,
)
from polyocr.server.jobs import JobStore
from polyocr.server.runner import JobRunner
from polyocr.server.service import OCRParams, OCRService, WorkStopped
from polyocr.types import Task, TaskKind

T = TypeVar("T")


class ServerContext:
    """One server's state, made by create_app and found by handlers through `context(request)`."""

    def __init__(self, settings: ServerSettings, config: RouterConfig | None = None) -> None:
        self.settings = settings
        # polyocr.toml and POLYOCR_* apply as they do for `polyocr ocr`
        self.config = config or load_config(settings.engine)
        self.service = OCRService(settings, self.config)
        self.store = JobStore(settings.job_dir, ttl=settings.job_ttl, max_starts=settings.job_max_starts)
        self.runner = JobRunner(self.store, self.service, job_timeout=settings.job_timeout)
        private_paths(settings.job_dir)
        default_task = Task(languages=settings.languages)
        self.default_chain = tuple(resolve_chain(self.config.engines, default_task))
        self.default_params = OCRParams(self.default_chain, TaskKind.LAYOUT, settings.languages)

    @asynccontextmanager
    async def lifespan(self, _app: FastAPI) -> AsyncIterator[None]:
        if self.settings.warm_up:
            self.service.start_warm_up(self.default_params, min_interval=0.0)
        else:
            self.service.ready, self.service.ready_reason = True, ""
        self.runner.start()
        try:
            yield
        finally:
            # A stop takes at most about the grace: running work stops at its next page, a job in hand
            # goes back to the queue, and a page that will not end is left behind (see app.serve).
            started = time.monotonic()
            self.service.stop_work()
            self.runner.stop(self.settings.shutdown_grace)
            left = max(0.0, self.settings.shutdown_grace - (time.monotonic() - started))
            self.clean = self.service.close(left)
            self.store.close()

    clean = True  # False after a stop that left a page in hand

    def admit(self) -> None:
        """Take a request slot or refuse with 429, before the request's body is read."""
        if not self.service.admit():
            raise ApiError(
                429,
                f"server busy: {self.settings.capacity} request(s) already running or waiting; retry later",
                "rate_limit_error",
                {"Retry-After": "1"},
            )

    def authorize(self, request: Request) -> None:
        if not self.settings.api_key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.settings.api_key.encode()
        ):
            raise ApiError(
                401,
                "missing or wrong API key: send 'Authorization: Bearer <key>'",
                "authentication_error",
                {"WWW-Authenticate": "Bearer"},
            )

    async def read_upload(self, request: Request) -> Upload:
        """The request's document, received onto disk under the size cap (BodyLimit stops the stream
        as soon as it passes it); the caller discards it (or a job takes it) when done."""
        ctype = request.headers.get("content-type", "").lower()
        incoming = self.store.incoming
        if ctype.startswith("multipart/form-data"):
            form = await request.form(max_files=1, max_fields=16)
            try:
                file = form.get("file")
                if not isinstance(file, UploadFile):
                    raise ApiError(400, "multipart request needs a 'file' field holding the document")
                fields = {k: v for k, v in form.items() if isinstance(v, str)}
                path = incoming_path(incoming)
                size = await asyncio.to_thread(_copy_to, file, path)
                upload = Upload(path, file.filename or "upload", fields, size)
            finally:
                await form.close()
        elif ctype.startswith("application/json"):
            upload = await asyncio.to_thread(json_upload, await request.body(), incoming)
        else:
            raise ApiError(
                415,
                "send multipart/form-data with a 'file' field, or application/json with the file as base64 in 'file'",
                "unsupported_media_type",
            )
        for key, value in request.query_params.items():
            upload.fields.setdefault(key, value)
        if not upload.size:
            upload.discard()
            raise ApiError(400, f"{upload.filename}: the file is empty (0 bytes)")
        if sniff_content_type(upload.head()) is None:
            upload.discard()
            raise ApiError(
                415,
                f"{upload.filename}: content is not {ACCEPTED} (recognised by content, not by name)",
                "unsupported_media_type",
            )
        return upload

    def params_from(self, fields: dict[str, str]) -> tuple[OCRParams, str]:
        try:
            task = TaskKind(fields.get("task") or TaskKind.LAYOUT.value)
        except ValueError:
            raise ApiError(
                400, f"unknown task {fields.get('task')!r}; choose one of {', '.join(t.value for t in TaskKind)}"
            ) from None
        languages = self.settings.languages
        if fields.get("language"):
            languages = tuple(p for p in fields["language"].replace(",", "+").split("+") if p)
            bad = [p for p in languages if not p.replace("_", "").isalnum() or len(p) > 32]
            if bad or not languages:
                raise ApiError(400, f"invalid language {fields['language']!r}; use codes joined by + (eng+rus)")
        fmt = fields.get("format") or "json"
        fmt = FORMAT_ALIASES.get(fmt, fmt)
        if fmt not in OCR_FORMATS:
            raise ApiError(400, f"unknown format {fields.get('format')!r}; choose one of {', '.join(OCR_FORMATS)}")
        dpi = request_dpi(fields.get("dpi"))
        keep = fields.get("keep_pages", "").lower() in ("1", "true", "yes")
        return OCRParams(self.chain_for(fields.get("engine"), task, languages), task, languages, dpi, keep), fmt

    def chain_for(self, engine: str | None, task: TaskKind, languages: tuple[str, ...]) -> tuple[str, ...]:
        if not engine:
            return self.default_chain
        try:
            chain = tuple(resolve_chain(engine, Task(kind=task, languages=languages)))
        except PolyOCRError as exc:
            raise ApiError(400, str(exc)) from None
        if self.settings.allowed_engines is not None:
            refused = [name for name in chain if name not in self.settings.allowed_engines]
            if refused:
                raise ApiError(
                    403,
                    f"engine(s) {', '.join(refused)} not enabled on this server (enabled: "
                    f"{', '.join(self.settings.allowed_engines)})",
                    "permission_error",
                )
        return chain

    def svg_engines(self, chain: tuple[str, ...]) -> list[str]:
        """The engines of a chain configured to answer the layout task with SVG (dots.mocr's image_to_svg)."""
        return [
            name
            for name in chain
            if str((self.config.plan_overrides(name).get("generation") or {}).get("prompt_mode", ""))
            == PromptMode.IMAGE_TO_SVG
        ]

    async def run_admitted(self, fn: Callable[..., T], *args: Any, admitted: bool = False) -> T:
        """Run fn on a worker under the request timeout, which also stops the work between pages.

        `admitted=True`: the caller already took the slot with `admit()` (before reading the body).
        """
        if not admitted:
            self.admit()
        timeout = self.settings.request_timeout
        future = self.service.submit_admitted(fn, *args, timeout=timeout)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout + 0.5)
        except WorkStopped as exc:
            if exc.reason == "shutdown":
                raise ApiError(
                    503, "the server is shutting down; retry on another instance or later", "unavailable"
                ) from None
            raise self._timed_out() from None
        except TimeoutError:
            raise self._timed_out() from None
        except InputError as exc:
            raise input_error(exc) from None

    def _timed_out(self) -> ApiError:
        return ApiError(
            504,
            f"OCR did not finish within the server's {self.settings.request_timeout:g} s "
            "request timeout (its work was stopped); send long documents to POST /v1/jobs",
            "timeout",
        )


def _copy_to(file: UploadFile, path: Path) -> int:
    """Copy a spooled multipart file to `path` in chunks; returns its size."""
    file.file.seek(0)
    with path.open("wb") as out:
        shutil.copyfileobj(file.file, out, 1024 * 1024)
        return out.tell()


def context(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.ctx
    return ctx


def authorize(request: Request) -> None:
    """The bearer-key check every /v1 endpoint depends on."""
    context(request).authorize(request)
