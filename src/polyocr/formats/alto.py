"""ALTO 4.4 (https://www.loc.gov/standards/alto/): the layout and text of every page, in pixels.

Page > PrintSpace > TextBlock > TextLine > String (+ SP between words), with HPOS/VPOS/WIDTH/HEIGHT
and WC (word confidence, 0-1) where the engine gave one. Tables are a ComposedBlock TYPE="table"
holding one TextBlock per row, pictures an Illustration, formulas a TextBlock carrying the LaTeX
as text (ALTO has no formula structure). The Description names each engine that read a page as a
Processing step, and each Page refers to its engine's step. Validated against the official XSD in
tests/test_formats_positioned.py.
"""

from __future__ import annotations

from datetime import UTC, datetime
from xml.sax.saxutils import escape, quoteattr

from polyocr.formats.layout import Box, Line, page_regions, polyocr_version
from polyocr.results import DocumentResult, PageResult, PageStatus

NAMESPACE = "http://www.loc.gov/standards/alto/ns-v4#"
SCHEMA_LOCATION = "http://www.loc.gov/standards/alto/v4/alto-4-4.xsd"


def _pos(box: Box) -> str:
    x1, y1, x2, y2 = box
    return f'HPOS="{round(x1)}" VPOS="{round(y1)}" WIDTH="{max(1, round(x2 - x1))}" HEIGHT="{max(1, round(y2 - y1))}"'


def render_alto(doc: DocumentResult) -> str:
    engines = sorted({p.engine for p in doc.pages if p.engine})
    ids = {name: f"PROC_{i}" for i, name in enumerate(engines, start=1)}
    now = datetime.now(UTC).replace(microsecond=0).isoformat()
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<alto xmlns="{NAMESPACE}" xmlns:xlink="http://www.w3.org/1999/xlink"',
        '      xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"',
        f'      xsi:schemaLocation="{NAMESPACE} {SCHEMA_LOCATION}" SCHEMAVERSION="4.4">',
        "<Description>",
        "<MeasurementUnit>pixel</MeasurementUnit>",
        f"<sourceImageInformation><fileName>{escape(doc.source)}</fileName></sourceImageInformation>",
    ]
    for name, pid in ids.items():
        out += [
            f'<Processing ID="{pid}">',
            "<processingCategory>contentGeneration</processingCategory>",
            f"<processingDateTime>{now}</processingDateTime>",
            f"<processingStepDescription>{escape(_describe(name))}</processingStepDescription>",
            "<processingSoftware>",
            "<softwareCreator>polyocr</softwareCreator>",
            f"<softwareName>polyocr {escape(name)}</softwareName>",
            f"<softwareVersion>{escape(polyocr_version())}</softwareVersion>",
            "</processingSoftware>",
            "</Processing>",
        ]
    out += ["</Description>", "<Layout>"]
    for index, page in enumerate(doc.pages, start=1):
        out += _page(page, index, ids)
    out += ["</Layout>", "</alto>", ""]
    return "\n".join(out)


def _describe(engine: str) -> str:
    if engine == "text-layer":
        return "text read from the PDF's own text layer (pypdfium2)"
    return f"OCR by the {engine} engine through polyocr's router"


def _page(page: PageResult, index: int, ids: dict[str, str]) -> list[str]:
    n = page.page
    attrs = f'ID="page_{n}" PHYSICAL_IMG_NR="{index}" WIDTH="{page.width}" HEIGHT="{page.height}"'
    if page.engine in ids:
        attrs += f' PROCESSING="{ids[page.engine]}"'
    if page.status == PageStatus.FAILED:
        detail = "; ".join(page.errors) or "failed on every engine"
        return [f'<Page {attrs} QUALITY="Missing" QUALITY_DETAIL={quoteattr(detail)}/>']
    regions = page_regions(page)
    out = [f"<Page {attrs}>", f'<PrintSpace HPOS="0" VPOS="0" WIDTH="{page.width}" HEIGHT="{page.height}">']
    for b, region in enumerate(regions, start=1):
        rid = f"p{n}_b{b}"
        if region.kind == "picture":
            out.append(f'<Illustration ID="{rid}" {_pos(region.bbox)}/>')
        elif region.kind == "table":
            out.append(f'<ComposedBlock ID="{rid}" {_pos(region.bbox)} TYPE="table">')
            for r, row in enumerate(region.lines, start=1):
                out.append(f'<TextBlock ID="{rid}_r{r}" {_pos(row.bbox)}>')
                out += _line(row, f"{rid}_r{r}_l1")
                out.append("</TextBlock>")
            out.append("</ComposedBlock>")
        else:
            if not region.lines:
                continue
            out.append(f'<TextBlock ID="{rid}" {_pos(region.bbox)}>')
            for i, line in enumerate(region.lines, start=1):
                out += _line(line, f"{rid}_l{i}")
            out.append("</TextBlock>")
    out += ["</PrintSpace>", "</Page>"]
    return out


def _line(line: Line, lid: str) -> list[str]:
    out = [f'<TextLine ID="{lid}" {_pos(line.bbox)}>']
    previous = None
    for w, word in enumerate(line.words, start=1):
        if previous is not None:
            gap_start = previous.bbox[2]
            width = max(0.0, word.bbox[0] - gap_start)
            out.append(f'<SP HPOS="{round(gap_start)}" VPOS="{round(line.bbox[1])}" WIDTH="{round(width)}"/>')
        wc = f' WC="{max(0.0, min(1.0, word.confidence)):.2f}"' if word.confidence is not None else ""
        out.append(f'<String ID="{lid}_w{w}" {_pos(word.bbox)} CONTENT={quoteattr(word.text)}{wc}/>')
        previous = word
    out.append("</TextLine>")
    return out
