"""Hostile and unusual inputs, built in memory: shared by the reliability tests and
benchmarks/reliability_probe.py (which runs them against the CLI, the API and the server)."""

from __future__ import annotations

import io
import zlib

from PIL import Image, PngImagePlugin

from test_server_support import text_image, text_pdf


def bomb_pdf(pages: int = 20, side: int = 20_000) -> bytes:
    """A small PDF whose every page draws one shared side x side 1-bit image (deflated zeros).

    The file is tiny and every page passes the page-size cap, but rasterising a page makes PDFium
    decode the whole image: issue 16's 200-page, 100000x100000 bomb, scaled down for CI.
    """
    raw = zlib.compress(bytes(side * ((side + 7) // 8)), 9)
    objects: list[bytes] = []
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(pages))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode())
    objects.append(
        f"<< /Type /XObject /Subtype /Image /Width {side} /Height {side} /ColorSpace /DeviceGray "
        f"/BitsPerComponent 1 /Filter /FlateDecode /Length {len(raw)} >>\nstream\n".encode()
        + raw
        + b"\nendstream"
    )
    draw = b"q 612 0 0 792 0 0 cm /Im0 Do Q"
    for i in range(pages):
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /XObject << /Im0 3 0 R >> >> "
            f"/Contents {5 + 2 * i} 0 R >>".encode()
        )
        objects.append(f"<< /Length {len(draw)} >>\nstream\n".encode() + draw + b"\nendstream")
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(f"{number} 0 obj\n".encode() + body + b"\nendobj\n")
    xref = out.tell()
    out.write(f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode())
    for offset in offsets:
        out.write(f"{offset:010d} 00000 n \n".encode())
    out.write(f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode())
    return out.getvalue()


def pdf_with_oversized_page(pages: int = 3, big: int = 2, big_points: float = 14_400.0) -> bytes:
    """A PDF of text pages where page `big` is a big_points-square page (at 200 dpi: 1.6 billion px)."""
    import pypdfium2 as pdfium

    source = pdfium.PdfDocument(text_pdf(pages))
    try:
        source.del_page(big - 1)
        source.new_page(big_points, big_points).close()
        # new_page appends; move it into place by building the order afresh
        out = pdfium.PdfDocument.new()
        order = [*range(big - 1), pages - 1, *range(big - 1, pages - 1)]
        out.import_pages(source, order)
        buffer = io.BytesIO()
        out.save(buffer)
        out.close()
        return buffer.getvalue()
    finally:
        source.close()


def animated(fmt: str, frames: int = 3) -> bytes:
    """An animated GIF or WebP whose frame n reads "Frame n"."""
    images = [text_image((f"Frame {n}", "The quick brown fox")) for n in range(1, frames + 1)]
    buffer = io.BytesIO()
    extra = {"lossless": True} if fmt == "WEBP" else {}
    images[0].save(buffer, format=fmt, save_all=True, append_images=images[1:], duration=100, loop=0, **extra)
    return buffer.getvalue()


def truncated_tiff() -> bytes:
    buffer = io.BytesIO()
    text_image().save(buffer, format="TIFF")
    return buffer.getvalue()[:200]


def png_mentioning_pdf() -> bytes:
    """A good PNG with "%PDF-" in a text chunk near its start."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "converted from %PDF-1.7 by a scanner")
    buffer = io.BytesIO()
    text_image().save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def big_png_with_trailer(megabytes: int) -> bytes:
    """A small valid PNG followed by `megabytes` of junk after IEND (readers stop at IEND)."""
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "white").save(buffer, format="PNG")
    return buffer.getvalue() + bytes(megabytes * 1024 * 1024)
