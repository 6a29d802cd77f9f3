"""The job runner: one background thread taking queued jobs, oldest first, onto the OCR workers.

Jobs share the workers with synchronous requests, so a GPU serving one model is never asked to
hold two copies because a job arrived. Progress is written after every page. On shutdown the page
in hand is finished and the job goes back to the queue, so the next start takes it up again.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from polyocr.errors import InputError
from polyocr.results import PageResult
from polyocr.server.jobs import Job, JobStore
from polyocr.server.service import OCRParams, OCRService

log = logging.getLogger("polyocr.server")


class _Stopping(Exception):
    """Raised between pages to hand a job back when the server stops."""


class JobRunner:
    def __init__(self, store: JobStore, service: OCRService, *, poll_seconds: float = 1.0):
        self.store = store
        self.service = service
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="polyocr-jobs", daemon=True)
        self._live: dict[str, list[dict[str, Any]]] = {}  # the running job's finished pages, for the web page

    def live_pages(self, job_id: str) -> list[dict[str, Any]]:
        """What each page of a running job finished with so far (page, status, engine, attempts)."""
        return list(self._live.get(job_id, ()))

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)

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
            try:
                self.service.submit(self._run, job).result()
            except Exception as exc:  # shutdown cancelled the work before it started
                if self._stopping.is_set():
                    self.store.requeue(job.id)
                else:
                    self.store.fail(job.id, f"{type(exc).__name__}: {exc}")

    def _run(self, job: Job) -> None:
        done = 0
        live: list[dict[str, Any]] = []
        self._live[job.id] = live

        def on_page(_page: object, result: PageResult) -> None:
            nonlocal done
            done += 1
            live.append(result.model_dump(mode="json", include={"page", "status", "engine", "attempts", "errors"}))
            self.store.progress(job.id, done)
            if self._stopping.is_set():
                raise _Stopping

        try:
            data = self.store.read_upload(job.id)
            doc = self.service.recognize(data, job.filename, OCRParams.from_dict(job.params), on_page=on_page)
        except _Stopping:
            self.store.requeue(job.id)
            return
        except InputError as exc:
            self.store.fail(job.id, str(exc))
            return
        except Exception as exc:  # any failure is recorded on the job, never lost with the thread
            log.exception("job %s failed", job.id)
            self.store.fail(job.id, f"{type(exc).__name__}: {exc}")
            return
        else:
            self.store.finish(job.id, doc.to_json(indent=None), len(doc.pages))
        finally:
            self._live.pop(job.id, None)
