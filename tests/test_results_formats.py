"""The result model's JSON round trip and schema, and every output format."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from polyocr.formats import blocks_to_markdown, blocks_to_text, render
from polyocr.formats.overlay import draw_overlay
from polyocr.results import (
    SCHEMA_VERSION,
    Attempt,
    Block,
    DocumentResult,
    Generation,
    Outcome,
    PageResult,
    PageStatus,
    TextFormat,
    json_schema,
)


def _document() -> DocumentResult:
    blocks = [
        Block(bbox=(10, 10, 190, 30), category="Page-header", text="Journal of Tests, 2026"),
        Block(bbox=(10, 40, 190, 60), category="Title", text="Чтение машин", confidence=0.93),
        Block(bbox=(10, 70, 190, 120), category="Text", text="First paragraph."),
        Block(bbox=(10, 130, 190, 150), category="Formula", text="E = mc^2", format=TextFormat.LATEX),
        Block(
            bbox=(10, 160, 190, 200),
            category="Table",
            text="<table><tr><td>1</td></tr></table>",
            format=TextFormat.HTML,
        ),
        Block(bbox=(10, 210, 190, 260), category="Picture"),
        Block(bbox=(10, 270, 190, 290), category="Page-footer", text="7"),
    ]
    good = PageResult(
        page=1,
        source="doc.pdf",
        width=200,
        height=300,
        engine="dots",
        blocks=blocks,
        text="",
        markdown="",
        generation=Generation(stop_reason="eos", prompt_tokens=900, generated_tokens=120),
        attempts=[Attempt(engine="dots", outcome=Outcome.OK, seconds=1.5)],
    )
    good.text = blocks_to_text(good.blocks)
    good.markdown = blocks_to_markdown(good.blocks)
    failed = PageResult(
        page=2,
        source="doc.pdf",
        status=PageStatus.FAILED,
        errors=["dots: out of memory"],
        attempts=[Attempt(engine="dots", outcome=Outcome.OOM, error="CUDA out of memory")],
    )
    return DocumentResult(source="doc.pdf", pages=[good, failed], seconds=2.0)


def test_json_round_trip_is_lossless() -> None:
    doc = _document()
    again = DocumentResult.from_json(doc.to_json())
    assert again == doc
    assert json.loads(doc.to_json())["schema_version"] == SCHEMA_VERSION


def test_json_schema_describes_the_output() -> None:
    schema = json_schema()
    assert schema["title"] == "polyocr DocumentResult"
    assert SCHEMA_VERSION in schema["$id"]
    page = schema["$defs"]["PageResult"]["properties"]
    assert {"blocks", "attempts", "status", "generation"} <= set(page)
    assert schema["$defs"]["Block"]["additionalProperties"] is False


def test_unknown_fields_are_rejected() -> None:
    data = json.loads(_document().to_json())
    data["pages"][0]["blocks"][0]["colour"] = "red"
    with pytest.raises(ValueError, match="colour"):
        DocumentResult.model_validate(data)


def test_ok_is_false_when_a_page_failed() -> None:
    doc = _document()
    assert not doc.ok
    doc.pages.pop()
    assert doc.ok


def test_text_skips_pictures_and_keeps_reading_order() -> None:
    text = blocks_to_text(_document().pages[0].blocks)
    assert text.index("Чтение") < text.index("First paragraph") < text.index("E = mc^2")
    assert blocks_to_text(_document().pages[0].blocks, include_marginalia=False).startswith("Чтение")


def test_markdown_renders_categories() -> None:
    md = blocks_to_markdown(_document().pages[0].blocks, include_marginalia=False)
    assert md.splitlines()[0] == "# Чтение машин"
    assert "$$\nE = mc^2\n$$" in md
    assert "<table><tr><td>1</td></tr></table>" in md
    assert "Journal of Tests" not in md and "\n7" not in md


@pytest.mark.parametrize("fmt", ["txt", "md", "json"])
def test_render_marks_failed_pages_in_every_format(fmt: str) -> None:
    rendered = render(_document(), fmt)
    assert "out of memory" in rendered
    if fmt == "json":
        assert json.loads(rendered)["pages"][1]["status"] == "failed"
    elif fmt == "txt":
        assert "\f" in rendered and "First paragraph." in rendered
    else:
        assert "---" in rendered and "# Чтение машин" in rendered


def test_render_refuses_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        render(_document(), "docx")


def test_overlay_draws_boxes_inside_the_page() -> None:
    page = Image.new("RGB", (200, 300), "white")
    drawn = draw_overlay(page, _document().pages[0])
    assert drawn.size == page.size
    assert drawn.getpixel((10, 100)) != (255, 255, 255)  # the Text block's left edge
    assert drawn.getpixel((199, 299)) == (255, 255, 255)  # outside every block
