"""The Tesseract engine on real pages of the development set, and how it reports what it lacks.

Measured on these pages (Tesseract 5.5, Debian tessdata): h015 crop CER 0.026, mpman-ru p026 CER
0.068; the English model on the Russian page scores 0.82, so the bounds catch a wrong language,
a broken engine or lost text, with room for small differences between Tesseract builds.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
import threading
from pathlib import Path

import pytest
from PIL import Image

from polyocr.bench.metrics import cer
from polyocr.documents import Page
from polyocr.engines import tesseract as tesseract_module
from polyocr.engines.base import create_engine, engine_class
from polyocr.engines.tesseract import TesseractEngine, find_tessdata, tesseract_languages
from polyocr.errors import EngineError
from polyocr.runtime.probe import get_profile
from polyocr.types import EnginePlan, Task, TaskKind

ENGLISH_CROP = (0, 800, 1396, 1600)  # all the text of old_books_eng/h015.png, without the margins


@pytest.fixture(scope="module")
def engine():
    engine = create_engine("tesseract")
    engine.load(EnginePlan())
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def english_page(eval_dir: Path) -> tuple[Page, str]:
    image = Image.open(eval_dir / "old_books_eng" / "h015.png").convert("RGB").crop(ENGLISH_CROP)
    reference = (eval_dir / "old_books_eng" / "h015.gt.txt").read_text(encoding="utf-8")
    return Page(image=image, number=1, source="h015-crop.png"), reference


@pytest.fixture(scope="module")
def russian_page(eval_dir: Path) -> tuple[Page, str]:
    folder = eval_dir / "ru_borndigital_pdf"
    image = Image.open(folder / "mpman-ru_p026.png").convert("RGB")
    reference = (folder / "mpman-ru_p026.gt.txt").read_text(encoding="utf-8")
    return Page(image=image, number=1, source="mpman-ru_p026.png"), reference


def test_registered_and_available_here():
    assert engine_class("tesseract") is TesseractEngine
    availability = TesseractEngine().available(get_profile())
    assert availability.ok, availability.reason
    assert "eng" in availability.reason and "rus" in availability.reason


def test_reads_an_english_page(engine, english_page):
    page, reference = english_page
    [result] = engine.recognize([page], Task(languages=("eng",)))
    assert cer(reference, result.text) < 0.06
    assert result.engine == "tesseract" and result.language == "eng"
    assert (result.width, result.height) == page.image.size
    texts = [b for b in result.blocks if b.text]
    assert texts and {b.category for b in texts} <= {"Text", "Section-header", "Caption", "Table"}
    for block in texts:
        x1, y1, x2, y2 = block.bbox
        assert 0 <= x1 < x2 <= page.image.width and 0 <= y1 < y2 <= page.image.height
        assert 0.0 <= block.confidence <= 1.0
    assert result.text == "\n\n".join(b.text for b in texts)
    assert result.text.startswith("HORTON ARMS")  # the title block comes first in reading order


def test_blocks_hold_their_lines_and_words_with_boxes(engine, english_page):
    page, _ = english_page
    [result] = engine.recognize([page], Task(languages=("eng",)))
    lines = [line for block in result.blocks for line in block.children]
    assert lines and all(line.category == "Line" and line.children for line in lines)
    for block in result.blocks:
        bx1, by1, bx2, by2 = block.bbox
        for line in block.children:
            cx, cy = (line.bbox[0] + line.bbox[2]) / 2, (line.bbox[1] + line.bbox[3]) / 2
            assert bx1 <= cx <= bx2 and by1 <= cy <= by2
            words = line.children
            assert all(w.category == "Word" and 0.0 <= w.confidence <= 1.0 for w in words)
            assert " ".join(w.text for w in words) == " ".join(line.text.split())
            assert [w.bbox[0] for w in words] == sorted(w.bbox[0] for w in words)
    # Every word of the page text is in some line: nothing is lost between the levels.
    words_in_lines = [w.text for line in lines for w in line.children]
    assert len(words_in_lines) == len(result.text.split())


def test_a_skewed_page_is_read_straightened_with_boxes_on_the_page(engine):
    # Tesseract alone loses most of a page skewed by 2 degrees or more (benchmarks/README.md).
    from conftest import SAMPLE_PDF
    from polyocr.documents import load_pages

    straight = load_pages(SAMPLE_PDF)[0].image
    skewed = straight.rotate(-3.0, resample=Image.Resampling.BICUBIC, expand=True, fillcolor="white")
    [reference] = engine.recognize([Page(image=straight, number=1, source="straight")], Task(languages=("eng",)))
    [result] = engine.recognize([Page(image=skewed, number=1, source="skewed")], Task(languages=("eng",)))
    assert cer(reference.text, result.text) < 0.02

    def word(page_result, text):
        words = [w for block in page_result.blocks for line in block.children for w in line.children]
        return next(w for w in words if w.text == text)

    # The word's box on the skewed page is where rotating its box on the straight page puts it.
    x1, y1, x2, y2 = word(reference, "Reading").bbox
    theta = math.radians(-3.0)
    dx, dy = (x1 + x2) / 2 - straight.width / 2, (y1 + y2) / 2 - straight.height / 2
    expected = (
        math.cos(theta) * dx + math.sin(theta) * dy + skewed.width / 2,
        -math.sin(theta) * dx + math.cos(theta) * dy + skewed.height / 2,
    )
    x1, y1, x2, y2 = word(result, "Reading").bbox
    assert 0 <= x1 < x2 <= skewed.width and 0 <= y1 < y2 <= skewed.height
    assert math.dist(((x1 + x2) / 2, (y1 + y2) / 2), expected) < 6


def test_reads_a_russian_page(engine, russian_page):
    page, reference = russian_page
    [result] = engine.recognize([page], Task(languages=("rus",)))
    assert cer(reference, result.text) < 0.15
    assert "переменные" in result.text


def test_region_boxes_are_in_page_coordinates(engine, english_page):
    page, _ = english_page
    region = (100.0, 60.0, 1300.0, 200.0)  # the title line and the rule under it
    [result] = engine.recognize([page], Task(kind=TaskKind.REGION, region=region, languages=("eng",)))
    assert "HORTON" in result.text and "stag" not in result.text
    for block in result.blocks:
        x1, y1, x2, y2 = block.bbox
        assert region[0] <= x1 and region[1] <= y1 and x2 <= region[2] and y2 <= region[3]


def test_layout_only_gives_boxes_without_text(engine, english_page):
    page, _ = english_page
    [result] = engine.recognize([page], Task(kind=TaskKind.LAYOUT_ONLY))
    assert result.blocks and all(b.bbox and not b.text for b in result.blocks)


def test_the_task_timeout_cuts_recognition_short(engine, english_page):
    page, _ = english_page
    with pytest.raises(EngineError, match=r"h015-crop.png page 1: timed out after 0.001 s"):
        engine.recognize([page], Task(languages=("eng",), timeout=0.001))
    [result] = engine.recognize([page], Task(languages=("eng",), timeout=60))  # the API is still usable
    assert result.text.startswith("HORTON ARMS")


def test_one_api_per_engine_shared_safely_by_threads(engine, english_page):
    page, _ = english_page
    small = Page(image=page.image.crop((0, 0, 1396, 400)), number=1, source="title.png")
    task = Task(languages=("eng",))
    [expected] = engine.recognize([small], task)
    api = engine._api_for("eng")
    outputs: list[str] = []

    def work() -> None:
        outputs.extend(r.text for r in engine.recognize([small], task))

    threads = [threading.Thread(target=work) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert outputs == [expected.text] * 3
    assert engine._api_for("eng") is api


def test_language_codes_map_to_tesseract_names():
    assert tesseract_languages(["en", "rus", "eng+ru", "zh"]) == ["eng", "rus", "chi_sim"]


def test_missing_language_is_a_clear_error(engine, english_page):
    page, _ = english_page
    with pytest.raises(EngineError) as caught:
        engine.recognize([page], Task(languages=("eng", "deu")))
    message = str(caught.value)
    assert "tesseract" in message and "deu" in message and "tesseract-ocr-deu" in message


@pytest.fixture
def english_only_tessdata(tmp_path, monkeypatch) -> Path:
    """A tessdata directory holding only eng, as on a machine without tesseract-ocr-rus."""
    system = find_tessdata()
    assert system is not None
    shutil.copy(system / "eng.traineddata", tmp_path / "eng.traineddata")
    monkeypatch.setenv("TESSDATA_PREFIX", str(tmp_path))
    return tmp_path


def test_tessdata_prefix_wins_and_a_missing_default_language_is_named(english_only_tessdata):
    assert find_tessdata() == english_only_tessdata
    availability = TesseractEngine().available(get_profile())
    assert availability.ok  # English still works
    assert "rus" in availability.reason and "tesseract-ocr-rus" in availability.fix


def test_recognizing_a_language_without_traineddata_names_it(english_only_tessdata, english_page):
    page, _ = english_page
    engine = TesseractEngine()
    engine.load(EnginePlan())
    with pytest.raises(EngineError, match=r"no traineddata for rus .*tesseract-ocr-rus"):
        engine.recognize([page], Task(languages=("eng", "rus")))


def test_unavailable_without_tessdata(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSDATA_PREFIX", str(tmp_path))
    monkeypatch.setattr(tesseract_module, "tessdata_dirs", lambda: [tmp_path])
    availability = TesseractEngine().available(get_profile())
    assert not availability.ok
    assert "no tessdata directory" in availability.reason and "tesseract-ocr-eng" in availability.fix


def test_unavailable_without_tesserocr(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tesserocr" else real_find_spec(name, *a)
    )
    availability = TesseractEngine().available(get_profile())
    assert not availability.ok
    assert "tesserocr" in availability.reason and "polyocr[classic]" in availability.fix
