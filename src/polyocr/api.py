"""The Python API: one call from a file or image to a DocumentResult, and the run set-up that the
CLI shares (configuration, task, chain, the user's overrides, preflight) so both behave alike."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from PIL import Image

from polyocr import defaults
from polyocr.config import RouterConfig, load_config
from polyocr.documents import Source, load_pages, open_source
from polyocr.documents.loader import open_bytes_or_stream
from polyocr.documents.textlayer import TEXT_LAYER_MODES
from polyocr.errors import ConfigError, InputError, OptionError
from polyocr.results import DocumentResult
from polyocr.router import Router, resolve_chain
from polyocr.scripts import language_codes
from polyocr.types import EnginePlan, Task, TaskKind


@dataclass
class RunOptions:
    """What a user may say about a run, with the defaults polyocr uses when they say nothing."""

    engine: str | Sequence[str] = "auto"
    # None: the default, layout, which a named engine without layout answers with text (Task.for_engine);
    # a task given is the task: an engine named for it that lacks it is refused.
    task: TaskKind | str | None = None
    languages: str | Sequence[str] = defaults.LANGUAGES
    dpi: float = defaults.DPI
    max_pixels: int = defaults.INPUT_MAX_PIXELS
    max_pages: int = defaults.MAX_PAGES
    max_new_tokens: int = defaults.MAX_NEW_TOKENS
    timeout: float | None = None  # seconds per page before moving on to the next engine
    model: str | Path | None = None  # a checkpoint for the first engine of the chain
    device: str | None = None  # VLM overrides, validated before any model loads
    dtype: str | None = None
    attn: str | None = None
    plans: dict[str, EnginePlan] = field(default_factory=dict)  # given outright, used as they are
    text_layer: str = "auto"  # PDFs: read a page from its own text layer (auto | always | never)
    lang_detect: bool = True  # add eng/rus where a page's text is in a script `languages` lacks

    def validate(self) -> None:
        """Refuse values no page could be read with, up front and with the valid range (OptionError)."""
        checks = (
            ("dpi", self.dpi, 1, MAX_DPI),
            ("max_pixels", self.max_pixels, 1, None),
            ("max_pages", self.max_pages, 1, None),
            ("max_new_tokens", self.max_new_tokens, 1, None),
        )
        for name, value, low, high in checks:
            number = float(value)
            if not math.isfinite(number) or number < low or (high is not None and number > high):
                span = f"from {low} to {high}" if high is not None else f"at least {low}"
                raise OptionError(f"{name} must be {span}, got {value!r}")
        if self.timeout is not None and (not math.isfinite(float(self.timeout)) or self.timeout <= 0):
            raise OptionError(f"timeout must be a positive number of seconds, got {self.timeout!r}")
        check_languages(self.language_tuple())
        if self.text_layer not in TEXT_LAYER_MODES:
            raise OptionError(f"text_layer must be one of {', '.join(TEXT_LAYER_MODES)}, got {self.text_layer!r}")

    def language_tuple(self) -> tuple[str, ...]:
        """A string is one language or several joined by "+" ("eng+rus"), never its letters."""
        items = [self.languages] if isinstance(self.languages, str) else list(self.languages)
        return tuple(language_codes(items))


MAX_DPI = 2400  # beyond this a Letter page is over a billion pixels


def check_languages(languages: Sequence[str]) -> None:
    """Refuse a language polyocr does not know and no installed Tesseract model reads (OptionError)."""
    from polyocr.scripts import LANGUAGE_SCRIPTS

    if not languages:
        raise OptionError("no language given; use codes such as eng or eng+rus")
    unknown = [code for code in languages if code not in LANGUAGE_SCRIPTS]
    if not unknown:
        return
    from polyocr.engines.tesseract import find_tessdata, installed_languages

    tessdata = find_tessdata()
    installed = set(installed_languages(tessdata)) if tessdata is not None else set()
    missing = [code for code in unknown if code not in installed]
    if missing:
        known = ", ".join(sorted(set(LANGUAGE_SCRIPTS) | installed))
        raise OptionError(
            f"unknown language {'+'.join(missing)!r}: not a language polyocr knows and no Tesseract "
            f"traineddata for it is installed; known: {known}"
        )


def prepare_router(options: RunOptions) -> Router:
    """The router for a run: configuration, task, chain, the user's model and overrides, preflight.

    Raises a PolyOCRError (EngineUnavailable, ConfigError, ConfigFileError) when the run cannot work
    at all, before any page: the CLI turns that into exit code 2, the API raises it.
    """
    options.validate()
    config = load_config(options.engine, options.timeout)
    task = Task(
        kind=TaskKind(options.task) if options.task is not None else TaskKind.LAYOUT,
        explicit=options.task is not None,
        languages=options.language_tuple(),
        max_new_tokens=options.max_new_tokens,
        timeout=config.timeout,
        lang_detect=options.lang_detect,
    )
    chain = resolve_chain(config.engines, task)
    _apply_overrides(config, chain, options)
    router = Router(chain, task, plans=options.plans or None, config=config)
    router.preflight()
    return router


def _apply_overrides(config: RouterConfig, chain: list[str], options: RunOptions) -> None:
    if options.model is not None:
        if config.engines == ["auto"]:
            raise ConfigError("auto", "model", "a checkpoint needs the engine it is for: name it (--engine, engine=)")
        config.plans.setdefault(chain[0], {})["model_path"] = str(options.model)
    overrides = {k: v for k, v in (("device", options.device), ("dtype", options.dtype), ("attention", options.attn))}
    for name in chain:
        config.plans.setdefault(name, {}).update({k: v for k, v in overrides.items() if v})


Input = str | Path | Image.Image | bytes | bytearray | memoryview | IO[bytes]


def open_input(item: Input | Any, options: RunOptions) -> Source:
    """An input opened as the run's options say (a path, a PIL image, bytes or a binary file object);
    InputError when it cannot be read."""
    if isinstance(item, Image.Image):
        pages = load_pages(item, max_pixels=options.max_pixels)
        return Source(path="<image>", kind="image", page_count=1, _pages=iter(pages))
    caps: dict[str, Any] = {
        "dpi": options.dpi,
        "max_pixels": options.max_pixels,
        "max_pages": options.max_pages,
        "text_layer": options.text_layer,
    }
    if isinstance(item, (bytes, bytearray, memoryview)) or hasattr(item, "read"):
        return open_bytes_or_stream(item, **caps)
    if not isinstance(item, (str, Path)):
        raise TypeError(f"cannot OCR a {type(item).__name__}: give a path, a PIL image, bytes or a binary file")
    return open_source(item, **caps)


def ocr(
    item: Input,
    engine: str | Sequence[str] = "auto",
    *,
    task: TaskKind | str | None = None,
    languages: str | Sequence[str] = defaults.LANGUAGES,
    dpi: float = defaults.DPI,
    max_pixels: int = defaults.INPUT_MAX_PIXELS,
    max_pages: int = defaults.MAX_PAGES,
    max_new_tokens: int = defaults.MAX_NEW_TOKENS,
    plans: dict[str, EnginePlan] | None = None,
    timeout: float | None = None,
    model: str | Path | None = None,
    device: str | None = None,
    dtype: str | None = None,
    attn: str | None = None,
    text_layer: str = "auto",
    lang_detect: bool = True,
) -> DocumentResult:
    """OCR one file (image, multi-page TIFF, PDF), PIL image, bytes or binary file object.

    An input that cannot be read gives a DocumentResult with no pages and the reason in `errors`
    rather than an exception, the same as the CLI reports it; check `result.ok`. A run that cannot
    work at all (no engine of the chain can run, an override that cannot run here) raises.

    `engine="auto"` lets a polyocr.toml or POLYOCR_ENGINES choose the chain, as on the command line;
    `languages` is "eng", "eng+rus" or a sequence of codes; `model` is a checkpoint for the first
    engine named; `device`, `dtype` and `attn` override the runtime's choice for VLM engines;
    `plans` gives an engine's EnginePlan outright; `timeout` is seconds per page before the router
    moves on to the next engine; `text_layer` (auto | always | never) whether a PDF page is read
    from its own text layer when it has one; `lang_detect=False` reads every page in `languages`
    only (no eng/rus added for scripts found on the page).
    """
    options = RunOptions(
        engine=engine,
        task=task,
        languages=languages,
        dpi=dpi,
        max_pixels=max_pixels,
        max_pages=max_pages,
        max_new_tokens=max_new_tokens,
        timeout=timeout,
        model=model,
        device=device,
        dtype=dtype,
        attn=attn,
        plans=dict(plans or {}),
        text_layer=text_layer,
        lang_detect=lang_detect,
    )
    options.validate()
    try:
        source = open_input(item, options)
    except InputError as exc:
        return DocumentResult(source=exc.path, errors=[str(exc)])
    with prepare_router(options) as router:
        return router.run_source(source)


def batch(
    inputs: str | Path | Sequence[str | Path],
    out_dir: str | Path,
    engine: str = "auto",
    *,
    formats: Sequence[str] = ("txt",),
    languages: Sequence[str] = ("eng", "rus"),
    task: TaskKind | str = TaskKind.LAYOUT,
    workers: int | None = None,
    retry_failed: bool = False,
    ray: str | None = None,
    **options: object,
):
    """OCR many files into `out_dir` page by page, resumable after any interruption (`polyocr batch`).

    Returns a polyocr.batch.BatchReport (`.exit_code` as the CLI's). `ray="local"` or a cluster
    address runs the pages on Ray; the remaining keyword arguments are BatchOptions fields (dpi,
    recycle_after, max_worker_mb, ...). To run polyocr inside your own Ray Data pipeline, see
    polyocr.batch.ray_pipeline.build_pipeline.
    """
    from polyocr.batch import BatchOptions, run_batch

    items = [inputs] if isinstance(inputs, str | Path) else list(inputs)
    opts = BatchOptions(
        engine=engine, formats=tuple(formats), languages=tuple(languages), task=TaskKind(task), workers=workers,
        retry_failed=retry_failed, ray=ray, **options,  # type: ignore[arg-type]
    )  # fmt: skip
    return run_batch(items, out_dir, opts)
