"""Markdown from layout blocks; shared by every engine that reports categories."""

from __future__ import annotations

from collections.abc import Iterable

from polyocr.formats.text import MARGINALIA
from polyocr.results import Block, TextFormat


def block_to_markdown(block: Block) -> str:
    """One block as Markdown: headings by category, formulas as display math, tables as given."""
    text = block.text.strip()
    category = block.category
    if category == "Picture":
        return ""
    if category == "Formula" or block.format == TextFormat.LATEX:
        body = text.removeprefix("$$").removesuffix("$$").strip()
        return f"$$\n{body}\n$$" if body else ""
    if not text:
        return ""
    if category == "Title":
        return text if text.startswith("#") else f"# {text}"
    if category == "Section-header":
        return text if text.startswith("#") else f"## {text}"
    if category == "List-item":
        return text if text[:1] in "-*+" or text[:2].rstrip(".").isdigit() else f"- {text}"
    if category in ("Caption", "Footnote", "Page-header", "Page-footer"):
        return f"*{text}*" if block.format == TextFormat.PLAIN else text
    return text


def blocks_to_markdown(blocks: Iterable[Block], *, include_marginalia: bool = True) -> str:
    """Blocks in reading order as Markdown; page headers and footers can be left out."""
    parts = []
    for block in blocks:
        if not include_marginalia and block.category in MARGINALIA:
            continue
        rendered = block_to_markdown(block)
        if rendered:
            parts.append(rendered)
    return "\n\n".join(parts)
