"""The job runner: one background thread taking queued jobs, oldest first, onto the OCR workers.

Jobs share the workers with synchronous requests, so a GPU serving one model is never asked to
hold two copies because a job arrived. Progress is written after every page. A job's time limit
(`job_timeout`) stops its work between pages and fails it with how far it got. On shutdown the page
in hand is finished and the job goes back to the queue, so the next start takes it up again; if that
page does not end within the grace, the job is put back anyway and the server exits without it.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from polyocr.documents import Page
from polyocr.errors import InputError
from polyocr.results import PageResult, PageStatus
from polyocr.server.http import redact
from polyocr.server.jobs import Job, JobStore, save_page_png
from polyocr.server.service import OCRParams, OCRService, WorkStopped

log = logging.getLogger("polyocr.server")


class JobRunner:
    def __init__(
        self, store: JobStore, service: OCRService, *, poll_seconds: float = 1.0, job_timeout: float | None = None
    ):
        self.store = store
        self.service = service
        self.poll_seconds = poll_seconds
        self.job_timeout = job_timeout
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="polyocr-jobs", daemon=True)
        self._lock = threading.Lock()
        self._current: str | None = None  # the job in hand
        self._handed_back: set[str] = set()  # jobs stop() requeued while their page was still in hand
        self._live: dict[str, list[dict[str, Any]]] = {}  # the running job's finished pages, for the web page

    def live_pages(self, job_id: str) -> list[dict[str, Any]]:
        """What each page of a running job finished with so far (page, status, engine, attempts)."""
        return list(self._live.get(job_id, ()))

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking jobs; the job in hand stops at its next page and is requeued. If it has not
        within `timeout` seconds (a page that will not end), it is requeued here."""
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)
        with self._lock:
            current = self._current
            if current is not None and self._thread.is_alive():
                self._handed_back.add(current)
        if current is not None and self._thread.is_alive():
            log.warning("job %s: its page did not end within %.1f s of the stop; requeued", current, timeout)
            self.store.requeue(current)

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.store.expire()
                job = self.store.claim_next()
            except Exception:  # a store hiccup must not kill the runner; the next turn retries
                log.exception("job store error")
                job = None
            if job is None:
                self._wake.wait(self.poll_seconds)
                self._wake.clear()
                continue
            with self._lock:
                self._current = job.id
            try:
                self.service.submit(self._run, job, timeout=self.job_timeout).result()
            except Exception as exc:  # shutdown cancelled the work before it started, or it never started
                if self._stopping.is_set():
                    if job.id not in self._handed_back:
                        self.store.requeue(job.id)
                elif isinstance(exc, WorkStopped):
                    self._fail(job.id, self._over_time(exc))
                else:
                    self._fail(job.id, f"{type(exc).__name__}: {exc}")
            finally:
                with self._lock:
                    self._current = None

    def _over_time(self, exc: WorkStopped) -> str:
        return (
            f"stopped after {exc.pages_done} of {exc.page_count} page(s): the job's time limit of "
            f"{self.job_timeout:g} s passed (the server's --job-timeout)"
        )

    def _fail(self, job_id: str, error: str) -> None:
        self.store.fail(job_id, redact(error))

    def _run(self, job: Job) -> None:
        done = 0
        live: list[dict[str, Any]] = []
        self._live[job.id] = live

        keep_pages = bool(job.params.get("keep_pages"))

        def on_page(page: object, result: PageResult) -> None:
            nonlocal done
            done += 1
            live.append(result.model_dump(mode="json", include={"page", "status", "engine", "attempts", "errors"}))
            if keep_pages and isinstance(page, Page):
                save_page_png(self.store.pages_path(job.id), page)
            if job.id not in self._handed_back:
                self.store.progress(job.id, done)

        try:
            self._recognize_and_finish(job, on_page)
        finally:
            self._live.pop(job.id, None)

    def _recognize_and_finish(self, job: Job, on_page: Any) -> None:
        try:
            doc = self.service.recognize(
                self.store.upload_path(job.id), job.filename, OCRParams.from_dict(job.params), on_page=on_page
            )
        except WorkStopped as exc:
            if exc.reason == "shutdown" or self._stopping.is_set():
                if job.id not in self._handed_back:
                    self.store.requeue(job.id)
            else:
                self._fail(job.id, self._over_time(exc))
            return
        except InputError as exc:
            self._fail(job.id, str(exc))
            return
        except Exception as exc:  # any failure is recorded on the job, never lost with the thread
            log.exception("job %s failed", job.id)
            self._fail(job.id, f"{type(exc).__name__}: {exc}")
            return
        if job.id in self._handed_back:
            return  # requeued by stop(); the next start runs it again
        failed = sum(page.status == PageStatus.FAILED for page in doc.pages)
        self.store.finish(job.id, doc.to_json(indent=None), len(doc.pages), failed)
