"""The Python API: files and PIL images in, DocumentResult out, bad input reported not raised."""

from __future__ import annotations

from pathlib import Path

import polyocr
from conftest import SAMPLE_PDF
from polyocr.documents import load_pages


def test_ocr_of_a_pil_image() -> None:
    image = load_pages(SAMPLE_PDF)[1].image.crop((0, 0, 1280, 330))
    doc = polyocr.ocr(image, engine="tesseract", languages=["rus"])
    assert doc.ok
    assert "заметка" in doc.text


def test_bad_input_is_reported_in_the_result(tmp_path: Path) -> None:
    doc = polyocr.ocr(tmp_path / "missing.pdf", engine="tesseract")
    assert not doc.ok and doc.pages == []
    assert "missing.pdf" in doc.errors[0] and "no such file" in doc.errors[0]
