"""Test doubles for the batch tests: the real Tesseract engine, plus what a test cannot otherwise
see or cause. `CountingTesseract` appends one line per page it is asked to recognise to the file
named by $POLYOCR_TEST_CALLS (one O_APPEND write per line, safe from many processes), so a test
can count engine calls across processes and runs. On pages of an input whose name says so it kills
its own process with SIGKILL, as a segfault in a C library or the OOM killer would:
"crash-always" on page 2 every time, "crash-once" on page 1 the first time only (a marker file
beside the calls file remembers). $POLYOCR_TEST_NO_CRASH=1 turns the crashes off.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from polyocr.engines.base import EngineEntry, register
from polyocr.engines.tesseract import TesseractEngine
from polyocr.types import EngineKind

NAME = "counting-tesseract"


class CountingTesseract(TesseractEngine):
    name = NAME

    def recognize(self, pages, task):
        calls = os.environ.get("POLYOCR_TEST_CALLS")
        for page in pages:
            if calls:
                fd = os.open(calls, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, f"{Path(page.source).name}\t{page.number}\n".encode())
                finally:
                    os.close(fd)
            if os.environ.get("POLYOCR_TEST_NO_CRASH") != "1":
                name = Path(page.source).name
                if "crash-always" in name and page.number == 2:
                    os.kill(os.getpid(), signal.SIGKILL)
                if "crash-once" in name and page.number == 1 and calls:
                    marker = Path(calls + f".crashed-{name}")
                    if not marker.exists():
                        marker.touch()
                        os.kill(os.getpid(), signal.SIGKILL)
        return super().recognize(pages, task)


def register_counting() -> None:
    register(EngineEntry(NAME, "batch_engines:CountingTesseract", EngineKind.CLASSICAL))


def calls(path: Path) -> list[tuple[str, int]]:
    if not path.exists():
        return []
    return [(name, int(n)) for name, n in (line.split("\t") for line in path.read_text().splitlines())]


def without_seconds(value: Any) -> Any:
    """A decoded JSON value with every "seconds" key left out (timings differ between runs)."""
    if isinstance(value, dict):
        return {k: without_seconds(v) for k, v in value.items() if k != "seconds"}
    if isinstance(value, list):
        return [without_seconds(v) for v in value]
    return value
