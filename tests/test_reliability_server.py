"""Issue 16, the server: nothing lost, nothing stuck, no traceback or server path in any answer.

Real servers on loopback (in a thread, or `polyocr serve` as a subprocess where a signal must reach
it), real Tesseract, real SQLite. One test or family per class of failure; each failed before the fix.
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import tracemalloc
from pathlib import Path

import httpx
import pytest

from hostile import big_png_with_trailer, bomb_pdf, pdf_with_oversized_page
from polyocr.config import ServerSettings, is_loopback_host
from polyocr.engines.dots.prompts import PROMPTS, PromptMode
from polyocr.errors import JobStoreError
from polyocr.results import DocumentResult, PageStatus
from polyocr.server.jobs import JobStatus, JobStore
from test_server_support import REPO, free_port, running_server, text_pdf, text_png, wait_ready, wait_until

pytest.importorskip("tesserocr")


def _settings(tmp: Path, **changes) -> ServerSettings:
    return ServerSettings(engine="tesseract", languages=("eng",), job_dir=tmp, **changes)


def _job(url: str, job_id: str) -> dict:
    return httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    job_dir = tmp_path_factory.mktemp("jobs")
    with running_server(_settings(job_dir, workers=2)) as url:
        yield url, job_dir


# 1. One bad page fails that page only, in the answer's header and in the job's counts.


def test_a_bad_page_is_counted_by_the_server_and_the_job(server) -> None:
    url, _ = server
    pdf = pdf_with_oversized_page(pages=3, big=2)
    answer = httpx.post(f"{url}/v1/ocr", files={"file": ("three.pdf", pdf)}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-polyocr-failed-pages"] == "1" and answer.headers["x-polyocr-pages"] == "3"
    doc = DocumentResult.model_validate_json(answer.content)
    assert [p.status for p in doc.pages] == [PageStatus.OK, PageStatus.FAILED, PageStatus.OK]
    job = httpx.post(f"{url}/v1/jobs", files={"file": ("three.pdf", pdf)}, timeout=30).json()
    done = wait_until(lambda: (s := _job(url, job["id"]))["status"] == "done" and s, 60, 0.1, "the job")
    assert done["pages_done"] == 3 and done["page_count"] == 3 and done["pages_failed"] == 1
    httpx.delete(f"{url}/v1/jobs/{job['id']}", timeout=10)


# 4. A damaged job store refuses to start, naming the file and the recovery; jobs are never forgotten.


def _store_with_jobs(directory: Path) -> None:
    store = JobStore(directory, ttl=3600, max_starts=3)
    for n in range(20):
        store.create(text_png(), f"page{n}.png", {"chain": ["tesseract"]}, 1)
    store.close()


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda db: os.truncate(db, db.stat().st_size // 2), "truncated"),
        (lambda db: os.truncate(db, 0), "empty (0 bytes)"),
        (lambda db: db.write_bytes(b"this is not a database at all " * 100), "not a SQLite database"),
        (lambda db: db.write_bytes(db.read_bytes()[:100] + b"\xff" * (db.stat().st_size - 100)), "damaged"),
    ],
    ids=["truncated", "emptied", "not-a-database", "malformed"],
)
def test_a_damaged_job_store_is_refused_not_forgotten(tmp_path: Path, damage, needle: str) -> None:
    _store_with_jobs(tmp_path)
    db = tmp_path / "jobs.sqlite3"
    damage(db)
    with pytest.raises(JobStoreError) as info:
        JobStore(tmp_path, ttl=3600, max_starts=3)
    message = str(info.value)
    assert needle in message and str(db) in message and ".damaged" in message
    assert len(list((tmp_path / "uploads").iterdir())) == 20  # the jobs' files are untouched
    try:
        run = subprocess.run(
            [sys.executable, "-m", "polyocr", "serve", "--job-dir", str(tmp_path), "--port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the server started on the damaged store")
    assert run.returncode == 2 and needle in run.stderr and "Traceback" not in run.stderr


# 6. A time limit stops the work; a bomb page is refused before it is rasterised; /ready tells.


def test_a_bomb_pdf_is_refused_page_by_page_before_rasterising(server) -> None:
    url, _ = server
    answer = httpx.post(f"{url}/v1/ocr", files={"file": ("bomb.pdf", bomb_pdf(20))}, timeout=60)
    assert answer.status_code == 413, answer.text
    message = answer.json()["error"]["message"]
    assert "20000x20000" in message and "19 more page(s)" in message


def test_the_request_time_limit_stops_the_work_and_ready_reports_saturation(tmp_path: Path, caplog) -> None:
    # max_pixels raised so that the bomb passes every cap: each page is a slow render
    settings = _settings(tmp_path, workers=1, queue_size=0, request_timeout=1.0, max_pixels=10**10)
    answers: list[httpx.Response] = []
    with caplog.at_level(logging.WARNING, logger="polyocr.server"), running_server(settings) as url:
        request = threading.Thread(
            target=lambda: answers.append(
                httpx.post(f"{url}/v1/ocr", files={"file": ("bomb.pdf", bomb_pdf(20))}, timeout=120)
            )
        )
        request.start()
        busy = wait_until(lambda: (r := httpx.get(f"{url}/ready", timeout=5)).json()["requests"] == 1 and r, 20)
        assert busy.status_code == 503 and "saturated" in busy.json()["reason"]
        request.join(120)
        assert answers[0].status_code == 504 and "was stopped" in answers[0].json()["error"]["message"]
        wait_until(lambda: httpx.get(f"{url}/ready", timeout=5).status_code == 200, 30, 0.1, "a free worker")
        served = httpx.post(f"{url}/v1/ocr", files={"file": ("p.png", text_png())}, timeout=60)
        assert served.status_code == 200
    stopped = [r.getMessage() for r in caplog.records if "stopped after" in r.getMessage()]
    assert stopped and "of 20 page(s): deadline" in stopped[0]
    assert int(stopped[0].split("stopped after ")[1].split(" ")[0]) < 20


def test_a_job_time_limit_fails_the_job_with_how_far_it_got(tmp_path: Path) -> None:
    settings = _settings(tmp_path, max_pixels=10**10, job_timeout=1.0, warm_up=False)
    with running_server(settings) as url:
        job = httpx.post(f"{url}/v1/jobs", files={"file": ("bomb.pdf", bomb_pdf(20))}, timeout=30).json()
        failed = wait_until(lambda: (s := _job(url, job["id"]))["status"] == "failed" and s, 60, 0.1, "the job")
    assert "of 20 page(s): the job's time limit of 1 s passed" in failed["error"]


def test_sigterm_stops_within_the_grace_and_requeues_the_job(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "polyocr", "serve", "--port", str(port), "--job-dir", str(tmp_path)]
    command += ["--engine", "tesseract", "--max-pixels", str(10**10), "--timeout", "1", "--workers", "2"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    try:
        wait_ready(url, 60, process)
        bomb = bomb_pdf(30)  # about 50 s of rendering on the dev machine, if nothing stopped it
        job = httpx.post(f"{url}/v1/jobs", files={"file": ("bomb.pdf", bomb)}, timeout=30).json()
        timed_out = httpx.post(f"{url}/v1/ocr", files={"file": ("bomb.pdf", bomb)}, timeout=60)
        assert timed_out.status_code == 504
        wait_until(lambda: _job(url, job["id"])["status"] == "running", 30, 0.05, "the job to start")
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=15)  # a bounded wait: the work left would take far longer
        stderr = process.stderr.read().decode() if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(20)
    assert "Traceback" not in stderr, stderr
    store = JobStore(tmp_path, ttl=3600, max_starts=3)
    try:
        requeued = store.get(job["id"])
        assert requeued is not None and requeued.status == JobStatus.QUEUED and requeued.starts == 0
        assert store.upload_path(job["id"]).is_file()  # kept for the next start
    finally:
        store.close()


# 7. Uploads go to disk under the cap, and a full server refuses before reading the body.


def test_a_full_server_refuses_before_reading_the_body(tmp_path: Path) -> None:
    settings = _settings(tmp_path, workers=1, queue_size=0, max_pixels=10**10, request_timeout=30)
    with running_server(settings) as url:
        hold = threading.Thread(
            target=lambda: httpx.post(f"{url}/v1/ocr", files={"file": ("bomb.pdf", bomb_pdf(4))}, timeout=120)
        )
        hold.start()
        wait_until(lambda: httpx.get(f"{url}/ready", timeout=5).json()["requests"] == 1, 20, 0.02, "the first")
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            # headers announcing 40 MiB, and no body at all: only an answer without reading can come back
            sock.sendall(
                b"POST /v1/ocr HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                b"Content-Length: 41943040\r\n\r\n"
            )
            head = sock.recv(4096).decode()
        assert head.startswith("HTTP/1.1 429"), head
        hold.join(120)


def test_uploads_are_streamed_to_disk_not_held_in_memory(tmp_path: Path) -> None:
    payload = tmp_path / "big.png"
    payload.write_bytes(big_png_with_trailer(24))  # a valid page and 24 MiB after its end
    with running_server(_settings(tmp_path / "jobs")) as url:
        tracemalloc.start()
        try:
            with payload.open("rb") as fh:  # httpx streams a file object in chunks
                answer = httpx.post(f"{url}/v1/ocr", files={"file": ("big.png", fh)}, timeout=60)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert answer.status_code == 200, answer.text
        assert peak < 8 * 2**20, f"peak {peak / 2**20:.1f} MiB traced for a 24 MiB upload"
        assert list((tmp_path / "jobs" / "incoming").glob("*")) == []  # the received body is gone


# 8. Job storage is capped and reported; uploads go as soon as a job finishes.


def test_job_storage_is_capped_reported_and_freed(tmp_path: Path) -> None:
    pdf = text_pdf(1)  # 15 kB; its result about 3 kB
    with running_server(_settings(tmp_path, max_job_bytes=60_000, warm_up=False)) as url:
        too_big = httpx.post(f"{url}/v1/jobs", files={"file": ("big.png", big_png_with_trailer(1))}, timeout=30)
        assert too_big.status_code == 507 and "job storage is full" in too_big.json()["error"]["message"]
        ids: list[str] = []
        for _ in range(40):  # finished, unfetched jobs fill it up with their results
            answer = httpx.post(f"{url}/v1/jobs", files={"file": ("one.pdf", pdf)}, timeout=30)
            if answer.status_code == 507:
                break
            assert answer.status_code == 202, answer.text
            ids.append(answer.json()["id"])
            wait_until(lambda: _job(url, ids[-1])["status"] == "done", 60, 0.05, "the job")
            assert not (tmp_path / "uploads" / ids[-1]).exists()  # deleted as soon as it finished
        assert answer.status_code == 507 and 5 < len(ids) < 40
        health = httpx.get(f"{url}/health", timeout=10).json()["job_storage"]
        assert health["limit_bytes"] == 60_000 and health["bytes"] > 40_000
        for job_id in ids:
            assert httpx.delete(f"{url}/v1/jobs/{job_id}", timeout=10).json()["deleted"]
        assert httpx.get(f"{url}/health", timeout=10).json()["job_storage"]["bytes"] == 0
        assert httpx.post(f"{url}/v1/jobs", files={"file": ("one.pdf", pdf)}, timeout=30).status_code == 202


# 12. No response contains a server path or a stack trace; each of these is a 4xx.


def _chat_body(text: str) -> dict:
    image = "data:image/png;base64," + base64.b64encode(text_png()).decode()
    content = [{"type": "image_url", "image_url": {"url": image}}, {"type": "text", "text": text}]
    return {"model": "tesseract", "messages": [{"role": "user", "content": content}]}


def _missing_result(url: str, job_dir: Path) -> httpx.Response:
    job = httpx.post(f"{url}/v1/jobs", files={"file": ("one.png", text_png())}, timeout=30).json()
    wait_until(lambda: _job(url, job["id"])["status"] == "done", 60, 0.05, "the job")
    (job_dir / "results" / f"{job['id']}.json").unlink()
    return httpx.get(f"{url}/v1/jobs/{job['id']}/result", timeout=10)


GROUNDING = PROMPTS[PromptMode.GROUNDING_OCR].strip()
ERROR_CASES = {
    "chat-not-utf8": lambda url, _: httpx.post(
        f"{url}/v1/chat/completions", content=b'{"x": "\xff\xfe"}', headers={"content-type": "application/json"}
    ),
    "chat-bad-box": lambda url, _: httpx.post(
        f"{url}/v1/chat/completions", json=_chat_body(GROUNDING + " [1.2.3, 4, 5, 6]"), timeout=30
    ),
    "job-result-missing": _missing_result,
    "truncated-upload": lambda url, _: httpx.post(
        f"{url}/v1/ocr", files={"file": ("cut.png", text_png()[:300])}, timeout=30
    ),
    "no-such-job": lambda url, _: httpx.get(f"{url}/v1/jobs/../../etc/passwd", timeout=10),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_are_4xx_without_paths_or_tracebacks(server, case: str) -> None:
    url, job_dir = server
    answer = ERROR_CASES[case](url, job_dir)
    assert 400 <= answer.status_code < 500, answer.text
    body = answer.text
    for private in (str(job_dir), tempfile.gettempdir() + "/", sys.prefix, str(REPO), "Traceback", 'File "'):
        assert private not in body, f"{private!r} in {body}"


def test_serve_with_a_job_dir_that_is_a_file_says_so(tmp_path: Path) -> None:
    taken = tmp_path / "jobs"
    taken.write_text("a file")
    run = subprocess.run(
        [sys.executable, "-m", "polyocr", "serve", "--job-dir", str(taken), "--port", str(free_port())],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert run.returncode == 2 and "cannot be used" in run.stderr and "Traceback" not in run.stderr


# 15. Beyond loopback needs a key or --insecure-no-auth; loopback by address; the key from a file.


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("127.evil.example", False),
        ("::", False),
    ],
)
def test_loopback_is_judged_by_address(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_binding_beyond_loopback_needs_a_key_or_insecure_no_auth(tmp_path: Path) -> None:
    port = free_port()
    base = [sys.executable, "-m", "polyocr", "serve", "--port", str(port), "--job-dir", str(tmp_path)]
    try:
        refused = subprocess.run([*base, "--host", "0.0.0.0"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("serve --host 0.0.0.0 without a key listened")
    assert refused.returncode == 2 and "--insecure-no-auth" in refused.stderr
    key_file = tmp_path / "key"
    key_file.write_text("from-a-file\n")
    process = subprocess.Popen(
        [*base, "--engine", "tesseract", "--api-key-file", str(key_file)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_ready(url, 60, process)
        assert httpx.get(f"{url}/v1/models", timeout=10).status_code == 401
        assert httpx.get(f"{url}/v1/models", headers={"Authorization": "Bearer from-a-file"}).status_code == 200
    finally:
        process.kill()
        process.wait(20)
    os.environ.pop("POLYOCR_API_KEY_FILE", None)
    env = {**os.environ, "POLYOCR_API_KEY_FILE": str(tmp_path / "missing")}
    try:
        missing = subprocess.run(base, capture_output=True, text=True, timeout=30, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("a missing key file was ignored")
    assert missing.returncode == 2 and "cannot read the API key file" in missing.stderr


def test_insecure_no_auth_lets_it_listen_beyond_loopback(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "polyocr",
            "serve",
            "--port",
            str(port),
            "--job-dir",
            str(tmp_path),
            "--host",
            "0.0.0.0",
            "--insecure-no-auth",
            "--engine",
            "tesseract",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", 60, process)
    finally:
        process.kill()
        process.wait(20)
