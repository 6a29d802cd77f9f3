"""`polyocr batch`: many documents, page by page, into an output folder that survives any kill.

The driver owns the output folder: it holds a lock on it (one batch per folder at a time), keeps the
work list (worklist.py), writes every page's JSON the moment a worker or a Ray actor hands it back,
then marks the page done, and writes a document's outputs once its last page is done (outputs.py).
The pages themselves are recognised elsewhere: local worker processes (local.py) or a Ray Data
pipeline (ray_pipeline.py), both fed only the pending pages, so a batch started with one can be
finished with the other. Started again with the same command after any interruption, it adopts
page files written just before the kill, redoes only the pages that were in flight, and renders
documents whose outputs were not written yet.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from polyocr import defaults
from polyocr.batch import outputs
from polyocr.batch.worker import PageTask, WorkerSpec, failed_result, registered_extras
from polyocr.batch.worklist import Document, WorkList
from polyocr.documents import DEFAULT_MAX_PIXELS, expand_inputs, open_source
from polyocr.errors import BatchError, InputError
from polyocr.formats import FORMATS
from polyocr.results import Attempt, Outcome, PageResult, PageStatus
from polyocr.router.summary import RunSummary
from polyocr.types import EngineKind, Task, TaskKind

LOCK_NAME = ".lock"
CRASH_RETRIES = 1  # a page whose worker died is tried once more, alone, in a fresh worker


@dataclass
class BatchOptions:
    engine: str = "auto"
    languages: tuple[str, ...] = defaults.LANGUAGES
    task: TaskKind = TaskKind.LAYOUT
    formats: tuple[str, ...] = ("txt",)
    workers: int | None = None  # default: one per core (classical), one per GPU (VLM)
    recycle_after: int = 500  # pages per worker process before a fresh one replaces it
    max_worker_mb: float | None = None  # a worker using more resident memory is replaced after its page
    retry_failed: bool = False
    dpi: float = defaults.DPI
    max_pixels: int = DEFAULT_MAX_PIXELS
    max_pages: int = 100_000  # a batch is for long documents; the per-page work list bounds memory
    max_new_tokens: int = defaults.MAX_NEW_TOKENS
    timeout: float | None = None
    model: str | None = None
    device: str | None = None
    dtype: str | None = None
    attention: str | None = None
    ray: str | None = None  # None: local workers; "local": a Ray started here; else a cluster address
    ray_gpus_per_actor: float = 1.0

    def settings(self) -> dict[str, Any]:
        """What the results depend on: a batch folder refuses to continue with other values."""
        return {
            "engine": self.engine,
            "languages": list(self.languages),
            "task": str(self.task),
            "dpi": self.dpi,
            "max_pixels": self.max_pixels,
            "max_new_tokens": self.max_new_tokens,
            "model": self.model,
            "device": self.device,
            "dtype": self.dtype,
            "attention": self.attention,
        }


class BatchProgress:
    """What the driver reports as it goes; the CLI draws it with Rich. Every method may be ignored."""

    def start(self, total: int, done: int, failed: int) -> None: ...

    def page(self, task: PageTask, result: PageResult) -> None: ...

    def note(self, message: str) -> None: ...


@dataclass
class BatchReport:
    out_dir: str
    mode: str  # "local, 2 workers" | "ray <address>"
    inputs: int = 0
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    pages: int = 0  # pages of every readable input
    done_before: int = 0  # finished by an earlier run
    done_now: int = 0  # finished by this run
    failed: int = 0
    partial: int = 0
    failures: Counter[str] = field(default_factory=Counter)  # failed pages by reason
    retried_failed: int = 0
    worker_crashes: int = 0
    workers_started: int = 0
    worker_peak_rss_mb: float = 0.0
    seconds: float = 0.0
    summary: RunSummary = field(default_factory=RunSummary)

    @property
    def pages_per_second(self) -> float:
        return self.done_now / self.seconds if self.seconds else 0.0

    @property
    def exit_code(self) -> int:
        """As `polyocr ocr`: 0 when every page of every input succeeded, else 1."""
        return 1 if self.failed or self.unreadable else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "out_dir": self.out_dir,
            "mode": self.mode,
            "inputs": self.inputs,
            "unreadable_inputs": [{"input": p, "error": e} for p, e in self.unreadable],
            "pages": self.pages,
            "done_before": self.done_before,
            "done_now": self.done_now,
            "failed": self.failed,
            "partial": self.partial,
            "failures_by_reason": dict(self.failures.most_common()),
            "retried_failed": self.retried_failed,
            "worker_crashes": self.worker_crashes,
            "workers_started": self.workers_started,
            "worker_peak_rss_mb": round(self.worker_peak_rss_mb, 1),
            "seconds": round(self.seconds, 3),
            "pages_per_second": round(self.pages_per_second, 3),
            "summary": self.summary.to_dict(),
        }


@dataclass
class WorkerPlan:
    """How many workers, with which environment each, and how many pages a task carries."""

    envs: list[dict[str, str]]
    pages_per_task: int
    why: str


def plan_workers(
    chain: Sequence[str], gpus: Sequence[int], workers: int | None, cores: int, visible: str | None = None
) -> WorkerPlan:
    """A VLM-led chain: one worker per GPU, each seeing only its own (CUDA_VISIBLE_DEVICES), pages
    in windows for the router to batch; without a GPU, one worker (a VLM per core would not fit in
    memory). A classical chain: one single-threaded worker per core, one page per task.

    `gpus` are CUDA indices as this process sees them; `visible` is this process's own
    CUDA_VISIBLE_DEVICES, through which they are mapped back (index 0 under "2,3" is device 2)."""
    from polyocr.engines.base import engine_entry

    head = engine_entry(chain[0]).kind if chain else EngineKind.CLASSICAL
    if head == EngineKind.VLM and gpus:
        chosen = list(gpus)[: workers or len(gpus)]
        names = [v.strip() for v in visible.split(",")] if visible else None
        envs = [{"CUDA_VISIBLE_DEVICES": names[i] if names and i < len(names) else str(i)} for i in chosen]
        return WorkerPlan(envs, defaults.WINDOW_PAGES, f"one worker per GPU ({len(envs)})")
    if head == EngineKind.VLM:
        count = workers or 1
        return WorkerPlan([{} for _ in range(count)], defaults.WINDOW_PAGES, f"{count} CPU worker(s) for a VLM")
    count = workers or max(1, cores)
    single = {"OMP_THREAD_LIMIT": "1", "OMP_NUM_THREADS": "1"} if count > 1 else {}
    return WorkerPlan([dict(single) for _ in range(count)], 1, f"{count} worker process(es), one page at a time")


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    """One batch per folder: a second `polyocr batch` on it is refused (the kernel drops the lock when
    the holder dies, even by kill -9, so a stale lock never blocks a resume)."""
    fh = (out_dir / LOCK_NAME).open("a")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise BatchError(out_dir, "another polyocr batch is running on this folder") from None
    try:
        yield
    finally:
        fh.close()


class _Sink:
    """The driver's side of every finished page: page file, done-mark, document outputs, progress."""

    def __init__(self, out_dir: Path, worklist: WorkList, docs: dict[int, Document], formats, progress):
        self.out_dir = out_dir
        self.worklist = worklist
        self.docs = docs
        self.formats = formats
        self.progress = progress
        self.remaining = worklist.pending_by_document()
        self.done = 0

    def accept(self, task: PageTask, result: PageResult) -> None:
        doc = self.docs[task.doc]
        result.page, result.source = task.number, doc.path  # whatever produced it, the page is this one
        outputs.write_page(self.out_dir, doc.stem, result)
        self.worklist.mark_done(
            task.doc, task.number, result.status.value, result.engine, _reason(result) or None,
            _compact(result), sum(a.seconds for a in result.attempts),
        )  # fmt: skip
        self.done += 1
        self.progress.page(task, result)
        self.remaining[task.doc] = self.remaining.get(task.doc, 1) - 1
        if self.remaining[task.doc] <= 0:
            self.render(doc)

    def crash(self, task: PageTask, reason: str) -> bool:
        crashes = self.worklist.record_crash(task.doc, task.number)
        if crashes <= CRASH_RETRIES:
            self.progress.note(f"{task.source} page {task.number}: {reason}; retrying it in a fresh worker")
            return True
        self.accept(task, failed_result(task, f"{reason} (also when retried alone in a fresh worker)"))
        return False

    def render(self, doc: Document) -> None:
        outputs.write_document(self.out_dir, doc.stem, doc.path, doc.page_count, self.formats)
        self.worklist.set_rendered(doc.id, frozenset(self.formats))


def _reason(result: PageResult) -> str:
    return "; ".join(result.errors) if result.status == PageStatus.FAILED else ""


def _compact(result: PageResult) -> list[list[Any]]:
    return [[a.engine, a.outcome.value, round(a.seconds, 4)] for a in result.attempts]


def _reason_kind(reason: str, source: str, number: int) -> str:
    """A failure reason without the page's own name and numbers, to count pages by reason."""
    text = reason.replace(f"{source} page {number}", "the page").replace(source, "the input")
    return re.sub(r"\d+(\.\d+)?", "N", text)[:200]


def make_spec(options: BatchOptions) -> WorkerSpec:
    """What every worker or Ray actor needs to recognise pages as `polyocr ocr` would with these
    options: the resolved chain, the task, the routing config with the overrides, the loader limits,
    and the engines registered in this process (for your own Ray pipeline: build_pipeline(ds, spec))."""
    from polyocr.config import load_config
    from polyocr.router import resolve_chain

    config = load_config(options.engine, options.timeout)
    task = Task(
        kind=options.task, languages=tuple(options.languages), max_new_tokens=options.max_new_tokens,
        timeout=config.timeout,
    )  # fmt: skip
    chain = resolve_chain(config.engines, task)
    if options.model is not None:
        config.plans.setdefault(chain[0], {})["model_path"] = options.model
    overrides = {"device": options.device, "dtype": options.dtype, "attention": options.attention}
    for name in chain:
        config.plans.setdefault(name, {}).update({k: v for k, v in overrides.items() if v})
    return WorkerSpec(chain, task, config, options.dpi, options.max_pixels, registered_extras())


def run_batch(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    options: BatchOptions | None = None,
    progress: BatchProgress | None = None,
) -> BatchReport:
    """Run (or resume) the batch of `inputs` into `out_dir`; see the module docstring.

    Raises BatchError when the folder is in use or holds a batch of other settings, and the router's
    errors (EngineUnavailable, ConfigError) when the chain cannot run at all; every problem with an
    input or a page is recorded in the report instead.
    """
    options = options or BatchOptions()
    progress = progress or BatchProgress()
    formats = tuple(dict.fromkeys(options.formats))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"unknown format(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spec = make_spec(options)
    with _locked(out):
        worklist = WorkList(out)
        try:
            return _run(inputs, out, options, formats, spec, worklist, progress)
        finally:
            worklist.close()


def _run(
    inputs, out: Path, options: BatchOptions, formats, spec: WorkerSpec, worklist: WorkList, progress
) -> BatchReport:
    start = time.perf_counter()
    worklist.check_settings(options.settings())
    files, notes = expand_inputs(inputs)
    for note in notes:
        progress.note(note)
    report = BatchReport(out_dir=str(out), mode="")
    report.inputs = len(files)
    for path in files:
        key = str(path.resolve())
        doc = worklist.document(key) or worklist.add_document(key, str(path), path.stem)
        if doc.page_count:
            continue
        try:  # a new input, or one unreadable last time (perhaps fixed since)
            source = open_source(path, dpi=options.dpi, max_pixels=options.max_pixels, max_pages=options.max_pages)
            source.pages().close()  # type: ignore[attr-defined]
            worklist.set_pages(doc.id, source.page_count)
        except InputError as exc:
            worklist.set_unreadable(doc.id, str(exc))
    keys = {str(p.resolve()) for p in files}
    docs = {d.id: d for d in worklist.documents() if d.key in keys}
    if options.retry_failed:
        reset = worklist.reset_failed()
        for doc_id, number in reset:
            if doc_id in docs:
                outputs.page_path(out, docs[doc_id].stem, number).unlink(missing_ok=True)
        report.retried_failed = len(reset)
    _adopt(out, worklist, docs)
    sink = _Sink(out, worklist, docs, formats, progress)
    for doc in docs.values():  # complete, but killed before its outputs were written (or new formats asked)
        if doc.page_count and not sink.remaining.get(doc.id) and not set(formats) <= doc.rendered:
            sink.render(doc)
    ids = set(docs)
    rows = [r for r in worklist.done_rows() if r.doc in ids]
    report.done_before = len(rows)
    report.pages = sum(d.page_count for d in docs.values())
    progress.start(report.pages, report.done_before, sum(r.status == "failed" for r in rows))
    for doc in docs.values():
        if doc.error:
            progress.note(doc.error)

    def tasks() -> Iterator[PageTask]:
        for doc_id, number in worklist.pending():
            doc = docs.get(doc_id)
            if doc is not None:
                yield PageTask(doc_id, doc.key, doc.path, number)

    has_work = any(sink.remaining.get(doc_id, 0) for doc_id in docs)
    if options.ray is not None:
        report.mode = f"ray {options.ray}"
        if has_work:
            from polyocr.batch.ray_pipeline import run_on_ray

            run_on_ray(
                tasks(), spec, sink.accept, address=options.ray, gpus_per_actor=options.ray_gpus_per_actor,
                workers=options.workers,
            )  # fmt: skip
    else:
        from polyocr.batch.local import LocalPool
        from polyocr.engines.base import engine_entry
        from polyocr.router import Router

        gpus: list[int] = []
        if spec.chain and engine_entry(spec.chain[0]).kind == EngineKind.VLM:
            from polyocr.runtime.probe import get_profile

            gpus = [gpu.index for gpu in get_profile().usable_gpus()]
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        plan = plan_workers(spec.chain, gpus, options.workers, available_cores(), visible)
        report.mode = f"local, {plan.why}"
        if has_work:
            Router(spec.chain, spec.task, config=spec.config).preflight()  # fail before any worker starts
            pool = LocalPool(
                spec, plan.envs, recycle_after=options.recycle_after, max_rss_mb=options.max_worker_mb,
                pages_per_task=plan.pages_per_task,
            )  # fmt: skip
            stats = pool.run(tasks(), sink.accept, sink.crash)
            report.worker_crashes = stats.crashed
            report.workers_started = stats.started
            report.worker_peak_rss_mb = stats.peak_rss_mb
    report.done_now = sink.done
    report.seconds = time.perf_counter() - start
    _fill_report(report, worklist, docs)
    return report


def _adopt(out: Path, worklist: WorkList, docs: dict[int, Document]) -> None:
    """Pages whose JSON reached the disk but whose done-mark did not (killed in between)."""
    for doc_id, number in list(worklist.pending()):
        doc = docs.get(doc_id)
        path = outputs.page_path(out, doc.stem, number) if doc else None
        if path is None or not path.exists():
            continue
        try:
            result = PageResult.model_validate_json(path.read_bytes())
        except ValueError:
            path.unlink()  # cannot happen with atomic writes; never trust a file that does not parse
            continue
        worklist.mark_done(
            doc_id, number, result.status.value, result.engine, _reason(result) or None, _compact(result),
            sum(a.seconds for a in result.attempts),
        )  # fmt: skip


def _fill_report(report: BatchReport, worklist: WorkList, docs: dict[int, Document]) -> None:
    report.unreadable = [(d.path, d.error) for d in docs.values() if d.error]
    for row in worklist.done_rows():
        doc = docs.get(row.doc)
        if doc is None:
            continue
        status = PageStatus(row.status or "failed")
        attempts = [Attempt(engine=e, outcome=Outcome(o), seconds=s) for e, o, s in row.attempts]
        report.summary.add(PageResult(page=row.number, status=status, engine=row.engine, attempts=attempts))
        if status == PageStatus.FAILED:
            report.failed += 1
            report.failures[_reason_kind(row.reason or "unknown", doc.path, row.number)] += 1
        report.partial += status == PageStatus.PARTIAL
