"""The engine chain: for each page, try engines in order and record every attempt.

Engines are created and loaded once, on first use, and kept until the router is closed. An engine
that fails to load is marked unavailable for the rest of the run so later pages skip it at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence

from polyocr.documents import Page, Source
from polyocr.engines.base import Engine, EnginePlan, Task, create_engine, engine_names
from polyocr.errors import EngineUnavailable, InputError
from polyocr.formats.markdown import blocks_to_markdown
from polyocr.formats.text import blocks_to_text
from polyocr.results import Attempt, DocumentResult, Outcome, PageResult, PageStatus
from polyocr.runtime.probe import Profile, get_profile

PageCallback = Callable[[Page, PageResult], None]


def resolve_chain(spec: str | Sequence[str], task: Task, profile: Profile | None = None) -> list[str]:
    """Engine names to try, in order, from "auto", "name" or "a,b,c"."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    names = [n for n in names if n]
    if names == ["auto"]:
        return ["tesseract"]
    known = set(engine_names())
    unknown = [n for n in names if n not in known]
    if unknown:
        raise EngineUnavailable(", ".join(unknown), f"no such engine (known: {', '.join(sorted(known))})")
    if not names:
        raise EngineUnavailable("", "no engine given")
    return names


class Router:
    """Runs pages through an engine chain; one instance serves a whole run of many documents."""

    def __init__(
        self,
        chain: Sequence[str],
        task: Task | None = None,
        *,
        plans: dict[str, EnginePlan] | None = None,
        profile: Profile | None = None,
    ):
        self.chain = list(chain)
        self.task = task or Task()
        self.plans = plans or {}
        self.profile = profile or get_profile()
        self._engines: dict[str, Engine] = {}
        self._unavailable: dict[str, str] = {}

    def _engine(self, name: str) -> Engine:
        if name in self._unavailable:
            raise EngineUnavailable(name, self._unavailable[name])
        if name not in self._engines:
            try:
                engine = create_engine(name)
                availability = engine.available(self.profile)
                if not availability.ok:
                    raise EngineUnavailable(name, availability.reason, availability.fix)
                engine.load(self.plans.get(name, EnginePlan()))
            except EngineUnavailable as exc:
                self._unavailable[name] = exc.reason
                raise
            self._engines[name] = engine
        return self._engines[name]

    def recognize_page(self, page: Page) -> PageResult:
        attempts: list[Attempt] = []
        for name in self.chain:
            start = time.perf_counter()
            try:
                engine = self._engine(name)
                [result] = engine.recognize([page], self.task)
            except EngineUnavailable as exc:
                attempts.append(Attempt(engine=name, outcome=Outcome.UNAVAILABLE, error=exc.reason,
                                        seconds=time.perf_counter() - start))
                continue
            except Exception as exc:  # an engine's failure on one page must not stop the run
                attempts.append(Attempt(engine=name, outcome=Outcome.ERROR,
                                        error=f"{type(exc).__name__}: {exc}",
                                        seconds=time.perf_counter() - start))
                continue
            attempts.append(Attempt(engine=name, outcome=Outcome.OK, seconds=time.perf_counter() - start,
                                    settings=self._settings(name)))
            return _finish(result, page, name, attempts)
        errors = [f"{a.engine}: {a.error}" for a in attempts]
        return PageResult(page=page.number, source=page.source, width=page.image.width,
                          height=page.image.height, status=PageStatus.FAILED, attempts=attempts,
                          errors=errors)

    def _settings(self, name: str) -> dict[str, object]:
        plan = self.plans.get(name)
        if plan is None:
            return {}
        return {"device": plan.device, "dtype": plan.dtype, "attention": plan.attention,
                "max_pixels": plan.max_pixels}

    def run_source(self, source: Source, on_page: PageCallback | None = None) -> DocumentResult:
        """All pages of one opened input; a page that cannot be decoded is recorded, not raised."""
        start = time.perf_counter()
        doc = DocumentResult(source=source.path)
        for page in _pages_with_errors(source, doc):
            result = self.recognize_page(page)
            doc.pages.append(result)
            if on_page is not None:
                on_page(page, result)
        doc.seconds = time.perf_counter() - start
        return doc

    def close(self) -> None:
        for engine in self._engines.values():
            engine.close()
        self._engines.clear()

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pages_with_errors(source: Source, doc: DocumentResult) -> Iterator[Page]:
    try:
        yield from source.pages()
    except InputError as exc:
        doc.errors.append(str(exc))


def _finish(result: PageResult, page: Page, engine: str, attempts: list[Attempt]) -> PageResult:
    """Fill what every result needs whatever the engine: identity, size, text and Markdown."""
    result.page = page.number
    result.source = page.source
    result.width, result.height = page.image.size
    result.engine = engine
    result.attempts = attempts
    if not result.text:
        result.text = blocks_to_text(result.blocks)
    if not result.markdown:
        result.markdown = blocks_to_markdown(result.blocks) or result.text
    return result
