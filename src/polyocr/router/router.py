"""The router: for each page, try the chain's engines in order, check what they return, retry or
fall back, and record every attempt.

Pages go through the chain a window at a time: every page of the window is offered to the first
engine (in batches of its plan's batch_size), the pages it did not answer well go to the next
engine, and so on. That keeps batching for the GPU engines and swaps large models at most once per
window rather than once per page. One engine's work on one batch is an explicit loop over a stack
of (pages, loop retries so far): each call's outcome is judged by the checks, `policy.decide` says
accept, retry with a new plan, or pass on, and the router carries that out. Engines live in an
`EnginePool` (pool.py); the chain comes from resolve.py.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from polyocr import defaults
from polyocr.config import RouterConfig
from polyocr.documents import Page, Source
from polyocr.documents.textlayer import ENGINE as LAYER_ENGINE
from polyocr.documents.textlayer import declined_attempt, layer_result
from polyocr.engines.base import create_engine
from polyocr.errors import ConfigError, EngineUnavailable, InputError, PageTimeout
from polyocr.formats.markdown import blocks_to_markdown
from polyocr.formats.text import blocks_to_text
from polyocr.langdetect import choose_languages, page_scripts, word_scripts
from polyocr.results import Attempt, DocumentResult, LanguageChoice, Outcome, PageResult, PageStatus
from polyocr.router.checks import CHECKS, LOOP_CHECKS, SOFT_CHECKS, Check, Failure, PageContext, run_checks
from polyocr.router.plans import make_plan, plan_settings
from polyocr.router.policy import History, decide, is_oom
from polyocr.router.pool import EnginePool, call_with_timeout, free_memory
from polyocr.router.textlayer import sample_invisible_layer
from polyocr.runtime.probe import Profile, get_profile
from polyocr.types import EngineKind, EnginePlan, Task, TaskKind

# How a page read from its text layer knows its scripts (PageResult.languages.method).
LAYER_METHOD = "text layer: its characters classified by Unicode script"

PageCallback = Callable[[Page, PageResult], None]
log = logging.getLogger(__name__)

WINDOW_PAGES = defaults.WINDOW_PAGES


@dataclass
class _PageState:
    """One page on its way through the chain."""

    page: Page
    ctx: PageContext
    attempts: list[Attempt] = field(default_factory=list)
    result: PageResult | None = None
    salvage: PageResult | None = None  # the best incomplete answer, kept in case nothing does better
    relanguaged: bool = False  # its task's languages were already corrected after a wrong-script answer

    def consider_salvage(self, result: PageResult, failures: list[Failure]) -> None:
        """Keep an answer that is only incomplete (a soft check, or a partial parse the engine
        recovered from a loop or truncation) when it has more text than the one kept so far."""
        names = {f.check for f in failures}
        recovered = result.status == PageStatus.PARTIAL and names <= LOOP_CHECKS | SOFT_CHECKS
        incomplete = names <= SOFT_CHECKS or recovered
        if not incomplete or not result.text.strip():
            return
        if self.salvage is None or len(result.text) > len(self.salvage.text):
            self.salvage = result


class Router:
    """Runs pages through an engine chain; one instance serves a whole run of many documents."""

    def __init__(
        self,
        chain: Sequence[str],
        task: Task | None = None,
        *,
        plans: dict[str, EnginePlan] | None = None,
        config: RouterConfig | None = None,
        profile: Profile | None = None,
        checks: tuple[Check, ...] = CHECKS,
    ):
        self.chain = list(chain)
        self.config = config or RouterConfig()
        self.task = self._with_timeout(task or Task())  # the default; each call may pass its own
        self.profile = profile or get_profile()
        self.checks = checks
        self.pool = EnginePool(self.profile, self.config, plans, max_new_tokens=self.task.max_new_tokens)
        self._detector: Any = None  # the Tesseract engine doing page script detection, made on first use

    def preflight(self) -> None:
        """Fail before any page when the run cannot work at all.

        Every VLM's plan is decided now, so an override that cannot run here (e.g. --attn
        flash_attention_2 where its kernel did not run) is a ConfigError up front rather than a
        per-page failure; and a chain in which no engine can run raises EngineUnavailable with each
        engine's reason. A chain with at least one usable engine goes ahead: the others' reasons are
        recorded per page as usual.
        """
        reasons = []
        for name in self.chain:
            engine = self.pool.create(name)
            availability = engine.available(self.profile)
            if not availability.ok:
                fix = f" (fix: {availability.fix})" if availability.fix else ""
                reasons.append(f"{name}: {availability.reason}{fix}")
                continue
            overrides = self.config.plan_overrides(name)
            explicit = {"device", "dtype", "attention"} & set(overrides)
            if engine.kind == EngineKind.VLM and name not in self.pool.plans and explicit:
                make_plan(engine, self.profile, overrides)
        if len(reasons) == len(self.chain):
            raise EngineUnavailable(",".join(self.chain), "no engine of the chain can run here: " + "; ".join(reasons))

    # -- pages -----------------------------------------------------------------------------------

    def _with_timeout(self, task: Task) -> Task:
        """The task with the config's page timeout where the task sets none."""
        if task.timeout is None and self.config.timeout is not None:
            return replace(task, timeout=self.config.timeout)
        return task

    def recognize_page(self, page: Page, task: Task | None = None) -> PageResult:
        return self.recognize_pages([page], task=task)[0]

    def recognize_pages(
        self, pages: Sequence[Page], on_page: PageCallback | None = None, task: Task | None = None
    ) -> list[PageResult]:
        """Every page through the chain; a page that fails everywhere comes back FAILED with its errors.

        `task` (default: the router's) may differ from call to call, so one router, and the engines it
        has loaded, can serve requests for different tasks and languages.
        """
        task = self.task if task is None else self._with_timeout(task)
        states = [_PageState(page, PageContext(page, task, self._page_scripts)) for page in pages]
        for state in states:
            if state.page.error is not None:  # the loader could not read it: it fails alone
                state.result = _unreadable(state.page)
                if on_page is not None:
                    on_page(state.page, state.result)
        pending = [state for state in states if state.result is None and not self._from_text_layer(state, on_page)]
        for name in self.chain:
            if not pending:
                break
            pending = self._run_engine(name, pending, on_page)
        for state in pending:
            state.result = _give_up(state)
            if on_page is not None:
                on_page(state.page, state.result)
        return [state.result for state in states if state.result is not None]

    def _from_text_layer(self, state: _PageState, on_page: PageCallback | None) -> bool:
        """Read a PDF page from its own text layer when the loader found it trustworthy and the
        router's checks accept it; otherwise record why not, for the page to go to OCR."""
        verdict = state.page.layer_verdict
        if verdict is None or state.page.text_layer is None or verdict.check == "empty":
            return False  # a page with no text layer at all (a scan) just goes to OCR, as without the feature
        page = state.page
        if verdict.check == "invisible":  # someone's OCR: a strip of the page decides (router/textlayer.py)
            start = time.perf_counter()
            verdict = sample_invisible_layer(self, page, verdict)
            page.layer_seconds += time.perf_counter() - start
        if verdict.use:
            assert page.text_layer is not None
            result = layer_result(page.text_layer, verdict, page.number, page.source, page.size)
            _complete(result, page, LAYER_ENGINE)
            # The page's scripts are those of its layer's characters, exact once the layer passed its
            # own checks (a misread encoding is `garbage` there): the checks judge by them, with no
            # OCR pass over the page to detect what the layer already says.
            found = page_scripts(word_scripts(result.text))
            result.languages = LanguageChoice(
                requested=list(state.ctx.task.languages),
                scripts=list(found),
                method=LAYER_METHOD,
                reason="read from the PDF's text layer: no OCR languages used",
            )
            failures = run_checks(result, state.ctx, self.checks)
            if not failures:
                result.attempts[0].seconds = page.layer_seconds
                state.result = result
                if on_page is not None:
                    on_page(page, result)
                return True
            verdict = replace(verdict, check="checks", reason="; ".join(str(f) for f in failures))
        state.attempts.append(declined_attempt(verdict, page.layer_seconds))
        page.image.load()  # a deferred page is rendered now, in the router's thread, not in an engine's
        return False

    def _page_scripts(self, image: Image.Image, languages: Sequence[str]) -> tuple[str, ...]:
        """The checks' view of a page's scripts: the Tesseract engine's OSD and sampled first pass,
        from an instance of its own (made on first use); () where Tesseract cannot run."""
        if self._detector is None:
            try:  # through the registry, like every engine the router uses
                engine: Any = create_engine("tesseract")
            except EngineUnavailable:
                return ()
            if not engine.available(self.profile).ok:
                return ()
            self._detector = engine
        scripts: tuple[str, ...] = self._detector.page_scripts(image, languages)
        return scripts

    def _relanguage(self, name: str, state: _PageState, failures: list[Failure]) -> bool:
        """After a wrong-script answer, the page's task with the languages its detected scripts call for
        (once per page); True when this engine can read that script, so it is asked again first."""
        if state.relanguaged or not state.ctx.task.lang_detect or "wrong_script" not in {f.check for f in failures}:
            return False
        scripts = state.ctx.scripts
        if not scripts:
            return False
        choice = choose_languages(state.ctx.task.languages, scripts, method="router: tesseract OSD + sampled lines")
        if not choice.added:
            return False
        state.relanguaged = True
        state.ctx = replace(state.ctx, task=replace(state.ctx.task, languages=tuple(choice.used)))
        state.ctx.__dict__["scripts"] = scripts  # keep the detection made for the old task
        return scripts[0] in self.pool.engine(name).scripts

    def _run_engine(self, name: str, states: list[_PageState], on_page: PageCallback | None) -> list[_PageState]:
        """Offer the pages to one engine in batches of its current batch size (which an out-of-memory
        retry may lower for good part-way); the pages it did not answer acceptably are returned."""
        start = time.perf_counter()
        try:
            base = self.pool.get(name).plan
        except (EngineUnavailable, ConfigError) as exc:
            reason = exc.reason if isinstance(exc, EngineUnavailable) else str(exc)
            fix = f" (fix: {exc.fix})" if exc.fix else ""
            _record(states, name, Outcome.UNAVAILABLE, {}, start, reason + fix)
            return states
        passed_on: list[_PageState] = []
        remaining = list(states)
        while remaining:
            size = max(1, self.pool.plan(name).batch_size) if self.pool.is_loaded(name) else len(remaining)
            batch, remaining = remaining[:size], remaining[size:]
            passed_on += self._settle(name, batch)
            if on_page is not None:
                for state in batch:
                    if state.result is not None:
                        on_page(state.page, state.result)
            if self.pool.is_loaded(name):  # a loop retry's settings were for those pages only
                self.pool.set_plan(name, replace(self.pool.plan(name), generation=base.generation))
        return passed_on

    def _settle(self, name: str, batch: list[_PageState]) -> list[_PageState]:
        """One batch with one engine until every page is accepted or passed on: each call's outcome
        goes to policy.decide, and a retry goes back on the stack with its new plan."""
        passed_on: list[_PageState] = []
        by_task: dict[Task, list[_PageState]] = {}
        for state in batch:  # a page whose languages were corrected has a task of its own
            by_task.setdefault(state.ctx.task, []).append(state)
        work: list[tuple[list[_PageState], int]] = [(group, 0) for group in reversed(by_task.values())]
        while work:
            pages, loop_step = work.pop()
            if not self.pool.is_loaded(name):  # abandoned, or dropped after a failed reload, earlier
                _record(pages, name, Outcome.UNAVAILABLE, {}, time.perf_counter(), self.pool.reason(name))
                passed_on += pages
                continue
            plan = self.pool.plan(name)
            size = max(1, plan.batch_size)
            if len(pages) > size:  # an out-of-memory retry lowered the batch size since these were queued
                work += [(pages[i : i + size], loop_step) for i in reversed(range(0, len(pages), size))]
                continue
            outcome, results, share = self._call(name, pages, plan)
            if outcome == Outcome.OOM:
                free_memory()
                pixels = max(state.page.image.width * state.page.image.height for state in pages)
                decision = decide(outcome, History(loop_step, pixels), plan)
                if decision.plan is None or not self.pool.set_plan(name, decision.plan):
                    log.debug("%s: out of memory with nothing left to shrink; %d page(s) passed on", name, len(pages))
                    passed_on += pages
                    continue
                log.debug("%s: out of memory; retrying %s", name, decision.plan.reasons)
                work.append((pages, loop_step))
                continue
            if results is None:
                passed_on += pages
                continue
            retry_languages: list[_PageState] = []
            looping = self._judge(name, pages, results, plan, share, passed_on, retry_languages)
            work += [([state], loop_step) for state in retry_languages]  # each page with its own task
            if looping:
                engine = self.pool.engine(name)
                history = History(
                    loop_step,
                    looped=True,
                    can_retry_loops=engine.kind != EngineKind.CLASSICAL,
                    anti_repeat=engine.anti_repeat,
                )
                decision = decide(Outcome.REJECTED, history, plan)
                if decision.plan is not None and self.pool.set_plan(name, decision.plan):
                    log.debug(
                        "%s: %d page(s) looped; retry %d: %s",
                        name,
                        len(looping),
                        loop_step + 1,
                        decision.plan.generation,
                    )
                    work.append((looping, loop_step + 1))
                else:
                    passed_on += looping
        return passed_on

    def _call(
        self, name: str, pages: list[_PageState], plan: EnginePlan
    ) -> tuple[Outcome, list[PageResult] | None, float]:
        """One call of the engine; failures are recorded on the pages. Returns the outcome, the results
        on success, and each page's share of the call's seconds."""
        engine = self.pool.engine(name)
        asked = pages[0].ctx.task  # _settle groups the pages of one call by task
        settings = plan_settings(engine, plan)
        start = time.perf_counter()
        given = asked.for_engine(engine.tasks)
        if given is None:  # never ask an engine for a task it lacks (a request's task, not the chain's)
            offered = ", ".join(t.value for t in TaskKind if t in engine.tasks)
            _record(pages, name, Outcome.UNAVAILABLE, settings, start, f"it does not do {asked.kind.value} ({offered})")
            return Outcome.UNAVAILABLE, None, 0.0
        task = given
        if task.degraded_from is not None:
            settings["task"] = _degraded(name, task)
        limit = None if task.timeout is None else task.timeout * len(pages) * 1.1 + 1.0
        try:
            results = call_with_timeout(lambda: engine.recognize([s.page for s in pages], task), limit)
            if len(results) != len(pages):
                raise RuntimeError(f"returned {len(results)} result(s) for {len(pages)} page(s)")
        except PageTimeout as exc:
            self.pool.abandon(name, f"abandoned after it gave no answer within {exc.seconds:.1f} s")
            error = f"no answer within {exc.seconds:.1f} s; engine abandoned for the rest of the run"
            _record(pages, name, Outcome.TIMEOUT, settings, start, error)
            return Outcome.TIMEOUT, None, 0.0
        except EngineUnavailable as exc:
            self.pool.drop(name, exc.reason)
            _record(pages, name, Outcome.UNAVAILABLE, settings, start, exc.reason)
            return Outcome.UNAVAILABLE, None, 0.0
        except Exception as exc:  # an engine's failure on a page must not stop the run
            message = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
            outcome = Outcome.OOM if is_oom(exc) else Outcome.ERROR
            _record(pages, name, outcome, settings, start, message)
            return outcome, None, 0.0
        return Outcome.OK, results, (time.perf_counter() - start) / len(pages)

    def _judge(
        self,
        name: str,
        pages: list[_PageState],
        results: list[PageResult],
        plan: EnginePlan,
        share: float,
        passed_on: list[_PageState],
        retry_languages: list[_PageState],
    ) -> list[_PageState]:
        """Check each answer: accepted ones become the page's result, rejected ones are passed on;
        the pages whose answer looped are returned for the loop ladder, and those answered in the
        wrong script go to `retry_languages` when this engine can read the page's script."""
        engine = self.pool.engine(name)
        settings = plan_settings(engine, plan)
        given = pages[0].ctx.task.for_engine(engine.tasks)  # what _call asked the engine
        degraded = given is not None and given.degraded_from is not None
        if degraded and given is not None:
            settings["task"] = _degraded(name, given)
        looping: list[_PageState] = []
        for state, result in zip(pages, results, strict=True):
            _complete(result, state.page, name)
            # A degraded answer is judged as the task it answered (a text answer has no layout to parse).
            ctx = replace(state.ctx, task=given) if degraded and given is not None else state.ctx
            failures = run_checks(result, ctx, self.checks)
            if not failures:
                state.attempts.append(Attempt(engine=name, settings=settings, outcome=Outcome.OK, seconds=share))
                result.attempts = state.attempts
                state.result = result
                continue
            reason = "; ".join(str(f) for f in failures)
            timed_out = result.generation is not None and result.generation.stop_reason == "timeout"
            outcome = Outcome.TIMEOUT if timed_out else Outcome.REJECTED
            state.attempts.append(Attempt(engine=name, settings=settings, seconds=share, error=reason, outcome=outcome))
            state.consider_salvage(result, failures)
            if not timed_out and self._relanguage(name, state, failures):
                retry_languages.append(state)
            elif not timed_out and {f.check for f in failures} & LOOP_CHECKS:
                looping.append(state)
            else:
                passed_on.append(state)
        return looping

    # -- documents -------------------------------------------------------------------------------

    def run_source(
        self, source: Source, on_page: PageCallback | None = None, task: Task | None = None
    ) -> DocumentResult:
        """All pages of one opened input; a page that cannot be decoded is recorded, not raised."""
        start = time.perf_counter()
        doc = DocumentResult(source=source.path)
        window: list[Page] = []
        for page in _pages_with_errors(source, doc):
            window.append(page)
            if len(window) >= WINDOW_PAGES:
                doc.pages += self.recognize_pages(window, on_page, task)
                window = []
        if window:
            doc.pages += self.recognize_pages(window, on_page, task)
        doc.seconds = time.perf_counter() - start
        return doc

    def close(self) -> None:
        self.pool.close()
        if self._detector is not None:
            self._detector.close()
            self._detector = None

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _degraded(name: str, task: Task) -> str:
    """What an attempt records of a task given instead of the one asked (Task.for_engine)."""
    asked = task.degraded_from.value if task.degraded_from is not None else task.kind.value
    return f"{task.kind.value} (asked {asked}; {name} has no {asked} mode)"


def _record(batch: list[_PageState], name: str, outcome: Outcome, settings: dict, start: float, error: str) -> None:
    seconds = (time.perf_counter() - start) / len(batch)
    for state in batch:
        state.attempts.append(Attempt(engine=name, settings=settings, outcome=outcome, seconds=seconds, error=error))


def _give_up(state: _PageState) -> PageResult:
    """The result of a page no engine answered acceptably: the best incomplete answer, marked
    partial, or a failed page carrying every engine's error."""
    errors = [f"{a.engine}: {a.error}" for a in state.attempts if a.error]
    if state.salvage is not None:
        result = state.salvage
        result.status = PageStatus.PARTIAL
        result.errors = [*result.errors, *errors]
        result.attempts = state.attempts
        return result
    page = state.page
    return PageResult(
        page=page.number,
        source=page.source,
        width=page.size[0],
        height=page.size[1],
        status=PageStatus.FAILED,
        attempts=state.attempts,
        errors=errors or ["no engine in the chain"],
    )


def _unreadable(page: Page) -> PageResult:
    """The result of a page the loader could not read (no engine saw it)."""
    return PageResult(
        page=page.number,
        source=page.source,
        width=0,
        height=0,
        status=PageStatus.FAILED,
        attempts=[],
        errors=[page.error or "page could not be read"],
    )


def _pages_with_errors(source: Source, doc: DocumentResult) -> Iterator[Page]:
    try:
        yield from source.pages()
    except InputError as exc:
        doc.errors.append(str(exc))


def _complete(result: PageResult, page: Page, engine: str) -> None:
    """Fill what every result needs whatever the engine: identity, size, text and Markdown."""
    result.page = page.number
    result.source = page.source
    result.width, result.height = page.size
    result.engine = engine
    if not result.text:
        result.text = blocks_to_text(result.blocks)
    if not result.markdown:
        result.markdown = blocks_to_markdown(result.blocks) or result.text
