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


def test_rotate_pages_turns_a_sideways_page_upright(tmp_path):
    """--rotate-pages asks the engine which way each page faces (OCRmyPDF 17's get_orientation): a
    page scanned sideways is turned upright and read; the upright page is left as it is."""
    from polyocr.ocrmypdf_plugin import PolyocrEngine

    upright = Image.open(EVAL / "tesseract_test" / "phototest.tif").convert("RGB")
    sideways = upright.rotate(90, expand=True)  # turned a quarter counter-clockwise
    for name, image, expected in (("upright", upright, 0), ("sideways", sideways, 270)):
        image.save(tmp_path / f"{name}.png", dpi=(300, 300))
        found = PolyocrEngine.get_orientation(tmp_path / f"{name}.png", None)
        assert found.angle == expected, found
        # The numbers OCRmyPDF's own Tesseract plugin reads from `tesseract --psm 0`.
        cli = subprocess.run(
            ["tesseract", str(tmp_path / f"{name}.png"), "stdout", "--psm", "0"], capture_output=True, text=True
        ).stdout
        fields = dict(line.split(": ", 1) for line in cli.splitlines() if ": " in line)
        assert found.angle == int(fields["Orientation in degrees"])
        assert abs(found.confidence - float(fields["Orientation confidence"])) < 0.01
    scan = scanned_pdf(tmp_path / "scan.pdf", [sideways, upright], dpi=300)
    out = tmp_path / "out.pdf"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    rotate = ["--rotate-pages", "--rotate-pages-threshold", "5"]  # OSD is 9.6 sure of this small page
    files = [str(scan), str(out)]
    run = subprocess.run(
        [*PLUGIN, "--polyocr-engine", "tesseract", "-l", "eng", *rotate, "--output-type", "pdf", "-j", "1", *files],
        capture_output=True,
        text=True,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    with pikepdf.open(out) as pdf:
        assert [int(page.obj.get("/Rotate", 0)) % 360 for page in pdf.pages] == [90, 0]
    for index in (0, 1):
        assert "This is a lot of 12 point text to test the ocr code" in normalise(pdf_text(out, index))


def test_deskew_angle_is_pillows_counter_clockwise_rotation(tmp_path):
    from polyocr.ocrmypdf_plugin import PolyocrEngine

    page = Image.open(EVAL / "tesseract_test" / "phototest.tif").convert("RGB")
    page.rotate(-3, expand=True, fillcolor="white").save(tmp_path / "skewed.png", dpi=(300, 300))
    angle = PolyocrEngine.get_deskew(tmp_path / "skewed.png", None)
    assert 2.0 < angle < 4.0  # rotating by it (Pillow, counter-clockwise) straightens the page
