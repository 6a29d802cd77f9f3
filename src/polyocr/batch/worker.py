"""What turns (file, page number) into a PageResult, in a worker process or a Ray actor.

`WorkerSpec` is everything a fresh process needs to recognise pages exactly as the driver would:
the chain, the task, the routing config, the loader's limits and any engine registered at run time
(a plug-in's or a test's, which a spawned process would not otherwise know). `PageRecognizer` holds
one Router (so one loaded engine per chain member) and one PageReader, and serves any number of
pages. `worker_main` is the loop of a local worker process (local.py starts them): it reads tasks
from its pipe, says which pages it starts before starting them, and sends back each page's JSON.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from polyocr.results import PageResult, PageStatus

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from polyocr.config import RouterConfig
    from polyocr.documents import Page
    from polyocr.engines.base import EngineEntry
    from polyocr.types import Task


@dataclass(frozen=True)
class PageTask:
    doc: int
    path: str  # the file to open
    source: str  # the name results carry (the input as the user gave it)
    number: int


@dataclass
class WorkerSpec:
    chain: list[str]
    task: Task
    config: RouterConfig
    dpi: float
    max_pixels: int
    extra_engines: list[EngineEntry] = field(default_factory=list)


def registered_extras() -> list[EngineEntry]:
    """Engines registered in this process beyond the built-in table, to register again in workers."""
    from polyocr.engines import base

    builtin = {entry.name: entry for entry in base.ENTRIES}
    return [entry for entry in base.entries() if builtin.get(entry.name) != entry]


class PageRecognizer:
    """One Router and one PageReader: pages in, PageResults out, one page's failure never the others'."""

    def __init__(self, spec: WorkerSpec):
        from polyocr.documents.loader import PageReader
        from polyocr.engines.base import register
        from polyocr.router import Router

        for entry in spec.extra_engines:
            register(entry)
        self.spec = spec
        self.reader = PageReader(dpi=spec.dpi, max_pixels=spec.max_pixels)
        self.router = Router(spec.chain, spec.task, config=spec.config)

    def read(self, task: PageTask) -> Page | PageResult:
        """The page's image, or a failed result saying why it cannot be read."""
        from polyocr.errors import InputError

        try:
            return self.reader.read(task.path, task.number, task.source)
        except InputError as exc:
            return failed_result(task, str(exc))
        except Exception as exc:  # a corrupt file may fail in ways the loader did not foresee
            return failed_result(task, f"{task.source} page {task.number}: {type(exc).__name__}: {exc}")

    def recognize(self, pages: list[Page]) -> list[PageResult]:
        return self.router.recognize_pages(pages) if pages else []

    def run(self, tasks: list[PageTask]) -> list[PageResult]:
        """Read and recognise the tasks' pages; results in the tasks' order."""
        read = [self.read(task) for task in tasks]
        pages = [p for p in read if not isinstance(p, PageResult)]
        recognized = iter(self.recognize(pages))
        return [p if isinstance(p, PageResult) else next(recognized) for p in read]

    def close(self) -> None:
        self.router.close()
        self.reader.close()


def failed_result(task: PageTask, reason: str) -> PageResult:
    return PageResult(page=task.number, source=task.source, status=PageStatus.FAILED, errors=[reason])


def rss_mb() -> float:
    """This process's resident memory now, MiB (Linux /proc; elsewhere the peak from getrusage)."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _die_with_parent() -> None:
    """Linux: the kernel kills this worker when the driver dies, even by kill -9."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def worker_main(spec: WorkerSpec, conn: Connection, env: dict[str, str], parent: int) -> None:
    """A worker process: ("task", id, [PageTask]) -> ("start", id) then ("done", id, [json], rss);
    ("stop",) -> exit. Exits by itself when the driver is gone."""
    os.environ.update(env)  # before any engine import: CUDA_VISIBLE_DEVICES, thread limits
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    recognizer = PageRecognizer(spec)
    try:
        while True:
            while not conn.poll(1.0):
                if os.getppid() != parent:
                    return
            message: tuple[Any, ...] = conn.recv()
            if message[0] == "stop":
                return
            _, batch_id, tasks = message
            conn.send(("start", batch_id))
            results = recognizer.run(tasks)
            conn.send(("done", batch_id, [r.model_dump_json() for r in results], rss_mb()))
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return
    finally:
        recognizer.close()
