"""Throughput of `polyocr serve` (POST /v1/ocr, Tesseract behind it) for 1, 2 and 8 concurrent clients.

Starts a real server as a child process on a loopback port, then for each page and each client
count sends the same number of requests from that many threads (one httpx client each) and times
the whole batch. The same page recognised in-process, one at a time, gives the engine's own speed,
so the table shows what the HTTP layer costs and what the worker threads gain.

    .venv/bin/python benchmarks/bench_server.py --out benchmarks/server-throughput.md

The CPU that other processes use during every measurement is recorded (psutil): other work on a
shared machine slows the figures, and the report says so.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
EVAL = REPO.parent / "shared" / "data" / "eval"
CLIENTS = (1, 2, 8)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _default_pages() -> list[Path]:
    pages = [EVAL / "tesseract_test" / "phototest.tif"]
    books = sorted((EVAL / "old_books_eng").glob("*.png")) + sorted((EVAL / "old_books_eng").glob("*.jp*g"))
    return [p for p in pages + books[:1] if p.is_file()]


def _direct_seconds(page: Path, repeats: int) -> float:
    """Median seconds per page with the engine in this process, no HTTP."""
    from polyocr.documents import open_source
    from polyocr.router import Router
    from polyocr.types import Task

    with Router(["tesseract"], Task(languages=("eng",))) as router:
        router.run_source(open_source(page))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            router.run_source(open_source(page))
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _cpu_seconds_of_others(mine: set[int]) -> dict[int, float]:
    """CPU seconds used so far by every process but this benchmark and its server."""
    import psutil

    seconds = {}
    for proc in psutil.process_iter(["pid", "cpu_times"]):
        times = proc.info["cpu_times"]
        if proc.info["pid"] not in mine and times is not None:
            seconds[proc.info["pid"]] = times.user + times.system
    return seconds


def _batch(
    url: str, data: bytes, name: str, clients: int, requests: int, latencies: list[float], statuses: list[int]
) -> float:
    """Send `requests` uploads from `clients` threads; the batch's wall time. Fills the two lists."""
    lock = threading.Lock()
    remaining = [requests]

    def client() -> None:
        with httpx.Client(base_url=url, timeout=600) as http:
            while True:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                start = time.perf_counter()
                response = http.post("/v1/ocr", files={"file": (name, data)}, data={"language": "eng"})
                with lock:
                    latencies.append(time.perf_counter() - start)
                    statuses.append(response.status_code)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start


def _summary(wall: float, latencies: list[float], statuses: list[int]) -> dict[str, float]:
    ok = statuses.count(200)
    latencies = sorted(latencies)
    return {
        "wall": wall,
        "ok": ok,
        "errors": len(statuses) - ok,
        "rate": ok / wall,
        "p50": statistics.median(latencies),
        "p95": latencies[max(0, round(0.95 * len(latencies)) - 1)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=24, help="requests per (page, client count)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="server --workers")
    parser.add_argument("--page", type=Path, action="append", help="page files (default: two eval pages)")
    args = parser.parse_args()
    pages = args.page or _default_pages()
    if not pages:
        sys.exit(f"no pages: give --page, or put the evaluation set at {EVAL}")

    args.load_before = os.getloadavg()[0]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ)
    with tempfile.TemporaryDirectory() as jobs:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "polyocr",
                "serve",
                "--port",
                str(port),
                "--engine",
                "tesseract",
                "--lang",
                "eng",
                "--workers",
                str(args.workers),
                "--queue",
                "32",
                "--job-dir",
                jobs,
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                time.sleep(0.2)
            else:
                sys.exit("server did not become ready within 120 s")
            rows = []
            mine = {os.getpid(), server.pid}
            for page in pages:
                data = page.read_bytes()
                direct = _direct_seconds(page, 3)
                _batch(url, data, page.name, args.workers, args.workers * 2, [], [])  # every worker loads
                # Two rounds, the second in reverse order, so a change in the machine's other load
                # during the run does not fall on one client count only.
                measured = {clients: ([], [], [0.0], [0.0]) for clients in CLIENTS}
                for order in (CLIENTS, CLIENTS[::-1]):
                    for clients in order:
                        latencies, statuses, wall, others = measured[clients]
                        before = _cpu_seconds_of_others(mine)
                        wall[0] += _batch(url, data, page.name, clients, args.requests // 2, latencies, statuses)
                        after = _cpu_seconds_of_others(mine)
                        others[0] += sum(t - before.get(pid, 0.0) for pid, t in after.items())
                for clients in CLIENTS:
                    latencies, statuses, wall, others = measured[clients]
                    result = _summary(wall[0], latencies, statuses)
                    rows.append((page, direct, clients, others[0] / wall[0], result))
                    print(
                        f"{page.name} clients={clients} {result['rate']:.2f} pages/s "
                        f"others={others[0] / wall[0]:.2f} cores",
                        flush=True,
                    )
        finally:
            server.terminate()
            server.wait(30)
    _write(args, rows)


def _write(args: argparse.Namespace, rows: list) -> None:
    from PIL import Image

    others = [row[3] for row in rows]
    busy = max(others) > 0.25
    lines = [
        "# `polyocr serve` throughput: POST /v1/ocr with Tesseract behind it",
        "",
        f"Measured {datetime.date.today().isoformat()} on {platform.node() or 'this machine'}: "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}.",
        "",
        "```sh",
        ".venv/bin/python benchmarks/bench_server.py --out benchmarks/server-throughput.md"
        + (f" --requests {args.requests}" if args.requests != 24 else "")
        + (f" --workers {args.workers}" if args.workers != (os.cpu_count() or 1) else ""),
        "```",
        "",
        f"Server: `polyocr serve --engine tesseract --lang eng --workers {args.workers} --queue 32` in a child "
        "process on a loopback port (each Tesseract call uses one thread). Each row sends "
        f"{args.requests} requests of the same page, spread over that many client threads, each with its own "
        "httpx client; a request is one multipart upload answered with the DocumentResult JSON. *Direct* is "
        "the median seconds per page with the same engine in-process, one page at a time, no HTTP. "
        "Each row is two half-batches, run in the order 1, 2, 8 clients and then 8, 2, 1, so that a change "
        "in other load falls on every row alike. *Other work* is the CPU that every other process on the "
        "machine used during the row (psutil), in cores: on a 2-core machine 1.0 means half of it was busy "
        "with something else.",
        "",
        "| page | size | direct s/page | clients | pages/s | p50 latency s | p95 latency s | errors "
        "| other work, cores |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for page, direct, clients, other, result in rows:
        with Image.open(page) as image:
            size = f"{image.width}x{image.height}"
        lines.append(
            f"| {page.parent.name}/{page.name} | {size} | {direct:.3f} | {clients} | {result['rate']:.2f} | "
            f"{result['p50']:.3f} | {result['p95']:.3f} | {result['errors']} | {other:.2f} |"
        )
    lines += ["", "Notes:", "", f"- 1-minute load average just before the benchmark: {args.load_before:.2f}."]
    if busy:
        lines.append(
            f"- Other work was running on this machine during the measurement (up to {max(others):.2f} "
            f"of its {os.cpu_count()} cores: other people's tests and benchmarks), so rows with much "
            "other work are lower bounds; rerun on an idle machine for clean numbers."
        )
    else:
        lines.append(f"- The machine was otherwise quiet (other processes used at most {max(others):.2f} cores).")
    lines.append(
        f"- With {args.workers} worker(s) at most {args.workers} page(s) are recognised at once. Clients "
        "beyond that wait in the server's queue: latency grows with them, while throughput gains only "
        "what overlapping the next upload's transfer and decoding with recognition saves."
    )
    lines.append(
        "- The gap between *direct* and one client is the HTTP layer: upload, decoding the page from "
        "the request, and the JSON answer."
    )
    args.out.write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
