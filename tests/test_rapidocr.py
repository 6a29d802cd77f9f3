"""The RapidOCR engine: real lines of a development-set page, reading order, and its refusals.

Measured: the text of old_books_eng/h015, cropped from its margins, reads at CER 0.013 (the whole
set scored 0.04 in ../shared/data/eval/README.md), so the bound catches a broken model or lost
lines. The crop keeps its short side above 736 px: rapidocr's detector upscales anything smaller to
that, which makes thin strips slower than whole pages.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from PIL import Image

from polyocr.bench.metrics import cer
from polyocr.documents import Page
from polyocr.engines import rapidocr as rapidocr_module
from polyocr.engines.base import create_engine, engine_class
from polyocr.engines.rapidocr import RapidOCREngine, TextLine, paragraphs, reading_order
from polyocr.errors import EngineError
from polyocr.runtime.probe import get_profile
from polyocr.scripts import CYRILLIC, LATIN
from polyocr.types import EnginePlan, Task, TaskKind

TEXT_CROP = (0, 830, 1396, 1570)  # all the text of old_books_eng/h015.png, without the margins


@pytest.fixture(scope="module")
def engine():
    engine = create_engine("rapidocr")
    engine.load(EnginePlan())
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def english_page(eval_dir: Path) -> tuple[Page, str]:
    image = Image.open(eval_dir / "old_books_eng" / "h015.png").convert("RGB").crop(TEXT_CROP)
    reference = (eval_dir / "old_books_eng" / "h015.gt.txt").read_text(encoding="utf-8")
    return Page(image=image, number=1, source="h015-crop.png"), reference


def test_registered_available_and_says_it_reads_no_cyrillic():
    assert engine_class("rapidocr") is RapidOCREngine
    availability = RapidOCREngine().available(get_profile())
    assert availability.ok, availability.reason
    assert LATIN in RapidOCREngine.scripts and CYRILLIC not in RapidOCREngine.scripts
    assert "Cyrillic" in RapidOCREngine.notes and "Russian" in RapidOCREngine.notes


@pytest.mark.parametrize("languages", [("rus",), ("ru",), ("rus+ukr",), ("rus", "bel")])
def test_refuses_a_cyrillic_only_task_before_loading(languages):
    engine = RapidOCREngine()
    page = Page(image=Image.new("RGB", (64, 32), "white"), number=1, source="blank.png")
    with pytest.raises(EngineError, match=r"rapidocr.*Cyrillic.*tesseract"):
        engine.recognize([page], Task(languages=languages))
    assert engine._ocr is None  # refused without spending time on the models


def test_reads_english_page_with_boxes_and_scores(engine, english_page):
    page, reference = english_page
    [result] = engine.recognize([page], Task(languages=("eng", "rus")))  # mixed tasks are allowed
    assert cer(reference, result.text) < 0.06
    assert result.text.startswith("HORTON ARMS.")
    assert result.engine == "rapidocr" and (result.width, result.height) == page.image.size
    assert result.blocks and result.text == "\n\n".join(b.text for b in result.blocks)
    for block in result.blocks:
        x1, y1, x2, y2 = block.bbox
        assert 0 <= x1 < x2 <= page.image.width and 0 <= y1 < y2 <= page.image.height
        assert 0.5 <= block.confidence <= 1.0 and block.category == "Text"


def test_region_boxes_are_in_page_coordinates(engine, english_page):
    page, _ = english_page
    # The title and the middle of the lines under it; nearly square, so the detector barely upscales.
    region = (250.0, 0.0, 1050.0, 400.0)
    [result] = engine.recognize([page], Task(kind=TaskKind.REGION, region=region, languages=("eng",)))
    assert "HORTON" in result.text and "Crest" not in result.text
    for block in result.blocks:
        x1, y1, x2, y2 = block.bbox
        assert region[0] <= x1 and region[1] <= y1 and x2 <= region[2] and y2 <= region[3]


def test_layout_only_is_not_offered(engine, english_page):
    page, _ = english_page
    assert TaskKind.LAYOUT_ONLY not in RapidOCREngine.tasks
    with pytest.raises(EngineError, match="layout_only"):
        engine.recognize([page], Task(kind=TaskKind.LAYOUT_ONLY, languages=("eng",)))


def _line(x1: float, y1: float, x2: float, text: str, height: float = 20.0) -> TextLine:
    return TextLine((x1, y1, x2, y1 + height), text, 0.9)


def test_two_columns_under_a_title_read_column_by_column():
    title = [_line(300, 1, 500, "Two"), _line(0, 0, 250, "Title in")]  # one row, split by the detector
    left = [_line(0, 50 + 25 * i, 230, f"left {i}") for i in range(3)]
    right = [_line(270, 50 + 25 * i, 500, f"right {i}") for i in range(3)]
    footer = _line(0, 200, 500, "Footer")
    lines = [footer, *right, *title, *left]  # detection order is not reading order
    ordered = reading_order(paragraphs(lines))
    assert [p.block().text for p in ordered] == [
        "Title in",
        "Two",
        "left 0\nleft 1\nleft 2",
        "right 0\nright 1\nright 2",
        "Footer",
    ]


def test_unavailable_without_the_package(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real_find_spec(name, *a)
    )
    availability = RapidOCREngine().available(get_profile())
    assert not availability.ok
    assert "onnxruntime" in availability.reason and "polyocr[classic]" in availability.fix


def test_unavailable_when_a_bundled_model_is_missing(tmp_path, monkeypatch):
    (tmp_path / "PP-OCRv6_det_small.onnx").write_bytes(b"")
    monkeypatch.setattr(rapidocr_module, "models_dir", lambda: tmp_path)
    availability = RapidOCREngine().available(get_profile())
    assert not availability.ok
    assert "PP-OCRv6_rec_small.onnx" in availability.reason and str(tmp_path) in availability.reason
    assert "PP-OCRv6_det_small.onnx" not in availability.reason


def _box(x1, y1, x2, y2, text):
    return TextLine((x1, y1, x2, y2), text, 1.0)


def test_pieces_of_one_line_touching_by_a_few_pixels_stay_in_order():
    """The detector's pieces of one line overlap by 3 px and start a pixel apart in y: an exact
    XY-cut found no gap and sorted by top edge ("t efficiently. There algorithm")."""
    pieces = [
        _box(0, 11, 203, 41, "algorithm"),
        _box(200, 10, 420, 40, "that solves it"),
        _box(417, 12, 700, 42, "efficiently. There"),
    ]
    order = [p.lines[0].text for p in reading_order(paragraphs(pieces))]
    assert order == ["algorithm", "that solves it", "efficiently. There"]


def test_lines_touching_vertically_are_read_top_to_bottom_and_columns_kept():
    left = [_box(0, 0 + 28 * i, 300, 31 + 28 * i, f"L{i}") for i in range(3)]  # overlapping by 3 px
    right = [_box(340, 2 + 28 * i, 640, 33 + 28 * i, f"R{i}") for i in range(3)]
    text = "\n".join(p.block().text for p in reading_order(paragraphs(left + right)))
    assert text.split("\n") == ["L0", "L1", "L2", "R0", "R1", "R2"]
