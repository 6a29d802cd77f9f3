"""The router's output checks on recorded outputs: no false alarm on Tesseract's answers for the
whole development set, and the failures engines are known for caught by the check named for them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from polyocr.documents import Page, load_pages
from polyocr.formats.text import blocks_to_text
from polyocr.results import Block, Generation, PageResult, PageStatus
from polyocr.router import checks
from polyocr.router.checks import PageContext, estimate_glyphs, run_checks
from polyocr.scripts import script_counts, scripts_for
from polyocr.types import Task, TaskKind

OUTPUTS = Path(__file__).resolve().parent / "fixtures" / "outputs"
TESSERACT = [json.loads(line) for line in (OUTPUTS / "tesseract-eval.jsonl").read_text(encoding="utf-8").splitlines()]
FAILURES = json.loads((OUTPUTS / "failures.json").read_text(encoding="utf-8"))
# Pages whose script Tesseract has no traineddata for here: its answer is Latin/Cyrillic junk.
UNREADABLE = {"zho", "kan"}


def context(glyphs: int, languages: tuple[str, ...] = ("eng", "rus"), kind: TaskKind = TaskKind.LAYOUT) -> PageContext:
    """A context whose glyph estimate is the recorded one, so no page image has to be decoded."""
    ctx = PageContext(Page(Image.new("RGB", (8, 8), "white"), 1, "recorded"), Task(kind=kind, languages=languages))
    ctx.__dict__["glyphs"] = glyphs
    return ctx


def recorded(record: dict) -> PageResult:
    result = PageResult.model_validate(record["result"])
    result.text = blocks_to_text(result.blocks)
    return result


def test_the_recording_covers_the_development_set(eval_dir: Path) -> None:
    manifest = (eval_dir / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()[1:]
    assert [line.split("\t")[0] for line in manifest] == [r["item"] for r in TESSERACT]


@pytest.mark.parametrize("record", TESSERACT, ids=[r["item"] for r in TESSERACT])
def test_no_false_alarm_on_tesseract_output(record: dict) -> None:
    result = recorded(record)
    assert run_checks(result, context(record["glyphs"])) == []
    language = record["language"].split()[0]
    if language in ("eng", "rus"):  # and with the page's own language alone
        assert run_checks(result, context(record["glyphs"], (language,))) == []


@pytest.mark.parametrize("record", [r for r in TESSERACT if r["language"] in UNREADABLE], ids=lambda r: r["item"])
def test_wrong_script_catches_tesseract_on_a_script_it_cannot_read(record: dict) -> None:
    failures = run_checks(recorded(record), context(record["glyphs"], (record["language"],)))
    assert [f.check for f in failures] == ["wrong_script"]


def result_of(sample: dict) -> PageResult:
    """A sample as the engine that produced it would report it."""
    generation = Generation(**sample["generation"]) if "generation" in sample else None
    if sample["kind"] == "dots_layout":
        from polyocr.engines.dots.layout import parse_layout, to_blocks

        parsed = parse_layout(sample["text"])
        blocks = to_blocks(parsed.elements, (1600, 1600), (1600, 1600), with_text=True)
        # an answer with no element keeps its words as the page's text, with no blocks
        text = sample["text"] if parsed.partial and not parsed.elements else blocks_to_text(blocks)
        status = PageStatus.PARTIAL if parsed.problems or generation.stop_reason != "eos" else PageStatus.OK
        return PageResult(
            page=1,
            blocks=blocks,
            text=text,
            generation=generation,
            status=status,
            errors=[f"dots: {p}" for p in parsed.problems],
        )
    return PageResult(page=1, blocks=[Block(text=sample["text"])], text=sample["text"], generation=generation)


@pytest.mark.parametrize("sample", FAILURES, ids=[s["name"] for s in FAILURES])
def test_recorded_failures_are_caught(sample: dict) -> None:
    languages = tuple(sample.get("languages", ("eng", "rus")))
    failures = run_checks(result_of(sample), context(1500, languages))
    assert sample["expect"] in [f.check for f in failures], failures


def test_a_truncated_layout_answer_keeps_its_complete_elements_for_salvage() -> None:
    [sample] = [s for s in FAILURES if s["name"] == "dots-truncated-json"]
    result = result_of(sample)
    assert [b.category for b in result.blocks] == ["Title", "Text"]
    assert result.status == PageStatus.PARTIAL
    assert {f.check for f in run_checks(result, context(300))} == {"token_limit"}


def text_page(lines: int, size: tuple[int, int] = (900, 1200)) -> Image.Image:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for i in range(lines):
        draw.text((40, 40 + 22 * i), "The quick brown fox jumps over the lazy dog 0123456789", fill="black")
    return image


def test_glyph_estimate_tracks_the_ink() -> None:
    assert estimate_glyphs(Image.new("RGB", (1000, 1400), "white")) == 0
    assert estimate_glyphs(Image.new("RGB", (1000, 1400), "black")) == 0  # a flat page has no marks
    one, many = estimate_glyphs(text_page(1)), estimate_glyphs(text_page(40))
    assert 30 <= one <= 120  # 53 characters on the line
    assert 30 * one <= many <= 50 * one


def test_glyph_estimate_matches_the_recording(eval_dir: Path) -> None:
    [record] = [r for r in TESSERACT if r["item"] == "old_books_eng/c015.png"]
    [page] = load_pages(eval_dir / record["item"])
    assert estimate_glyphs(page.image) == record["glyphs"]


def test_empty_output_is_right_for_a_blank_page() -> None:
    blank = PageContext(Page(Image.new("RGB", (800, 1000), "white"), 1, "blank"), Task())
    assert checks.empty_output(PageResult(page=1), blank) is None
    inked = PageContext(Page(text_page(20), 1, "inked"), Task())
    assert "no text" in checks.empty_output(PageResult(page=1), inked)


def test_too_little_text_for_a_page_full_of_ink() -> None:
    ctx = PageContext(Page(text_page(45), 1, "inked"), Task())
    assert "characters for a page with about" in checks.too_little_text(PageResult(page=1, text="Hello"), ctx)
    assert checks.too_little_text(PageResult(page=1, text="The quick brown fox " * 100), ctx) is None


def test_token_limit_nonfinite_and_engine_failure() -> None:
    ctx = context(500)
    truncated = PageResult(page=1, text="abc", generation=Generation(stop_reason="max_tokens", generated_tokens=64))
    assert "token limit (64 tokens)" in checks.token_limit(truncated, ctx)
    nan = PageResult(page=1, text="abc", generation=Generation(stop_reason="eos", nonfinite_logits=True))
    assert "NaN" in checks.nonfinite_logits(nan, ctx)
    failed = PageResult(page=1, status=PageStatus.FAILED, errors=["dots: empty output (stop: eos after 1 token(s))"])
    assert "empty output" in checks.engine_failed(failed, ctx)
    slow = PageResult(page=1, text="abc", generation=Generation(stop_reason="timeout", generated_tokens=9))
    assert "time limit after 9 tokens" in checks.generation_timeout(slow, ctx)


def test_repeated_layout_elements() -> None:
    blocks = [Block(bbox=(0, 10 * i, 100, 10 * i + 9), category="Text", text="Total amount due") for i in range(6)]
    blocks.append(Block(bbox=(0, 200, 100, 220), category="Title", text="Invoice"))
    assert "repeats 6 times" in checks.repeated_blocks(PageResult(page=1, blocks=blocks), context(500))
    boxes = [Block(bbox=(0, 0, 50, 50), category="Picture") for _ in range(5)]
    layout_only = context(500, kind=TaskKind.LAYOUT_ONLY)
    assert "repeats 5 times" in checks.repeated_blocks(PageResult(page=1, blocks=boxes), layout_only)


def test_scripts() -> None:
    assert scripts_for(["eng+rus"]) == {"Latin", "Cyrillic"}
    assert scripts_for(["jpn"]) == {"Han", "Kana"}
    assert scripts_for(["eng", "xyz"]) is None
    assert script_counts("Мир, world! 世界 123") == {"Cyrillic": 3, "Latin": 5, "Han": 2}
