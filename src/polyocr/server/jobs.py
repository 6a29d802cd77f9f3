"""Jobs for long documents, kept in SQLite so that they outlive the server process.

A job is its uploaded file on disk plus one row: queued -> running -> done | failed. The upload
stays until the result has been fetched (or the job expires), so a job interrupted by a crash can
start again from its file. On start-up every job left "running" by a dead process is queued again,
unless it has already been started `max_starts` times, in which case it is marked failed with the
reason: a job is never silently lost and never loops forever on an input that kills the server.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
import time
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    filename TEXT NOT NULL,
    params TEXT NOT NULL,
    page_count INTEGER NOT NULL,
    pages_done INTEGER NOT NULL DEFAULT 0,
    starts INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    finished REAL,
    fetched REAL
)
"""


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


@dataclass(frozen=True)
class Job:
    id: str
    status: JobStatus
    filename: str
    params: dict[str, Any]
    page_count: int
    pages_done: int
    starts: int
    error: str | None
    created: float
    updated: float
    finished: float | None
    fetched: float | None

    def public(self, ttl: float) -> dict[str, Any]:
        """The job as GET /v1/jobs/{id} reports it."""
        expires = (self.finished or self.created) + ttl
        return {
            "id": self.id,
            "status": self.status.value,
            "filename": self.filename,
            "pages_done": self.pages_done,
            "page_count": self.page_count,
            "progress": round(self.pages_done / self.page_count, 4) if self.page_count else 0.0,
            "starts": self.starts,
            "error": self.error,
            "params": self.params,
            "created": self.created,
            "finished": self.finished,
            "expires": expires,
        }


class JobStore:
    """The jobs of one server, in `directory`/jobs.sqlite3 with files beside it."""

    def __init__(self, directory: Path, *, ttl: float, max_starts: int):
        self.directory = Path(directory)
        self.ttl = ttl
        self.max_starts = max_starts
        self.uploads = self.directory / "uploads"
        self.results = self.directory / "results"
        self.uploads.mkdir(parents=True, exist_ok=True)
        self.results.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            self.directory / "jobs.sqlite3", check_same_thread=False, isolation_level=None, timeout=30
        )
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(_SCHEMA)
        self.recovered = self._recover()

    def _recover(self) -> list[str]:
        """Requeue or fail what a previous process left running; returns the ids it touched."""
        now = time.time()
        touched = []
        with self._lock:
            rows = self._db.execute("SELECT id, starts FROM jobs WHERE status = ?", (JobStatus.RUNNING,)).fetchall()
            for row in rows:
                touched.append(row["id"])
                if row["starts"] >= self.max_starts:
                    self._db.execute(
                        "UPDATE jobs SET status = ?, error = ?, updated = ?, finished = ? WHERE id = ?",
                        (
                            JobStatus.FAILED,
                            f"interrupted {row['starts']} time(s) by a server stop or crash; not started again",
                            now,
                            now,
                            row["id"],
                        ),
                    )
                else:
                    self._db.execute(
                        "UPDATE jobs SET status = ?, pages_done = 0, updated = ? WHERE id = ?",
                        (JobStatus.QUEUED, now, row["id"]),
                    )
        return touched

    def _row(self, job_id: str) -> Job | None:
        row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        data = dict(row)
        data["status"] = JobStatus(data["status"])
        data["params"] = json.loads(data["params"])
        return Job(**data)

    def upload_path(self, job_id: str) -> Path:
        return self.uploads / job_id

    def result_path(self, job_id: str) -> Path:
        return self.results / f"{job_id}.json"

    def pages_path(self, job_id: str) -> Path:
        """Where the web page's rendered page images of a job are cached (removed with the job)."""
        return self.directory / "pages" / job_id

    def create(self, data: bytes, filename: str, params: dict[str, Any], page_count: int) -> Job:
        job_id = uuid.uuid4().hex
        _write_atomic(self.upload_path(job_id), data)
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT INTO jobs (id, status, filename, params, page_count, created, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (job_id, JobStatus.QUEUED, filename, json.dumps(params), page_count, now, now),
            )
            job = self._row(job_id)
        assert job is not None
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._row(job_id)

    def count(self, status: JobStatus) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM jobs WHERE status = ?", (status,)).fetchone()[0]

    def claim_next(self) -> Job | None:
        """The oldest queued job, now marked running (and its start counted)."""
        with self._lock:
            row = self._db.execute(
                "SELECT id FROM jobs WHERE status = ? ORDER BY created LIMIT 1", (JobStatus.QUEUED,)
            ).fetchone()
            if row is None:
                return None
            self._db.execute(
                "UPDATE jobs SET status = ?, starts = starts + 1, pages_done = 0, updated = ? WHERE id = ?",
                (JobStatus.RUNNING, time.time(), row["id"]),
            )
            return self._row(row["id"])

    def progress(self, job_id: str, pages_done: int) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET pages_done = ?, updated = ? WHERE id = ?", (pages_done, time.time(), job_id)
            )

    def finish(self, job_id: str, result_json: str, pages_done: int) -> None:
        _write_atomic(self.result_path(job_id), result_json.encode("utf-8"))
        now = time.time()
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status = ?, pages_done = ?, updated = ?, finished = ? WHERE id = ?",
                (JobStatus.DONE, pages_done, now, now, job_id),
            )

    def requeue(self, job_id: str) -> None:
        """Put back a job this process stopped on purpose (shutdown); that start does not count."""
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status = ?, starts = MAX(starts - 1, 0), pages_done = 0, updated = ? WHERE id = ?",
                (JobStatus.QUEUED, time.time(), job_id),
            )

    def fail(self, job_id: str, error: str) -> None:
        now = time.time()
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status = ?, error = ?, updated = ?, finished = ? WHERE id = ?",
                (JobStatus.FAILED, error, now, now, job_id),
            )

    def read_upload(self, job_id: str) -> bytes:
        return self.upload_path(job_id).read_bytes()

    def read_result(self, job_id: str) -> str:
        """The stored DocumentResult JSON; the upload is no longer needed once this is fetched."""
        text = self.result_path(job_id).read_text(encoding="utf-8")
        with self._lock:
            self._db.execute("UPDATE jobs SET fetched = COALESCE(fetched, ?) WHERE id = ?", (time.time(), job_id))
        self.upload_path(job_id).unlink(missing_ok=True)
        return text

    def expire(self, now: float | None = None) -> list[str]:
        """Delete finished jobs (row and files) older than the TTL; returns their ids."""
        cutoff = (now if now is not None else time.time()) - self.ttl
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM jobs WHERE status IN (?, ?) AND finished < ?",
                (JobStatus.DONE, JobStatus.FAILED, cutoff),
            ).fetchall()
            ids = [row["id"] for row in rows]
            for job_id in ids:
                self._db.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        for job_id in ids:
            self.upload_path(job_id).unlink(missing_ok=True)
            self.result_path(job_id).unlink(missing_ok=True)
            shutil.rmtree(self.pages_path(job_id), ignore_errors=True)
        return ids

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write then rename, so a crash leaves either the whole file or none."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
