"""PDFs for the format and text-layer tests, made on the spot from the development set's pages.

- born_digital_pdf: real text (dev-set ground truth) set in DejaVu Sans by fpdf2, one page per text;
- scanned_pdf: page images only (no text), as a scanner writes them;
- garbage_layer: a copy whose fonts' ToUnicode maps every glyph into the private-use area, as
  PDFs with broken font encodings read.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

from PIL import Image

DEJAVU = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
SHARED = Path(__file__).resolve().parents[2] / "shared"
EVAL = SHARED / "data" / "eval"


def font_chars(path: Path = DEJAVU) -> set[str]:
    from fontTools.ttLib import TTFont

    with TTFont(path) as font:
        return {chr(code) for code in font.getBestCmap()}


def dev_text(relative: str, limit: int = 1400) -> str:
    """The start of a dev-set ground truth, cut at a line end, with the characters DejaVu Sans lacks
    dropped (so the text set in the PDF is exactly the text returned)."""
    text = (EVAL / relative).read_text(encoding="utf-8")
    have = font_chars()
    text = "".join(ch for ch in text if ch in have or ch == "\n")
    cut = text[:limit]
    return cut[: cut.rfind("\n")] if "\n" in cut else cut


def born_digital_pdf(path: Path, texts: list[str], *, size: float = 10.5, rule: bool = False) -> Path:
    """One page per text; `rule`: a line drawn under the text's first line too (a page that draws
    more than text, so its ink is looked at)."""
    from fpdf import FPDF

    pdf = FPDF(unit="pt", format="A4")
    pdf.set_auto_page_break(False)
    pdf.add_font("dejavu", fname=str(DEJAVU))
    pdf.set_font("dejavu", size=size)
    pdf.set_margins(56, 56, 56)
    for text in texts:
        pdf.add_page()
        pdf.multi_cell(0, size * 1.3, text)
        if rule:
            pdf.line(56, 56 + size * 1.35, 539, 56 + size * 1.35)
    pdf.output(str(path))
    return path


def scanned_pdf(path: Path, images: list[Image.Image], dpi: float = 300) -> Path:
    """An image-only PDF (Pillow's writer: one JPEG-free Flate image per page)."""
    frames = [image.convert("RGB") for image in images]
    frames[0].save(path, "PDF", resolution=dpi, save_all=True, append_images=frames[1:])
    return path


def garbage_layer(source: Path, target: Path) -> Path:
    import pikepdf

    cmap = b"""/CIDInit /ProcSet findresource begin 12 dict begin begincmap
/CMapName /Garbage def /CMapType 2 def
1 begincodespacerange <0000> <FFFF> endcodespacerange
1 beginbfrange <0000> <1FFF> <E000> endbfrange
endcmap CMapName currentdict /CMap defineresource pop end end
"""
    with pikepdf.open(source) as pdf:
        for page in pdf.pages:
            for _, font in page.Resources.get("/Font", {}).items():
                font.ToUnicode = pdf.make_stream(cmap)
        pdf.save(target)
    return target


def normalise(text: str) -> str:
    return " ".join(text.split())


# pdfium joins a word hyphenated at a line end to the next line, marking the hyphen U+FFFE (or 2).
PDFIUM_HYPHEN = re.compile("[\ufffe\x02]")


def pdf_text(path: Path | bytes, index: int = 0) -> str:
    """The page's text as pdfium extracts it, with its line-end hyphen marks back to hyphen + break."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(path if isinstance(path, Path) else io.BytesIO(path))
    try:
        return PDFIUM_HYPHEN.sub("-\n", pdf[index].get_textpage().get_text_range())
    finally:
        pdf.close()
