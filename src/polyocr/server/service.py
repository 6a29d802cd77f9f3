"""The OCR work behind the HTTP layer: worker threads, their engines, admission and warm-up.

OCR runs in a pool of `workers` threads so the event loop stays responsive. Engines are not assumed
to be thread-safe, so each worker keeps its own routers (and through them its own engine instances),
created on first use and kept for the life of the process: an engine is loaded once per worker,
never per request. A router serves one engine chain for any task (the task goes with each call); a
worker keeps a few chains, closes the least recently used beyond that, and never keeps two routers
holding the same VLM (a request for another chain with that model closes the first).
"""

from __future__ import annotations

import functools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from PIL import Image, ImageDraw

from polyocr.config import RouterConfig, ServerSettings
from polyocr.documents import Page, Source
from polyocr.documents.loader import image_source
from polyocr.engines.base import engine_class
from polyocr.errors import EngineUnavailable
from polyocr.results import DocumentResult, Outcome
from polyocr.router import Router
from polyocr.types import EngineKind, Task, TaskKind

T = TypeVar("T")
ROUTERS_PER_WORKER = 4
_FORGETTING = (Outcome.UNAVAILABLE, Outcome.TIMEOUT)
PageHook = Callable[[Page, Any], None]


@dataclass(frozen=True)
class OCRParams:
    """What one request asks for, already validated (the chain resolved to engine names)."""

    chain: tuple[str, ...]
    task: TaskKind = TaskKind.LAYOUT
    languages: tuple[str, ...] = ("eng", "rus")
    dpi: float | None = None  # PDF rendering resolution; None: the server's --dpi

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"chain": list(self.chain), "task": self.task.value, "languages": list(self.languages)}
        if self.dpi is not None:
            data["dpi"] = self.dpi
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OCRParams:
        return cls(tuple(data["chain"]), TaskKind(data["task"]), tuple(data["languages"]), data.get("dpi"))


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

    # Admission: a bounded number of synchronous requests may run or wait; the rest get 429.
    def admit(self) -> bool:
        with self._lock:
            if self._admitted >= self.settings.capacity:
                return False
            self._admitted += 1
            return True

    def _release(self, _future: Future[Any]) -> None:
        with self._lock:
            self._admitted -= 1

    @property
    def admitted(self) -> int:
        return self._admitted

    def submit_admitted(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run work for a request that `admit()` let in; its slot is freed when the work ends."""
        future = self._executor.submit(fn, *args)
        future.add_done_callback(self._release)
        return future

    def submit(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run background work (jobs, warm-up) on the same workers, outside request admission."""
        return self._executor.submit(fn, *args)

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
        """The router's task; its page timeout is the config's, else the server's request timeout."""
        timeout = self.config.timeout if self.config.timeout is not None else self.settings.request_timeout
        return Task(kind=params.task, languages=params.languages, timeout=timeout)

    def recognize(
        self,
        data: bytes,
        name: str,
        params: OCRParams,
        *,
        on_page: PageHook | None = None,
        transform: Callable[[Page], Page] | None = None,
    ) -> DocumentResult:
        """OCR one upload in the calling worker thread; InputError if it cannot be opened."""
        source = self.open(data, name, params.dpi)
        if transform is not None:
            source = Source(
                path=source.path,
                kind=source.kind,
                page_count=source.page_count,
                _pages=_mapped(source.pages(), transform),
            )
        doc = self._router(params.chain).run_source(source, on_page=on_page, task=self.task(params))
        if any(a.outcome in _FORGETTING for page in doc.pages for a in page.attempts):
            self._forget(params.chain)
        return doc

    def open(self, data: bytes, name: str, dpi: float | None = None) -> Source:
        """An upload opened under the server's limits (PDF pages rendered at `dpi` or the server's)."""
        return image_source(
            data,
            name,
            max_pixels=self.settings.max_pixels,
            max_pages=self.settings.max_pages,
            dpi=dpi if dpi is not None else self.settings.dpi,
        )

    def page_count(self, data: bytes, name: str, dpi: float | None = None) -> int:
        """Open an upload far enough to validate it and count its pages (InputError if unusable)."""
        return self.open(data, name, dpi).page_count

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
            self._warming = self._executor.submit(self.warm_up, params)

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

    def close(self) -> None:
        """Drop queued work, let pages in hand finish (an engine is never closed mid-page), close engines."""
        self._executor.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            routers, self._routers = self._routers, []
        for router in routers:
            router.close()


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
