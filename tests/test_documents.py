"""Loading inputs: every supported format, and every way an input can be bad."""

from __future__ import annotations

import io
from pathlib import Path

import pypdfium2 as pdfium
import pytest
from PIL import Image, ImageDraw
from pypdf import PdfReader, PdfWriter

from conftest import SAMPLE_PDF
from polyocr.documents import expand_inputs, load_pages, open_source
from polyocr.documents.loader import image_source
from polyocr.errors import InputError


def _page(size=(120, 80), colour=(255, 255, 255)) -> Image.Image:
    image = Image.new("RGB", size, colour)
    ImageDraw.Draw(image).rectangle((10, 10, 40, 30), fill=(0, 0, 0))
    return image


@pytest.mark.parametrize(
    "fmt,suffix", [("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp"), ("BMP", ".bmp"), ("TIFF", ".tif")]
)
def test_single_page_images_load_as_rgb(tmp_path: Path, fmt: str, suffix: str) -> None:
    path = tmp_path / f"page{suffix}"
    _page().convert("L" if fmt == "BMP" else "RGB").save(path, fmt)
    [page] = load_pages(path)
    assert page.image.mode == "RGB"
    assert page.size == (120, 80)
    assert page.number == 1 and page.source == str(path)


def test_multipage_tiff_yields_every_page(tmp_path: Path) -> None:
    path = tmp_path / "scan.tiff"
    frames = [_page((100 + 10 * i, 60)) for i in range(3)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    source = open_source(path)
    assert source.page_count == 3
    pages = list(source.pages())
    assert [p.number for p in pages] == [1, 2, 3]
    assert [p.size[0] for p in pages] == [100, 110, 120]


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to display
    _page((120, 80)).save(path, "JPEG", exif=exif)
    [page] = load_pages(path)
    assert page.size == (80, 120)


def test_transparent_png_is_composited_on_white(tmp_path: Path) -> None:
    path = tmp_path / "alpha.png"
    Image.new("RGBA", (20, 20), (0, 0, 0, 0)).save(path)
    [page] = load_pages(path)
    assert page.image.getpixel((5, 5)) == (255, 255, 255)


def test_pdf_renders_at_requested_dpi() -> None:
    pages_200 = load_pages(SAMPLE_PDF)
    pages_100 = load_pages(SAMPLE_PDF, dpi=100)
    assert len(pages_200) == 2
    assert pages_200[0].dpi == 200
    width_pt = 6.4 * 72  # the sample is 6.4 inches wide
    assert abs(pages_200[0].size[0] - width_pt * 200 / 72) <= 2
    assert abs(pages_100[0].size[0] * 2 - pages_200[0].size[0]) <= 2


def test_content_decides_not_the_name(tmp_path: Path) -> None:
    misnamed = tmp_path / "actually-a-pdf.png"
    misnamed.write_bytes(SAMPLE_PDF.read_bytes())
    assert open_source(misnamed).kind == "pdf"


def test_in_memory_upload_opens_like_a_file() -> None:
    buffer = io.BytesIO()
    _page().save(buffer, "PNG")
    assert image_source(buffer.getvalue(), "upload.png").page_count == 1
    assert image_source(SAMPLE_PDF.read_bytes(), "upload.pdf").kind == "pdf"
    with pytest.raises(InputError, match="empty"):
        image_source(b"", "upload.png")


# Bad inputs: each names the file and the reason.


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        list(open_source(path, **kwargs).pages())
    assert info.value.path.startswith(str(path))
    return info.value.reason


def test_missing_file(tmp_path: Path) -> None:
    assert "no such file" in _error(tmp_path / "nope.png")


def test_zero_bytes(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert "empty" in _error(path)


def test_not_a_document(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("just some text, not an image")
    assert "not an image or PDF" in _error(path)


def test_truncated_image(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    _page((400, 300)).save(buffer, "PNG")
    path = tmp_path / "cut.png"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    assert "truncated" in _error(path) or "corrupt" in _error(path)


def test_corrupt_jpeg_header(tmp_path: Path) -> None:
    path = tmp_path / "bad.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    reason = _error(path)
    assert "corrupt" in reason or "not an image" in reason


def test_encrypted_pdf(tmp_path: Path) -> None:
    writer = PdfWriter(clone_from=PdfReader(SAMPLE_PDF))
    writer.encrypt(user_password="secret", owner_password="owner")
    path = tmp_path / "locked.pdf"
    with path.open("wb") as fh:
        writer.write(fh)
    assert "encrypted" in _error(path)


def test_broken_pdf(tmp_path: Path) -> None:
    path = tmp_path / "broken.pdf"
    path.write_bytes(b"%PDF-1.7\n1 0 obj << /Type /Catalog >> garbage without xref")
    assert "PDF" in _error(path)


def test_decompression_bomb_is_refused_before_decoding(tmp_path: Path) -> None:
    path = tmp_path / "bomb.png"
    Image.new("1", (6000, 6000)).save(path)  # tiny file, 36 M pixels
    reason = _error(path, max_pixels=10_000_000)
    assert "6000x6000" in reason and "decompression bomb" in reason


def test_pdf_page_over_pixel_limit(tmp_path: Path) -> None:
    pdf = pdfium.PdfDocument.new()
    pdf.new_page(72 * 40, 72 * 40)  # a 40-inch poster
    path = tmp_path / "poster.pdf"
    pdf.save(path)
    # the page fails alone (issue 16): it comes out as a page with its error, not as the end of the file
    (page,) = open_source(path, max_pixels=20_000_000).pages()
    assert page.number == 1 and page.error is not None and "over the limit" in page.error


def test_pdf_page_limit_and_raising_it(tmp_path: Path) -> None:
    assert "over the limit of 1" in _error(SAMPLE_PDF, max_pages=1)
    assert open_source(SAMPLE_PDF, max_pages=2).page_count == 2


def test_directory_is_walked_sorted_and_non_documents_noted(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    _page().save(tmp_path / "b" / "2.png")
    _page().save(tmp_path / "a.jpg")
    (tmp_path / "readme.txt").write_text("hello")
    (tmp_path / "b" / "1.pdf").write_bytes(SAMPLE_PDF.read_bytes())
    files, notes = expand_inputs([tmp_path])
    assert [f.relative_to(tmp_path).as_posix() for f in files] == ["a.jpg", "b/1.pdf", "b/2.png"]
    assert len(notes) == 1 and "readme.txt" in notes[0] and "not a document" in notes[0]
