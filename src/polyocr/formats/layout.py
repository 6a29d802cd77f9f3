"""The geometry every positioned format (searchable PDF, hOCR, ALTO) is written from.

Engines report text at different granularities: Tesseract gives blocks with lines with words, each
boxed; RapidOCR gives boxed paragraphs whose lines are separated by newlines; VLM engines give boxed
(or unboxed) blocks of Markdown, HTML or LaTeX. `page_regions` turns any of them into regions of
lines of words, all boxed in page pixels, so the writers never need to know which engine ran:

- words and lines the engine boxed are kept as they are (`synthetic` False);
- a block without lines is spread over its box: its text is wrapped into as many lines as a box of
  that shape holds for that much text (a line about twice as tall as a character is wide), and each
  line's width is shared among its words by their length (`synthetic` True);
- blocks without a box share the page's height in reading order.
"""

from __future__ import annotations

import html
import math
import re
from dataclasses import dataclass, field

from polyocr.results import Block, PageResult, PageStatus, TextFormat

Box = tuple[float, float, float, float]

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ufffe\uffff]")

# A Latin or Cyrillic character of body text is about half as wide as its line is tall.
CHAR_ASPECT = 0.5


@dataclass
class Word:
    text: str
    bbox: Box
    confidence: float | None = None

    def __post_init__(self) -> None:
        # Control characters are not allowed in XML and mean nothing in a text layer.
        self.text = _CONTROL.sub("", self.text)


@dataclass
class Line:
    bbox: Box
    words: list[Word] = field(default_factory=list)
    synthetic: bool = False

    @property
    def text(self) -> str:
        return " ".join(word.text for word in self.words)


@dataclass
class Region:
    """One block of the page: `kind` is text, table, formula or picture; a table's lines are its rows."""

    block: Block
    bbox: Box
    kind: str
    lines: list[Line] = field(default_factory=list)

    @property
    def synthetic(self) -> bool:
        return any(line.synthetic for line in self.lines)


def page_regions(result: PageResult) -> list[Region]:
    """Every block of the page with text or a picture, as boxed lines of boxed words."""
    width, height = max(1, result.width), max(1, result.height)
    blocks = [b for b in result.blocks if b.category == "Picture" or display_text(b).strip() or _has_words(b)]
    unboxed = [b for b in blocks if not _valid(b.bbox)]
    bands = _bands(len(unboxed), width, height)
    regions = []
    for block in blocks:
        bbox = _clip(block.bbox, width, height) if _valid(block.bbox) else bands.pop(0)
        kind = _kind(block)
        region = Region(block=block, bbox=bbox, kind=kind)
        if kind != "picture":
            region.lines = _lines(block, bbox, kind, width, height)
        regions.append(region)
    return regions


def _valid(bbox: Box | None) -> bool:
    return bbox is not None and bbox[2] > bbox[0] and bbox[3] > bbox[1]


def _clip(bbox: Box | None, width: float, height: float) -> Box:
    assert bbox is not None  # callers pass only boxes _valid() accepted
    x1, y1, x2, y2 = bbox
    x1, x2 = max(0.0, min(x1, width)), max(0.0, min(x2, width))
    y1, y2 = max(0.0, min(y1, height)), max(0.0, min(y2, height))
    if x2 <= x1:
        x2 = min(width, x1 + 1)
        x1 = x2 - 1
    if y2 <= y1:
        y2 = min(height, y1 + 1)
        y1 = y2 - 1
    return (x1, y1, x2, y2)


def _bands(count: int, width: float, height: float) -> list[Box]:
    """Unboxed blocks share the page: equal horizontal bands inside a 5% margin, in reading order."""
    if count == 0:
        return []
    mx, my = width * 0.05, height * 0.05
    step = (height - 2 * my) / count
    return [(mx, my + i * step, width - mx, my + (i + 1) * step) for i in range(count)]


def _kind(block: Block) -> str:
    if block.category == "Picture":
        return "picture"
    if block.category == "Table":
        return "table"
    if block.category == "Formula" or block.format == TextFormat.LATEX:
        return "formula"
    return "text"


def _has_words(block: Block) -> bool:
    return any(child.text.strip() for child in block.children)


def _lines(block: Block, bbox: Box, kind: str, width: float, height: float) -> list[Line]:
    boxed = [c for c in block.children if c.category == "Line" and _valid(c.bbox) and c.text.strip()]
    if boxed:
        return [_boxed_line(line, width, height) for line in boxed]
    words = [c for c in block.children if c.category == "Word" and _valid(c.bbox) and c.text.strip()]
    if words:
        line_box = _union([_clip(w.bbox, width, height) for w in words])
        return [
            Line(
                bbox=line_box,
                words=[Word(w.text.strip(), _clip(w.bbox, width, height), w.confidence) for w in words],
            )
        ]
    rows = [row for row in display_text(block).splitlines() if row.strip()]
    if kind == "text":
        rows = _wrap(rows, bbox)
    return _spread(rows, bbox, block.confidence)


def _boxed_line(line: Block, width: float, height: float) -> Line:
    bbox = _clip(line.bbox, width, height)
    words = [w for w in line.children if w.category == "Word" and _valid(w.bbox) and w.text.strip()]
    if words:
        return Line(bbox=bbox, words=[Word(w.text.strip(), _clip(w.bbox, width, height), w.confidence) for w in words])
    spread = _spread([line.text.strip()], bbox, line.confidence)
    return spread[0]


def _wrap(rows: list[str], bbox: Box) -> list[str]:
    """Rows re-broken into the number of lines a box of this shape holds for this much text.

    With n characters in k lines of a w x h box, a character is w*k/n wide and h/k tall; setting
    its width to CHAR_ASPECT times its height gives k = sqrt(CHAR_ASPECT * h * n / w). Text that
    already has at least that many rows (RapidOCR's paragraphs, a VLM's list) is kept as it is.
    """
    text = " ".join(rows)
    chars = len(text)
    w, h = bbox[2] - bbox[0], bbox[3] - bbox[1]
    if not chars or w <= 0:
        return rows
    target = max(1, round(math.sqrt(CHAR_ASPECT * h * chars / w)))
    if len(rows) >= target:
        return rows
    words = text.split()
    per_line = chars / target
    lines: list[str] = []
    current: list[str] = []
    length = 0
    for word in words:
        if current and length + len(word) > per_line and len(lines) < target - 1:
            lines.append(" ".join(current))
            current, length = [], 0
        current.append(word)
        length += len(word) + 1
    if current:
        lines.append(" ".join(current))
    return lines


def _spread(rows: list[str], bbox: Box, confidence: float | None) -> list[Line]:
    """Rows stacked evenly in the box; each row's words share its width by their length."""
    if not rows:
        return []
    x1, y1, x2, y2 = bbox
    step = (y2 - y1) / len(rows)
    lines = []
    for index, row in enumerate(rows):
        top, bottom = y1 + index * step, y1 + (index + 1) * step
        tokens = row.split()
        total = sum(len(t) for t in tokens) + max(0, len(tokens) - 1)
        unit = (x2 - x1) / max(1, total)
        words, x = [], x1
        for token in tokens:
            right = x + len(token) * unit
            words.append(Word(token, (x, top, right, bottom), confidence))
            x = right + unit
        lines.append(Line(bbox=(x1, top, x2, bottom), words=words, synthetic=True))
    return lines


def _union(boxes: list[Box]) -> Box:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


_TAG = re.compile(r"<[^>]+>")
_ROW_END = re.compile(r"</tr\s*>|<br\s*/?>|</p\s*>|</h\d\s*>|</li\s*>", re.IGNORECASE)
_CELL_END = re.compile(r"</t[dh]\s*>", re.IGNORECASE)
_MD_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")


def display_text(block: Block) -> str:
    """A block's text as it reads on the page, one visual line (or table row) per line.

    HTML (tables from VLMs) loses its tags with a row per line and cells separated by spaces;
    Markdown loses its heading marks, emphasis and table rules; LaTeX is kept as written (formats
    without a formula structure carry it as text).
    """
    text = block.text
    if block.format == TextFormat.HTML or (block.category == "Table" and "<t" in text.lower()):
        text = _CELL_END.sub(" ", _ROW_END.sub("\n", text))
        text = html.unescape(_TAG.sub("", text))
    elif block.format == TextFormat.MARKDOWN:
        text = _plain_markdown(text)
    elif block.format == TextFormat.LATEX or block.category == "Formula":
        text = text.strip().removeprefix("$$").removesuffix("$$").strip()
    return "\n".join(" ".join(line.split()) for line in text.splitlines())


def _plain_markdown(text: str) -> str:
    if "<t" in text.lower() and "</t" in text.lower():
        text = _CELL_END.sub(" ", _ROW_END.sub("\n", text))
        text = html.unescape(_TAG.sub("", text))
    lines = []
    for line in text.splitlines():
        if _MD_TABLE_RULE.match(line):
            continue
        stripped = line.strip()
        if stripped.startswith("|"):
            stripped = " ".join(cell.strip() for cell in stripped.strip("|").split("|"))
        stripped = re.sub(r"^#{1,6}\s+", "", stripped)
        stripped = re.sub(r"(\*\*|__)(.+?)\1", r"\2", stripped)
        stripped = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"\1", stripped)
        stripped = stripped.replace("$$", "").replace("`", "")
        lines.append(stripped)
    return "\n".join(lines)


def placement_note(result: PageResult) -> str | None:
    """A line saying how much of a page's positioned text is estimated rather than recognised
    (None when every word has its engine's box), for the user of a searchable PDF, hOCR or ALTO."""
    if result.status == PageStatus.FAILED:
        return None
    regions = [r for r in page_regions(result) if r.kind != "picture"]
    unboxed = sum(1 for b in result.blocks if b.category != "Picture" and not _valid(b.bbox) and b.text.strip())
    spread = sum(1 for r in regions if r.synthetic)
    where = f"{result.source} page {result.page}" if result.source else f"page {result.page}"
    engine = result.engine or "the engine"
    total = len(regions)
    if unboxed:
        return f"{where}: {engine} gave no box for {unboxed} of {total} block(s); their text is spread over the page"
    if spread:
        return f"{where}: {engine} gave no word boxes for {spread} of {total} block(s); words spread over the block"
    return None


def polyocr_version() -> str:
    """polyocr's version without importing the package root (which imports the formats)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("polyocr")
    except PackageNotFoundError:
        return "0+unknown"


def page_text(result: PageResult) -> str:
    """The text a positioned format carries for the page: its lines' words in order."""
    return "\n".join(line.text for region in page_regions(result) for line in region.lines)
