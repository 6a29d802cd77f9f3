"""dots.ocr layout answers to Blocks: clean, truncated, looping, non-JSON and empty outputs."""

from __future__ import annotations

import json

import pytest

from polyocr.engines.dots.layout import html_table_text, page_text, parse_layout, plain_text, to_blocks
from polyocr.formats.markdown import blocks_to_markdown
from polyocr.results import Block, TextFormat

TABLE = "<table><tr><th>Item</th><th>Qty</th></tr><tr><td>Pen</td><td>2<br>pcs</td></tr></table>"
ELEMENTS = [
    {"bbox": [28, 14, 532, 42], "category": "Page-header", "text": "ACME Ltd"},
    {"bbox": [56, 70, 504, 112], "category": "Title", "text": "# Invoice"},
    {"bbox": [56, 126, 504, 252], "category": "Table", "text": TABLE},
    {"bbox": [56, 266, 504, 308], "category": "Formula", "text": "$$E = mc^2$$"},
    {"bbox": [56, 322, 280, 504], "category": "Picture"},
    {"bbox": [56, 518, 504, 546], "category": "Text", "text": "Paid **in full**."},
    {"bbox": [252, 532, 308, 556], "category": "Page-footer", "text": "1"},
]
CLEAN = json.dumps(ELEMENTS, ensure_ascii=False)


def test_clean_output_keeps_every_element():
    parsed = parse_layout(CLEAN)
    assert parsed.elements == ELEMENTS and not parsed.partial


def test_code_fenced_output_parses():
    assert parse_layout(f"```json\n{CLEAN}\n```").elements == ELEMENTS


@pytest.mark.parametrize("cut", [1, 10, 40, 120])
def test_truncated_output_keeps_complete_elements(cut):
    truncated = CLEAN[:-cut]  # the token limit hit mid-element
    parsed = parse_layout(truncated)
    assert parsed.partial and "truncated" in parsed.problems[0]
    kept = parsed.elements
    assert kept == ELEMENTS[: len(kept)]
    assert len(kept) == sum(1 for i in range(len(ELEMENTS)) if json.dumps(ELEMENTS[: i + 1])[:-1] in truncated)


def test_looping_output_drops_the_repeats():
    looping = json.dumps(ELEMENTS[:3] + [ELEMENTS[2]] * 40)[:-17]  # loops, then runs out of tokens
    parsed = parse_layout(looping)
    assert parsed.elements == ELEMENTS[:3]
    assert parsed.partial and any("repeated" in p for p in parsed.problems)


def test_looping_inside_one_element_loses_only_that_element():
    runaway = CLEAN[:-1] + ', {"bbox": [1, 2, 3, 4], "category": "Text", "text": "' + "." * 5000
    assert parse_layout(runaway).elements == ELEMENTS


def test_missing_commas_still_parse():
    parsed = parse_layout(CLEAN.replace("}, {", "}{"))
    assert parsed.elements == ELEMENTS and parsed.partial


def test_non_json_and_empty_outputs():
    prose = parse_layout("The page shows an invoice from ACME.")
    assert prose.elements == [] and prose.problems == ["output is not layout JSON"]
    assert parse_layout("").problems == ["empty output"]
    assert parse_layout("  \n").problems == ["empty output"]
    blank = parse_layout("[]")  # a blank page is a clean answer
    assert blank.elements == [] and not blank.partial


def test_items_that_are_not_elements_are_counted():
    parsed = parse_layout(json.dumps([ELEMENTS[1], 5, {"foo": 1}]))
    assert parsed.elements == [ELEMENTS[1]] and "2 item(s)" in parsed.problems[0]


def test_boxes_scale_back_to_the_original_page():
    # The model saw 560 x 560 pixels of a 1000 x 2000 page: x by 1000/560, y by 2000/560.
    [block] = to_blocks([{"bbox": [56, 56, 280, 560], "category": "text", "text": "t"}], (560, 560), (1000, 2000))
    assert block.bbox == (100.0, 200.0, 500.0, 2000.0)
    assert block.category == "Text"  # case normalised to dots.ocr's names


def test_boxes_are_clamped_and_invalid_ones_dropped():
    elements = [
        {"bbox": [-5, 10, 600, 20], "category": "Text", "text": "wide"},
        {"bbox": [50, 50, 40, 60], "category": "Text", "text": "inverted"},
        {"bbox": [1, 2, 3], "category": "Text", "text": "three numbers"},
        {"bbox": ["a", 2, 3, 4], "category": "Picture"},  # no box and no text: nothing to keep
    ]
    blocks = to_blocks(elements, (560, 560), (560, 560))
    assert [(b.text, b.bbox) for b in blocks] == [
        ("wide", (0.0, 10.0, 560.0, 20.0)),
        ("inverted", None),
        ("three numbers", None),
    ]


def test_text_formats_by_category():
    blocks = to_blocks(ELEMENTS, (560, 560), (560, 560))
    formats = {b.category: b.format for b in blocks}
    assert formats["Table"] == TextFormat.HTML and formats["Formula"] == TextFormat.LATEX
    assert formats["Title"] == TextFormat.MARKDOWN and formats["Picture"] == TextFormat.PLAIN
    assert next(b for b in blocks if b.category == "Formula").text == "E = mc^2"
    assert (
        to_blocks([{"bbox": [1, 1, 9, 9], "category": "Formula", "text": "\\[x^2\\]"}], (10, 10), (10, 10))[0].text
        == "x^2"
    )


def test_layout_only_blocks_have_no_text():
    blocks = to_blocks(ELEMENTS, (560, 560), (560, 560), with_text=False)
    assert len(blocks) == len(ELEMENTS) and all(b.text == "" for b in blocks)


def test_markdown_rendering():
    blocks = to_blocks(ELEMENTS, (560, 560), (560, 560))
    markdown = blocks_to_markdown(blocks)
    assert markdown.split("\n\n") == ["ACME Ltd", "# Invoice", TABLE, "$$\nE = mc^2\n$$", "Paid **in full**.", "1"]
    body = blocks_to_markdown(blocks, include_marginalia=False)
    assert "ACME Ltd" not in body and not body.endswith("1") and body.startswith("# Invoice")


def test_plain_text_rendering():
    blocks = to_blocks(ELEMENTS, (560, 560), (560, 560))
    assert page_text(blocks) == "ACME Ltd\n\nInvoice\n\nItem\tQty\nPen\t2 pcs\n\nE = mc^2\n\nPaid in full.\n\n1"
    assert page_text(blocks, include_marginalia=False).startswith("Invoice")
    assert html_table_text("<table><tr><td>a</td></tr></table>") == "a"
    mixed = Block(text=f"## Totals\n{TABLE}", format=TextFormat.MARKDOWN)
    assert plain_text(mixed) == "Totals\nItem\tQty\nPen\t2 pcs"
