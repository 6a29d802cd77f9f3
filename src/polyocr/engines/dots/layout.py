"""dots.ocr's layout JSON to Blocks, keeping whatever is usable when generation goes wrong.

The model answers layout prompts with a JSON list of {"bbox", "category", "text"} objects, boxes in
the pixels of the resized image it saw. Long pages end truncated when the token limit cuts the JSON
mid-element, and some pages loop, repeating the same element until the limit. Every complete
element is kept (in order, repeats dropped) and the parse says why the page is only partial, so
the router can decide whether that is good enough or worth a retry.

Markdown is rendered by polyocr.formats from the blocks; this module adds the plain-text form of
dots.ocr's block texts (HTML tables, Markdown emphasis) that the generic text renderer cannot know.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any

from polyocr.formats.text import blocks_to_text
from polyocr.results import LAYOUT_CATEGORIES, Block, TextFormat

CATEGORIES = LAYOUT_CATEGORIES  # the published prompt_layout_all_en list (dots/prompts.py)
_CANONICAL = {c.lower(): c for c in CATEGORIES}
_FORMATS = {"Table": TextFormat.HTML, "Formula": TextFormat.LATEX, "Picture": TextFormat.PLAIN}
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n?|\n?```\s*$")
_ELEMENT_START = re.compile(r'\{\s*"(?:bbox|category|text)"')


@dataclass
class LayoutParse:
    """The complete elements of one answer, and what was wrong with the rest."""

    elements: list[dict[str, Any]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # empty when the answer was one clean JSON list

    @property
    def partial(self) -> bool:
        return bool(self.problems)


def parse_layout(output: str) -> LayoutParse:
    """Every complete element of a layout answer, in order, with repeats removed."""
    text = _FENCE.sub("", output.strip()).strip()
    if not text:
        return LayoutParse(problems=["empty output"])
    problems: list[str] = []
    try:
        data = json.loads(text)
        items = data if isinstance(data, list) else [data]
    except ValueError:
        items, problem = _scan(text)
        problems.append(problem)
    elements: list[dict[str, Any]] = []
    seen: set[str] = set()
    repeats = skipped = 0
    for item in items:
        if not isinstance(item, dict) or not ({"bbox", "category", "text"} & item.keys()):
            skipped += 1
            continue
        key = json.dumps(item, sort_keys=True, ensure_ascii=False)
        if key in seen:
            repeats += 1
            continue
        seen.add(key)
        elements.append(item)
    if repeats:
        problems.append(f"{repeats} repeated element(s) dropped (looping output)")
    if skipped:
        problems.append(f"{skipped} item(s) that are not layout elements skipped")
    return LayoutParse(elements, problems)


def _scan(text: str) -> tuple[list[Any], str]:
    """Complete JSON objects from a list that does not parse as a whole, and why it did not."""
    decoder = json.JSONDecoder()
    match = _ELEMENT_START.search(text)
    if match is None:
        return [], "output is not layout JSON"
    items: list[Any] = []
    pos, malformed = match.start(), False
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            break
        if text[pos] == "]":
            return items, "malformed JSON list (a missing comma or text after it)"
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except ValueError:
            nxt = _ELEMENT_START.search(text, pos + 1)
            if nxt is None:
                break
            pos, malformed = nxt.start(), True
            continue
        items.append(obj)
    if malformed:
        return items, "malformed or truncated JSON; complete elements kept"
    return items, "output truncated mid-JSON (token limit?); complete elements kept"


def to_blocks(
    elements: Iterable[dict[str, Any]],
    resized_size: tuple[int, int],
    page_size: tuple[int, int],
    *,
    with_text: bool = True,
) -> list[Block]:
    """Blocks on the original page: boxes scaled from the resized image and clamped to the page."""
    sx = page_size[0] / resized_size[0]
    sy = page_size[1] / resized_size[1]
    blocks = []
    for element in elements:
        category = _category(element.get("category"))
        bbox = _box(element.get("bbox"), sx, sy, page_size)
        text = _text(element.get("text"), category) if with_text else ""
        if bbox is None and not text:
            continue
        blocks.append(
            Block(bbox=bbox, category=category, text=text, format=_FORMATS.get(category, TextFormat.MARKDOWN))
        )
    return blocks


def _category(value: Any) -> str:
    name = str(value or "Text").strip()
    return _CANONICAL.get(name.lower(), name)


def _box(value: Any, sx: float, sy: float, page_size: tuple[int, int]) -> tuple[float, float, float, float] | None:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 4:
        return None
    try:
        x1, y1, x2, y2 = (float(v) for v in value)
    except (TypeError, ValueError):
        return None
    width, height = page_size
    x1, x2 = (min(max(v * sx, 0.0), width) for v in (x1, x2))
    y1, y2 = (min(max(v * sy, 0.0), height) for v in (y1, y2))
    if x2 <= x1 or y2 <= y1:
        return None
    return round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)


def _text(value: Any, category: str) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    text = text.strip()
    if category == "Formula":
        text = _bare_latex(text)
    return text


def _bare_latex(text: str) -> str:
    """LaTeX without display delimiters, so renderers add exactly one pair."""
    for start, end in (("$$", "$$"), ("\\[", "\\]")):
        if text.startswith(start) and text.endswith(end) and len(text) >= len(start) + len(end):
            inner = text[len(start) : -len(end)].strip()
            if "$$" not in inner:
                return inner
    return text


class _TableText(HTMLParser):
    """Cell texts of an HTML table, one row per line, cells separated by tabs."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            if not self.rows:
                self.rows.append([])
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def text(self) -> str:
        return "\n".join("\t".join(row) for row in self.rows if row)


def html_table_text(html: str) -> str:
    parser = _TableText()
    parser.feed(html)
    parser.close()
    return parser.text()


_TABLE = re.compile(r"<table\b.*?</table>", re.IGNORECASE | re.DOTALL)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+", re.MULTILINE)
_EMPHASIS = re.compile(r"(\*\*|__)(.+?)\1", re.DOTALL)


def plain_text(block: Block) -> str:
    """A block's text without markup: tables as tab-separated rows, Markdown headings and bold removed.

    Formulas stay LaTeX: there is no plainer faithful form of them.
    """
    if block.format == TextFormat.HTML:
        return html_table_text(block.text)
    if block.format == TextFormat.LATEX:
        return block.text
    text = _TABLE.sub(lambda m: html_table_text(m.group(0)), block.text)
    return _EMPHASIS.sub(r"\2", _HEADING.sub("", text))


def page_text(blocks: Iterable[Block], *, include_marginalia: bool = True) -> str:
    """The page's plain text in reading order; page headers and footers can be left out."""
    plain = [block.model_copy(update={"text": plain_text(block)}) for block in blocks]
    return blocks_to_text(plain, include_marginalia=include_marginalia)


# ---------------------------------------------------------------------------- dots.mocr's other answers
#
# Scene spotting answers one instance per text: four corner points in the resized image's pixels, then
# the text: "(x1, y1), (x2, y2), (x3, y3), (x4, y4) text" (github.com/rednote-hilab/dots.mocr,
# dots_mocr/utils/layout_utils.py parse_scene_text_output at 23f3e56; an instance with empty text is
# dropped there, and the points are scaled back to the original image by the resize ratio,
# post_process_scene_text). polyocr's blocks are axis-aligned: each quadrilateral becomes its
# bounding box on the page.
_POINT = r"\(\s*(\d+)\s*,\s*(\d+)\s*\)"
_SCENE_INSTANCE = re.compile(
    rf"{_POINT}\s*,\s*{_POINT}\s*,\s*{_POINT}\s*,\s*{_POINT}\s*(.*?)(?={_POINT}|\Z)", re.DOTALL
)


def parse_scene_text(output: str) -> list[tuple[list[int], str]]:
    """The (8 corner coordinates, text) instances of a scene-spotting answer, in order."""
    found = []
    for match in _SCENE_INSTANCE.finditer(output):
        text = match.group(9).strip()
        if text:
            found.append(([int(match.group(i)) for i in range(1, 9)], text))
    return found


def scene_blocks(
    instances: Iterable[tuple[list[int], str]], resized_size: tuple[int, int], page_size: tuple[int, int]
) -> list[Block]:
    """One Text block per spotted instance, boxed by its quadrilateral's extent on the page."""
    sx = page_size[0] / resized_size[0]
    sy = page_size[1] / resized_size[1]
    blocks = []
    for points, text in instances:
        xs, ys = points[0::2], points[1::2]
        bbox = _box([min(xs), min(ys), max(xs), max(ys)], sx, sy, page_size)
        blocks.append(Block(bbox=bbox, category="Text", text=text, format=TextFormat.PLAIN))
    return blocks


# Image to SVG: the SVG element of the answer (an optional "svg:" prefix removed); an answer cut short
# has its dangling tag dropped and its open elements closed (dots_mocr/utils/svg_utils.py
# extract_svg_from_response and fix_svg at 23f3e56).
_SVG_COMPLETE = re.compile(r"<svg[^>]*>.*?</svg>", re.DOTALL)
_SVG_START = re.compile(r"<svg[^>]*>.*", re.DOTALL)
_TAG = re.compile(r"</?\s*([a-zA-Z][\w:-]*)\b[^>]*?/?>")
_OPEN_PATH_DATA = re.compile(r'<path\b[^>]*\bd="[^">]*$')
_SVG_TEXT = re.compile(r"<text\b[^>]*>(.*?)</text>", re.DOTALL)
_MARKUP = re.compile(r"<[^>]*>")


@dataclass
class SvgParse:
    svg: str = ""  # empty when the answer holds no <svg> element
    repaired: bool = False  # the answer ended inside the SVG, which was closed here


def extract_svg(output: str) -> SvgParse:
    """The answer's SVG, closed if it was cut short."""
    answer = output.replace("svg:", "").strip()
    complete = _SVG_COMPLETE.search(answer)
    if complete:
        return SvgParse(complete.group(0))
    started = _SVG_START.search(answer)
    if started is None:
        return SvgParse()
    return SvgParse(close_svg(started.group(0)), repaired=True)


def close_svg(svg: str) -> str:
    """A truncated SVG made well formed: an open path's d="..." closed, a dangling tag cut, open elements closed."""
    if _OPEN_PATH_DATA.search(svg):
        svg += '">'
    svg = re.sub(r"<[^>]*$", "", svg)
    stack: list[str] = []
    for match in _TAG.finditer(svg):
        token, name = match.group(0), match.group(1)
        if token.rstrip().endswith("/>"):
            continue
        if not token.lstrip().startswith("</"):
            stack.append(name)
        elif name in stack:
            while stack and stack[-1] != name:
                stack.pop()
            stack.pop()
    return svg + "".join(f"</{name}>" for name in reversed(stack))


def svg_text(svg: str) -> str:
    """The words an SVG draws (its <text> elements), one per line."""
    lines = (" ".join(_MARKUP.sub(" ", m.group(1)).split()) for m in _SVG_TEXT.finditer(svg))
    return "\n".join(line for line in lines if line)
