"""Turn files, directories and in-memory images into pages.

Inputs are recognised by their content, not their names. Pages are produced lazily, one at a time,
so a 300-page PDF is never held in memory whole and progress can be shown as pages arrive. Every
reason a file cannot be read becomes an InputError naming the file; callers collect those per file
so one bad input never stops the others.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from polyocr.errors import InputError

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
) -> Source:
    """Open a file and validate it far enough to know its page count; raise InputError if unusable."""
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
        return _open_pdf(path, dpi=dpi, max_pixels=max_pixels, max_pages=max_pages)
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
) -> Source:
    """Open in-memory bytes (an upload) exactly as a file with that name would be opened."""
    if not data:
        raise InputError(name, "file is empty (0 bytes)")
    if b"%PDF-" in data[:1024]:
        return _open_pdf(data, dpi=dpi, max_pixels=max_pixels, max_pages=max_pages, name=name)
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


def _open_pdf(path: Path | bytes, *, dpi: float, max_pixels: int, max_pages: int, name: str | None = None) -> Source:
    import pypdfium2 as pdfium

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
                yield Page(image=image.convert("RGB"), number=index + 1, source=name, dpi=dpi)
        finally:
            pdf.close()

    return Source(path=name, kind="pdf", page_count=count, _pages=pages())


class PageReader:
    """Any one page of a file, by number, without decoding the pages before it.

    A batch hands pages to many processes in any order, so each needs page N alone. The reader keeps
    the last file it opened (a PDF's page tree, or a TIFF's frame index) so consecutive pages of one
    document do not reopen it; only the page asked for is rendered and held. The same limits and
    errors as `open_source` apply: a page that cannot be read raises InputError naming it.
    """

    def __init__(self, *, dpi: float = DEFAULT_DPI, max_pixels: int = DEFAULT_MAX_PIXELS):
        self.dpi = dpi
        self.max_pixels = max_pixels
        self._path: str | None = None
        self._pdf: object | None = None
        self._image: Image.Image | None = None

    def read(self, path: str | Path, number: int, label: str | None = None) -> Page:
        """Page `number` (1-based) of `path`; `label` is the source name the page carries."""
        name = label or str(path)
        where = f"{name} page {number}"
        self._open(str(path), name)
        if self._pdf is not None:
            import pypdfium2 as pdfium

            pdf: pdfium.PdfDocument = self._pdf  # type: ignore[assignment]
            if not 1 <= number <= len(pdf):
                raise InputError(where, f"no such page (the PDF has {len(pdf)})")
            page = pdf[number - 1]
            try:
                scale = self.dpi / 72.0
                width_pt, height_pt = page.get_size()
                _check_pixels(where, (round(width_pt * scale), round(height_pt * scale)), self.max_pixels)
                try:
                    image = page.render(scale=scale).to_pil()
                except pdfium.PdfiumError as exc:
                    raise InputError(where, f"page could not be rendered: {exc}") from exc
            finally:
                page.close()
            return Page(image=image.convert("RGB"), number=number, source=name, dpi=self.dpi)
        image = self._image
        assert image is not None
        frames = getattr(image, "n_frames", 1) if image.format == "TIFF" else 1
        if not 1 <= number <= frames:
            raise InputError(where, f"no such page (the file has {frames})")
        if frames > 1:
            image.seek(number - 1)
        _check_pixels(where if frames > 1 else name, image.size, self.max_pixels)
        decoded = _decode(name, image, number if frames > 1 else None)
        return Page(image=decoded, number=number, source=name, dpi=_dpi(image))

    def _open(self, path: str, name: str) -> None:
        if path == self._path:
            return
        self.close()
        source = open_source(path, dpi=self.dpi, max_pixels=self.max_pixels, max_pages=10**9)
        source.pages().close()  # type: ignore[attr-defined]  # the generator's own handle is not needed
        if source.kind == "pdf":
            import pypdfium2 as pdfium

            self._pdf = pdfium.PdfDocument(path)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._image = Image.open(path)
        self._path = path

    def close(self) -> None:
        if self._pdf is not None:
            self._pdf.close()  # type: ignore[attr-defined]
        if self._image is not None:
            self._image.close()
        self._path, self._pdf, self._image = None, None, None
