"""What a polyocr server allows: its bind address, engines, limits and job storage.

The defaults are the safe ones: loopback only, no CORS, inputs small enough that one request cannot
exhaust the machine. Every limit is a setting so a GPU box serving a trusted network can raise them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from polyocr.documents import DEFAULT_DPI

API_KEY_ENV = "POLYOCR_API_KEY"
MIB = 1024 * 1024


def default_job_dir() -> Path:
    """Where jobs live unless told otherwise: the user's cache, so a restart finds them again."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "polyocr" / "jobs"


@dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    engine: str = "auto"  # the chain used when a request names none
    allowed_engines: tuple[str, ...] | None = None  # engines a request may name; None: every engine
    languages: tuple[str, ...] = ("eng", "rus")
    api_key: str | None = None  # bearer token required on /v1/* when set
    cors_origins: tuple[str, ...] = ()
    max_request_bytes: int = 50 * MIB
    max_pages: int = 200
    max_pixels: int = 50_000_000  # per page
    dpi: float = DEFAULT_DPI
    request_timeout: float = 300.0  # seconds for one synchronous /v1/ocr or chat request
    workers: int = 1  # pages recognised at once; each worker holds its own engine instances
    queue_size: int = 8  # synchronous requests allowed to wait for a worker before 429
    max_queued_jobs: int = 100
    job_dir: Path = field(default_factory=default_job_dir)
    job_ttl: float = 24 * 3600.0  # seconds a finished job and its files are kept
    job_max_starts: int = 3  # a job interrupted this many times is marked failed, not retried
    warm_up: bool = True  # load the default chain at start-up so /ready means ready

    def __post_init__(self) -> None:
        if self.api_key is None:
            self.api_key = os.environ.get(API_KEY_ENV) or None
        self.job_dir = Path(self.job_dir)
        for name in ("max_request_bytes", "max_pages", "max_pixels", "workers", "job_max_starts"):
            if getattr(self, name) < 1:
                raise ValueError(f"server setting {name} must be at least 1, got {getattr(self, name)}")
        if self.queue_size < 0 or self.request_timeout <= 0 or self.job_ttl <= 0:
            raise ValueError("server settings queue_size must be >= 0, request_timeout and job_ttl > 0")

    @property
    def capacity(self) -> int:
        """Synchronous requests admitted at once (running plus waiting); one more gets 429."""
        return self.workers + self.queue_size

    @property
    def is_loopback(self) -> bool:
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")
