"""The endpoints: /v1/ocr, /v1/jobs, /v1/engines, /v1/models, OpenAI-compatible /v1/chat/completions,
and the probes /health and /ready. Each handler finds the server's state with `context(request)`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from polyocr import __version__
from polyocr.config import ServerSettings
from polyocr.documents import Page
from polyocr.engines.base import create_engine, engine_class, engine_names
from polyocr.errors import ChatRequestError, InputError, PolyOCRError
from polyocr.formats import FORMATS, render
from polyocr.results import DocumentResult, PageStatus
from polyocr.runtime.probe import get_profile
from polyocr.server.chat import ChatAsk, completion, parse_chat
from polyocr.server.context import authorize, context
from polyocr.server.http import (
    ACCEPTED,
    FORMAT_ALIASES,
    MEDIA_TYPES,
    ApiError,
    Upload,
    documented_body,
    input_error,
    redact,
    redact_document,
    refusal,
    sniff_content_type,
    unreadable,
)
from polyocr.server.jobs import JobStatus
from polyocr.server.service import OCRParams, OCRService

api = APIRouter(prefix="/v1", dependencies=[Depends(authorize)])
probes = APIRouter()


@api.post(
    "/ocr",
    summary="OCR one document and return its result",
    openapi_extra=documented_body("The document (image or PDF) and options."),
)
async def ocr(request: Request) -> Response:
    ctx = context(request)
    ctx.admit()  # a full server refuses before reading the body
    upload: Upload | None = None
    submitted = False
    try:
        upload = await ctx.read_upload(request)
        params, fmt = ctx.params_from(upload.fields)
        submitted = True
        if fmt == "pdf":  # made from the upload while it is still here
            is_pdf = sniff_content_type(upload.head()) == "application/pdf"
            doc, searchable = await ctx.run_admitted(
                _searchable_pdf, ctx.service, upload.path, upload.filename, params, is_pdf, admitted=True
            )
        else:
            doc = await ctx.run_admitted(ctx.service.recognize, upload.path, upload.filename, params, admitted=True)
    finally:
        if not submitted:
            ctx.service.release()
        if upload is not None:
            upload.discard()  # a worker that still reads it holds it open; one not yet started never will
    redact_document(doc)
    if doc.errors and not doc.pages:
        raise unreadable(doc)
    if doc.pages and all(page.status == PageStatus.FAILED and not page.attempts for page in doc.pages):
        # no page could even be decoded (every one over the pixel limit, say): refused like an unreadable file
        more = f" (and {len(doc.pages) - 1} more page(s) like it)" if len(doc.pages) > 1 else ""
        first = doc.pages[0]
        raise refusal(f"{first.source} page {first.page}: {first.errors[0]}{more}")
    body: str | bytes = doc.to_json(indent=None) if fmt == "json" else searchable if fmt == "pdf" else render(doc, fmt)
    failed = sum(page.status == PageStatus.FAILED for page in doc.pages)
    headers = {"X-Polyocr-Failed-Pages": str(failed), "X-Polyocr-Pages": str(len(doc.pages))}
    return Response(body, media_type=MEDIA_TYPES[fmt], headers=headers)


@api.post(
    "/jobs",
    status_code=202,
    summary="Queue a long document; returns a job id at once",
    openapi_extra=documented_body("The document (image or PDF) and options."),
)
async def submit_job(request: Request) -> JSONResponse:
    ctx = context(request)
    # Refused before the body is read: a full queue, or job storage that this upload would overfill.
    if ctx.store.count(JobStatus.QUEUED) >= ctx.settings.max_queued_jobs:
        raise ApiError(
            429,
            f"job queue is full ({ctx.settings.max_queued_jobs} queued); retry later",
            "rate_limit_error",
            {"Retry-After": "5"},
        )
    declared = request.headers.get("content-length", "")
    await _check_storage(ctx, int(declared) if declared.isdigit() else 0)
    upload = await ctx.read_upload(request)
    try:
        params, _ = ctx.params_from(upload.fields)
        await _check_storage(ctx, upload.size)
        try:
            pages = await asyncio.to_thread(ctx.service.page_count, upload.path, upload.filename, params.dpi)
        except InputError as exc:
            raise input_error(exc) from None
        job = await asyncio.to_thread(ctx.store.create, upload.path, upload.filename, params.to_dict(), pages)
    finally:
        upload.discard()  # moved into the job's uploads/ when the job was created
    ctx.runner.wake()
    return JSONResponse(
        {**job.public(ctx.settings.job_ttl), "url": f"/v1/jobs/{job.id}", "result_url": f"/v1/jobs/{job.id}/result"},
        status_code=202,
    )


@api.get("/jobs/{job_id}", summary="A job's status and progress")
async def job_status(request: Request, job_id: str) -> dict[str, Any]:
    ctx = context(request)
    job = ctx.store.get(job_id)
    if job is None:
        raise ApiError(404, f"no job {job_id!r} (never created, or expired)", "not_found")
    public = job.public(ctx.settings.job_ttl)
    public["error"] = redact(public["error"]) if public["error"] else public["error"]
    return public


@api.delete("/jobs/{job_id}", summary="Delete a finished job and its files (frees job storage)")
async def delete_job(request: Request, job_id: str) -> dict[str, Any]:
    ctx = context(request)
    job = ctx.store.get(job_id)
    if job is None:
        raise ApiError(404, f"no job {job_id!r} (never created, or expired)", "not_found")
    if not await asyncio.to_thread(ctx.store.delete, job_id):
        raise ApiError(409, f"job {job_id} is {job.status.value}; only a finished job can be deleted", "job_not_done")
    return {"id": job_id, "deleted": True}


async def _check_storage(ctx: Any, incoming: int) -> None:
    """507 when the job directory's uploads and results would pass --max-job-mb with this upload."""
    used = await asyncio.to_thread(ctx.store.usage)
    limit = ctx.settings.max_job_bytes
    if used + incoming > limit:
        raise ApiError(
            507,
            f"job storage is full: {used / 2**20:.1f} MiB of {limit / 2**20:.1f} MiB held by jobs' files, and this "
            f"upload is {incoming / 2**20:.1f} MiB; fetch and DELETE finished jobs (or wait for them to expire), "
            "or ask the operator to raise --max-job-mb",
            "insufficient_storage",
            {"Retry-After": "60"},
        )


@api.get("/jobs/{job_id}/result", summary="A finished job's result (json, md or txt)")
async def job_result(request: Request, job_id: str, format: str = "json") -> Response:
    ctx = context(request)
    fmt = FORMAT_ALIASES.get(format, format)
    if fmt == "pdf":
        raise ApiError(
            400,
            "a job's result comes as json, md, txt, hocr or alto: a searchable PDF is made from the uploaded "
            "file, which a job deletes when it finishes; send the document to POST /v1/ocr with format=pdf",
        )
    if fmt not in FORMATS:
        raise ApiError(400, f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
    job = ctx.store.get(job_id)
    if job is None:
        raise ApiError(404, f"no job {job_id!r} (never created, or expired)", "not_found")
    if job.status == JobStatus.FAILED:
        raise ApiError(409, f"job {job_id} failed: {job.error}", "job_failed")
    if job.status != JobStatus.DONE:
        raise ApiError(
            409,
            f"job {job_id} is {job.status.value} ({job.pages_done}/{job.page_count} pages); poll GET /v1/jobs/{job_id}",
            "job_not_done",
        )
    try:
        text = await asyncio.to_thread(ctx.store.read_result, job_id)
    except OSError:
        raise ApiError(
            410,
            f"the result of job {job_id} is no longer stored on the server (removed outside polyocr); "
            "submit the document again",
            "gone",
        ) from None
    if fmt == "json":
        return Response(text, media_type=MEDIA_TYPES["json"])
    return Response(render(DocumentResult.from_json(text), fmt), media_type=MEDIA_TYPES[fmt])


@api.get("/engines", summary="Every engine, whether it runs here, and the default chain")
async def engines(request: Request) -> dict[str, Any]:
    ctx = context(request)
    return {"default": list(ctx.default_chain), "engines": await asyncio.to_thread(_engine_rows, ctx.settings)}


@api.get("/models", summary="Engines as OpenAI model ids (for clients that list models first)")
async def models() -> dict[str, Any]:
    return {
        "object": "list",
        "data": [{"id": name, "object": "model", "owned_by": "polyocr"} for name in engine_names()],
    }


@api.post("/chat/completions", summary="OpenAI-compatible chat completion over one page image")
async def chat(request: Request) -> JSONResponse:
    ctx = context(request)
    try:
        body = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not JSON (UTF-8): {exc}") from None
    try:
        ask = parse_chat(body)
    except ChatRequestError as exc:
        raise ApiError(400, str(exc)) from None
    if sniff_content_type(ask.image) is None:
        raise ApiError(415, f"the image is not {ACCEPTED} (recognised by content)", "unsupported_media_type")
    engine = ask.model if ask.model in engine_names() else None
    params = OCRParams(ctx.chain_for(engine, ask.task, ctx.settings.languages), ask.task, ctx.settings.languages)
    if ask.answer == "svg" and not ctx.svg_engines(params.chain):
        raise ApiError(
            400,
            f"the image_to_svg prompt needs an engine that draws SVG, and none of {', '.join(params.chain)} does: "
            'serve dots-mocr with [engines.dots-mocr] generation = {prompt_mode = "image_to_svg"} in polyocr.toml '
            "and name it as the model",
        )
    transform = _cropper(ask) if ask.region else None
    doc = redact_document(await ctx.run_admitted(_recognize_one_page, ctx.service, ask, params, transform))
    if doc.errors and not doc.pages:
        raise unreadable(doc)
    if doc.pages[0].status == PageStatus.FAILED:
        raise ApiError(502, "every engine failed on the image: " + "; ".join(doc.pages[0].errors), "engine_error")
    return JSONResponse(completion(doc, ask, ask.model or ",".join(params.chain)))


@probes.get("/health", summary="Liveness: the process answers; and the job directory's usage")
async def health(request: Request) -> dict[str, Any]:
    ctx = context(request)
    used = await asyncio.to_thread(ctx.store.usage)
    return {
        "status": "ok",
        "service": "polyocr",
        "version": __version__,
        "job_storage": {
            "bytes": used,
            "limit_bytes": ctx.settings.max_job_bytes,
            "full": used >= ctx.settings.max_job_bytes,
        },
    }


@probes.get("/ready", summary="Readiness (the default engine chain has loaded) and current load")
async def ready(request: Request) -> JSONResponse:
    ctx = context(request)
    load = {
        "requests": ctx.service.admitted,
        "capacity": ctx.settings.capacity,
        "jobs_queued": ctx.store.count(JobStatus.QUEUED),
    }
    saturated = ctx.service.saturation()
    if ctx.service.ready and saturated:  # up, but a new request would wait or be refused
        return JSONResponse({"ready": False, "reason": saturated, **load}, status_code=503)
    if ctx.service.ready:
        return JSONResponse({"ready": True, "engines": list(ctx.default_chain), **load})
    if ctx.settings.warm_up:
        ctx.service.start_warm_up(ctx.default_params)
    return JSONResponse({"ready": False, "reason": redact(ctx.service.ready_reason), **load}, status_code=503)


def _searchable_pdf(
    service: OCRService, path: Any, name: str, params: OCRParams, is_pdf: bool
) -> tuple[DocumentResult, bytes]:
    """OCR an upload and make its searchable PDF (formats/pdf.py) in the same worker: a PDF keeps its
    own pages with the text layer added where they were OCRed; an image's pages are kept as they
    were decoded, each at its resolution."""
    from polyocr.formats.pdf import PageImage, pdf_bytes

    images: dict[int, PageImage] = {}

    def keep(page: Page, result: Any) -> None:
        if not is_pdf and page.error is None:
            images[page.number] = PageImage.encode(page.image, page.dpi)

    doc = service.recognize(path, name, params, on_page=keep)
    if is_pdf:
        dpi = params.dpi if params.dpi is not None else service.settings.dpi
        return doc, pdf_bytes(doc, source_pdf=path, dpi=dpi)
    return doc, (pdf_bytes(doc, images=images) if images else b"")


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
                "<image_url>", f"the grounding box {[x1, y1, x2, y2]} lies outside the {width}x{height} image"
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
