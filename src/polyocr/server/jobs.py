"""Jobs for long documents, kept in SQLite so that they outlive the server process.

A job is its uploaded file on disk plus one row: queued -> running -> done | failed. The upload
stays while the job is queued or running, so a job interrupted by a crash can start again from its
file, and is deleted as soon as the job finishes; the result stays until the job expires or is
deleted. The directory's bytes are reported (`usage`) so the server can cap them.

A store that is damaged (a truncated or malformed database, a file that is no database, an empty
database beside job files) is never silently replaced by an empty one: opening it raises
JobStoreError naming the file and how to recover, and the job files are left where they are.

On start-up every job left "running" by a dead process is queued again,
unless it has already been started `max_starts` times, in which case it is marked failed with the
reason: a job is never silently lost and never loops forever on an input that kills the server.
"""

from __future__ import annotations

import io
import json
import logging
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

from polyocr.documents import Page
from polyocr.errors import JobStoreError

log = logging.getLogger("polyocr.server")
_SQLITE_HEADER = b"SQLite format 3\x00"

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
    fetched REAL,
    pages_failed INTEGER NOT NULL DEFAULT 0
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
    pages_failed: int = 0

    def public(self, ttl: float) -> dict[str, Any]:
        """The job as GET /v1/jobs/{id} reports it."""
        expires = (self.finished or self.created) + ttl
        return {
            "id": self.id,
            "status": self.status.value,
            "filename": self.filename,
            "pages_done": self.pages_done,
            "pages_failed": self.pages_failed,
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
        self.incoming = self.directory / "incoming"  # request bodies being received (see http.py)
        self.path = self.directory / "jobs.sqlite3"
        try:
            for folder in (self.uploads, self.results, self.incoming):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise JobStoreError(
                f"job directory {self.directory} cannot be used: {exc.strerror or exc} "
                "(give --job-dir a directory polyocr may create and write)"
            ) from None
        for leftover in self.incoming.iterdir():  # bodies of requests a previous process did not finish
            leftover.unlink(missing_ok=True)
        self._lock = threading.Lock()
        self._check_before_open()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            check = self._db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise sqlite3.DatabaseError(check)
            self._db.execute(_SCHEMA)
            columns = {row["name"] for row in self._db.execute("PRAGMA table_info(jobs)")}
            if "pages_failed" not in columns:  # a store written before the column existed
                self._db.execute("ALTER TABLE jobs ADD COLUMN pages_failed INTEGER NOT NULL DEFAULT 0")
            self.recovered = self._recover()
            known = {row["id"] for row in self._db.execute("SELECT id FROM jobs")}
        except sqlite3.DatabaseError as exc:
            self._damaged(f"SQLite reports {exc}")
        orphans = [f for f in self._job_files() if f.name.split(".")[0] not in known]
        if orphans:
            log.warning(
                "job store %s: %d file(s) in uploads/ and results/ belong to no job it lists (kept)",
                self.path,
                len(orphans),
            )

    def _job_files(self) -> list[Path]:
        return [f for folder in (self.uploads, self.results) for f in folder.iterdir() if f.is_file()]

    def _check_before_open(self) -> None:
        """Refuse a database file that SQLite would silently treat as a new, empty store."""
        if not self.path.exists():  # a new store (job files without one are logged as orphans below)
            return
        try:
            with self.path.open("rb") as fh:
                header = fh.read(100)
        except OSError as exc:
            raise JobStoreError(f"job store {self.path} cannot be read: {exc.strerror or exc}") from None
        if not header:
            if self._job_files():
                self._damaged("it is empty (0 bytes) but job files are beside it")
            return
        if not header.startswith(_SQLITE_HEADER):
            self._damaged("it is not a SQLite database")
        page_size = int.from_bytes(header[16:18], "big")
        page_size = 65536 if page_size == 1 else page_size
        pages = int.from_bytes(header[28:32], "big")
        size = self.path.stat().st_size
        wal = self.path.with_name(self.path.name + "-wal")
        if size % max(page_size, 1) or (pages and size < pages * page_size and not wal.exists()):
            self._damaged(f"it is truncated ({size:,} bytes; its header says {pages * page_size:,})")

    def _damaged(self, why: str) -> None:
        files = len(self._job_files())
        aside = f"mv {self.path} {self.path}.damaged"
        raise JobStoreError(
            f"job store {self.path} is damaged: {why}. polyocr did not start rather than forget its jobs; "
            f"the {files} job file(s) in {self.uploads} and {self.results} are untouched. To recover: restore "
            f"the database from a backup, or move it aside ({aside}) to start an empty store (the old "
            "files stay findable there), or give --job-dir a new directory."
        )

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

    def create(self, data: bytes | Path, filename: str, params: dict[str, Any], page_count: int) -> Job:
        """A queued job for an upload: bytes are written, a file (a received body) is moved in."""
        job_id = uuid.uuid4().hex
        if isinstance(data, Path):
            os.replace(data, self.upload_path(job_id))
        else:
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

    def finish(self, job_id: str, result_json: str, pages_done: int, pages_failed: int = 0) -> None:
        """Store the result and mark the job done; its upload is no longer needed and is deleted."""
        _write_atomic(self.result_path(job_id), result_json.encode("utf-8"))
        now = time.time()
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET status = ?, pages_done = ?, pages_failed = ?, updated = ?, finished = ? WHERE id = ?",
                (JobStatus.DONE, pages_done, pages_failed, now, now, job_id),
            )
        self.upload_path(job_id).unlink(missing_ok=True)

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
        self.upload_path(job_id).unlink(missing_ok=True)

    def delete(self, job_id: str) -> bool:
        """Forget a finished job and its files (DELETE /v1/jobs/{id}); False if there is no such job."""
        with self._lock:
            deleted = self._db.execute(
                "DELETE FROM jobs WHERE id = ? AND status IN (?, ?)", (job_id, JobStatus.DONE, JobStatus.FAILED)
            ).rowcount
        if deleted:
            self.upload_path(job_id).unlink(missing_ok=True)
            self.result_path(job_id).unlink(missing_ok=True)
            shutil.rmtree(self.pages_path(job_id), ignore_errors=True)
        return bool(deleted)

    def usage(self) -> int:
        """Bytes held by the jobs' uploads, results and kept page images."""
        total = 0
        folders = [self.uploads, self.results]
        pages = self.directory / "pages"
        if pages.is_dir():
            folders += [Path(entry.path) for entry in os.scandir(pages) if entry.is_dir()]
        for folder in folders:
            for entry in os.scandir(folder):
                try:
                    total += entry.stat().st_size
                except OSError:
                    continue
        return total

    def read_upload(self, job_id: str) -> bytes:
        return self.upload_path(job_id).read_bytes()

    def read_result(self, job_id: str) -> str:
        """The stored DocumentResult JSON (FileNotFoundError when it is gone from the disk)."""
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


def save_page_png(directory: Path, page: Page) -> Path:
    """A page's image as `directory/N.png` (written atomically), at its DPI where it has one."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{page.number}.png"
    if path.is_file():
        return path
    buffer = io.BytesIO()
    dpi = round(page.dpi) if page.dpi else None
    page.image.save(buffer, format="PNG", **({"dpi": (dpi, dpi)} if dpi else {}))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(buffer.getvalue())
    os.replace(tmp, path)
    return path
