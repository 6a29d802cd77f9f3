"""Qwen3-VL 2B Instruct: the spec, its prompts, its qwenvl-html parser and its JSON grounding parser."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any

from polyocr.engines.hf.engine import HFVLMEngine
from polyocr.engines.hf.spec import QWEN_COMMON, QWEN_TEXT_PROMPTS, Size, VLMSpec, category, qwen_pixels, scale_box
from polyocr.results import Block, TextFormat


def parse_qwen3_json(output: str, size: Size) -> list[Block]:
    """Qwen3-VL grounding: a JSON list of {"bbox_2d": [x1, y1, x2, y2], "label", "text"}, relative 0..1000.

    A truncated answer still yields the objects that were complete.
    """
    body = re.sub(r"^```(?:json)?\s*|\s*```\s*$", "", output.strip())
    items: list[Any] = []
    decoder = json.JSONDecoder()
    position = body.find("{")
    while position != -1:
        try:
            item, end = decoder.raw_decode(body, position)
        except json.JSONDecodeError:
            position = body.find("{", position + 1)
            continue
        items.append(item)
        position = body.find("{", end)
    blocks = []
    for item in items:
        box = item.get("bbox_2d") if isinstance(item, dict) else None
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            continue
        label = str(item.get("label") or item.get("category") or "Text")
        blocks.append(
            Block(bbox=scale_box(box, size, 1000), category=category(label), text=str(item.get("text") or "").strip())
        )
    return blocks


# Qwen3-VL's trained document-parsing mode (QwenLM/Qwen3-VL cookbooks/document_parsing.ipynb): the
# prompt "qwenvl html" gives the page as HTML whose elements carry data-bbox="x1 y1 x2 y2" in
# relative 0..1000 coordinates.
QWENVL_HTML_PROMPT = "qwenvl html"
_HEADING = {f"h{i}": "Section-header" for i in range(2, 7)} | {"h1": "Title"}
_TAG_CATEGORY = _HEADING | {
    "p": "Text",
    "table": "Table",
    "img": "Picture",
    "figure": "Picture",
    "figcaption": "Caption",
    "caption": "Caption",
    "ul": "List-item",
    "ol": "List-item",
    "li": "List-item",
    "header": "Page-header",
    "footer": "Page-footer",
    "address": "Text",
    "blockquote": "Text",
    "code": "Text",
    "pre": "Text",
}
_VOID = {"img", "br", "hr", "meta", "input", "link"}


class _QwenvlHTML(HTMLParser):
    """Collects the outermost elements with a data-bbox: tag, class, box, text and inner HTML."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[dict[str, Any]] = []
        self._open: dict[str, Any] | None = None
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if self._open is not None:
            self._open["html"].append(self.get_starttag_text() or "")
            if tag not in _VOID:
                self._depth += 1
            if tag == "br":
                self._open["text"].append("\n")
            return
        box = [float(v) for v in re.findall(r"-?\d+(?:\.\d+)?", values.get("data-bbox") or "")]
        if len(box) < 4:
            return
        element = {"tag": tag, "class": values.get("class") or "", "box": box[:4], "text": [], "html": []}
        if tag in _VOID:
            self.elements.append(element)
            return
        self._open, self._depth = element, 0

    def handle_endtag(self, tag: str) -> None:
        if self._open is None:
            return
        if self._depth == 0:
            self.elements.append(self._open)
            self._open = None
            return
        self._depth -= 1
        self._open["html"].append(f"</{tag}>")
        if tag in ("p", "div", "li", "tr"):
            self._open["text"].append("\n")
        elif tag in ("td", "th"):
            self._open["text"].append(" ")

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._open["text"].append(data)
            self._open["html"].append(data)


def _html_category(tag: str, css: str) -> str:
    for name in css.lower().split():
        if name in ("formula", "equation"):
            return "Formula"
        if name in ("image", "chart", "figure", "picture"):
            return "Picture"
        if name in ("header", "footer", "caption", "footnote", "title"):
            return category(name)
    return _TAG_CATEGORY.get(tag, "Text")


def parse_qwenvl_html(output: str, size: Size) -> list[Block]:
    """Qwen3-VL's "qwenvl html" answer as blocks in reading order: each outermost element with a
    data-bbox (0..1000) becomes one block; tables keep their HTML, formulas their LaTeX. A truncated
    answer still yields its complete elements."""
    parser = _QwenvlHTML()
    parser.feed(re.sub(r"^```(?:html)?\s*|\s*```\s*$", "", output.strip()))
    blocks = []
    for element in parser.elements:
        label = _html_category(element["tag"], element["class"])
        if label == "Table":
            text, fmt = "<table>" + "".join(element["html"]).strip() + "</table>", TextFormat.HTML
        else:
            text = re.sub(r"[ \t]+", " ", "".join(element["text"])).strip()
            fmt = TextFormat.LATEX if label == "Formula" else TextFormat.PLAIN
        blocks.append(Block(bbox=scale_box(element["box"], size, 1000), category=label, text=text, format=fmt))
    return blocks


QWEN3VL = VLMSpec(
    name="qwen3vl",
    repo_id="Qwen/Qwen3-VL-2B-Instruct",
    description="Qwen3-VL 2B Instruct (transformers native): text, Markdown, blocks from its qwenvl html mode",
    model_class="Qwen3VLForConditionalGeneration",
    processor_class="Qwen3VLProcessor",
    module="qwen3_vl",
    prompts={
        **QWEN_TEXT_PROMPTS,
        "layout": QWENVL_HTML_PROMPT,
    },
    parse_layout=parse_qwenvl_html,
    pixel_kwargs=qwen_pixels(2048 * 32 * 32),
    notes="boxes are relative (0..1000); a page is capped at ~2.1 MP (2048 visual tokens)",
    **QWEN_COMMON,
)


class Qwen3VLEngine(HFVLMEngine):
    spec = QWEN3VL
