"""Jobs outlive the server: a crash mid-job, a clean stop mid-job, and the store's own rules."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from polyocr.config import ServerSettings
from polyocr.results import DocumentResult
from polyocr.server.jobs import JobStatus, JobStore
from test_server_support import free_port, running_server, spawn_server, stop, text_pdf, wait_ready, wait_until

pytest.importorskip("tesserocr")


def _job(url: str, job_id: str) -> dict:
    return httpx.get(f"{url}/v1/jobs/{job_id}", timeout=10).json()


def test_a_job_survives_a_server_crash(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    first = spawn_server(port, tmp_path)
    try:
        wait_ready(url, 60, first)
        job = httpx.post(
            f"{url}/v1/jobs", files={"file": ("book.pdf", text_pdf(5))}, data={"language": "eng"}, timeout=30
        ).json()
        wait_until(lambda: _job(url, job["id"])["pages_done"] >= 1, 60, 0.02, "the first page")
        assert _job(url, job["id"])["status"] == "running"
        conflict = httpx.get(f"{url}/v1/jobs/{job['id']}/result", timeout=10)
        assert conflict.status_code == 409 and "running" in conflict.json()["error"]["message"]
    finally:
        stop(first)  # SIGKILL: no chance to clean up, as in a crash
    assert (tmp_path / "uploads" / job["id"]).is_file()

    second = spawn_server(port, tmp_path)
    try:
        wait_ready(url, 60, second)
        done = wait_until(lambda: (s := _job(url, job["id"]))["status"] == "done" and s, 60, 0.1, "the job")
        assert done["starts"] == 2 and done["pages_done"] == 5
        doc = DocumentResult.model_validate_json(httpx.get(f"{url}{job['result_url']}", timeout=10).content)
        assert [p.page for p in doc.pages] == list(range(1, 6))
        assert all(f"Page {p.page}" in p.text for p in doc.pages)
        assert not (tmp_path / "uploads" / job["id"]).exists()  # fetched: the upload is no longer kept
    finally:
        stop(second)


def test_a_clean_stop_hands_the_job_back_without_counting_it(tmp_path: Path) -> None:
    settings = ServerSettings(engine="tesseract", languages=("eng",), job_dir=tmp_path, warm_up=False)
    with running_server(settings) as url:
        job = httpx.post(f"{url}/v1/jobs", files={"file": ("book.pdf", text_pdf(4))}).json()
        wait_until(lambda: _job(url, job["id"])["pages_done"] >= 1, 60, 0.02, "the first page")
    store = JobStore(tmp_path, ttl=3600, max_starts=3)
    stopped = store.get(job["id"])
    store.close()
    assert stopped is not None and stopped.status == JobStatus.QUEUED and stopped.starts == 0
    with running_server(settings) as url:
        done = wait_until(lambda: (s := _job(url, job["id"]))["status"] == "done" and s, 60, 0.1, "the job")
        assert done["starts"] == 1 and done["pages_done"] == 4


def test_store_fails_a_job_that_keeps_killing_the_server(tmp_path: Path) -> None:
    store = JobStore(tmp_path, ttl=3600, max_starts=2)
    job = store.create(b"%PDF-1.4 stand-in", "poison.pdf", {"chain": ["tesseract"]}, 1)
    for expected in (JobStatus.QUEUED, JobStatus.FAILED):  # started twice, interrupted twice
        claimed = store.claim_next()
        assert claimed is not None and claimed.id == job.id and claimed.status == JobStatus.RUNNING
        store.close()
        store = JobStore(tmp_path, ttl=3600, max_starts=2)  # a new process finds it "running"
        assert store.recovered == [job.id] and store.get(job.id).status == expected
    failed = store.get(job.id)
    assert "interrupted 2 time(s)" in failed.error and store.claim_next() is None
    store.close()


def test_store_deletes_uploads_when_done_and_results_when_expired(tmp_path: Path) -> None:
    store = JobStore(tmp_path, ttl=60, max_starts=3)
    kept = store.create(b"upload-1", "a.png", {}, 1)
    gone = store.create(b"upload-2", "b.png", {}, 1)
    waiting = store.create(b"upload-3", "c.png", {}, 1)
    for job in (kept, gone):
        store.claim_next()
        store.finish(job.id, '{"source": "x"}', 1)
    assert store.read_result(kept.id) == '{"source": "x"}'
    # a finished job's upload is deleted at once (issue 16); its result stays until it expires
    assert not store.upload_path(kept.id).exists() and not store.upload_path(gone.id).exists()
    assert store.upload_path(waiting.id).read_bytes() == b"upload-3" and store.result_path(gone.id).exists()
    finished = store.get(gone.id).finished
    assert store.expire(now=finished + 30) == []
    assert sorted(store.expire(now=finished + 61)) == sorted([kept.id, gone.id])
    assert store.get(gone.id) is None and not store.result_path(gone.id).exists()
    assert not store.upload_path(gone.id).exists()
    assert store.get(waiting.id).status == JobStatus.QUEUED  # unfinished jobs never expire
    store.close()
