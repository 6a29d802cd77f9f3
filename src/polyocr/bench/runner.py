"""The benchmark: every engine (or the auto chain) over datasets, measured the way a user runs it.

Pages go through the router, not straight to an engine, so a benchmark row is what `polyocr ocr`
would give: the same chain, checks, retries and fallbacks, and every attempt on the record. Success
rates are counted from those attempts (a usable result from the first engine that actually ran,
and a usable result at all), not from whether an engine loaded. Scoring is evaluate.py's, applied
to the chain as if it were one engine.

Speed excludes loading: each chain first reads one small warm-up page, whose time is reported
separately as load time. Seconds per page is the sum of a page's attempts, over the pages that got
a usable result (a refusal in microseconds is not speed). Each engine spec runs in a fresh process,
so its peak RAM (the resident set sampled during the whole run, loading included) holds nothing
left over from the engine before it, and a crash in native code loses only that spec's remaining
pages; peak VRAM is the CUDA allocator's peak where torch ran on a GPU.
"""

from __future__ import annotations

import multiprocessing
import os
import platform
import queue
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from polyocr.bench.evaluate import ItemRecord, evaluate_item
from polyocr.bench.manifest import Item, read_manifest, select
from polyocr.bench.metrics import total
from polyocr.bench.speed import RSSPeak, percentile
from polyocr.documents import Page
from polyocr.engines.base import Engine, create_engine, engine_names
from polyocr.errors import EngineUnavailable, InputError, PolyOCRError
from polyocr.results import Outcome, PageResult, PageStatus
from polyocr.router import Router, resolve_chain
from polyocr.runtime.probe import get_profile
from polyocr.types import Task, TaskKind

AUTO = "auto"


@dataclass
class BenchItem:
    """One item as one engine spec handled it: the scored record plus what the attempts show."""

    dataset: str
    record: ItemRecord
    page_seconds: list[float] = field(default_factory=list)
    first_try: int = 0  # pages usable from the first engine that ran, with no retry
    usable: int = 0  # pages usable after retries and fallbacks
    fallbacks: int = 0  # pages whose result came from another engine than the first that ran
    engines: list[str] = field(default_factory=list)  # the engine that produced each page
    errors: list[str] = field(default_factory=list)
    refused: bool = False  # no chain for its languages: the spec cannot read that script, by design

    @property
    def pages(self) -> int:
        return len(self.page_seconds)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            **self.record.to_dict(),
            "page_seconds": self.page_seconds,
            "first_try": self.first_try,
            "usable": self.usable,
            "fallbacks": self.fallbacks,
            "engines": self.engines,
            "errors": self.errors,
            "refused": self.refused,
        }


@dataclass
class Row:
    """The aggregate of one engine spec over one language (or "all")."""

    engine: str
    language: str
    items: int
    pages: int
    cer: float
    wer: float
    bow_wer: float
    first_try_rate: float
    success_rate: float
    fallbacks: int
    median_s: float
    p90_s: float
    pages_per_s: float
    peak_rss_bytes: int
    peak_vram_bytes: int | None
    refused: bool = False  # every item of the row was refused (see BenchItem.refused)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class EngineRun:
    spec: str  # an engine name or "auto"
    available: bool = True
    reason: str = ""
    chains: dict[str, list[str]] = field(default_factory=dict)  # task languages -> engines tried
    refused: dict[str, str] = field(default_factory=dict)  # task languages -> why no chain serves them
    items: list[BenchItem] = field(default_factory=list)
    load_seconds: float = 0.0
    other_cpu_share: float | None = None  # share of all cores other processes used during the run
    peak_rss_bytes: int = 0
    peak_vram_bytes: int | None = None
    settings: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # engine -> settings seen

    def rows(self) -> list[Row]:
        """One row per language, then "all" over the items the spec was not refused for: a language
        it cannot read keeps its own row, marked refused, instead of sinking every average."""
        groups: dict[str, list[BenchItem]] = {}
        for item in self.items:
            groups.setdefault(item.record.language, []).append(item)
        served = [item for item in self.items if not item.refused]
        if len(groups) > 1 and served:
            groups["all"] = served
        return [self._row(key, members) for key, members in groups.items()]

    def _row(self, language: str, items: list[BenchItem]) -> Row:
        pages = sum(item.pages for item in items)
        seconds = [s for item in items for s, engine in zip(item.page_seconds, item.engines, strict=True) if engine]
        records = [item.record for item in items]
        return Row(
            engine=self.spec,
            language=language,
            items=len(items),
            pages=pages,
            cer=total(r.chars for r in records).rate,
            wer=total(r.words for r in records).rate,
            bow_wer=total(r.bag_of_words for r in records).rate,
            first_try_rate=sum(i.first_try for i in items) / pages if pages else 0.0,
            success_rate=sum(i.usable for i in items) / pages if pages else 0.0,
            fallbacks=sum(i.fallbacks for i in items),
            median_s=statistics.median(seconds) if seconds else 0.0,
            p90_s=percentile(seconds, 90) if seconds else 0.0,
            pages_per_s=len(seconds) / sum(seconds) if sum(seconds) > 0 else 0.0,
            peak_rss_bytes=self.peak_rss_bytes,
            peak_vram_bytes=self.peak_vram_bytes,
            refused=all(item.refused for item in items),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.spec,
            "available": self.available,
            "reason": self.reason,
            "chains": self.chains,
            "refused": self.refused,
            "load_seconds": self.load_seconds,
            "other_cpu_share": self.other_cpu_share,
            "peak_rss_bytes": self.peak_rss_bytes,
            "peak_vram_bytes": self.peak_vram_bytes,
            "settings": self.settings,
            "rows": [row.to_dict() for row in self.rows()],
            "items": [item.to_dict() for item in self.items],
        }


@dataclass
class BenchResult:
    datasets: list[str]
    limit: int | None
    runs: list[EngineRun]
    machine: dict[str, Any]
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))  # run start
    command: str = ""

    def rows(self) -> list[Row]:
        return [row for run in self.runs for row in run.rows()]

    def to_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "command": self.command,
            "machine": self.machine,
            "datasets": self.datasets,
            "limit": self.limit,
            "runs": [run.to_dict() for run in self.runs],
        }


class _ChainAsEngine(Engine):
    """The router for one engine spec presented as an Engine, so evaluate_item scores it unchanged.

    The chain depends on the task's languages (an engine that cannot read Cyrillic has no place in a
    Russian chain), so there is one router per distinct chain, each loading its engines once, however
    many languages share it: two copies of an engine would double its memory figure. Each new router
    reads a warm-up page first.
    """

    def __init__(self, spec: str, run: EngineRun):
        self.name = spec  # type: ignore[misc]  # a chain spec stands where an engine's name would
        self.run = run
        self.last: list[PageResult] = []
        self._chains: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._routers: dict[tuple[str, ...], Router] = {}

    def _router(self, task: Task) -> Router:
        languages = tuple(task.languages)
        if languages not in self._chains:
            try:
                self._chains[languages] = tuple(resolve_chain(self.name, task))
            except EngineUnavailable as exc:
                self.run.refused["+".join(languages)] = str(exc)
                raise
            self.run.chains["+".join(languages)] = list(self._chains[languages])
        chain = self._chains[languages]
        if chain not in self._routers:
            router = Router(chain, task)
            self._routers[chain] = router
            warm = router.recognize_pages([warmup_page()], task=task)[0]
            self.run.load_seconds += sum(a.seconds for a in warm.attempts)
        return self._routers[chain]

    def recognize(self, pages: Sequence[Page], task: Task) -> list[PageResult]:
        self.last = self._router(task).recognize_pages(pages, task=task)
        return self.last

    def close(self) -> None:
        for router in self._routers.values():
            router.close()
        self._routers.clear()


def warmup_page() -> Page:
    """A small page with a line of text: enough to load models and run every stage once."""
    image = Image.new("RGB", (640, 160), "white")
    ImageDraw.Draw(image).text((20, 50), "Warm-up page 12345", fill="black", font=ImageFont.load_default(size=40))
    return Page(image=image, number=1, source="<warm-up>")


def _bench_item(dataset: str, record: ItemRecord, results: list[PageResult]) -> BenchItem:
    item = BenchItem(dataset=dataset, record=record)
    if not results:  # refused before any page ran (unreadable input, no chain for its languages)
        item.page_seconds.append(0.0)
        item.engines.append("")
        item.errors.append(record.error or "no result")
    for result in results:
        item.page_seconds.append(sum(a.seconds for a in result.attempts))
        tried = [a for a in result.attempts if a.outcome != Outcome.UNAVAILABLE]
        usable = result.status != PageStatus.FAILED
        item.usable += int(usable)
        item.first_try += int(usable and len(tried) == 1 and tried[0].outcome == Outcome.OK)
        item.fallbacks += int(usable and bool(tried) and result.engine != tried[0].engine)
        item.engines.append(result.engine if usable and result.engine else "")
        item.errors += result.errors
    return item


def unavailable_reason(spec: str) -> str:
    """Why a single named engine cannot run here ("" when it can); chains are left to the router."""
    if spec == AUTO or spec not in engine_names():
        return ""
    try:
        availability = create_engine(spec).available(get_profile())
    except PolyOCRError as exc:
        return str(exc)
    return "" if availability.ok else availability.reason + (f" (fix: {availability.fix})" if availability.fix else "")


def _cuda_peak_reset() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def _cuda_peak() -> int | None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return int(torch.cuda.max_memory_allocated())
    return None


def run_engine(
    spec: str,
    datasets: Sequence[tuple[str, Sequence[Item]]],
    *,
    on_item: Callable[[str, BenchItem], None] | None = None,
) -> EngineRun:
    """One engine spec over (dataset name, items) pairs, each item asked in its own languages."""
    run = EngineRun(spec=spec)
    chain = _ChainAsEngine(spec, run)
    _cuda_peak_reset()
    with RSSPeak() as rss:
        try:
            for name, items in datasets:
                for item in items:
                    chain.last = []
                    task = Task(kind=TaskKind.TEXT, languages=item.languages)
                    record = evaluate_item(chain, item, task)
                    bench_item = _bench_item(name, record, chain.last)
                    bench_item.refused = not chain.last and "+".join(task.languages) in run.refused
                    run.items.append(bench_item)
                    for result in chain.last:
                        for attempt in result.attempts:
                            seen = run.settings.setdefault(attempt.engine, [])
                            if attempt.outcome == Outcome.OK and attempt.settings not in seen:
                                seen.append(attempt.settings)
                    if on_item is not None:
                        on_item(spec, bench_item)
        finally:
            chain.close()
    run.peak_rss_bytes = rss.peak_bytes
    run.peak_vram_bytes = _cuda_peak()
    return run


def _child(spec: str, datasets: Sequence[tuple[str, Sequence[Item]]], events: Any) -> None:
    try:
        run = run_engine(spec, datasets, on_item=lambda _spec, item: events.put(("item", item)))
        run.items = []  # already sent one by one
        events.put(("done", run))
    except BaseException as exc:  # everything goes back to the parent, which reports it
        traceback.print_exc()
        events.put(("error", f"{type(exc).__name__}: {exc}"))


def run_engine_isolated(
    spec: str,
    datasets: Sequence[tuple[str, Sequence[Item]]],
    *,
    on_item: Callable[[str, BenchItem], None] | None = None,
) -> EngineRun:
    """run_engine in a fresh process; items arrive as they finish, so a crash keeps those done."""
    context = multiprocessing.get_context("spawn")
    events = context.Queue()
    process = context.Process(target=_child, args=(spec, datasets, events), daemon=True)
    process.start()
    items: list[BenchItem] = []
    try:
        while True:
            try:
                kind, payload = events.get(timeout=0.5)
            except queue.Empty:
                if process.is_alive():
                    continue
                run = EngineRun(
                    spec=spec,
                    available=False,
                    reason=f"the benchmark process died (exit code {process.exitcode}) after {len(items)} item(s)",
                )
                break
            if kind == "item":
                items.append(payload)
                if on_item is not None:
                    on_item(spec, payload)
            elif kind == "done":
                run = payload
                break
            else:
                run = EngineRun(spec=spec, available=False, reason=f"the benchmark failed: {payload}")
                break
    finally:
        process.join(timeout=30)
        if process.is_alive():
            process.kill()
    run.items = items
    return run


class OtherCPU:
    """The CPU time processes other than this one (and its children) used while a block ran, as a
    share of every core's time: on a shared machine that work slows every figure measured."""

    share: float | None = None

    def __enter__(self) -> OtherCPU:
        import psutil

        self._psutil = psutil
        self._start = (time.perf_counter(), self._busy(), self._own())
        return self

    def _busy(self) -> float:
        t = self._psutil.cpu_times()
        return t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)

    def _own(self) -> float:
        t = self._psutil.Process().cpu_times()
        return t.user + t.system + t.children_user + t.children_system

    def __exit__(self, *exc: object) -> None:
        wall, busy, own = self._start
        wall = time.perf_counter() - wall
        others = (self._busy() - busy) - (self._own() - own)
        self.share = max(0.0, others) / (wall * (os.cpu_count() or 1)) if wall > 0 else None


def machine() -> dict[str, Any]:
    """Where the numbers were taken; the load average says how busy the CPUs were with other work."""
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "profile": get_profile().to_dict(),
    }


def run_bench(
    datasets: Sequence[str | Path],
    engines: Sequence[str],
    *,
    limit: int | None = None,
    isolate: bool = True,
    on_item: Callable[[str, BenchItem], None] | None = None,
) -> BenchResult:
    """Every engine spec over every dataset's items that have ground truth (the first `limit` of each),
    each spec in its own process unless `isolate` is False."""
    unknown = [spec for spec in engines if spec != AUTO and spec not in engine_names()]
    if unknown:
        raise EngineUnavailable(", ".join(unknown), f"no such engine (known: {AUTO}, {', '.join(engine_names())})")
    chosen = []
    for dataset in datasets:
        data = read_manifest(dataset)
        items = select(data.items, limit=limit)
        if not items:
            where = f" (--limit {limit})" if limit is not None else ""
            raise InputError(data.manifest, f"no item with ground truth to score{where}")
        chosen.append((data.root.name, items))
    started = datetime.now(UTC).isoformat(timespec="seconds")
    start_machine = machine()
    runner = run_engine_isolated if isolate else run_engine
    runs = []
    with OtherCPU() as everything:
        for spec in engines:
            reason = unavailable_reason(spec)
            if reason:
                runs.append(EngineRun(spec=spec, available=False, reason=reason))
                continue
            with OtherCPU() as others:
                run = runner(spec, chosen, on_item=on_item)
            run.other_cpu_share = others.share
            runs.append(run)
    start_machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    start_machine["other_cpu_share"] = everything.share
    return BenchResult(
        datasets=[str(Path(d)) for d in datasets], limit=limit, runs=runs, machine=start_machine, created=started
    )
