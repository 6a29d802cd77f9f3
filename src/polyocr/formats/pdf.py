"""Searchable PDF: each page as it looks, with the recognised text in an invisible layer on top.

- Image inputs: every page image at its own resolution (lossless: 1-bit, grey or RGB, Flate), the
  page sized from the image's DPI (300 where the file gives none).
- PDF inputs: the original file's pages are kept as they are (content streams, fonts, vector
  graphics, size) and only pages that were OCRed get a text layer; pages read from their own text
  layer (engine "text-layer") and failed pages are left untouched. The original content streams are
  bracketed by q/Q in two new streams, never rewritten.

The text is drawn in render mode 3 (invisible) with a glyphless font (src/polyocr/data/glyphless.ttf,
made by tools/make_glyphless_font.py): every CID maps to one empty glyph and ToUnicode maps each
UTF-16 code to itself, so any script, Cyrillic included, is searchable and copyable; the approach
of Tesseract's and OCRmyPDF's renderers. Each word is set at its own box: font size = box height,
baseline at 20% of it (the font's descent), horizontal scaling so its advance is the box width,
and a space glyph after it so extracted text keeps word breaks. Blocks that come with
no word boxes (VLM engines) are spread over their box by formats.layout.

`pdfa=True` (image inputs only) writes PDF/A-2b metadata with pikepdf (XMP pdfaid part 2 / conformance B, an sRGB
OutputIntent from Pillow's built-in profile; fonts are embedded, nothing is transparent or
encrypted). It is done on the file polyocr writes rather than by Ghostscript, whose pdfwrite
re-encodes every image and re-creates the fonts (OCRmyPDF works around both); it is not validated
by veraPDF here (none on the machine).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from polyocr.formats.atomic import atomic_path
from polyocr.formats.hocr import hocr_language
from polyocr.formats.layout import Line, page_regions, polyocr_version
from polyocr.results import DocumentResult, PageResult, PageStatus

DEFAULT_IMAGE_DPI = 300.0
DESCENT = 0.2  # of the font size, below the baseline: the glyphless font's descent (200/1000 em)
ADVANCE = 0.5  # of the font size: the glyph's advance (500/1000 em)
TEXT_LAYER_ENGINE = "text-layer"


@dataclass
class PageImage:
    """A page image encoded for a PDF image XObject, kept instead of the decoded pixels."""

    width: int
    height: int
    dpi: float
    bits: int
    colour_space: str  # /DeviceGray or /DeviceRGB
    data: bytes  # Flate-compressed samples

    @classmethod
    def encode(cls, image: Image.Image, dpi: float | None = None) -> PageImage:
        """Lossless and as small as the content allows: 1 bit for black-and-white, grey, then RGB."""
        rgb = image.convert("RGB")
        pixels = np.asarray(rgb)
        grey = bool((pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 1] == pixels[..., 2]).all())
        if grey:
            values = pixels[..., 0]
            if np.isin(values, (0, 255)).all():
                raw, bits = Image.fromarray(values).convert("1").tobytes(), 1
            else:
                raw, bits = values.tobytes(), 8
            space = "/DeviceGray"
        else:
            raw, bits, space = pixels.tobytes(), 8, "/DeviceRGB"
        return cls(rgb.width, rgb.height, float(dpi or DEFAULT_IMAGE_DPI), bits, space, zlib.compress(raw, 6))


@cache
def _font_bytes() -> bytes:
    return resources.files("polyocr").joinpath("data/glyphless.ttf").read_bytes()


_TO_UNICODE = b"""/CIDInit /ProcSet findresource begin
12 dict begin
begincmap
/CIDSystemInfo << /Registry (Adobe) /Ordering (UCS) /Supplement 0 >> def
/CMapName /Adobe-Identity-UCS def
/CMapType 2 def
1 begincodespacerange
<0000> <FFFF>
endcodespacerange
1 beginbfrange
<0000> <FFFF> <0000>
endbfrange
endcmap
CMapName currentdict /CMap defineresource pop
end
end
"""


def _make_font(pdf):
    """The glyphless Type0 font, added to `pdf` once and shared by every page."""
    import pikepdf
    from pikepdf import Array, Dictionary, Name

    font_file = pikepdf.Stream(pdf, _font_bytes())
    font_file.Length1 = len(_font_bytes())
    descriptor = Dictionary(
        Type=Name.FontDescriptor,
        FontName=Name("/GlyphLessFont"),
        Flags=4,  # symbolic
        FontBBox=Array([0, -200, 500, 800]),
        ItalicAngle=0,
        Ascent=800,
        Descent=-200,
        CapHeight=800,
        StemV=80,
        FontFile2=pdf.make_indirect(font_file),
    )
    cid_to_gid = pikepdf.Stream(pdf, zlib.compress(b"\x00\x01" * 65536), Filter=Name.FlateDecode)
    cid_font = Dictionary(
        Type=Name.Font,
        Subtype=Name.CIDFontType2,
        BaseFont=Name("/GlyphLessFont"),
        CIDSystemInfo=Dictionary(Registry=pikepdf.String("Adobe"), Ordering=pikepdf.String("Identity"), Supplement=0),
        FontDescriptor=pdf.make_indirect(descriptor),
        DW=500,
        CIDToGIDMap=pdf.make_indirect(cid_to_gid),
    )
    to_unicode = pikepdf.Stream(pdf, zlib.compress(_TO_UNICODE), Filter=Name.FlateDecode)
    font = Dictionary(
        Type=Name.Font,
        Subtype=Name.Type0,
        BaseFont=Name("/GlyphLessFont"),
        Encoding=Name("/Identity-H"),
        DescendantFonts=Array([pdf.make_indirect(cid_font)]),
        ToUnicode=pdf.make_indirect(to_unicode),
    )
    return pdf.make_indirect(font)


def _hex(text: str) -> str:
    return "<" + text.encode("utf-16-be").hex().upper() + ">"


def _num(value: float) -> str:
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def text_layer(result: PageResult, font: str, scale: float, height_pt: float) -> bytes:
    """The invisible text of one page as content-stream operators, in the page's display space.

    `scale` is points per pixel (72 / the resolution the page was read at) and `height_pt` the
    displayed page height, since PDF's y axis points up and the result's down.
    """
    ops = ["BT", "3 Tr"]
    for region in page_regions(result):
        for line in region.lines:
            ops += _line_ops(line, font, scale, height_pt)
    ops.append("ET")
    return ("\n".join(ops) + "\n").encode("ascii")


def _line_ops(line: Line, font: str, scale: float, height_pt: float) -> list[str]:
    """One Tj per word, the word followed by a space (but the last): the word's glyphs share its
    box's width, and the space takes one more glyph's width past it, so extractors see word breaks
    and each word's characters keep exactly its box."""
    words = [word for word in line.words if word.text]
    ops = []
    for index, word in enumerate(words):
        x1, y1, x2, y2 = word.bbox
        ops.append(_run(word.text, index < len(words) - 1, x1, y1, x2 - x1, y2 - y1, font, scale, height_pt))
    return ops


def _run(
    text: str, space: bool, x: float, top: float, width: float, height: float, font: str, scale: float, page_h: float
) -> str:
    size = max(height * scale, 1.0)  # pdfium drops characters set smaller than about a point
    units = len(text.encode("utf-16-be")) // 2
    stretch = 100.0 * max(width * scale, 0.1) / (ADVANCE * size * units)
    baseline = page_h - (top + height) * scale + DESCENT * size
    shown = _hex(text + " " if space else text)
    return f"{font} {_num(size)} Tf {_num(stretch)} Tz 1 0 0 1 {_num(x * scale)} {_num(baseline)} Tm {shown} Tj"


def _rotation_matrix(rotate: int, box: tuple[float, float, float, float]) -> str:
    """Maps the page's displayed space (origin bottom-left, after /Rotate) onto its user space."""
    x0, y0, x1, y1 = box
    w = x1 - x0
    matrices = {
        0: (1, 0, 0, 1, x0, y0),
        90: (0, 1, -1, 0, x0 + w, y0),
        180: (-1, 0, 0, -1, x1, y1),
        270: (0, -1, 1, 0, x0, y1),
    }
    return " ".join(_num(v) for v in matrices[rotate % 360]) + " cm"


def _metadata(pdf, doc: DocumentResult, title: str | None, pdfa: bool) -> None:
    import pikepdf

    # A PDF input keeps its own title and language; polyocr's file gets the source's name.
    title = title or str(pdf.docinfo.get("/Title", "")) or Path(doc.source).stem
    producer = f"polyocr {polyocr_version()}"
    engines = ", ".join(sorted({p.engine for p in doc.pages if p.engine})) or "none"
    lang = str(pdf.Root.get("/Lang", "")) or hocr_language(doc.pages[0] if doc.pages else None)
    if lang:
        pdf.Root.Lang = pikepdf.String(lang)
    now = datetime.now(UTC).replace(microsecond=0)
    with pdf.open_metadata(set_pikepdf_as_editor=False, update_docinfo=True) as meta:
        meta["dc:title"] = title
        meta["pdf:Producer"] = producer
        meta["xmp:CreatorTool"] = f"{producer} ({engines})"
        meta["xmp:MetadataDate"] = now.isoformat()
        if lang:
            meta["dc:language"] = [lang]
        if pdfa:
            meta["pdfaid:part"] = "2"
            meta["pdfaid:conformance"] = "B"
    pdf.docinfo["/Title"] = title
    pdf.docinfo["/Producer"] = producer
    pdf.docinfo["/Creator"] = f"{producer} ({engines})"
    if pdfa:
        _output_intent(pdf)


def _output_intent(pdf) -> None:
    import pikepdf
    from PIL import ImageCms

    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    icc = pikepdf.Stream(pdf, zlib.compress(profile), Filter=pikepdf.Name.FlateDecode, N=3)
    intent = pikepdf.Dictionary(
        Type=pikepdf.Name.OutputIntent,
        S=pikepdf.Name.GTS_PDFA1,
        OutputConditionIdentifier=pikepdf.String("sRGB"),
        Info=pikepdf.String("sRGB IEC61966-2.1"),
        DestOutputProfile=pdf.make_indirect(icc),
    )
    pdf.Root.OutputIntents = pikepdf.Array([pdf.make_indirect(intent)])


def _image_page(pdf, image: PageImage, result: PageResult | None, font, font_name: str) -> None:
    import pikepdf
    from pikepdf import Name

    scale = 72.0 / image.dpi
    width_pt, height_pt = image.width * scale, image.height * scale
    xobject = pikepdf.Stream(
        pdf,
        image.data,
        Type=Name.XObject,
        Subtype=Name.Image,
        Width=image.width,
        Height=image.height,
        ColorSpace=Name(image.colour_space),
        BitsPerComponent=image.bits,
        Filter=Name.FlateDecode,
    )
    content = f"q {_num(width_pt)} 0 0 {_num(height_pt)} 0 0 cm /Im0 Do Q\n".encode()
    resources = pikepdf.Dictionary(XObject=pikepdf.Dictionary(Im0=pdf.make_indirect(xobject)))
    if result is not None and result.status != PageStatus.FAILED:
        resources.Font = pikepdf.Dictionary({font_name: font})
        # Boxes are in the pixels of the image as recognised; the image may have been read at another size.
        px_scale = scale * image.width / max(1, result.width)
        content += text_layer(result, font_name, px_scale, height_pt)
    page = pikepdf.Dictionary(
        Type=Name.Page,
        MediaBox=pikepdf.Array([0, 0, width_pt, height_pt]),
        Resources=resources,
        Contents=pdf.make_indirect(pikepdf.Stream(pdf, zlib.compress(content), Filter=Name.FlateDecode)),
    )
    pdf.pages.append(pikepdf.Page(page))


def needs_layer(result: PageResult) -> bool:
    """Whether a page of a PDF input gets a text layer: it was OCRed and produced text."""
    return result.status != PageStatus.FAILED and result.engine != TEXT_LAYER_ENGINE and bool(result.text.strip())


def _overlay_pdf_page(pdf, page, result: PageResult, font, dpi: float) -> None:
    """Add the text layer to an existing page without touching its own content streams."""
    import pikepdf

    left, bottom, right, top = (float(v) for v in page.cropbox)
    box = (left, bottom, right, top)
    rotate = int(page.obj.get("/Rotate", 0)) % 360
    width, height = box[2] - box[0], box[3] - box[1]
    display_h = width if rotate in (90, 270) else height
    name = page.add_resource(font, pikepdf.Name.Font, prefix="PolyOCR")
    scale = 72.0 / dpi
    layer = b"Q\nq " + _rotation_matrix(rotate, box).encode() + b"\n"
    layer += text_layer(result, str(name), scale, display_h) + b"Q\n"
    page.contents_add(pdf.make_indirect(pikepdf.Stream(pdf, b"q\n")), prepend=True)
    page.contents_add(pdf.make_indirect(pikepdf.Stream(pdf, zlib.compress(layer), Filter=pikepdf.Name.FlateDecode)))


def write_pdf(
    doc: DocumentResult,
    target: str | Path,
    *,
    images: dict[int, PageImage] | None = None,
    source_pdf: str | Path | None = None,
    dpi: float = 200.0,
    title: str | None = None,
    pdfa: bool = False,
) -> None:
    """Write the searchable PDF of `doc` to `target` atomically.

    Image inputs need `images` (page number -> PageImage); PDF inputs name the original file in
    `source_pdf` and the resolution their pages were rendered at for OCR in `dpi`. A page of an
    image input that failed keeps its image without text; a page that could not even be decoded
    is not in `doc.pages` and is left out.
    """
    import pikepdf

    results = {page.page: page for page in doc.pages}
    if source_pdf is not None and pdfa:
        # Claiming PDF/A for someone else's PDF needs a real conversion (fonts, transparency, colour):
        # that is OCRmyPDF's job; polyocr only writes PDF/A for files it builds itself.
        raise ValueError(
            "--pdfa is for image inputs; for a PDF input use "
            "`ocrmypdf --plugin polyocr.ocrmypdf_plugin --output-type pdfa IN OUT`"
        )
    if source_pdf is not None:
        pdf = pikepdf.open(source_pdf)
        font = _make_font(pdf)
        for number, page in enumerate(pdf.pages, start=1):
            result = results.get(number)
            if result is not None and needs_layer(result):
                _overlay_pdf_page(pdf, page, result, font, dpi)
    else:
        if not images:
            raise ValueError("a searchable PDF of an image input needs the page images")
        pdf = pikepdf.new()
        font = _make_font(pdf)
        for number in sorted(images):
            _image_page(pdf, images[number], results.get(number), font, "/F1")
    _metadata(pdf, doc, title, pdfa)
    with atomic_path(target) as tmp:
        pdf.save(tmp, fix_metadata_version=True, object_stream_mode=pikepdf.ObjectStreamMode.generate)
    pdf.close()


def text_only_pdf(result: PageResult, target: str | Path, *, dpi: float) -> None:
    """One page of the result's size at `dpi` carrying only the invisible text (what OCRmyPDF's
    sandwich renderer grafts onto the original page)."""
    import pikepdf
    from pikepdf import Name

    scale = 72.0 / dpi
    width_pt, height_pt = result.width * scale, result.height * scale
    pdf = pikepdf.new()
    font = _make_font(pdf)
    content = text_layer(result, "/F1", scale, height_pt) if result.status != PageStatus.FAILED else b""
    page = pikepdf.Dictionary(
        Type=Name.Page,
        MediaBox=pikepdf.Array([0, 0, width_pt, height_pt]),
        Resources=pikepdf.Dictionary(Font=pikepdf.Dictionary(F1=font)),
        Contents=pdf.make_indirect(pikepdf.Stream(pdf, zlib.compress(content), Filter=Name.FlateDecode)),
    )
    pdf.pages.append(pikepdf.Page(page))
    with atomic_path(target) as tmp:
        pdf.save(tmp)
    pdf.close()


def pdf_bytes(doc: DocumentResult, **kwargs) -> bytes:
    """The searchable PDF in memory (for the server and tests); same arguments as write_pdf."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.pdf"
        write_pdf(doc, path, **kwargs)
        return path.read_bytes()


__all__ = ["TEXT_LAYER_ENGINE", "PageImage", "needs_layer", "pdf_bytes", "text_layer", "text_only_pdf", "write_pdf"]
