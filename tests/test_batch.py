"""polyocr batch on this machine: real Tesseract in real worker processes, real SQLite, real kills.

The engine is `batch_engines.CountingTesseract`: Tesseract itself, plus a line per recognised page
in a calls file so that "no page done twice" is counted across processes and runs, and a SIGKILL
of its own process on the pages the crash tests name (what a segfault in a C library looks like).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

import polyocr
from batch_engines import NAME, calls, register_counting, without_seconds
from conftest import REPO, SAMPLE_PDF
from polyocr.batch import BatchOptions, outputs, plan_workers, run_batch
from polyocr.batch.worklist import WorkList
from polyocr.errors import BatchError
from polyocr.formats import render
from polyocr.results import Attempt, DocumentResult, Outcome, PageResult, PageStatus

TESTS = Path(__file__).resolve().parent


def scanned_pdf(path: Path, eval_dir: Path, pages: int) -> Path:
    """A scanned PDF of `pages` pages: the top of the old-books scans in turn (fast to OCR)."""
    scans = sorted((eval_dir / "old_books_eng").glob("*.png"))
    images = []
    for i in range(pages):
        image = Image.open(scans[i % len(scans)]).convert("L")
        images.append(image.crop((0, 0, image.width, image.height // 4)))
    images[0].save(path, save_all=True, append_images=images[1:], resolution=300)
    return path


def text_pdf(path: Path, pages: int) -> Path:
    """A PDF of `pages` small pages with a line of text each (many pages, little work per page)."""
    images = []
    for i in range(pages):
        image = Image.new("L", (400, 80), 255)
        ImageDraw.Draw(image).text((10, 30), f"Page number {i + 1} of the long document", fill=0)
        images.append(image)
    images[0].save(path, save_all=True, append_images=images[1:], resolution=100)
    return path


def counting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    register_counting()
    calls_file = tmp_path / "calls.txt"
    monkeypatch.setenv("POLYOCR_TEST_CALLS", str(calls_file))
    return calls_file


def json_without_seconds(text: str) -> dict:
    return without_seconds(json.loads(text))


# -- outputs ---------------------------------------------------------------------------------------


def test_document_outputs_streamed_from_page_files_equal_render(tmp_path: Path) -> None:
    pages = [
        PageResult(page=1, source="d.pdf", text="first page", markdown="# First",
                   attempts=[Attempt(engine="tesseract", outcome=Outcome.OK, seconds=0.25)]),
        PageResult(page=2, source="d.pdf", status=PageStatus.FAILED, errors=["tesseract: broke", "x"]),
        PageResult(page=3, source="d.pdf", text="  \n", markdown=""),
        PageResult(page=4, source="d.pdf", text="last  \n\n", markdown="last ünïcode\n",
                   attempts=[Attempt(engine="tesseract", outcome=Outcome.OK, seconds=0.5)]),
        PageResult(page=5, source="d.pdf", text=""),
    ]  # fmt: skip
    for page in pages:
        outputs.write_page(tmp_path, "d", page)
    outputs.write_document(tmp_path, "d", "d.pdf", len(pages), ["txt", "md", "json"])
    doc = DocumentResult(source="d.pdf", pages=pages, seconds=0.75)
    for fmt in ("txt", "md", "json"):
        assert (tmp_path / f"d.{fmt}").read_text(encoding="utf-8") == render(doc, fmt), fmt
    assert not list(tmp_path.glob(".*.tmp")) and not list((tmp_path / "pages" / "d").glob(".*"))


def test_workers_are_planned_one_per_gpu_for_any_number_and_one_per_core_for_classical() -> None:
    plan = plan_workers(["dots", "tesseract"], gpus=[0, 1, 2, 5], workers=None, cores=16)
    assert [env["CUDA_VISIBLE_DEVICES"] for env in plan.envs] == ["0", "1", "2", "5"]
    assert plan.pages_per_task > 1  # the router batches each worker's pages on its GPU
    assert len(plan_workers(["dots"], gpus=list(range(8)), workers=3, cores=16).envs) == 3
    inside = plan_workers(["dots"], gpus=[0, 1], workers=None, cores=16, visible="2,3")  # the driver sees 2 of 4
    assert [env["CUDA_VISIBLE_DEVICES"] for env in inside.envs] == ["2", "3"]
    assert len(plan_workers(["dots"], gpus=[], workers=None, cores=16).envs) == 1  # a VLM per core would not fit
    classical = plan_workers(["tesseract", "rapidocr"], gpus=[0], workers=None, cores=6)
    assert len(classical.envs) == 6 and classical.pages_per_task == 1
    assert all(env["OMP_THREAD_LIMIT"] == "1" and "CUDA_VISIBLE_DEVICES" not in env for env in classical.envs)


# -- the local path --------------------------------------------------------------------------------


def test_batch_cli_writes_what_ocr_writes_and_a_rerun_does_nothing(tmp_path: Path) -> None:
    image = REPO.parent / "shared" / "data" / "eval" / "tesseract_test" / "phototest.tif"
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "polyocr", "batch", str(SAMPLE_PDF), str(image), str(bad), "--out", str(out),
               "-e", "tesseract", "-f", "txt,md,json", "--workers", "2"]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1, run.stderr  # as `ocr`: an unreadable input makes the exit code 1
    assert "broken.png: corrupt or truncated PNG image" in run.stderr
    assert "3 done now" in run.stderr and "1 unreadable input(s)" in run.stderr
    for item in (SAMPLE_PDF, image):
        doc = polyocr.ocr(item, "tesseract")
        for fmt in ("txt", "md"):
            assert (out / f"{item.stem}.{fmt}").read_text(encoding="utf-8") == render(doc, fmt)
        assert json_without_seconds((out / f"{item.stem}.json").read_text()) == json_without_seconds(doc.to_json())
    again = subprocess.run([*command, "--json-report"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 1
    report = json.loads(again.stderr[again.stderr.index("{") :])
    assert report["done_now"] == 0 and report["done_before"] == 3 and report["pages"] == 3


def test_kill_9_mid_run_then_rerun_redoes_no_finished_page(
    tmp_path: Path, eval_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls_file = counting(tmp_path, monkeypatch)
    pdf = scanned_pdf(tmp_path / "scan.pdf", eval_dir, 10)
    out = tmp_path / "out"
    script = (
        "import sys; from batch_engines import register_counting; register_counting(); import polyocr; "
        f"r = polyocr.batch([{str(pdf)!r}], {str(out)!r}, {NAME!r}, languages=['eng'], formats=['txt', 'json'], "
        "workers=2, dpi=100); sys.exit(r.exit_code)"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(TESTS)])}
    first = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    pages_dir = out / "pages" / "scan"
    deadline = time.monotonic() + 120
    while len(list(pages_dir.glob("*.json"))) < 3 and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.poll() is None, "the batch finished before it could be killed"
    first.send_signal(signal.SIGKILL)
    first.wait()
    time.sleep(0.5)  # the kernel kills its workers too (PR_SET_PDEATHSIG); let them go
    finished_before_kill = {int(p.stem) for p in pages_dir.glob("*.json")}
    assert 3 <= len(finished_before_kill) < 10
    assert not (out / "scan.txt").exists()
    second = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    counts = Counter(n for _, n in calls(calls_file))
    assert set(counts) == set(range(1, 11))
    assert all(counts[n] == 1 for n in finished_before_kill), counts  # no finished page done again
    assert sum(counts.values()) <= 10 + 2  # at most the two pages in the workers' hands at the kill, twice
    reference = polyocr.ocr(pdf, NAME, languages=["eng"], dpi=100)
    assert (out / "scan.txt").read_text(encoding="utf-8") == render(reference, "txt")
    assert json_without_seconds((out / "scan.json").read_text()) == json_without_seconds(reference.to_json())


def test_a_killed_worker_loses_only_its_page_retried_once_then_failed_and_retry_failed(
    tmp_path: Path, eval_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls_file = counting(tmp_path, monkeypatch)
    once = scanned_pdf(tmp_path / "crash-once.pdf", eval_dir, 3)
    always = scanned_pdf(tmp_path / "crash-always.pdf", eval_dir, 3)
    out = tmp_path / "out"
    options = BatchOptions(engine=NAME, languages=("eng",), workers=2, dpi=100, formats=("txt",))
    report = run_batch([once, always], out, options)
    assert report.worker_crashes == 3  # crash-once p1 once; crash-always p2, then again on its retry
    assert report.exit_code == 1 and report.failed == 1
    [(reason, count)] = report.failures.items()
    assert count == 1 and "SIGKILL" in reason and "retried alone in a fresh worker" in reason
    counts = Counter(calls(calls_file))
    assert counts[("crash-once.pdf", 1)] == 2 and counts[("crash-always.pdf", 2)] == 2
    assert all(counts[(name, n)] == 1 for name in ("crash-once.pdf", "crash-always.pdf") for n in (1, 2, 3)
               if (name, n) not in {("crash-once.pdf", 1), ("crash-always.pdf", 2)})  # fmt: skip
    text = (out / "crash-always.txt").read_text(encoding="utf-8")
    assert "[page 2 failed: the worker process died (SIGKILL)" in text
    assert "WHY AND WHEREFORE" in (out / "crash-once.txt").read_text(encoding="utf-8")

    monkeypatch.setenv("POLYOCR_TEST_NO_CRASH", "1")
    assert run_batch([once, always], out, options).exit_code == 1  # without --retry-failed it stays failed
    retried = run_batch([once, always], out, BatchOptions(**{**options.__dict__, "retry_failed": True}))
    assert retried.retried_failed == 1 and retried.done_now == 1 and retried.exit_code == 0
    assert "failed" not in (out / "crash-always.txt").read_text(encoding="utf-8")
    worklist = WorkList(out)
    [previous] = worklist.previous_reasons().values()
    worklist.close()
    assert "SIGKILL" in previous  # the reason it failed before is kept


def test_a_folder_refuses_other_settings_and_a_second_batch(tmp_path: Path) -> None:
    out = tmp_path / "out"
    image = REPO.parent / "shared" / "data" / "eval" / "tesseract_test" / "phototest.tif"
    assert run_batch([image], out, BatchOptions(engine="tesseract", languages=("eng",), workers=1)).exit_code == 0
    with pytest.raises(BatchError, match="languages was"):
        run_batch([image], out, BatchOptions(engine="tesseract", languages=("rus",), workers=1))
    import fcntl

    with (out / ".lock").open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(BatchError, match="another polyocr batch"):
            run_batch([image], out, BatchOptions(engine="tesseract", languages=("eng",), workers=1))


_RSS_SCRIPT = """
import json, sys
import polyocr


def peak():  # VmHWM: this process's own peak RSS (getrusage would report the parent's from before exec)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024


r = polyocr.batch([sys.argv[1]], sys.argv[2], "tesseract", languages=["eng"], workers=2, dpi=100,
                  recycle_after=int(sys.argv[3]))
print(json.dumps({"driver": peak(),
                  "worker": r.worker_peak_rss_mb, "started": r.workers_started, "done": r.done_now,
                  "failed": r.failed}))
"""


@pytest.mark.slow
def test_300_page_pdf_runs_in_bounded_memory(tmp_path: Path) -> None:
    """Loose bound here (2x); benchmarks/batch.md measures the 300-page run against a 10-page one."""

    def run(pages: int, recycle: int) -> dict:
        pdf = text_pdf(tmp_path / f"long{pages}.pdf", pages)
        proc = subprocess.run(
            [sys.executable, "-c", _RSS_SCRIPT, str(pdf), str(tmp_path / f"out{pages}"), str(recycle)],
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout.strip().splitlines()[-1])

    small, large = run(10, 100), run(300, 100)
    assert large["done"] == 300 and large["failed"] == 0
    assert large["started"] >= 4  # 2 workers, each replaced after 100 pages
    assert large["driver"] < 2 * small["driver"], (small, large)
    assert large["worker"] < 2 * small["worker"], (small, large)


def test_the_split_chain_of_the_gpu_pipeline_joins_into_what_one_router_gives() -> None:
    """Ray runs a VLM-led chain as a GPU stage (the head) and a CPU stage (the rest); the page record
    they produce together is the one router's. An unavailable head (the openai engine with no server
    named) falls through to Tesseract."""
    from polyocr.batch.ray_pipeline import merge_fallback
    from polyocr.documents import load_pages
    from polyocr.router import Router
    from polyocr.types import Task

    [page] = load_pages(REPO.parent / "shared" / "data" / "eval" / "tesseract_test" / "phototest.tif")
    task = Task(languages=("eng",))
    with Router(["openai", "tesseract"], task) as router:
        whole = router.recognize_page(page, task)
    with Router(["openai"], task) as head, Router(["tesseract"], task) as rest:
        joined = merge_fallback(head.recognize_page(page, task), rest.recognize_page(page, task))
    assert [a.outcome for a in whole.attempts] == [Outcome.UNAVAILABLE, Outcome.OK]
    assert json_without_seconds(joined.model_dump_json()) == json_without_seconds(whole.model_dump_json())


def test_a_worker_over_its_memory_bound_is_replaced(tmp_path: Path) -> None:
    image = REPO.parent / "shared" / "data" / "eval" / "tesseract_test" / "phototest.tif"
    options = BatchOptions(engine="tesseract", languages=("eng",), workers=1, max_worker_mb=1.0)
    report = run_batch([SAMPLE_PDF, image], tmp_path / "out", options)
    assert report.exit_code == 0 and report.done_now == 3
    # the first worker is over 1 MiB after its first page: it finishes the page queued behind it and
    # is replaced, so the third page is recognised by a fresh process
    assert report.workers_started == 2
