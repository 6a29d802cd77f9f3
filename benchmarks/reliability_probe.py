"""Issue 16's hostile inputs, run against the CLI, the Python API and the server of one or more trees.

Every case runs in child processes (`python -m polyocr ...`, `polyocr serve`, `python -c ...`) with
PYTHONPATH set to the tree's src/, so the code before and after a change can be measured side by side
in one run. Prints a Markdown table, one column per tree: what the user or client saw.

    PYTHONPATH=src:tests python benchmarks/reliability_probe.py                   # this tree
    git archive <commit> src | tar -x -C /tmp/base
    PYTHONPATH=src:tests python benchmarks/reliability_probe.py --tree before=/tmp/base/src --tree after=src

Needs Tesseract (tesserocr) with eng; the hostile inputs come from tests/hostile.py.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from hostile import (
    animated,
    big_png_with_trailer,
    bomb_pdf,
    pdf_with_oversized_page,
    png_mentioning_pdf,
    truncated_tiff,
)
from test_server_support import free_port, text_png

Case = Callable[[Path, Path], str]
CASES: list[tuple[str, str, Case]] = []


def case(item: str, name: str) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        CASES.append((item, name, fn))
        return fn

    return register


def _env(src: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{src}", "HF_HUB_OFFLINE": "1"}


def _cli(src: Path, *args: str, timeout: float = 300) -> tuple[int, str, str, float]:
    start = time.perf_counter()
    try:
        run = subprocess.run(
            [sys.executable, "-m", "polyocr", *args], capture_output=True, text=True, env=_env(src), timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return -1, "", "(still running at the probe's timeout)", time.perf_counter() - start
    return run.returncode, run.stdout, run.stderr, time.perf_counter() - start


def _last(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    line = lines[-1] if lines else ""
    return ("Traceback: " + line) if "Traceback" in text else line


def _cut(text: str, width: int = 90) -> str:
    text = text.replace("|", "/").replace("\n", " ")
    return text if len(text) <= width else text[: width - 3] + "..."


@contextmanager
def _server(src: Path, work: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    job_dir = work / f"jobs-{port}"
    command = [sys.executable, "-m", "polyocr", "serve", "--port", str(port), "--job-dir", str(job_dir)]
    process = subprocess.Popen(
        [*command, "--engine", "tesseract", "--lang", "eng", *args],
        env=_env(src),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield url, process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(30)


def _write(work: Path, name: str, data: bytes) -> Path:
    path = work / name
    path.write_bytes(data)
    return path


# -- 1-5, 9-11, 13, 14: the CLI and the API ------------------------------------------------------


@case("1", "CLI: 3-page PDF, page 2 over the pixel limit")
def _oversized_cli(src: Path, work: Path) -> str:
    path = _write(work, "three.pdf", pdf_with_oversized_page())
    code, _, err, _ = _cli(src, "ocr", str(path), "--engine", "tesseract", "--lang", "eng")
    summary = next((line for line in err.splitlines() if "input(s)," in line), _last(err))
    return f"exit {code}; {summary.split(', 0 partial')[0]}"


@case("1", "server: the same PDF to /v1/ocr, and as a job")
def _oversized_server(src: Path, work: Path) -> str:
    pdf = pdf_with_oversized_page()
    with _server(src, work) as (url, _):
        answer = httpx.post(f"{url}/v1/ocr", files={"file": ("three.pdf", pdf)}, timeout=120)
        pages = len(answer.json().get("pages", [])) if answer.status_code == 200 else 0
        job = httpx.post(f"{url}/v1/jobs", files={"file": ("three.pdf", pdf)}, timeout=60).json()
        status: dict = {}
        for _ in range(600):
            status = httpx.get(f"{url}/v1/jobs/{job['id']}", timeout=10).json()
            if status["status"] in ("done", "failed"):
                break
            time.sleep(0.1)
    failed = answer.headers.get("x-polyocr-failed-pages")
    return (
        f"{answer.status_code}, {pages} page(s), failed-pages {failed}; job {status.get('status')} "
        f"{status.get('pages_done')}/{status.get('page_count')}, pages_failed {status.get('pages_failed', '-')}"
    )


@case("2", "CLI: animated GIF and WebP, 3 frames each")
def _animated(src: Path, work: Path) -> str:
    out = []
    for fmt in ("GIF", "WEBP"):
        path = _write(work, f"anim.{fmt.lower()}", animated(fmt, 3))
        code, _, err, _ = _cli(src, "ocr", str(path), "--engine", "tesseract", "--lang", "eng")
        pages = next((line.split(", ")[1] for line in err.splitlines() if "input(s)," in line), _last(err))
        out.append(f"{fmt}: exit {code}, {pages}")
    return "; ".join(out)


@case("3", "CLI: folder with a good page and a dangling link gone.png")
def _dangling(src: Path, work: Path) -> str:
    folder = work / "folder"
    folder.mkdir(exist_ok=True)
    _write(folder, "good.png", text_png())
    link = folder / "gone.png"
    if not link.is_symlink():
        link.symlink_to(folder / "deleted.png")
    code, _, err, _ = _cli(src, "ocr", str(folder), "--engine", "tesseract", "--lang", "eng", "--quiet")
    named = "gone.png named" if "gone.png" in err else "gone.png not mentioned"
    return f"exit {code}; {named}"


@case("5", "CLI: --out onto an existing file; a directory in the way of one output")
def _out(src: Path, work: Path) -> str:
    page = _write(work, "page.png", text_png())
    other = _write(work, "other.png", text_png())
    taken = _write(work, "taken", b"a file")
    code, _, err, _ = _cli(src, "ocr", str(page), "--engine", "tesseract", "--lang", "eng", "--out", str(taken))
    out = work / "out"
    (out / "page.txt").mkdir(parents=True, exist_ok=True)
    code2, _, _err2, _ = _cli(
        src, "ocr", str(page), str(other), "--engine", "tesseract", "--lang", "eng", "-o", str(out)
    )
    second = "other.txt written" if (out / "other.txt").exists() else "other.txt NOT written"
    return f"file: exit {code}, {_cut(_last(err), 50)}; in the way: exit {code2}, {second}"


@case("9", "API: Pillow's MAX_IMAGE_PIXELS after `import polyocr`")
def _pillow_global(src: Path, _work: Path) -> str:
    code = (
        "import PIL.Image as I; b = I.MAX_IMAGE_PIXELS; import polyocr.documents.loader; print(b, I.MAX_IMAGE_PIXELS)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(src), timeout=120)
    before, after = run.stdout.split()
    return f"{before} -> {after}"


@case("9", "API: ocr(PIL image 200x100, max_pixels=10000)")
def _pil_limit(src: Path, _work: Path) -> str:
    code = (
        "import polyocr; from PIL import Image; "
        "d = polyocr.ocr(Image.new('RGB', (200, 100), 'white'), 'tesseract', max_pixels=10000); "
        "print('refused' if d.errors else f'read {len(d.pages)} page(s)')"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(src), timeout=120)
    return run.stdout.strip() or _last(run.stderr)


@case("10", "API: ocr(bytes), ocr(BytesIO), languages='eng'")
def _api_bytes(src: Path, work: Path) -> str:
    path = _write(work, "p.png", text_png())
    results = []
    for expr in (f"open({str(path)!r}, 'rb').read()", f"io.BytesIO(open({str(path)!r}, 'rb').read())"):
        code = f"import io, polyocr; d = polyocr.ocr({expr}, 'tesseract', languages='eng'); print(d.ok)"
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(src), timeout=120)
        results.append("ok" if run.stdout.strip() == "True" else _cut(_last(run.stderr), 40))
    return f"bytes: {results[0]}; BytesIO: {results[1]}"


@case("12/13", "CLI: --dpi nan / 0 / -5, --max-pixels -1, --max-pages 0, --lang xxx")
def _options(src: Path, work: Path) -> str:
    page = _write(work, "p.png", text_png())
    out = []
    for args in (["--dpi", "nan"], ["--dpi", "0"], ["--dpi", "-5"], ["--max-pixels", "-1"], ["--max-pages", "0"]):
        code, _, err, _ = _cli(src, "ocr", str(page), "--engine", "tesseract", "--lang", "eng", *args)
        out.append(f"{' '.join(args)}: {code}{' traceback' if 'Traceback' in err else ''}")
    code, _, err, _ = _cli(src, "ocr", str(page), "--engine", "tesseract", "--lang", "xxx")
    out.append(f"--lang xxx: {code}")
    return "; ".join(out)


@case("12/13", "serve: --port 70000; --job-dir pointing at a file")
def _serve_options(src: Path, work: Path) -> str:
    code, _, _err, _seconds = _cli(src, "serve", "--port", "70000", "--job-dir", str(work / "j"), timeout=20)
    taken = _write(work, "jobfile", b"x")
    code2, _, err2, _ = _cli(src, "serve", "--job-dir", str(taken), "--port", str(free_port()), timeout=20)
    tb = " (traceback)" if "Traceback" in err2 else ""
    return f"--port 70000: exit {code}; --job-dir file: exit {code2}{tb}"


@case("13", "loader: truncated TIFF; PNG with '%PDF-' in a text chunk")
def _sniffing(src: Path, work: Path) -> str:
    tiff = _write(work, "cut.tif", truncated_tiff())
    png = _write(work, "pdfish.png", png_mentioning_pdf())
    _, _, err, _ = _cli(src, "ocr", str(tiff), "--engine", "tesseract", "--lang", "eng", "--quiet")
    code, _, _err2, _ = _cli(src, "ocr", str(png), "--engine", "tesseract", "--lang", "eng", "--quiet")
    reason = err.split(": ", 2)[-1].strip()
    return f"TIFF: {_cut(reason, 45)}; PNG: exit {code}"


@case("14", "CLI: -f json to stdout for [good], [bad], [good, bad]")
def _json_shape(src: Path, work: Path) -> str:
    good = _write(work, "good.png", text_png())
    bad = _write(work, "bad.png", b"not an image")
    shapes = []
    for inputs in ([good], [bad], [good, bad]):
        _, out, _, _ = _cli(src, "ocr", *map(str, inputs), "--engine", "tesseract", "--lang", "eng", "-f", "json", "-q")
        try:
            value = json.loads(out)
            shapes.append("list" if isinstance(value, list) else "object")
        except json.JSONDecodeError:
            shapes.append("nothing" if not out.strip() else "not JSON")
    return ", ".join(shapes)


# -- 6, 7, 8, 12, 15: the server -------------------------------------------------------------------


@case("6", "server: 20-page bomb PDF (20000x20000 image on every page), default caps")
def _bomb(src: Path, work: Path) -> str:
    with _server(src, work, "--timeout", "10") as (url, _):
        start = time.perf_counter()
        answer = httpx.post(f"{url}/v1/ocr", files={"file": ("bomb.pdf", bomb_pdf(20))}, timeout=120)
        seconds = time.perf_counter() - start
    return f"{answer.status_code} in {seconds:.1f} s"


@case("6", "server: the bomb with --max-pixels 1e10 --timeout 2, 1 worker: 504, then a PNG")
def _bomb_timeout(src: Path, work: Path) -> str:
    with _server(src, work, "--max-pixels", str(10**10), "--timeout", "2", "--queue", "4") as (url, _):
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            start = time.perf_counter()
            future = pool.submit(httpx.post, f"{url}/v1/ocr", files={"file": ("bomb.pdf", bomb_pdf(20))}, timeout=300)
            time.sleep(0.5)
            ready = httpx.get(f"{url}/ready", timeout=10).status_code
            answer = future.result()
            first = time.perf_counter() - start
        start = time.perf_counter()
        png = httpx.post(f"{url}/v1/ocr", files={"file": ("p.png", text_png())}, timeout=300)
        after = time.perf_counter() - start
    return (
        f"bomb {answer.status_code} at {first:.1f} s (/ready during it: {ready}); "
        f"next PNG {png.status_code} after {after:.1f} s"
    )


@case("6", "server: SIGTERM with a bomb job running and a timed-out bomb request")
def _sigterm(src: Path, work: Path) -> str:
    args = ("--max-pixels", str(10**10), "--timeout", "1", "--workers", "2")
    with _server(src, work, *args) as (url, process):
        bomb = bomb_pdf(30)
        job = httpx.post(f"{url}/v1/jobs", files={"file": ("bomb.pdf", bomb)}, timeout=60).json()
        httpx.post(f"{url}/v1/ocr", files={"file": ("bomb.pdf", bomb)}, timeout=300)
        time.sleep(0.5)
        start = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(120)
            seconds = f"exited in {time.perf_counter() - start:.1f} s"
        except subprocess.TimeoutExpired:
            seconds = "still running after 120 s"
        job_dir = next(work.glob(f"jobs-{url.rsplit(':', 1)[1]}"))
    code = (
        "import sys; from polyocr.server.jobs import JobStore; s = JobStore(sys.argv[1], ttl=9e9, max_starts=3); "
        "j = s.get(sys.argv[2]); print(j.status.value, j.starts)"
    )
    run = subprocess.run(
        [sys.executable, "-c", code, str(job_dir), job["id"]], capture_output=True, text=True, env=_env(src)
    )
    return f"{seconds}; job then: {run.stdout.strip() or _cut(_last(run.stderr), 40)}"


def _rss_kib(pid: int, field: str = "VmHWM") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


@case("7", "server: 16 concurrent 45 MiB uploads (--queue 16): peak RSS growth")
def _uploads(src: Path, work: Path) -> str:
    payload = _write(work, "big.png", big_png_with_trailer(45))
    with _server(src, work, "--queue", "16", "--workers", "1") as (url, process):
        before = _rss_kib(process.pid)

        def send(_: int) -> int:
            with payload.open("rb") as fh:
                return httpx.post(f"{url}/v1/ocr", files={"file": ("big.png", fh)}, timeout=600).status_code

        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            codes = list(pool.map(send, range(16)))
        peak = _rss_kib(process.pid)
    return f"+{(peak - before) / 1024:.0f} MiB peak RSS; answers {sorted(set(codes))}"


@case("7", "server: full (1 worker, no queue): a 40 MiB request announced, no body sent")
def _full(src: Path, work: Path) -> str:
    import socket

    server = _server(src, work, "--queue", "0", "--max-pixels", str(10**10), "--timeout", "30")
    with server as (url, _), concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(httpx.post, f"{url}/v1/ocr", files={"file": ("b.pdf", bomb_pdf(4))}, timeout=300)
        time.sleep(1.0)
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"POST /v1/ocr HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                b"Content-Length: 41943040\r\n\r\n"
            )
            start = time.perf_counter()
            try:
                head = sock.recv(200).decode().splitlines()[0]
            except TimeoutError:
                head = "no answer within 10 s (waiting for the body)"
            seconds = time.perf_counter() - start
    return f"{head} after {seconds:.2f} s"


@case("8", "server: jobs of 15 kB with --max-job-mb 0.06: submissions accepted before 507")
def _storage(src: Path, work: Path) -> str:
    from test_server_support import text_pdf

    pdf = text_pdf(1)
    with _server(src, work, "--max-job-mb", "0.06") as (url, _):
        accepted, last = 0, 0
        for _ in range(40):
            answer = httpx.post(f"{url}/v1/jobs", files={"file": ("one.pdf", pdf)}, timeout=60)
            last = answer.status_code
            if last != 202:
                break
            accepted += 1
            for _ in range(300):
                if httpx.get(f"{url}/v1/jobs/{answer.json()['id']}", timeout=10).json()["status"] == "done":
                    break
                time.sleep(0.05)
        health = httpx.get(f"{url}/health", timeout=10).json().get("job_storage")
    return f"{accepted} accepted, then {last}; /health job_storage: {health}"


@case("12", "server: non-UTF-8 chat body; bad grounding box; a job whose result file is gone")
def _errors(src: Path, work: Path) -> str:
    from polyocr.engines.dots.prompts import PROMPTS, PromptMode

    image = "data:image/png;base64," + base64.b64encode(text_png()).decode()
    text = PROMPTS[PromptMode.GROUNDING_OCR].strip() + " [1.2.3, 4, 5, 6]"
    chat = {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": image}}]}]}
    chat["messages"][0]["content"].append({"type": "text", "text": text})
    with _server(src, work) as (url, _):
        job_dir = next(work.glob(f"jobs-{url.rsplit(':', 1)[1]}"))
        answers = []
        try:
            answers.append(
                httpx.post(
                    f"{url}/v1/chat/completions", content=b'{"x": "\xff"}', headers={"content-type": "application/json"}
                )
            )
        except httpx.TransportError as exc:
            answers.append(type(exc).__name__)
        answers.append(httpx.post(f"{url}/v1/chat/completions", json=chat, timeout=60))
        job = httpx.post(f"{url}/v1/jobs", files={"file": ("p.png", text_png())}, timeout=60).json()
        for _ in range(300):
            if httpx.get(f"{url}/v1/jobs/{job['id']}", timeout=10).json()["status"] == "done":
                break
            time.sleep(0.05)
        (job_dir / "results" / f"{job['id']}.json").unlink()
        answers.append(httpx.get(f"{url}/v1/jobs/{job['id']}/result", timeout=10))
    shown = []
    for answer in answers:
        if isinstance(answer, str):
            shown.append(answer)
            continue
        leak = " LEAKS PATH" if str(job_dir) in answer.text or tempfile.gettempdir() + "/" in answer.text else ""
        shown.append(f"{answer.status_code}{leak}")
    return ", ".join(shown)


@case("15", "serve --host 0.0.0.0 without a key")
def _exposure(src: Path, work: Path) -> str:
    code, _, err, _seconds = _cli(
        src, "serve", "--host", "0.0.0.0", "--port", str(free_port()), "--job-dir", str(work / "x"), timeout=15
    )
    return "listened (killed after 15 s)" if code == -1 else f"exit {code}: {_cut(_last(err), 60)}"


@case("15", "is '127.evil.example' loopback?")
def _evil(src: Path, _work: Path) -> str:
    code = "from polyocr.config import ServerSettings as S; print(S(host='127.evil.example').is_loopback)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(src), timeout=60)
    return run.stdout.strip() or _last(run.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", default=[], help="name=path/to/src (repeatable; default: src)")
    parser.add_argument("--only", default="", help="run only cases whose item is in this comma list (1,6,...)")
    args = parser.parse_args()
    trees = [tuple(t.split("=", 1)) for t in args.tree] or [("this tree", "src")]
    only = {x.strip() for x in args.only.split(",") if x.strip()}
    rows = []
    for item, name, fn in CASES:
        if only and item not in only:
            continue
        cells = []
        for tree_name, src in trees:
            with tempfile.TemporaryDirectory(prefix="polyocr-probe-") as work:
                try:
                    cells.append(_cut(fn(Path(src).resolve(), Path(work)), 160))
                except Exception as exc:  # a probe that breaks says so in its cell
                    cells.append(f"probe error: {type(exc).__name__}: {_cut(str(exc), 60)}")
            print(f"[{item}] {name} / {tree_name}: {cells[-1]}", file=sys.stderr, flush=True)
        rows.append((item, name, cells))
    print(f"reliability probe, {datetime.date.today()}, {platform.node()}, Python {platform.python_version()}\n")
    print("| item | case | " + " | ".join(name for name, _ in trees) + " |")
    print("|---|---|" + "---|" * len(trees))
    for item, name, cells in rows:
        print(f"| {item} | {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
