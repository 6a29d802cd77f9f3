"""Writes src/polyocr/data/glyphless.ttf: the font of polyocr's invisible PDF text layers.

A TrueType font with one glyph (GID 1, advance 500/1000 em, ascent 800, descent -200) whose outline
is its whole cell: the text layer draws it in render mode 3 (invisible), maps every CID to it
(CIDToGIDMap) and carries the Unicode text through ToUnicode, the approach of Tesseract's pdf.ttf
and OCRmyPDF's Occulta font: any script (Cyrillic included) is searchable and copyable, nothing is
ever painted, and the font costs under a kilobyte per file. The outline is not empty because
pdfium drops a text object of a single glyph whose outline is (a one-letter word vanished).
Run: python tools/make_glyphless_font.py (needs fontTools).
"""

from pathlib import Path

from fontTools.fontBuilder import FontBuilder
from fontTools.pens.ttGlyphPen import TTGlyphPen

OUT = Path(__file__).resolve().parents[1] / "src" / "polyocr" / "data" / "glyphless.ttf"


def build() -> bytes:
    fb = FontBuilder(1000, isTTF=True)
    names = [".notdef", "cell"]
    fb.setupGlyphOrder(names)
    fb.setupCharacterMap({0x20: "cell"})
    pen = TTGlyphPen(None)
    pen.moveTo((0, -200))
    pen.lineTo((0, 800))
    pen.lineTo((500, 800))
    pen.lineTo((500, -200))
    pen.closePath()
    fb.setupGlyf({".notdef": TTGlyphPen(None).glyph(), "cell": pen.glyph()})
    fb.setupHorizontalMetrics({name: (500, 0) for name in names})
    fb.setupHorizontalHeader(ascent=800, descent=-200)
    fb.setupNameTable({"familyName": "GlyphLessFont", "styleName": "Regular"})
    fb.setupOS2(sTypoAscender=800, sTypoDescender=-200, usWinAscent=800, usWinDescent=200, fsType=0)
    fb.setupPost()
    import io

    buffer = io.BytesIO()
    fb.save(buffer)
    return buffer.getvalue()


if __name__ == "__main__":
    OUT.write_bytes(build())
    print(f"{OUT}: {OUT.stat().st_size} bytes")
