"""Shared pieces of the server tests: pages with known text, and real servers on loopback ports.

A server runs either in a thread of the test process (uvicorn.Server on a pre-bound loopback
socket; fast) or as a `polyocr serve` subprocess when a test must kill it like a crash would.
Every wait is bounded.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from PIL import Image, ImageDraw, ImageFont

from polyocr.config import ServerSettings
from polyocr.server.app import create_app

REPO = Path(__file__).resolve().parents[1]
LINES = ("The quick brown fox", "jumps over the lazy dog", "Invoice 4217 total 93")


def text_image(lines: tuple[str, ...] = LINES, size: tuple[int, int] = (640, 200), font_size: int = 30) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=font_size)
    for row, line in enumerate(lines):
        draw.text((20, 20 + row * int(font_size * 1.6)), line, fill="black", font=font)
    return image


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def text_png(lines: tuple[str, ...] = LINES, size: tuple[int, int] = (640, 200)) -> bytes:
    return encode(text_image(lines, size))


def text_pdf(pages: int, lines: tuple[str, ...] = LINES, size: tuple[int, int] = (640, 200)) -> bytes:
    """A PDF of `pages` image pages, each page numbered in its first line."""
    images = [text_image((f"Page {n}", *lines), (size[0], size[1] + 50)) for n in range(1, pages + 1)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="PDF", save_all=True, append_images=images[1:], resolution=72)
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05, what: str = "condition"):
    """Poll until predicate() returns a truthy value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def wait_ready(url: str, timeout: float = 30.0, process: subprocess.Popen | None = None) -> None:
    def ready() -> bool:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"server exited early with code {process.returncode}")
        try:
            return httpx.get(f"{url}/ready", timeout=2.0).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(ready, timeout, 0.1, f"{url}/ready")


@contextmanager
def running_server(settings: ServerSettings, *, ready: bool = True, port: int = 0) -> Iterator[str]:
    """A real server in a thread of this process on a free loopback port; yields its base URL.

    With ready=False only the start of the server is awaited, not its /ready.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: server.started, 20, what="uvicorn start")
        if ready:
            wait_ready(url)
        yield url
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()


def spawn_server(port: int, job_dir: Path, *args: str) -> subprocess.Popen:
    """`polyocr serve` in a child process, as a user would run it (killable like a crash)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [
        sys.executable,
        "-m",
        "polyocr",
        "serve",
        "--port",
        str(port),
        "--job-dir",
        str(job_dir),
        "--engine",
        "tesseract",
        *args,
    ]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
    process.wait(20)
    if process.stderr is not None:
        process.stderr.close()
