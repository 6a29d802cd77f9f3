"""Worker processes on this machine: N processes, pages streamed to them through bounded pipes.

Each worker has its own pipe and never more than `prefetch` tasks (of `pages_per_task` pages each)
waiting in it, so the pages in memory at any moment are a few per worker whatever the size of the
batch: the tasks name a file and a page number and the worker renders the page itself. A worker
says "start" before it works on a task, so when it dies (a segfault in a C library, the OOM killer)
the driver knows which pages were in its hands: those pages are offered to `on_crash` (the driver
retries each once, alone, in a fresh worker, then marks it failed), and the tasks it had not started
go back to the queue untouched. A worker is recycled (sent "stop" and replaced by a fresh process)
after `recycle_after` pages, or as soon as its resident memory passes `max_rss_mb`, so no worker's
memory can grow with the length of the run. Processes are spawned, never forked: the driver runs
threads (Rich's refresh) and forking those is unsafe.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from polyocr.batch.worker import PageTask, WorkerSpec, worker_main
from polyocr.errors import BatchError
from polyocr.results import PageResult

ResultHandler = Callable[[PageTask, PageResult], None]
CrashHandler = Callable[[PageTask, str], bool]  # True: retry the page; False: the handler failed it

MAX_START_FAILURES = 3  # workers in a row that die before starting any page: the batch cannot run


@dataclass
class _Slot:
    index: int
    env: dict[str, str]
    proc: Any
    conn: Connection
    assigned: int = 0
    batches: dict[int, list[PageTask]] = field(default_factory=dict)  # sent, not answered, in order
    started: set[int] = field(default_factory=set)
    retiring: bool = False
    dead: bool = False
    answered: int = 0
    reserved: deque[list[PageTask]] = field(default_factory=deque)  # retries of a dead worker's pages


@dataclass
class PoolStats:
    started: int = 0  # worker processes started
    recycled: int = 0
    crashed: int = 0
    peak_rss_mb: float = 0.0  # the largest resident memory a worker reported


class LocalPool:
    def __init__(
        self,
        spec: WorkerSpec,
        envs: list[dict[str, str]],
        *,
        recycle_after: int = 500,
        max_rss_mb: float | None = None,
        pages_per_task: int = 1,
        prefetch: int = 2,
    ):
        self.spec = spec
        self.envs = envs
        self.recycle_after = max(1, recycle_after)
        self.max_rss_mb = max_rss_mb
        self.pages_per_task = max(1, pages_per_task)
        self.prefetch = max(1, prefetch)
        self.stats = PoolStats()
        self._ctx = mp.get_context("spawn")
        self._slots: list[_Slot] = []
        self._next_id = 0
        self._start_failures = 0

    # -- processes ---------------------------------------------------------------------------------

    def _start(self, index: int) -> _Slot:
        ours, theirs = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=worker_main,
            args=(self.spec, theirs, self.envs[index], os.getpid()),
            name=f"polyocr-batch-{index}",
            daemon=True,
        )
        proc.start()
        theirs.close()
        self.stats.started += 1
        slot = _Slot(index, self.envs[index], proc, ours)
        self._slots.append(slot)
        return slot

    def _send(self, slot: _Slot, message: tuple) -> bool:
        try:
            slot.conn.send(message)
            return True
        except (BrokenPipeError, ConnectionResetError, OSError):
            return False

    def worker_pids(self) -> list[int]:
        return [slot.proc.pid for slot in self._slots if not slot.dead]

    # -- the loop ----------------------------------------------------------------------------------

    def run(self, tasks: Iterator[PageTask], on_result: ResultHandler, on_crash: CrashHandler) -> PoolStats:
        """Every task through the workers; returns when all are answered (or failed by on_crash)."""
        source = iter(tasks)
        queue: deque[list[PageTask]] = deque()  # put back: a dead worker's unstarted tasks, crash retries
        exhausted = False

        def next_batch() -> list[PageTask]:
            nonlocal exhausted
            if queue:
                return queue.popleft()
            batch: list[PageTask] = []
            while not exhausted and len(batch) < self.pages_per_task:
                item = next(source, None)
                if item is None:
                    exhausted = True
                else:
                    batch.append(item)
            return batch

        def work_left() -> bool:
            return bool(queue) or not exhausted

        for index in range(len(self.envs)):
            self._start(index)
        try:
            while True:
                for slot in list(self._slots):
                    while not slot.dead and not slot.retiring and len(slot.batches) < self.prefetch:
                        batch = slot.reserved.popleft() if slot.reserved else next_batch()
                        if not batch:
                            break
                        batch_id, self._next_id = self._next_id, self._next_id + 1
                        slot.batches[batch_id] = batch
                        self._send(slot, ("task", batch_id, batch))
                        slot.assigned += len(batch)
                        if slot.assigned >= self.recycle_after:
                            self._retire(slot)
                busy = any(slot.batches or slot.reserved for slot in self._slots)
                if not busy and not work_left():
                    break
                if not self._slots:
                    raise BatchError("", "no worker process left")
                waitables: list[Any] = [s.conn for s in self._slots] + [s.proc.sentinel for s in self._slots]
                for ready in wait(waitables, timeout=1.0):
                    found = next((s for s in self._slots if ready is s.conn or ready == s.proc.sentinel), None)
                    if found is None or found.dead:
                        continue
                    slot = found
                    if ready is slot.conn:
                        self._receive(slot, on_result)
                    else:
                        self._drain(slot, on_result)
                        self._exited(slot, queue, on_crash, work_left() or any(s.batches for s in self._slots))
        finally:
            self.close()
        return self.stats

    def _retire(self, slot: _Slot) -> None:
        slot.retiring = True
        self._send(slot, ("stop",))

    def _receive(self, slot: _Slot, on_result: ResultHandler) -> bool:
        """One message from the worker; False when its pipe is closed (it died or exited)."""
        try:
            message = slot.conn.recv()
        except (EOFError, OSError):
            return False
        if message[0] == "start":
            slot.started.add(message[1])
            self._start_failures = 0
        elif message[0] == "done":
            _, batch_id, results, rss = message
            batch = slot.batches.pop(batch_id)
            slot.started.discard(batch_id)
            slot.answered += len(batch)
            self.stats.peak_rss_mb = max(self.stats.peak_rss_mb, rss)
            for task, text in zip(batch, results, strict=True):
                on_result(task, PageResult.model_validate_json(text))
            if self.max_rss_mb is not None and rss > self.max_rss_mb and not slot.retiring:
                self._retire(slot)
        return True

    def _drain(self, slot: _Slot, on_result: ResultHandler) -> None:
        """Messages the worker sent before it exited."""
        while True:
            try:
                if not slot.conn.poll():
                    return
            except (EOFError, OSError):
                return
            if not self._receive(slot, on_result):
                return

    def _exited(self, slot: _Slot, queue: deque[list[PageTask]], on_crash: CrashHandler, more_work: bool) -> None:
        slot.proc.join()
        slot.dead = True
        slot.conn.close()
        self._slots.remove(slot)
        code = slot.proc.exitcode
        retries: list[list[PageTask]] = []
        if slot.batches:  # it died with work in hand
            self.stats.crashed += 1
            reason = _death(code)
            if not slot.started and slot.answered == 0:
                self._start_failures += 1
                if self._start_failures >= MAX_START_FAILURES:
                    raise BatchError("", f"worker processes die before their first page ({reason})")
            for batch_id in reversed(list(slot.batches)):
                batch = slot.batches[batch_id]
                if batch_id in slot.started:
                    retries = [[task] for task in batch if on_crash(task, reason)] + retries
                else:
                    queue.appendleft(batch)
        elif slot.retiring:
            self.stats.recycled += 1
        queue.extendleft(reversed(slot.reserved))  # a fresh worker that died before its reserved retries
        if more_work or queue or retries:
            fresh = self._start(slot.index)
            fresh.reserved.extend(retries)  # each page that was in the dead worker's hands, alone, in a fresh one

    def close(self) -> None:
        """Stop every worker: a polite "stop", then SIGKILL for one that does not go within 5 s."""
        for slot in self._slots:
            self._send(slot, ("stop",))
        for slot in self._slots:
            slot.proc.join(5)
            if slot.proc.is_alive():
                os.kill(slot.proc.pid, signal.SIGKILL)
                slot.proc.join()
            slot.conn.close()
        self._slots = []


def _death(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"the worker process died ({name}) while on this page"
    return f"the worker process exited with code {code} while on this page"
