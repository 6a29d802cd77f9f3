"""The command line end to end, as a user runs it: a subprocess per command, real Tesseract."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from conftest import SAMPLE_PDF


def polyocr(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "polyocr", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_ocr_sample_pdf_to_stdout() -> None:
    run = polyocr("ocr", str(SAMPLE_PDF), "--engine", "tesseract")
    assert run.returncode == 0, run.stderr
    assert "Reading Machines" in run.stdout
    assert "машинном чтении" in run.stdout
    assert "\f" in run.stdout  # page break between the two pages
    assert "2 page(s), 0 failed page(s)" in run.stderr


def test_one_bad_input_does_not_stop_the_others(tmp_path: Path) -> None:
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    run = polyocr(
        "ocr", str(bad), str(SAMPLE_PDF), "--engine", "tesseract", "--format", "md", "--out", str(out), "--overlay"
    )
    assert run.returncode == 1
    assert "broken.png: corrupt or truncated PNG image" in run.stderr  # PNG by its magic number
    markdown = (out / "sample-en-ru.md").read_text(encoding="utf-8")
    assert "Reading Machines" in markdown and "\n---\n" in markdown
    assert not (out / "broken.md").exists()
    overlay = out / "sample-en-ru.page0002.png"
    assert Image.open(overlay).size == Image.open(out / "sample-en-ru.page0001.png").size


def test_json_output_validates_against_the_model(tmp_path: Path) -> None:
    image = tmp_path / "crop.png"
    from polyocr.documents import load_pages

    load_pages(SAMPLE_PDF)[0].image.crop((0, 0, 1280, 330)).save(image)
    run = polyocr("ocr", str(image), "--engine", "tesseract", "--lang", "eng", "--format", "json", "--quiet")
    assert run.returncode == 0, run.stderr
    # --quiet leaves stderr to the OCR libraries' own diagnostics: no progress, notes or summary.
    assert "page(s)" not in run.stderr and "pages/s" not in run.stderr
    from polyocr.results import DocumentResult

    doc = DocumentResult.from_json(run.stdout)
    [page] = doc.pages
    assert page.engine == "tesseract" and page.attempts[0].outcome == "ok"
    assert all(0 <= b.bbox[0] < b.bbox[2] <= 1280 and 0 <= b.bbox[1] < b.bbox[3] <= 330 for b in page.blocks)


def test_unknown_engine_is_a_usage_error() -> None:
    run = polyocr("ocr", str(SAMPLE_PDF), "--engine", "nosuch")
    assert run.returncode == 2
    assert "nosuch" in run.stderr and "tesseract" in run.stderr


def test_engines_lists_every_registered_engine() -> None:
    run = polyocr("engines", "--json")
    assert run.returncode == 0, run.stderr
    rows = {row["name"]: row for row in json.loads(run.stdout)}
    assert rows["tesseract"]["available"] is True
    assert "Cyrillic" not in rows["rapidocr"]["scripts"]
    assert all(row["available"] or row["reason"] for row in rows.values())


def test_schema_is_valid_json() -> None:
    run = polyocr("schema")
    assert run.returncode == 0
    assert json.loads(run.stdout)["title"] == "polyocr DocumentResult"


def test_fetch_says_why_it_cannot_download_offline() -> None:
    """HF_HUB_OFFLINE is set in the tests, as on a machine without the hub: a clear error, exit 2."""
    result = polyocr("fetch", "qwen2vl")
    assert result.returncode == 2
    assert "could not download Qwen/Qwen2-VL-2B-Instruct" in result.stderr
    unknown = polyocr("fetch", "no-such")
    assert unknown.returncode == 2 and "neither an engine" in unknown.stderr
    classical = polyocr("fetch", "tesseract")
    assert classical.returncode == 2 and "no published weights" in classical.stderr
