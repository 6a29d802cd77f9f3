"""The engine chain: for each page, try engines in order, check what they return, retry or fall
back, and record every attempt.

Pages go through the chain a window at a time: every page of the window is offered to the first
engine (in batches of its plan's batch_size), the pages it did not answer well go to the next
engine, and so on. That keeps batching for the GPU engines and swaps large models at most once per
window rather than once per page.

Engines are created and loaded once, on first use, and kept for the next window (which starts at
the top of the chain again) until the router closes. Three things end an engine earlier: it cannot
load (skipped for the rest of the run), it timed out (its call is abandoned in a background thread,
so it is never called again), or another large model needs the GPU memory (closed now, reloaded if
a later page needs it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace

from polyocr.documents import Page, Source
from polyocr.engines.base import (
    CYRILLIC,
    LATIN,
    Engine,
    EnginePlan,
    Task,
    create_engine,
    engine_class,
    engine_names,
)
from polyocr.errors import ConfigError, EngineUnavailable, InputError
from polyocr.formats.markdown import blocks_to_markdown
from polyocr.formats.text import blocks_to_text
from polyocr.results import Attempt, DocumentResult, Outcome, PageResult, PageStatus
from polyocr.router.checks import CHECKS, LOOP_CHECKS, SOFT_CHECKS, Check, Failure, PageContext, run_checks
from polyocr.router.config import RouterConfig
from polyocr.router.plans import make_plan, plan_settings
from polyocr.router.policy import (
    PER_CALL_FIELDS,
    PageTimeout,
    call_with_timeout,
    device_free_bytes,
    free_memory,
    is_oom,
    loop_plan,
    smaller_plan,
)
from polyocr.router.scripts import scripts_for
from polyocr.runtime.probe import Profile, get_profile

PageCallback = Callable[[Page, PageResult], None]

WINDOW_PAGES = 16

# Order of engines for "auto", with the evidence it rests on.
# GPU: dots.ocr first (layout, tables, formulas and every script in one pass), then the other VLMs
# by OmniDocBench v1.5 overall score as published: PaddleOCR-VL 92.56 (arXiv:2510.14528),
# DeepSeek-OCR 86.46 (OmniDocBench leaderboard); Qwen3-VL-2B, Qwen2-VL-2B and GOT-OCR 2.0 have no
# published v1.5 score and follow, newest first. No VLM has been measured on polyocr's own pages
# (only random weights run here), so this is the one ranking not from benchmarks/.
VLM_ORDER = ("dots", "paddleocr-vl", "deepseek-ocr", "qwen3vl", "qwen2vl", "got")
# CPU: character error rate per script on the development set, from benchmarks/classical-devset.md
# (`polyocr eval`, 2026-11-23: the eng rows for Latin, the rus row for Cyrillic): lower first; an
# engine with no number for a script comes after those with one. RapidOCR (no Cyrillic at all)
# only ever appears for Latin/Han/Kana pages, and after Tesseract wherever both have a number.
CLASSICAL_CER = {
    LATIN: {"tesseract": 0.0230, "rapidocr": 0.0746},
    CYRILLIC: {"tesseract": 0.1340},
}
CLASSICAL_ORDER = ("tesseract", "rapidocr")


def resolve_chain(spec: str | Sequence[str], task: Task, profile: Profile | None = None) -> list[str]:
    """Engine names to try, in order, from "auto", "name" or "a,b,c".

    "auto" builds the chain from what can run here (see VLM_ORDER and CLASSICAL_CER) and keeps out
    any engine that cannot read every script the task's languages need. A chain the user names is
    kept as given, except that an engine reading none of those scripts is refused outright.
    """
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [s.strip() for s in spec]
    names = [n for n in names if n]
    if not names:
        raise EngineUnavailable("", "no engine given")
    if names == ["auto"]:
        return _auto_chain(task, profile or get_profile())
    known = engine_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise EngineUnavailable(", ".join(unknown), f"no such engine (known: {', '.join(known)})")
    needed = scripts_for(task.languages)
    for name in names:
        readable = engine_class(name).scripts
        if needed and not needed & readable:
            raise EngineUnavailable(
                name,
                f"it reads no {'/'.join(sorted(needed))} text, which "
                f"{'+'.join(task.languages)} needs (it reads {', '.join(sorted(readable))})",
            )
    return names


def _reads(name: str, task: Task) -> bool:
    needed = scripts_for(task.languages)
    cls = engine_class(name)
    return task.kind in cls.tasks and (needed is None or needed <= cls.scripts)


def _available(name: str, profile: Profile) -> bool:
    try:
        return create_engine(name).available(profile).ok
    except EngineUnavailable:
        return False


def _auto_chain(task: Task, profile: Profile) -> list[str]:
    known = engine_names()
    chain: list[str] = []
    if profile.usable_gpus():
        chain += [n for n in VLM_ORDER if n in known and _reads(n, task) and _available(n, profile)]
    scripts = scripts_for(task.languages) or frozenset()

    def worst_cer(name: str) -> tuple[bool, float]:
        rates = [CLASSICAL_CER.get(script, {}).get(name) for script in scripts]
        known_rates = [r for r in rates if r is not None]
        return (len(known_rates) < len(rates) or not rates, max(known_rates, default=0.0))

    classical = [n for n in CLASSICAL_ORDER if n in known and _reads(n, task) and _available(n, profile)]
    chain += sorted(classical, key=worst_cer)
    if not chain:
        raise EngineUnavailable(
            "auto",
            f"no engine that reads {'+'.join(task.languages)} can run here",
            "run `polyocr engines` to see why each one cannot",
        )
    return chain


@dataclass
class _PageState:
    """One page on its way through the chain."""

    page: Page
    ctx: PageContext
    attempts: list[Attempt] = field(default_factory=list)
    result: PageResult | None = None
    salvage: PageResult | None = None  # the best incomplete answer, kept in case nothing does better

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


@dataclass
class _Loaded:
    engine: Engine
    plan: EnginePlan
    resident_bytes: int | None = None  # GPU memory its load took, where that can be measured


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
        self.plans = dict(plans or {})  # given plans are used as they are
        self.config = config or RouterConfig()
        self.task = self._with_timeout(task or Task())  # the default; each call may pass its own
        self.profile = profile or get_profile()
        self.checks = checks
        self._loaded: dict[str, _Loaded] = {}
        self._unavailable: dict[str, str] = {}

    # -- engines ---------------------------------------------------------------------------------

    def _engine(self, name: str) -> _Loaded:
        if name in self._unavailable:
            raise EngineUnavailable(name, self._unavailable[name])
        if name not in self._loaded:
            try:
                engine = self._create(name)
                availability = engine.available(self.profile)
                if not availability.ok:
                    raise EngineUnavailable(name, availability.reason, availability.fix)
                plan = self.plans.get(name) or make_plan(
                    engine, self.profile, self.config.plan_overrides(name), max_new_tokens=self.task.max_new_tokens
                )
                self._make_room(engine, plan)
                before = device_free_bytes(plan.device)
                engine.load(plan)
            except ConfigError as exc:
                self._unavailable[name] = str(exc)
                raise EngineUnavailable(name, str(exc)) from exc
            except EngineUnavailable as exc:
                self._unavailable[name] = exc.reason
                raise
            except Exception as exc:  # a broken checkpoint or an OOM while loading: skip the engine
                if is_oom(exc):
                    free_memory()
                self._unavailable[name] = f"failed to load: {type(exc).__name__}: {exc}"
                raise EngineUnavailable(name, self._unavailable[name]) from exc
            after = device_free_bytes(plan.device)
            resident = before - after if before is not None and after is not None else None
            self._loaded[name] = _Loaded(engine, plan, resident)
        return self._loaded[name]

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
            engine = self._create(name)
            availability = engine.available(self.profile)
            if not availability.ok:
                fix = f" (fix: {availability.fix})" if availability.fix else ""
                reasons.append(f"{name}: {availability.reason}{fix}")
                continue
            overrides = self.config.plan_overrides(name)
            if engine.kind == "vlm" and name not in self.plans and {"device", "dtype", "attention"} & set(overrides):
                make_plan(engine, self.profile, overrides)
        if len(reasons) == len(self.chain):
            raise EngineUnavailable(",".join(self.chain), "no engine of the chain can run here: " + "; ".join(reasons))

    def _create(self, name: str) -> Engine:
        """A new engine; one with weights gets the user's model path at construction, since it
        reports availability (are the weights there?) before any plan reaches it."""
        given = self.plans.get(name)
        model_path = given.model_path if given else self.config.plan_overrides(name).get("model_path")
        if model_path is None:
            return create_engine(name)
        try:
            return engine_class(name)(model_path=model_path)  # type: ignore[call-arg]
        except TypeError:
            raise EngineUnavailable(name, f"it takes no model path (got {model_path})") from None

    def _make_room(self, engine: Engine, plan: EnginePlan) -> None:
        """Close the other large models first, unless the device has room for this one beside them."""
        if engine.kind != "vlm":
            return
        others = {n: slot for n, slot in self._loaded.items() if slot.engine.kind == "vlm"}
        if not others:
            return
        free = device_free_bytes(plan.device)
        largest = max((slot.resident_bytes or 0) for slot in others.values())
        if free is not None and largest and free > 2 * largest:
            return  # room for a model as large as the largest one loaded, with as much again to run it
        for name in others:
            self._loaded.pop(name).engine.close()
        free_memory()

    def _set_plan(self, name: str, plan: EnginePlan) -> bool:
        """Give a loaded engine new settings: in place when only per-call fields change and the engine
        keeps its plan as `plan` (the VLM engines read generation and batch size at each call), else
        by closing and loading it again. False when that reload failed: the engine is then done."""
        slot = self._loaded[name]
        changed = {k for k in vars(plan) if getattr(plan, k) != getattr(slot.plan, k)} - {"reasons"}
        if not changed:
            return True
        if changed <= PER_CALL_FIELDS and isinstance(getattr(slot.engine, "plan", None), EnginePlan):
            slot.engine.plan = plan  # type: ignore[attr-defined]
        else:
            slot.engine.close()
            free_memory()
            try:
                slot.engine.load(plan)
            except Exception as exc:  # the engine cannot run with these settings: drop it for this run
                del self._loaded[name]
                self._unavailable[name] = f"could not reload with new settings: {type(exc).__name__}: {exc}"
                return False
        slot.plan = plan
        return True

    def _abandon(self, name: str, reason: str) -> None:
        """Forget an engine whose call is still running in an abandoned thread; never close it, since
        close() may wait on the very call that hangs."""
        self._loaded.pop(name, None)
        self._unavailable[name] = reason

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
        states = [_PageState(page, PageContext(page, task)) for page in pages]
        pending = list(states)
        for name in self.chain:
            if not pending:
                break
            pending = self._run_engine(name, pending, on_page)
        for state in pending:
            state.result = _give_up(state)
            if on_page is not None:
                on_page(state.page, state.result)
        return [state.result for state in states if state.result is not None]

    def _run_engine(self, name: str, states: list[_PageState], on_page: PageCallback | None) -> list[_PageState]:
        """Offer the pages to one engine; the ones it did not answer acceptably are returned."""
        start = time.perf_counter()
        try:
            slot = self._engine(name)
        except EngineUnavailable as exc:
            seconds = (time.perf_counter() - start) / len(states)
            for state in states:
                state.attempts.append(
                    Attempt(
                        engine=name,
                        outcome=Outcome.UNAVAILABLE,
                        seconds=seconds,
                        error=exc.reason + (f" (fix: {exc.fix})" if exc.fix else ""),
                    )
                )
            return states
        base = slot.plan

        def after_batch(batch: list[_PageState]) -> None:
            if on_page is not None:
                for state in batch:
                    if state.result is not None:
                        on_page(state.page, state.result)
            if name in self._loaded:  # a loop retry's settings were for those pages only
                self._set_plan(name, replace(self._loaded[name].plan, generation=base.generation))

        return self._offer(name, states, 0, after_batch)

    def _offer(
        self,
        name: str,
        states: list[_PageState],
        loop_step: int,
        after_batch: Callable[[list[_PageState]], None] | None = None,
    ) -> list[_PageState]:
        """The pages in batches of the engine's current batch size, which an out-of-memory retry
        may lower for good part-way; returns the pages passed on."""
        passed_on: list[_PageState] = []
        remaining = list(states)
        while remaining:
            size = max(1, self._loaded[name].plan.batch_size) if name in self._loaded else len(remaining)
            batch, remaining = remaining[:size], remaining[size:]
            passed_on += self._try_batch(name, batch, loop_step)
            if after_batch is not None:
                after_batch(batch)
        return passed_on

    def _try_batch(self, name: str, batch: list[_PageState], loop_step: int) -> list[_PageState]:
        """One call of the engine on a batch, with the retries its failures call for."""
        if name not in self._loaded:  # abandoned, or dropped after a failed reload, by an earlier batch
            _record(batch, name, Outcome.UNAVAILABLE, {}, time.perf_counter(), self._unavailable[name])
            return batch
        slot = self._loaded[name]
        engine, plan = slot.engine, slot.plan
        task = batch[0].ctx.task  # every page of one recognize_pages call shares its task
        settings = plan_settings(engine, plan)
        limit = None if task.timeout is None else task.timeout * len(batch) * 1.1 + 1.0
        start = time.perf_counter()
        try:
            results = call_with_timeout(lambda: engine.recognize([s.page for s in batch], task), limit)
            if len(results) != len(batch):
                raise RuntimeError(f"returned {len(results)} result(s) for {len(batch)} page(s)")
        except PageTimeout as exc:
            self._abandon(name, f"abandoned after it gave no answer within {exc.seconds:.1f} s")
            _record(
                batch,
                name,
                Outcome.TIMEOUT,
                settings,
                start,
                f"no answer within {exc.seconds:.1f} s; engine abandoned for the rest of the run",
            )
            return batch
        except EngineUnavailable as exc:
            self._loaded.pop(name, None)
            self._unavailable[name] = exc.reason
            _record(batch, name, Outcome.UNAVAILABLE, settings, start, exc.reason)
            return batch
        except Exception as exc:  # an engine's failure on a page must not stop the run
            message = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
            if not is_oom(exc):
                _record(batch, name, Outcome.ERROR, settings, start, message)
                return batch
            _record(batch, name, Outcome.OOM, settings, start, message)
            return self._after_oom(name, batch, loop_step)
        share = (time.perf_counter() - start) / len(batch)
        looping: list[_PageState] = []
        rejected: list[_PageState] = []
        for state, result in zip(batch, results, strict=True):
            _complete(result, state.page, name)
            failures = run_checks(result, state.ctx, self.checks)
            if not failures:
                state.attempts.append(Attempt(engine=name, settings=settings, outcome=Outcome.OK, seconds=share))
                result.attempts = state.attempts
                state.result = result
                continue
            reason = "; ".join(str(f) for f in failures)
            timed_out = result.generation is not None and result.generation.stop_reason == "timeout"
            state.attempts.append(
                Attempt(
                    engine=name,
                    settings=settings,
                    seconds=share,
                    error=reason,
                    outcome=Outcome.TIMEOUT if timed_out else Outcome.REJECTED,
                )
            )
            state.consider_salvage(result, failures)
            if engine.kind != "classical" and not timed_out and {f.check for f in failures} & LOOP_CHECKS:
                looping.append(state)
            else:
                rejected.append(state)
        retry = loop_plan(plan, loop_step) if looping else None
        if retry is None or not self._set_plan(name, retry):
            return rejected + looping
        return rejected + self._try_batch(name, looping, loop_step + 1)

    def _after_oom(self, name: str, batch: list[_PageState], loop_step: int) -> list[_PageState]:
        """Free memory, then retry with smaller pages or a smaller batch; pass the pages on when
        neither can shrink further."""
        free_memory()
        slot = self._loaded[name]
        pixels = max(state.page.image.width * state.page.image.height for state in batch)
        smaller = smaller_plan(slot.plan, pixels)
        if smaller is None or not self._set_plan(name, smaller):
            return batch
        return self._offer(name, batch, loop_step)

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
        for slot in self._loaded.values():
            slot.engine.close()
        self._loaded.clear()

    def __enter__(self) -> Router:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
        width=page.image.width,
        height=page.image.height,
        status=PageStatus.FAILED,
        attempts=state.attempts,
        errors=errors or ["no engine in the chain"],
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
    result.width, result.height = page.image.size
    result.engine = engine
    if not result.text:
        result.text = blocks_to_text(result.blocks)
    if not result.markdown:
        result.markdown = blocks_to_markdown(result.blocks) or result.text
