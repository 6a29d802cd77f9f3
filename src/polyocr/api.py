"""The Python API: one call from a file or image to a DocumentResult, and the run set-up that the
CLI shares (configuration, task, chain, the user's overrides, preflight) so both behave alike."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from polyocr import defaults
from polyocr.config import RouterConfig, load_config
from polyocr.documents import Source, load_pages, open_source
from polyocr.errors import ConfigError, InputError
from polyocr.results import DocumentResult
from polyocr.router import Router, resolve_chain
from polyocr.scripts import language_codes
from polyocr.types import EnginePlan, Task, TaskKind


@dataclass
class RunOptions:
    """What a user may say about a run, with the defaults polyocr uses when they say nothing."""

    engine: str | Sequence[str] = "auto"
    task: TaskKind | str = TaskKind.LAYOUT
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

    def language_tuple(self) -> tuple[str, ...]:
        """A string is one language or several joined by "+" ("eng+rus"), never its letters."""
        items = [self.languages] if isinstance(self.languages, str) else list(self.languages)
        return tuple(language_codes(items))


def prepare_router(options: RunOptions) -> Router:
    """The router for a run: configuration, task, chain, the user's model and overrides, preflight.

    Raises a PolyOCRError (EngineUnavailable, ConfigError, ConfigFileError) when the run cannot work
    at all, before any page: the CLI turns that into exit code 2, the API raises it.
    """
    config = load_config(options.engine, options.timeout)
    task = Task(
        kind=TaskKind(options.task),
        languages=options.language_tuple(),
        max_new_tokens=options.max_new_tokens,
        timeout=config.timeout,
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


def open_input(item: str | Path | Image.Image, options: RunOptions) -> Source:
    """An input opened as the run's options say; InputError when it cannot be read."""
    if isinstance(item, Image.Image):
        return Source(path="<image>", kind="image", page_count=1, _pages=iter(load_pages(item)))
    return open_source(item, dpi=options.dpi, max_pixels=options.max_pixels, max_pages=options.max_pages)


def ocr(
    item: str | Path | Image.Image,
    engine: str | Sequence[str] = "auto",
    *,
    task: TaskKind | str = TaskKind.LAYOUT,
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
) -> DocumentResult:
    """OCR one file (image, multi-page TIFF, PDF) or PIL image.

    An input that cannot be read gives a DocumentResult with no pages and the reason in `errors`
    rather than an exception, the same as the CLI reports it; check `result.ok`. A run that cannot
    work at all (no engine of the chain can run, an override that cannot run here) raises.

    `engine="auto"` lets a polyocr.toml or POLYOCR_ENGINES choose the chain, as on the command line;
    `languages` is "eng", "eng+rus" or a sequence of codes; `model` is a checkpoint for the first
    engine named; `device`, `dtype` and `attn` override the runtime's choice for VLM engines;
    `plans` gives an engine's EnginePlan outright; `timeout` is seconds per page before the router
    moves on to the next engine.
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
    )
    try:
        source = open_input(item, options)
    except InputError as exc:
        return DocumentResult(source=str(item), errors=[str(exc)])
    with prepare_router(options) as router:
        return router.run_source(source)
