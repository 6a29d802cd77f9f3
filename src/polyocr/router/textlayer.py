"""The OCR sample that decides whether an invisible text layer (someone's earlier OCR) is good enough.

A page whose layer is drawn invisibly is in doubt: it may be a careful OCR or a poor one. Rather
than OCR the whole page, the router reads a strip of SAMPLE_LINES of the layer's lines from the
middle of the page through its own chain and compares the two: at a CER of at most SAMPLE_MAX_CER
the layer is taken, otherwise the page is OCRed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from rapidfuzz.distance import Levenshtein

from polyocr.documents import Page
from polyocr.documents.textlayer import Verdict, blocks
from polyocr.results import PageStatus

if TYPE_CHECKING:
    from polyocr.router.router import Router

SAMPLE_LINES = 5
SAMPLE_MAX_CER = 0.05


def sample_invisible_layer(router: Router, page: Page, verdict: Verdict) -> Verdict:
    """The verdict on an invisible layer after OCRing a strip of the page and comparing."""
    assert page.text_layer is not None
    lines = [line for block in blocks(page.text_layer) for line in block.children]
    if not lines:
        return verdict
    start = max(0, len(lines) // 2 - SAMPLE_LINES // 2)
    boxes = [line.bbox for line in lines[start : start + SAMPLE_LINES] if line.bbox is not None]
    if not boxes:
        return verdict
    pad = max(4.0, 0.3 * (boxes[0][3] - boxes[0][1]))
    x1 = max(0, min(box[0] for box in boxes) - pad)
    y1 = max(0, min(box[1] for box in boxes) - pad)
    x2 = min(page.image.width, max(box[2] for box in boxes) + pad)
    y2 = min(page.image.height, max(box[3] for box in boxes) + pad)
    # Every layer line whose middle lies in the strip, so a line the sample also reads is compared.
    inside = [line.text for line in lines if line.bbox is not None and y1 <= (line.bbox[1] + line.bbox[3]) / 2 <= y2]
    strip = Page(
        image=page.image.crop((round(x1), round(y1), round(x2), round(y2))),
        number=page.number,
        source=page.source,
        dpi=page.dpi,
    )
    result = router.recognize_page(strip)
    if result.status == PageStatus.FAILED:
        return replace(verdict, reason=verdict.reason + "; the OCR sample failed, so the whole page is OCRed")
    expected, found = " ".join(" ".join(inside).split()), " ".join(result.text.split())
    distance = Levenshtein.distance(expected, found) / max(1, len(expected))
    what = f"an OCR sample of {len(inside)} line(s) by {result.engine} differs from the layer by CER {distance:.3f}"
    if distance <= SAMPLE_MAX_CER:
        return Verdict(True, "ok", f"invisible OCR layer kept: {what}")
    return replace(verdict, reason=f"invisible OCR layer of poor quality: {what}; OCRing the page")
