"""Turn files, directories and in-memory images into pages.

Inputs are recognised by their content (magic numbers at offset 0), not their names. Pages are
produced lazily, one at a time, so a 300-page PDF is never held in memory whole and progress can be
shown as pages arrive. Every reason a file cannot be read becomes an InputError naming the file;
callers collect those per file so one bad input never stops the others. A page of a multi-page input
that cannot be read (over the pixel limit, corrupt, drawing a bomb image) comes out as a Page with
`error` set: that page fails, the pages after it are still read.

Pixel limits are enforced per call, before decoding or rasterising; Pillow's process-wide
MAX_IMAGE_PIXELS is left as the user's program set it.
"""

from __future__ import annotations

import io
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from PIL import Image, ImageOps, UnidentifiedImageError

from polyocr import defaults
from polyocr.errors import InputError

if TYPE_CHECKING:
    from polyocr.documents.textlayer import TextLayer, Verdict

DEFAULT_DPI = defaults.DPI
DEFAULT_MAX_PIXELS = defaults.INPUT_MAX_PIXELS  # per page; guards against decompression bombs
DEFAULT_MAX_PAGES = defaults.MAX_PAGES  # per PDF or TIFF, unless raised

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".bmp", ".gif"})
DOCUMENT_SUFFIXES = IMAGE_SUFFIXES | {".pdf"}
_IMAGE_FORMATS = frozenset({"PNG", "JPEG", "MPO", "TIFF", "WEBP", "BMP", "DIB", "GIF"})
# Formats whose extra frames are pages (TIFF pages, animated GIF/WebP/APNG frames). An MPO's second
# picture is a stereo view or preview of the first, so only its first picture is read.
_MULTI_FRAME_FORMATS = frozenset({"TIFF", "GIF", "WEBP", "PNG"})

# Accepted content by its first bytes, at offset 0 (a PNG whose text chunk holds "%PDF-" is a PNG).
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"II+\x00", "image/tiff"),  # BigTIFF
    (b"MM\x00+", "image/tiff"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"%PDF-", "application/pdf"),
)
_FORMAT_NAMES = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/tiff": "TIFF",
    "image/gif": "GIF",
    "image/bmp": "BMP",
    "image/webp": "WebP",
}
SNIFF_BYTES = 1024
_PILLOW_LIMIT = threading.Lock()


def sniff(head: bytes) -> str | None:
    """The content type of a file by its first bytes, or None when it is no accepted kind.

    Image magic numbers are matched at offset 0 only. A PDF may, as PDF readers allow, have a few
    bytes of junk before its "%PDF-" header (within the first 1024 bytes) when no image magic matched.
    """
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    if b"%PDF-" in head[:SNIFF_BYTES]:
        return "application/pdf"
    return None


class _DeferredImage:
    """`Page.image`: the image the page was made with, or, for a page made with `image=None` and a
    `render` (a PDF page read from its own text layer needs no picture of itself), the image that
    `render` gives, made on first use and kept."""

    def __get__(self, page: Page | None, owner: Any = None) -> Any:
        if page is None:
            return self
        image: Image.Image | None = page.__dict__.get("_image")
        if image is None:
            if page.render is None:
                raise AttributeError(f"{page.source} page {page.number} has neither an image nor a render")
            image = page.render()
            page.__dict__["_image"] = image
            page.render = None
        return image

    def __set__(self, page: Page, image: Image.Image | None) -> None:
        page.__dict__["_image"] = image


@dataclass(repr=False)
class Page:
    """One page image (RGB, EXIF orientation applied) and where it came from."""

    image: Image.Image  # a _DeferredImage (set below): None with a `render` defers the image
    number: int  # 1-based within its source
    source: str
    dpi: float | None = None
    error: str | None = None  # set when this page could not be read; the page then fails alone
    # A PDF page's own text layer and whether to read the page from it (documents/textlayer.py);
    # None when the input is an image or --text-layer is never.
    text_layer: TextLayer | None = None
    layer_verdict: Verdict | None = None
    layer_seconds: float = 0.0
    # A page whose image is made only when something asks for it (`image=None`): how, and its size.
    render: Callable[[], Image.Image] | None = None
    deferred_size: tuple[int, int] | None = None
    # About how many marks of ink the page holds (router.checks.estimate_glyphs' measure), when the
    # loader has measured it already (the text layer's ink check); None: measured from the image.
    glyphs: int | None = None

    @property
    def size(self) -> tuple[int, int]:
        if self.__dict__.get("_image") is None and self.deferred_size is not None:
            return self.deferred_size
        return self.image.size

    @property
    def rendered(self) -> bool:
        """Whether the page's image exists yet (False for a deferred page not yet asked for it)."""
        return self.__dict__.get("_image") is not None

    def __repr__(self) -> str:
        return f"Page(number={self.number}, source={self.source!r}, size={self.size}, rendered={self.rendered})"

    @classmethod
    def deferred(
        cls, render: Callable[[], Image.Image], size: tuple[int, int], number: int, source: str, **fields: Any
    ) -> Page:
        """A page whose image `render` makes when something first asks for it; `size` is its size."""
        page = cls(image=None, number=number, source=source, **fields)  # type: ignore[arg-type]
        page.render, page.deferred_size = render, size
        return page


# After the dataclass is made, so that its __init__ stores the image through the descriptor.
setattr(Page, "image", _DeferredImage())  # noqa: B010


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
    misnamed or broken file gets its own clear error later instead of vanishing. What looked like
    input but cannot be read is returned as a file too, so that opening it fails with its reason and
    the run counts it: a subfolder that cannot be listed, a dangling symbolic link with a document
    suffix. Symbolic links to directories are not followed, and are noted.
    """
    files: list[Path] = []
    notes: list[str] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            _walk(path, files, notes)
        else:
            files.append(path)
    return files, notes


def _walk(root: Path, files: list[Path], notes: list[str]) -> None:
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        files.append(root)  # open_source names the reason
        return
    for entry in entries:
        child = Path(entry.path)
        try:
            is_link = entry.is_symlink()
            if entry.is_dir(follow_symlinks=False):
                _walk(child, files, notes)
                continue
            if is_link and child.is_dir():
                notes.append(f"{child}: skipped, a symbolic link to a directory (not followed)")
                continue
            regular = entry.is_file(follow_symlinks=True)
        except OSError:
            regular = False
        looks_like_input = child.suffix.lower() in DOCUMENT_SUFFIXES
        if looks_like_input:
            files.append(child)  # a dangling link or an unreadable entry fails when opened, by name
        elif not child.name.startswith("."):
            what = "not a document" if regular or not is_link else "a dangling symbolic link"
            notes.append(f"{child}: skipped, {what} ({child.suffix or 'no suffix'})")


def open_source(
    path: str | Path,
    *,
    dpi: float = DEFAULT_DPI,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_pages: int = DEFAULT_MAX_PAGES,
    name: str | None = None,
    text_layer: str = "never",
) -> Source:
    """Open a file and validate it far enough to know its page count; raise InputError if unusable.

    `name` is what messages and results call the input (default: the path), so a server can name
    an upload by the client's file name rather than where it keeps it. `text_layer` (auto | always |
    never) is for PDFs: whether a page's own text layer is read and checked, so the router can take
    the page from it instead of OCR (documents/textlayer.py).
    """
    path = Path(path)
    label = name or str(path)
    if path.is_symlink() and not path.exists():
        raise InputError(label, "dangling symbolic link (its target does not exist)")
    if not path.exists():
        raise InputError(label, "no such file")
    if path.is_dir():
        try:
            with os.scandir(path):
                pass
        except OSError as exc:
            raise InputError(label, f"directory cannot be read: {exc.strerror or exc}") from exc
        raise InputError(label, "is a directory (pass it to expand_inputs)")
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise InputError(label, "not a regular file (a device, socket or pipe)")
        with path.open("rb") as fh:
            head = fh.read(SNIFF_BYTES)
    except OSError as exc:
        raise InputError(label, f"cannot be read: {exc.strerror or exc}") from exc
    if size == 0:
        raise InputError(label, "file is empty (0 bytes)")
    if sniff(head) == "application/pdf":
        return _open_pdf(path, dpi=dpi, max_pixels=max_pixels, max_pages=max_pages, name=label, text_layer=text_layer)
    return _open_image(label, path, head, max_pixels=max_pixels, max_pages=max_pages)


def load_pages(
    item: str | Path | Image.Image,
    *,
    dpi: float = DEFAULT_DPI,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_pages: int = DEFAULT_MAX_PAGES,
) -> list[Page]:
    """All pages of one input (a path or a PIL image), decoded."""
    if isinstance(item, Image.Image):
        _check_pixels("<image>", item.size, max_pixels)
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
    data = bytes(data)
    if sniff(data[:SNIFF_BYTES]) == "application/pdf":
        return _open_pdf(data, dpi=dpi, max_pixels=max_pixels, max_pages=max_pages, name=name, text_layer=text_layer)
    return _open_image(name, io.BytesIO(data), data[:SNIFF_BYTES], max_pixels=max_pixels, max_pages=max_pages)


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


def _pillow_open(fp: str | Path | IO[bytes], max_pixels: int) -> Image.Image:
    """Image.open without Pillow's process-wide bomb limit deciding for us.

    Pillow refuses images over twice its MAX_IMAGE_PIXELS at open. Below our own limit that is
    reported as ours; a caller who raised max_pixels above Pillow's limit gets Pillow's limit raised
    for the duration of this one open (under a lock), then restored.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            return Image.open(fp)
        except Image.DecompressionBombError:
            limit = Image.MAX_IMAGE_PIXELS
            if limit is None or max_pixels <= 2 * limit:
                raise
        if not isinstance(fp, (str, Path)):
            fp.seek(0)
        with _PILLOW_LIMIT:
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = max_pixels
            try:
                return Image.open(fp)
            finally:
                Image.MAX_IMAGE_PIXELS = saved


def _open_image(name: str, fp: str | Path | IO[bytes], head: bytes, *, max_pixels: int, max_pages: int) -> Source:
    kind = sniff(head)
    if kind is None:
        raise InputError(name, "not an image or PDF (unrecognised content)")
    try:
        image = _pillow_open(fp, max_pixels)
    except Image.DecompressionBombError as exc:
        raise InputError(
            name,
            f"image is over the limit of {max_pixels:,} pixels ({exc}; raise --max-pixels if it is genuine)",
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        detail = "" if isinstance(exc, UnidentifiedImageError) else f": {exc}"
        raise InputError(name, f"corrupt or truncated {_FORMAT_NAMES[kind]} image{detail}") from None
    if image.format not in _IMAGE_FORMATS:
        image.close()
        raise InputError(name, f"unsupported image format {image.format}")
    frames = getattr(image, "n_frames", 1) if image.format in _MULTI_FRAME_FORMATS else 1
    if frames > max_pages:
        image.close()
        raise InputError(name, f"has {frames} pages, over the limit of {max_pages} (raise --max-pages)")
    if frames == 1:
        try:
            _check_pixels(name, image.size, max_pixels)
            # Decode now so a truncated file fails here, with its name, not mid-run.
            first = _decode(name, image)
        finally:
            image.close()

        def single() -> Iterator[Page]:
            yield Page(image=first, number=1, source=name, dpi=_dpi(image))

        return Source(path=name, kind="image", page_count=1, _pages=single())

    def pages() -> Iterator[Page]:
        try:
            for number in range(1, frames + 1):
                where = f"{name} page {number}"
                try:
                    image.seek(number - 1)
                    _check_pixels(where, image.size, max_pixels)
                    page = Page(image=_decode(name, image, number), number=number, source=name, dpi=_dpi(image))
                except InputError as exc:
                    page = failed_page(name, number, exc.reason)
                except (OSError, ValueError, SyntaxError, EOFError) as exc:
                    page = failed_page(name, number, f"frame cannot be read: {exc}")
                yield page
        finally:
            image.close()

    return Source(path=name, kind="image", page_count=frames, _pages=pages())


def failed_page(source: str, number: int, error: str) -> Page:
    """A page that could not be read: it fails alone, with `error` (the reason; the page carries its
    source and number), and the pages after it go on."""
    return Page(image=Image.new("RGB", (1, 1), "white"), number=number, source=source, error=error)


def _decode(name: str, image: Image.Image, number: int | None = None) -> Image.Image:
    where = f"{name} page {number}" if number else name
    try:
        image.load()
        return _normalise(image)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        kind = f"{image.format} image" if image.format else "image"
        raise InputError(where, f"corrupt or truncated {kind}: {exc}") from exc


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


def render_pdf_page(page: Any, where: str, scale: float, max_pixels: int) -> Image.Image:
    """One PDF page rasterised at `scale`, bounded before rasterising: the page's size and every image
    it draws are checked against the pixel limit first (PDFium decodes a drawn image whole whatever
    the output size, so a bomb image fails the page here, in milliseconds). InputError naming `where`."""
    import pypdfium2 as pdfium

    check_pdf_page(page, where, scale, max_pixels)
    try:
        return page.render(scale=scale).to_pil()
    except pdfium.PdfiumError as exc:
        raise InputError(where, f"page could not be rendered: {exc}") from exc


def check_pdf_page(page: Any, where: str, scale: float, max_pixels: int) -> tuple[int, int]:
    """render_pdf_page's bounds, without rendering: the page's pixel size at `scale` (as pdfium
    renders it: the size in points times the scale, rounded up), InputError when it or an image the
    page draws is over the pixel limit."""
    import math

    import pypdfium2.raw as pdfium_c

    width_pt, height_pt = page.get_size()
    size = (math.ceil(width_pt * scale), math.ceil(height_pt * scale))
    _check_pixels(where, (round(width_pt * scale), round(height_pt * scale)), max_pixels)
    for obj in page.get_objects(filter=(pdfium_c.FPDF_PAGEOBJ_IMAGE,), max_depth=4):
        width, height = obj.get_px_size()
        if width * height > max_pixels:
            raise InputError(
                where,
                f"page draws an image of {width}x{height} = {width * height:,} pixels, over the limit "
                f"of {max_pixels:,} (possible decompression bomb; raise --max-pixels if it is genuine)",
            )
    return size


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
        pdf.close()
        raise InputError(name, "PDF has no pages")
    if count > max_pages:
        pdf.close()
        raise InputError(name, f"PDF has {count} pages, over the limit of {max_pages} (raise --max-pages)")
    scale = dpi / 72.0

    def render(index: int) -> Page:
        where = f"{name} page {index + 1}"
        try:
            page = pdf[index]
            if text_layer != "never":
                return _layer_page(path, page, index, name, dpi, max_pixels, text_layer)
            image = render_pdf_page(page, where, scale, max_pixels)
        except InputError as exc:
            return failed_page(name, index + 1, exc.reason)
        except pdfium.PdfiumError as exc:
            return failed_page(name, index + 1, f"page could not be rendered: {exc}")
        return Page(image=_rgb(image), number=index + 1, source=name, dpi=dpi)

    def pages() -> Iterator[Page]:
        try:
            for index in range(count):
                yield render(index)
        finally:
            pdf.close()

    return Source(path=name, kind="pdf", page_count=count, _pages=pages())


def open_bytes_or_stream(
    item: bytes | bytearray | memoryview | IO[bytes] | Any,
    *,
    dpi: float = DEFAULT_DPI,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_pages: int = DEFAULT_MAX_PAGES,
    text_layer: str = "never",
) -> Source:
    """Open in-memory bytes or a binary file object (read whole; it is named by its .name if any)."""
    caps: dict[str, Any] = {"dpi": dpi, "max_pixels": max_pixels, "max_pages": max_pages, "text_layer": text_layer}
    if isinstance(item, (bytes, bytearray, memoryview)):
        return image_source(bytes(item), "<bytes>", **caps)
    name = str(getattr(item, "name", "") or "<stream>")
    data = item.read()
    if not isinstance(data, bytes):
        raise InputError(name, "the file object is not binary (open it with 'rb')")
    return image_source(data, name, **caps)


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def _layer_page(path: Path | bytes, page: Any, index: int, name: str, dpi: float, max_pixels: int, mode: str) -> Page:
    """A PDF page with its text layer and the verdict on it (documents/textlayer.py), rendered only as
    far as the verdict needs: the layer is read without rendering; the ink check, when the page draws
    more than text, looks at a small grey render (its longest side textlayer.CHECK_MAX_SIDE), whose
    count of ink marks is kept as the page's glyph estimate; the page's own image (at `dpi`, for OCR)
    is made at once when the layer is not to be used, else deferred until something asks for it
    (then from a fresh handle on the document, which the loader may have closed by then)."""
    import pypdfium2 as pdfium

    from polyocr.documents.textlayer import CHECK_MAX_SIDE, TextLayer, assess, extract

    where = f"{name} page {index + 1}"
    scale = dpi / 72.0
    start = time.perf_counter()
    size = check_pdf_page(page, where, scale, max_pixels)
    try:
        layer = extract(page, *size)
    except pdfium.PdfiumError:
        layer = TextLayer(size=size)

    def check_image() -> Image.Image:
        small = min(scale, CHECK_MAX_SIDE / max(page.get_size()))
        try:
            image: Image.Image = page.render(scale=small, grayscale=True).to_pil()
        except pdfium.PdfiumError as exc:
            raise InputError(where, f"page could not be rendered: {exc}") from exc
        return image

    verdict = assess(layer, check_image, mode)
    seconds = time.perf_counter() - start
    fields: dict[str, Any] = {"dpi": dpi, "text_layer": layer, "layer_verdict": verdict, "glyphs": verdict.glyphs}
    if not verdict.use:  # the image is needed now: for OCR, or for the sample of an invisible layer
        image = _rgb(render_pdf_page(page, where, scale, max_pixels))
        return Page(image=image, number=index + 1, source=name, layer_seconds=seconds, **fields)

    def full() -> Image.Image:
        document = pdfium.PdfDocument(path)
        try:
            return _rgb(render_pdf_page(document[index], where, scale, max_pixels))
        finally:
            document.close()

    return Page.deferred(full, size, index + 1, name, layer_seconds=seconds, **fields)


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

            pdf: pdfium.PdfDocument = self._pdf
            if not 1 <= number <= len(pdf):
                raise InputError(where, f"no such page (the PDF has {len(pdf)})")
            page = pdf[number - 1]
            try:  # the same bounded render as open_source's (a bomb image fails the page)
                rendered = render_pdf_page(page, where, self.dpi / 72.0, self.max_pixels)
            finally:
                page.close()
            return Page(image=rendered.convert("RGB"), number=number, source=name, dpi=self.dpi)
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
