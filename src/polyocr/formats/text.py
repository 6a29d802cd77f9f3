"""Plain text in reading order."""

from __future__ import annotations

from collections.abc import Iterable

from polyocr.results import Block

# Layout elements that carry no running text.
NON_TEXT = frozenset({"Picture"})
MARGINALIA = frozenset({"Page-header", "Page-footer"})


def blocks_to_text(blocks: Iterable[Block], *, include_marginalia: bool = True) -> str:
    """Join block texts in the order given (engines emit reading order), one blank line between."""
    parts = []
    for block in blocks:
        if block.category in NON_TEXT or (not include_marginalia and block.category in MARGINALIA):
            continue
        text = block.text.strip()
        if text:
            parts.append(text)
    return "\n\n".join(parts)
