"""Turn files, directories and in-memory images into pages.

Inputs are recognised by their content, not their names. Pages are produced lazily, one at a time,
so a 300-page PDF is never held in memory whole and progress can be shown as pages arrive. Every
reason a file cannot be read becomes an InputError naming the file; callers collect those per file
so one bad input never stops the others.
"""

from __future__ import annotations

import io
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from polyocr.errors import InputError

if TYPE_CHECKING:
    from polyocr.documents.textlayer import TextLayer, Verdict

DEFAULT_DPI = 200
DEFAULT_MAX_PIXELS = 150_000_000  # per page; guards against decompression bombs
DEFAULT_MAX_PAGES = 1000  # per PDF or TIFF, unless raised

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp"})
DOCUMENT_SUFFIXES = IMAGE_SUFFIXES | {".pdf"}
_IMAGE_FORMATS = frozenset({"PNG", "JPEG", "MPO", "TIFF", "WEBP", "BMP", "DIB"})

# We enforce our own pixel limit with a clear error; Pillow's warning/exception would preempt it.
Image.MAX_IMAGE_PIXELS = None


@dataclass
class Page:
    """One page image (RGB, EXIF orientation applied) and where it came from."""

    image: Image.Image
    number: int  # 1-based within its source
    source: str
    dpi: float | None = None
    # A PDF page's own text layer and whether to read the page from it (documents/textlayer.py);
    # None when the input is an image or --text-layer is never.
    text_layer: TextLayer | None = None
    layer_verdict: Verdict | None = None
    layer_seconds: float = 0.0

    @property
    def size(self) -> tuple[int, int]:
        return self.image.size


@dataclass
class Source:
    """An opened input: its kind and page count are known before any page is decoded."""

    path: str
    kind: str  # "pdf" | "image"
    page_count: int
    _pages: Iterator[Page] = field(repr=False, default_factory=lambda: iter(()))

    def pages(self) -> Iterator[Page]:
        return self._pages


def expand_inputs(inputs: Iterable[str | Path]) -> tuple[list[Path], list[str]]:
    """Files to read, in order, and notes about what was skipped.

    Directories are walked recursively in sorted order; inside them only known document suffixes
    are taken (anything else is noted and skipped). Files named explicitly are always taken, so a
    misnamed or broken file gets its own clear error later instead of vanishing.
    """
    files: list[Path] = []
    notes: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            for child in sorted(p for p in path.rglob("*") if p.is_file()):
                if child.suffix.lower() in DOCUMENT_SUFFIXES:
                    files.append(child)
                elif not child.name.startswith("."):
                    notes.append(f"{child}: skipped, not a document ({child.suffix or 'no suffix'})")
        else:
            files.append(path)
    return files, notes


def _sniff(path: Path, head: bytes) -> str:
    if b"%PDF-" in head[:1024]:
        return "pdf"
    return "image"


def open_source(
    path: str | Path,
    *,
    dpi: float = DEFAULT_DPI,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_pages: int = DEFAULT_MAX_PAGES,
    text_layer: str = "never",
) -> Source:
    """Open a file and validate it far enough to know its page count; raise InputError if unusable.

    `text_layer` (auto | always | never) is for PDFs: whether a page's own text layer is read and
    checked, so the router can take the page from it instead of OCR (documents/textlayer.py).
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a directory (pass it to expand_inputs)")
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(1024)
    except OSError as exc:
        raise InputError(path, f"cannot be read: {exc.strerror or exc}") from exc
    if size == 0:
        raise InputError(path, "file is empty (0 bytes)")
    if _sniff(path, head) == "pdf":
        return _open_pdf(path, dpi=dpi, max_pixels=max_pixels, max_pages=max_pages, text_layer=text_layer)
    return _open_image(path, path.read_bytes(), max_pixels=max_pixels, max_pages=max_pages)


def load_pages(
    item: str | Path | Image.Image,
    *,
    dpi: float = DEFAULT_DPI,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_pages: int = DEFAULT_MAX_PAGES,
) -> list[Page]:
    """All pages of one input (a path or a PIL image), decoded."""
    if isinstance(item, Image.Image):
        return [Page(image=_normalise(item), number=1, source="<image>")]
    source = open_source(item, dpi=dpi, max_pixels=max_pixels, max_pages=max_pages)
    return list(source.pages())


def image_source(
    data: bytes,
    name: str,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_pages: int = DEFAULT_MAX_PAGES,
    dpi: float = DEFAULT_DPI,
    text_layer: str = "never",
) -> Source:
    """Open in-memory bytes (an upload) exactly as a file with that name would be opened."""
    if not data:
        raise InputError(name, "file is empty (0 bytes)")
    if b"%PDF-" in data[:1024]:
        return _open_pdf(data, dpi=dpi, max_pixels=max_pixels, max_pages=max_pages, name=name, text_layer=text_layer)
    return _open_image(name, data, max_pixels=max_pixels, max_pages=max_pages)


def _normalise(image: Image.Image) -> Image.Image:
    """RGB with EXIF orientation applied; transparency composited onto white paper."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        paper = Image.new("RGB", rgba.size, (255, 255, 255))
        paper.paste(rgba, mask=rgba.getchannel("A"))
        return paper
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit greyscale scans: scale to 8 bits rather than clipping to white.
        image = image.point(lambda v: v / 256).convert("L")
    return image.convert("RGB")


def _open_image(path: str | Path, data: bytes, *, max_pixels: int, max_pages: int) -> Source:
    name = str(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InputError(name, "not an image or PDF (unrecognised content)") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(name, f"corrupt image: {exc}") from exc
    if image.format not in _IMAGE_FORMATS:
        raise InputError(name, f"unsupported image format {image.format}")
    frames = getattr(image, "n_frames", 1) if image.format == "TIFF" else 1
    if frames > max_pages:
        raise InputError(name, f"has {frames} pages, over the limit of {max_pages} (raise --max-pages)")
    _check_pixels(name, image.size, max_pixels)
    # Decode the first frame now so a truncated file fails here, with its name, not mid-run.
    first = _decode(name, image)

    def pages() -> Iterator[Page]:
        if frames == 1:
            yield Page(image=first, number=1, source=name, dpi=_dpi(image))
            return
        for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
            _check_pixels(f"{name} page {number}", frame.size, max_pixels)
            yield Page(image=_decode(name, frame, number), number=number, source=name, dpi=_dpi(frame))

    return Source(path=name, kind="image", page_count=frames, _pages=pages())


def _decode(name: str, image: Image.Image, number: int | None = None) -> Image.Image:
    where = f"{name} page {number}" if number else name
    try:
        image.load()
        return _normalise(image)
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(where, f"corrupt or truncated image: {exc}") from exc


def _dpi(image: Image.Image) -> float | None:
    dpi = image.info.get("dpi")
    try:
        return float(dpi[0]) if dpi and float(dpi[0]) > 1 else None
    except (TypeError, ValueError):
        return None


def _check_pixels(name: str, size: tuple[int, int], max_pixels: int) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise InputError(name, f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise InputError(
            name,
            f"image is {width}x{height} = {width * height:,} pixels, over the limit of {max_pixels:,} "
            "(possible decompression bomb; raise --max-pixels if it is genuine)",
        )


def _open_pdf(
    path: Path | bytes,
    *,
    dpi: float,
    max_pixels: int,
    max_pages: int,
    name: str | None = None,
    text_layer: str = "never",
) -> Source:
    import pypdfium2 as pdfium

    from polyocr.documents.textlayer import TEXT_LAYER_MODES

    if text_layer not in TEXT_LAYER_MODES:
        raise ValueError(f"text_layer must be one of {', '.join(TEXT_LAYER_MODES)}, not {text_layer!r}")
    name = name or str(path)
    try:
        pdf = pdfium.PdfDocument(path)
    except pdfium.PdfiumError as exc:
        text = str(exc).lower()
        if "password" in text:
            raise InputError(name, "PDF is encrypted (password required)") from exc
        raise InputError(name, f"broken PDF: {exc}") from exc
    count = len(pdf)
    if count == 0:
        raise InputError(name, "PDF has no pages")
    if count > max_pages:
        raise InputError(name, f"PDF has {count} pages, over the limit of {max_pages} (raise --max-pages)")
    scale = dpi / 72.0

    def pages() -> Iterator[Page]:
        try:
            for index in range(count):
                where = f"{name} page {index + 1}"
                page = pdf[index]
                width_pt, height_pt = page.get_size()
                _check_pixels(where, (round(width_pt * scale), round(height_pt * scale)), max_pixels)
                try:
                    bitmap = page.render(scale=scale)
                    image = bitmap.to_pil()
                except pdfium.PdfiumError as exc:
                    raise InputError(where, f"page could not be rendered: {exc}") from exc
                result = Page(image=image.convert("RGB"), number=index + 1, source=name, dpi=dpi)
                if text_layer != "never":
                    _read_layer(result, page, text_layer)
                yield result
        finally:
            pdf.close()

    return Source(path=name, kind="pdf", page_count=count, _pages=pages())


def _read_layer(result: Page, page, mode: str) -> None:
    """Attach the page's text layer and the verdict on it; a layer pdfium cannot read is no layer."""
    import pypdfium2 as pdfium

    from polyocr.documents.textlayer import TextLayer, assess, extract

    start = time.perf_counter()
    try:
        layer = extract(page, *result.image.size)
    except pdfium.PdfiumError:
        layer = TextLayer()
    result.text_layer = layer
    result.layer_verdict = assess(layer, result.image, mode)
    result.layer_seconds = time.perf_counter() - start
