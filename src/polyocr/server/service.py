"""The OCR work behind the HTTP layer: worker threads, their engines, admission and warm-up.

OCR runs in a pool of `workers` threads so the event loop stays responsive. Engines are not assumed
to be thread-safe, so each worker keeps its own routers (and through them its own engine instances),
created on first use and kept for the life of the process: an engine is loaded once per worker,
never per request. Every piece of work has a time limit that actually stops it: the page stream and
the page callback check it between pages (WorkStopped), so a request answered 504, a job over its
limit, or a server shutting down frees its worker after the page in hand.

A router serves one engine chain for any task (the task goes with each call); a
worker keeps a few chains, closes the least recently used beyond that, and never keeps two routers
holding the same VLM (a request for another chain with that model closes the first).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from PIL import Image, ImageDraw

from polyocr.config import RouterConfig, ServerSettings
from polyocr.documents import Page, Source
from polyocr.documents.loader import image_source, open_source
from polyocr.engines.base import engine_class
from polyocr.errors import EngineUnavailable
from polyocr.results import DocumentResult, Outcome
from polyocr.router import Router
from polyocr.types import EngineKind, Task, TaskKind

log = logging.getLogger("polyocr.server")
T = TypeVar("T")
ROUTERS_PER_WORKER = 4
_FORGETTING = (Outcome.UNAVAILABLE, Outcome.TIMEOUT)
PageHook = Callable[[Page, Any], None]


class WorkStopped(Exception):
    """Raised between pages when a piece of work must stop: its time limit passed, or the server stops."""

    def __init__(self, reason: str, pages_done: int, page_count: int):
        self.reason = reason  # "deadline" | "shutdown"
        self.pages_done = pages_done
        self.page_count = page_count
        super().__init__(f"stopped after {pages_done} of {page_count} page(s): {reason}")


@dataclass
class _Work:
    """What one worker is doing: since when, and until when it may."""

    started: float
    deadline: float | None


@dataclass(frozen=True)
class OCRParams:
    """What one request asks for, already validated (the chain resolved to engine names)."""

    chain: tuple[str, ...]
    task: TaskKind = TaskKind.LAYOUT
    languages: tuple[str, ...] = ("eng", "rus")
    dpi: float | None = None  # PDF rendering resolution; None: the server's --dpi
    keep_pages: bool = False  # a job keeps each page's image (PNG) for the web page, since its upload goes

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"chain": list(self.chain), "task": self.task.value, "languages": list(self.languages)}
        if self.dpi is not None:
            data["dpi"] = self.dpi
        if self.keep_pages:
            data["keep_pages"] = True
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OCRParams:
        return cls(
            tuple(data["chain"]),
            TaskKind(data["task"]),
            tuple(data["languages"]),
            data.get("dpi"),
            bool(data.get("keep_pages", False)),
        )


class OCRService:
    def __init__(self, settings: ServerSettings, config: RouterConfig | None = None):
        self.settings = settings
        self.config = config or RouterConfig()
        self._executor = ThreadPoolExecutor(settings.workers, thread_name_prefix="polyocr-ocr")
        self._local = threading.local()
        self._lock = threading.Lock()
        self._routers: list[Router] = []
        self._admitted = 0
        self.ready = False
        self.ready_reason = "loading the default engine chain"
        self._warming: Future[None] | None = None
        self._warmed_at = 0.0
        self._stopping = threading.Event()
        self._work: dict[int, _Work] = {}  # worker thread id -> its current work

    # Admission: a bounded number of synchronous requests may run or wait; the rest get 429.
    def admit(self) -> bool:
        with self._lock:
            if self._admitted >= self.settings.capacity:
                return False
            self._admitted += 1
            return True

    def _release(self, _future: Future[Any] | None = None) -> None:
        with self._lock:
            self._admitted -= 1

    def release(self) -> None:
        """Give back a slot `admit()` granted for a request that ended before its work was submitted."""
        self._release()

    @property
    def admitted(self) -> int:
        return self._admitted

    def submit_admitted(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> Future[T]:
        """Run work for a request that `admit()` let in; its slot is freed when the work ends.

        With `timeout`, the work is stopped between pages once that many seconds have passed from now.
        """
        future = self.submit(fn, *args, timeout=timeout)
        future.add_done_callback(self._release)
        return future

    def submit(self, fn: Callable[..., T], *args: Any, timeout: float | None = None) -> Future[T]:
        """Run background work (jobs, warm-up) on the same workers, outside request admission."""
        deadline = time.monotonic() + timeout if timeout is not None else None
        return self._executor.submit(self._tracked, deadline, fn, *args)

    def _tracked(self, deadline: float | None, fn: Callable[..., T], *args: Any) -> T:
        ident = threading.get_ident()
        with self._lock:
            self._work[ident] = _Work(time.monotonic(), deadline)
        try:
            if deadline is not None and time.monotonic() > deadline:
                raise WorkStopped("deadline", 0, 0)  # waited in the queue past its limit: never started
            return fn(*args)
        finally:
            with self._lock:
                self._work.pop(ident, None)

    def _current(self) -> _Work | None:
        with self._lock:
            return self._work.get(threading.get_ident())

    @property
    def busy(self) -> int:
        """Workers doing something now."""
        with self._lock:
            return len(self._work)

    def saturation(self) -> str:
        """Why a new request could not be served now ("" when it could): every request slot taken, or
        every worker held by work that has overrun its time limit (a page that will not end)."""
        now = time.monotonic()
        with self._lock:
            works = list(self._work.values())
            admitted = self._admitted
        if admitted >= self.settings.capacity:
            return f"saturated: {admitted} of {self.settings.capacity} request slot(s) running or waiting"
        overrun = [w for w in works if w.deadline is not None and now > w.deadline]
        if len(overrun) >= self.settings.workers:
            return f"saturated: all {self.settings.workers} worker(s) held by pages past their time limit"
        return ""

    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop_work(self) -> None:
        """From now on every piece of work stops at its next page (the server is stopping)."""
        self._stopping.set()

    def _check(self, pages_done: int, page_count: int) -> None:
        if self._stopping.is_set():
            raise WorkStopped("shutdown", pages_done, page_count)
        work = self._current()
        if work is not None and work.deadline is not None and time.monotonic() > work.deadline:
            raise WorkStopped("deadline", pages_done, page_count)

    def _bounded(self, pages: Iterator[Page], page_count: int, done: list[int]) -> Iterator[Page]:
        """The pages, checking the time limit and shutdown before each one is rendered or decoded."""
        for page in pages:
            yield page
            self._check(done[0], page_count)

    def _router(self, chain: tuple[str, ...]) -> Router:
        cache: OrderedDict[tuple[str, ...], Router] | None = getattr(self._local, "routers", None)
        if cache is None:
            cache = self._local.routers = OrderedDict()
        router = cache.get(chain)
        if router is not None:
            cache.move_to_end(chain)
            return router
        heavy = _heavy(chain)
        for other in [k for k in cache if heavy & set(k)]:
            self._close(cache.pop(other))  # one copy of a model per worker: a VLM is not loaded twice
        router = Router(list(chain), config=self.config)
        cache[chain] = router
        with self._lock:
            self._routers.append(router)
        while len(cache) > ROUTERS_PER_WORKER:
            self._close(cache.popitem(last=False)[1])
        return router

    def _close(self, router: Router) -> None:
        with self._lock:
            self._routers.remove(router)
        router.close()

    def _forget(self, key: tuple[str, ...]) -> None:
        """Drop a router that gave an engine up (unavailable, or abandoned after a timeout).

        A router keeps such verdicts for its whole life, which in a server is the process's: a
        remote server that was down at first, or one hung page, would disable the engine for good.
        The next request builds a new router and tries the engine afresh.
        """
        cache = getattr(self._local, "routers", None)
        router = cache.pop(key, None) if cache is not None else None
        if router is not None:
            self._close(router)

    def task(self, params: OCRParams) -> Task:
        """The router's task; its page timeout is the config's, else the server's request timeout; its
        token limit the server's (`--max-new-tokens`, [server] max_new_tokens)."""
        timeout = self.config.timeout if self.config.timeout is not None else self.settings.request_timeout
        return Task(
            kind=params.task,
            languages=params.languages,
            timeout=timeout,
            max_new_tokens=self.settings.max_new_tokens,
        )

    def open(self, data: bytes | Path, name: str, dpi: float | None = None) -> Source:
        """An upload (bytes, or its file on disk) opened under the server's caps, PDF pages rendered at
        `dpi` or the server's; InputError if unusable."""
        settings = self.settings
        caps: dict[str, Any] = {
            "max_pixels": settings.max_pixels,
            "max_pages": settings.max_pages,
            "dpi": dpi if dpi is not None else settings.dpi,
        }
        if isinstance(data, Path):
            return open_source(data, name=name, **caps)
        return image_source(data, name, **caps)

    def recognize(
        self,
        data: bytes | Path,
        name: str,
        params: OCRParams,
        *,
        on_page: PageHook | None = None,
        transform: Callable[[Page], Page] | None = None,
    ) -> DocumentResult:
        """OCR one upload in the calling worker thread; InputError if it cannot be opened, WorkStopped
        when its time limit passes or the server stops (checked between pages)."""
        source = self.open(data, name, params.dpi)
        done = [0]
        pages: Iterator[Page] = self._bounded(source.pages(), source.page_count, done)
        if transform is not None:
            pages = _mapped(pages, transform)
        source = Source(path=source.path, kind=source.kind, page_count=source.page_count, _pages=pages)

        def counted(page: Page, result: Any) -> None:
            done[0] += 1
            if on_page is not None:
                on_page(page, result)
            self._check(done[0], source.page_count)

        try:
            doc = self._router(params.chain).run_source(source, on_page=counted, task=self.task(params))
        except WorkStopped as exc:
            log.warning("%s: %s", name, exc)
            raise
        if any(a.outcome in _FORGETTING for page in doc.pages for a in page.attempts):
            self._forget(params.chain)
        return doc

    def page_count(self, data: bytes | Path, name: str, dpi: float | None = None) -> int:
        """Open an upload far enough to validate it and count its pages (InputError if unusable)."""
        source = self.open(data, name, dpi)
        pages = source.pages()
        close = getattr(pages, "close", None)
        if close is not None:
            close()  # release the document now rather than when it is collected
        return source.page_count

    def start_warm_up(self, params: OCRParams, *, min_interval: float = 5.0) -> None:
        """Warm up in a worker unless one is under way or the last began under `min_interval` ago.

        Called at start-up and again by /ready while not ready, so a server whose default engine was
        unavailable at first (a remote model still loading) becomes ready once it is there.
        """
        with self._lock:
            if self.ready or (self._warming is not None and not self._warming.done()):
                return
            if time.monotonic() - self._warmed_at < min_interval:
                return
            self._warmed_at = time.monotonic()
            self._warming = self.submit(self.warm_up, params)

    def warm_up(self, params: OCRParams) -> None:
        """Load the default chain by recognising a small printed page; sets `ready` and its reason."""
        try:
            doc = self.recognize(_warm_up_png(), "<warm-up>", params)
        except Exception as exc:  # not ready, and /ready says why; the server itself keeps running
            self.ready_reason = f"warm-up failed: {type(exc).__name__}: {exc}"
            return
        attempts = [a for page in doc.pages for a in page.attempts]
        if doc.pages and any(a.outcome != Outcome.UNAVAILABLE for a in attempts):
            self.ready, self.ready_reason = True, ""
            return
        reasons = [f"{a.engine}: {a.error}" for a in attempts] + doc.errors
        self.ready_reason = "no engine of the default chain could load: " + "; ".join(reasons)

    def close(self, grace: float | None = None) -> bool:
        """Drop queued work, stop running work at its next page, wait up to `grace` seconds (default:
        the settings') for the pages in hand, close the engines of idle workers. Returns False when a
        page was still in hand after the grace (its thread is left to end on its own; an engine is never
        closed mid-page)."""
        grace = self.settings.shutdown_grace if grace is None else grace
        self._stopping.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        deadline = time.monotonic() + grace
        while self.busy and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.busy:
            log.warning("stopping with %d page(s) still in hand after %.1f s; not waiting for them", self.busy, grace)
            return False
        with self._lock:
            routers, self._routers = self._routers, []
        for router in routers:
            router.close()
        return True


@functools.cache
def _heavy(chain: tuple[str, ...]) -> frozenset[str]:
    """The engines of a chain that hold a model in memory (VLMs), whose copies must not multiply."""
    heavy = set()
    for name in chain:
        try:
            if engine_class(name).kind == EngineKind.VLM:
                heavy.add(name)
        except EngineUnavailable:
            continue
    return frozenset(heavy)


def _mapped(pages: Iterator[Page], transform: Callable[[Page], Page]) -> Iterator[Page]:
    for page in pages:
        yield transform(page)


def _warm_up_png() -> bytes:
    import io

    image = Image.new("RGB", (320, 64), "white")
    ImageDraw.Draw(image).text((10, 20), "polyocr warm-up 123", fill="black")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
