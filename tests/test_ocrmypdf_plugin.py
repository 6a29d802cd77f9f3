"""The real ocrmypdf command with polyocr as its OCR engine (the Tesseract chain)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pikepdf
import pytest
from PIL import Image

from pdf_samples import EVAL, normalise, pdf_text, scanned_pdf

pytest.importorskip("ocrmypdf", reason="pip install 'polyocr[ocrmypdf]' (pinned in requirements.lock)")

SRC = Path(__file__).resolve().parents[1] / "src"
PLUGIN = [sys.executable, "-m", "ocrmypdf", "--plugin", "polyocr.ocrmypdf_plugin"]


def test_ocrmypdf_reads_a_scanned_pdf_through_polyocr(tmp_path):
    pages = [Image.open(EVAL / "tesseract_test" / "phototest.tif"), Image.open(EVAL / "old_books_eng" / "a013.png")]
    scan = scanned_pdf(tmp_path / "scan.pdf", pages, dpi=300)
    assert not normalise(pdf_text(scan, 0))
    out = tmp_path / "out.pdf"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [*PLUGIN, "--polyocr-engine", "tesseract", "-l", "eng", "--output-type", "pdf", "-j", "1", str(scan), str(out)],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    first, second = normalise(pdf_text(out, 0)), normalise(pdf_text(out, 1))
    assert "This is a lot of 12 point text to test the ocr code" in first
    assert "WHY AND WHEREFORE" in second and "Intelligence" in second
    with pikepdf.open(out) as pdf:
        assert len(pdf.pages) == 2
        assert "polyocr" in str(pdf.docinfo.get("/Creator", ""))


def test_an_unknown_polyocr_engine_is_refused_before_any_page(tmp_path):
    scan = scanned_pdf(tmp_path / "scan.pdf", [Image.open(EVAL / "tesseract_test" / "phototest.tif")], dpi=300)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [*PLUGIN, "--polyocr-engine", "nosuch", str(scan), str(tmp_path / "out.pdf")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode != 0
    assert "nosuch" in run.stderr
    assert not (tmp_path / "out.pdf").exists()
