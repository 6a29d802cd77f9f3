"""The web page at `/`: upload, watch a job, look at each page with its boxes, compare two engines.

Everything the page needs is served from the package (static/: HTML, CSS, the page's ES modules and
the vendored Markdown, math and sanitiser libraries, see static/vendor/VENDORED.md); nothing is
fetched from elsewhere, since the machines polyocr serves on are often offline. The page itself
uses the public API (/v1/jobs to submit, /v1/engines, /v1/ocr for the compare view) plus a few
read-only endpoints under /ui/api that the API lacks:

- /ui/api/info: what the page must know before the first call (is a key needed, limits, formats);
  the only one open without the key, and it tells nothing secret.
- /ui/api/jobs/{id}: a job's status with the pages finished so far (status, engine, attempts), live
  while it runs.
- /ui/api/jobs/{id}/view: the result plus, per page, each block's own Markdown and text, so the page
  can tie a box to its text; /ui/api/jobs/{id}/download: the result in any format, as a file.
  Neither marks the result fetched, so the upload stays until the job expires and the page images
  can still be drawn (GET /v1/jobs/{id}/result deletes the upload, as before).
- /ui/api/jobs/{id}/pages/{n}: page n as PNG, as the engines saw it (PDF pages rendered at the job's
  DPI), so the boxes, in page pixels, line up; rendered once and cached beside the job.
- /ui/api/compare: the CER between two texts (bench.metrics' definition) and a word diff.
"""

from __future__ import annotations

import asyncio
import difflib
import re
import threading
import unicodedata
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from polyocr import __version__
from polyocr.bench.metrics import char_errors
from polyocr.errors import InputError
from polyocr.formats import FORMATS, render
from polyocr.formats.markdown import block_to_markdown
from polyocr.formats.text import NON_TEXT
from polyocr.results import DocumentResult, PageResult
from polyocr.server.context import authorize  # the same bearer-key check as /v1
from polyocr.server.jobs import Job, JobStatus, save_page_png
from polyocr.types import TaskKind

STATIC = Path(__file__).with_name("static")
_MEDIA = {"json": "application/json", "md": "text/markdown; charset=utf-8", "txt": "text/plain; charset=utf-8"}
_TOKENS = re.compile(r"\s+|[^\s]+")
MAX_COMPARE_CHARS = 100_000  # per side; a word diff of longer texts is not worth its time
# Engine output is shown as HTML (sanitised by DOMPurify); the policy is a second wall: only the
# package's own scripts run, and nothing is loaded from anywhere else. Inline styles stay allowed
# for Temml's MathML.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' blob: data:; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_render_lock = threading.Lock()  # page images are rendered one document at a time


class CompareBody(BaseModel):
    a: str = Field(max_length=MAX_COMPARE_CHARS)
    b: str = Field(max_length=MAX_COMPARE_CHARS)


def mount_ui(app: FastAPI) -> None:
    """Add the page and its endpoints to a polyocr app (its state holds settings, store, service, runner)."""
    state = app.state
    settings = state.settings

    def job_or_404(job_id: str) -> Job:
        job = state.store.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r} (never created, or expired)")
        return job

    def finished_result(job: Job) -> DocumentResult:
        if job.status == JobStatus.FAILED:
            raise HTTPException(409, f"job {job.id} failed: {job.error}")
        if job.status != JobStatus.DONE:
            raise HTTPException(409, f"job {job.id} is {job.status.value} ({job.pages_done}/{job.page_count} pages)")
        return DocumentResult.from_json(state.store.result_path(job.id).read_text(encoding="utf-8"))

    page = APIRouter(include_in_schema=False)

    @page.get("/")
    async def index() -> FileResponse:
        return FileResponse(
            STATIC / "index.html", headers={"Cache-Control": "no-cache", "Content-Security-Policy": CSP}
        )

    api = APIRouter(prefix="/ui/api", include_in_schema=False)

    @api.get("/info")
    async def info() -> dict[str, Any]:
        return {
            "version": __version__,
            "auth": bool(settings.api_key),
            "formats": list(FORMATS),
            "tasks": [t.value for t in TaskKind if t != TaskKind.REGION],
            "languages": list(settings.languages),
            "dpi": settings.dpi,
            "max_request_bytes": settings.max_request_bytes,
            "max_pages": settings.max_pages,
        }

    @api.get("/jobs/{job_id}", dependencies=[Depends(authorize)])
    async def job_state(job_id: str) -> dict[str, Any]:
        job = job_or_404(job_id)
        body = job.public(settings.job_ttl)
        if job.status == JobStatus.DONE:
            doc = await asyncio.to_thread(finished_result, job)
            body["pages"] = [_summary(p) for p in doc.pages]
        else:
            body["pages"] = state.runner.live_pages(job_id)
        return body

    @api.get("/jobs/{job_id}/view", dependencies=[Depends(authorize)])
    async def job_view(job_id: str) -> JSONResponse:
        doc = await asyncio.to_thread(finished_result, job_or_404(job_id))
        return JSONResponse({"result": doc.model_dump(mode="json"), "pages": [page_view(p) for p in doc.pages]})

    @api.get("/jobs/{job_id}/download", dependencies=[Depends(authorize)])
    async def download(job_id: str, format: str = "json") -> Response:
        if format not in FORMATS:
            raise HTTPException(400, f"unknown format {format!r}; choose one of {', '.join(FORMATS)}")
        job = job_or_404(job_id)
        doc = await asyncio.to_thread(finished_result, job)
        name = f"{Path(job.filename).stem or 'document'}.{format}"
        return Response(
            render(doc, format),
            media_type=_MEDIA.get(format, "application/octet-stream"),
            headers={"Content-Disposition": f"attachment; filename*=UTF-8''{_quote(name)}"},
        )

    @api.get("/jobs/{job_id}/pages/{number}", dependencies=[Depends(authorize)])
    async def page_image(job_id: str, number: int) -> Response:
        job = job_or_404(job_id)
        if not 1 <= number <= job.page_count:
            raise HTTPException(404, f"job {job_id} has pages 1 to {job.page_count}, not {number}")
        png = await asyncio.to_thread(_page_png, state, job, number)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    @api.post("/compare", dependencies=[Depends(authorize)])
    async def compare(body: CompareBody) -> dict[str, Any]:
        return await asyncio.to_thread(compare_texts, body.a, body.b)

    app.include_router(page)
    app.include_router(api)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")


def page_view(page: PageResult) -> dict[str, Any]:
    """Each block's own Markdown and text, when the page's Markdown and text are made of exactly them.

    Then the page can show the text block by block and tie each piece to its box; an engine whose page
    text does not come from its blocks (None here) is shown whole, without that link.
    """
    markdown = [block_to_markdown(b) for b in page.blocks]
    text = ["" if b.category in NON_TEXT else b.text.strip() for b in page.blocks]
    return {
        "markdown": markdown if page.blocks and "\n\n".join(m for m in markdown if m) == page.markdown else None,
        "text": text if page.blocks and "\n\n".join(t for t in text if t) == page.text else None,
    }


def compare_texts(a: str, b: str) -> dict[str, Any]:
    """B's character errors against A as the reference, and a word diff turning A into B."""
    count = char_errors(a, b)
    a, b = unicodedata.normalize("NFC", a), unicodedata.normalize("NFC", b)  # as the CER sees them
    left, right = _TOKENS.findall(a), _TOKENS.findall(b)
    diff: list[list[str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, left, right, autojunk=False).get_opcodes():
        if op == "equal":
            diff.append(["equal", "".join(left[i1:i2])])
            continue
        if i2 > i1:
            diff.append(["delete", "".join(left[i1:i2])])
        if j2 > j1:
            diff.append(["insert", "".join(right[j1:j2])])
    return {"cer": count.rate, "errors": count.errors, "reference_chars": count.total, "diff": diff}


def _summary(page: PageResult) -> dict[str, Any]:
    return page.model_dump(mode="json", include={"page", "status", "engine", "attempts", "errors"})


def _page_png(state: Any, job: Job, number: int) -> bytes:
    """Page `number` of the job's upload as PNG; pages rendered on the way are cached too."""
    cache: Path = state.store.pages_path(job.id)
    target = cache / f"{number}.png"
    with _render_lock:
        if target.is_file():
            return target.read_bytes()
        upload: Path = state.store.upload_path(job.id)
        if not upload.is_file():
            raise HTTPException(
                410,
                "the page image is gone: the job's upload was deleted when it finished (submit with keep_pages=1 "
                "to keep page images)",
            )
        try:
            source = state.service.open(upload.read_bytes(), job.filename, job.params.get("dpi"))
            cache.mkdir(parents=True, exist_ok=True)
            for page in source.pages():
                save_page_png(cache, page)
                if page.number >= number:
                    break
        except InputError as exc:
            raise HTTPException(422, str(exc)) from None
        if not target.is_file():
            raise HTTPException(422, f"page {number} of {job.filename} could not be decoded")
        return target.read_bytes()


def _quote(name: str) -> str:
    from urllib.parse import quote

    return quote(name, safe="")
