"""The Python API: one call from a file or image to a DocumentResult."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from polyocr.documents import (
    DEFAULT_DPI,
    DEFAULT_MAX_PAGES,
    DEFAULT_MAX_PIXELS,
    Source,
    load_pages,
    open_source,
)
from polyocr.errors import InputError
from polyocr.results import DocumentResult
from polyocr.router import Router, load_config, resolve_chain
from polyocr.types import EnginePlan, Task, TaskKind


def ocr(
    item: str | Path | Image.Image,
    engine: str | Sequence[str] = "auto",
    *,
    task: TaskKind | str = TaskKind.LAYOUT,
    languages: Sequence[str] = ("eng", "rus"),
    dpi: float = DEFAULT_DPI,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_pages: int = DEFAULT_MAX_PAGES,
    plans: dict[str, EnginePlan] | None = None,
    timeout: float | None = None,
    lang_detect: bool = True,
) -> DocumentResult:
    """OCR one file (image, multi-page TIFF, PDF) or PIL image.

    An input that cannot be read gives a DocumentResult with no pages and the reason in `errors`
    rather than an exception, the same as the CLI reports it; check `result.ok`.

    `engine="auto"` lets a polyocr.toml or POLYOCR_ENGINES choose the chain, as on the command line;
    `plans` gives an engine's EnginePlan outright instead of the one the router would decide;
    `timeout` is seconds per page before the router moves on to the next engine; `lang_detect=False`
    reads every page in `languages` only (no eng/rus added for scripts found on the page).
    """
    config = load_config(engine, timeout)
    task_obj = Task(kind=TaskKind(task), languages=tuple(languages), timeout=config.timeout, lang_detect=lang_detect)
    if isinstance(item, Image.Image):
        source = Source(path="<image>", kind="image", page_count=1, _pages=iter(load_pages(item)))
    else:
        try:
            source = open_source(item, dpi=dpi, max_pixels=max_pixels, max_pages=max_pages)
        except InputError as exc:
            return DocumentResult(source=str(item), errors=[str(exc)])
    with Router(resolve_chain(config.engines, task_obj), task_obj, plans=plans, config=config) as router:
        return router.run_source(source)
