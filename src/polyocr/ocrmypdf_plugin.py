"""polyocr as an OCRmyPDF 17 OCR engine: `ocrmypdf --plugin polyocr.ocrmypdf_plugin in.pdf out.pdf`.

OCRmyPDF keeps doing what it does well (rasterising, PDF/A, optimisation, grafting the text layer
onto the original pages) and hands each page image to polyocr's router, so the page is read by the
chain (`--polyocr-engine auto`, a name, or a chain a,b,c) with polyocr's checks and fallbacks. The
answer goes back as polyocr's hOCR (formats/hocr.py), which OCRmyPDF renders into its own text
layer; for `--pdf-renderer sandwich` polyocr writes the text-only page PDF itself.

One Router per worker process (OCRmyPDF runs pages in parallel processes or threads), made on the
first page and reused, so a VLM is loaded once per worker rather than once per page. Install with
`pip install 'polyocr[ocrmypdf]'`. The plugin is loaded only when named with --plugin.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Annotated

from ocrmypdf import hookimpl
from ocrmypdf.exceptions import BadArgsError
from ocrmypdf.pluginspec import OcrEngine, OrientationConfidence
from PIL import Image
from pydantic import BaseModel, Field

from polyocr.documents import Page
from polyocr.errors import PolyOCRError
from polyocr.formats.hocr import render_hocr
from polyocr.formats.layout import page_text, polyocr_version
from polyocr.formats.pdf import text_only_pdf
from polyocr.results import DocumentResult, PageResult, PageStatus
from polyocr.types import EnginePlan

log = logging.getLogger(__name__)

_routers: dict[tuple[str, tuple[str, ...]], object] = {}
_lock = threading.Lock()


class PolyocrOptions(BaseModel):
    """Options of the polyocr engine (`options.polyocr.engine`)."""

    engine: Annotated[str, Field(description="polyocr engine, chain a,b,c, or auto")] = "auto"


@hookimpl
def register_options():
    return {"polyocr": PolyocrOptions}


@hookimpl
def add_options(parser):
    group = parser.add_argument_group("polyocr", "OCR through polyocr's engine chain")
    group.add_argument(
        "--polyocr-engine",
        dest="polyocr_engine",
        default="auto",
        metavar="NAME",
        help="polyocr engine, chain a,b,c, or auto (polyocr.toml / POLYOCR_ENGINES decide; default auto)",
    )


def _engine_option(options) -> str:
    try:
        return options.polyocr.engine or "auto"
    except AttributeError:
        return getattr(options, "polyocr_engine", None) or "auto"


def _languages(options) -> tuple[str, ...]:
    languages = tuple(getattr(options, "languages", None) or ())
    return languages or ("eng",)


@hookimpl
def check_options(options):
    from polyocr.config import load_config
    from polyocr.router import resolve_chain
    from polyocr.types import Task

    try:
        config = load_config(_engine_option(options), None)
        resolve_chain(config.engines, Task(languages=_languages(options)))
    except PolyOCRError as exc:
        raise BadArgsError(f"--polyocr-engine: {exc}") from exc


def _router(options):
    """This process's Router for the options' chain and languages (made once, then reused)."""
    from polyocr.config import load_config
    from polyocr.router import Router, resolve_chain
    from polyocr.types import Task

    key = (_engine_option(options), _languages(options))
    with _lock:
        router = _routers.get(key)
        if router is None:
            config = load_config(key[0], None)
            task = Task(languages=key[1], timeout=config.timeout)
            router = Router(resolve_chain(config.engines, task), task, config=config)
            _routers[key] = router
        return router


def recognise(input_file: Path, options) -> PageResult:
    """One page image (as OCRmyPDF rasterised it) through polyocr's chain."""
    with Image.open(input_file) as image:
        dpi = image.info.get("dpi", (300, 300))[0] or 300
        page = Page(image=image.convert("RGB"), number=1, source=str(input_file), dpi=float(dpi))
    router = _router(options)
    with _lock:  # one page at a time per Router: its engines are not shared between threads
        result = router.recognize_page(page)
    if result.status == PageStatus.FAILED:
        log.warning("polyocr could not read %s: %s", input_file.name, "; ".join(result.errors))
    return result


_osd: list = []  # this process's (Tesseract engine or None, why not), made on first use
_osd_said: list[bool] = []


def _orientation(input_file: Path) -> tuple[int, float]:
    """OSD's (angle, confidence) for a page image; (0, 0.0) where it cannot run (said once)."""
    from polyocr.engines.base import create_engine

    with _lock:
        if not _osd:
            try:
                engine = create_engine("tesseract")
                engine.load(EnginePlan())
                _osd.append((engine, "no osd.traineddata (apt-get install tesseract-ocr-osd)"))
            except PolyOCRError as exc:
                _osd.append((None, f"Tesseract is not usable ({exc})"))
        engine, why = _osd[0]
    found = None
    if engine is not None:
        with Image.open(input_file) as image:
            found = engine.orientation(image.convert("RGB"))
    if found is None:
        if not _osd_said:
            _osd_said.append(True)
            log.warning("polyocr cannot tell page orientation for --rotate-pages: %s", why)
        return 0, 0.0
    return found


class PolyocrEngine(OcrEngine):
    @staticmethod
    def version() -> str:
        return polyocr_version()

    @staticmethod
    def creator_tag(options) -> str:
        return f"polyocr {polyocr_version()} ({_engine_option(options)})"

    def __str__(self) -> str:
        return f"polyocr {polyocr_version()}"

    @staticmethod
    def languages(options) -> set[str]:
        from polyocr.engines.tesseract import find_tessdata, installed_languages

        tessdata = find_tessdata()
        found = set(installed_languages(tessdata)) if tessdata else set()
        return found | set(_languages(options))  # VLM engines read languages with no traineddata

    @staticmethod
    def get_orientation(input_file: Path, options) -> OrientationConfidence:
        """For `--rotate-pages`: OCRmyPDF 17 (pluginspec.OcrEngine.get_orientation, used by
        _pipeline.get_orientation_correction) wants the clockwise angle the page is turned by and a
        confidence on Tesseract OSD's scale (it rotates at --rotate-pages-threshold, 14 by default), as
        its own Tesseract plugin answers from `tesseract --psm 0`. polyocr answers from the same OSD
        through its Tesseract engine, whatever engine reads the page; without Tesseract's OSD data it
        says it cannot tell (confidence 0), so OCRmyPDF leaves the page as it is."""
        found = _orientation(Path(input_file))
        return OrientationConfidence(angle=found[0], confidence=found[1])

    @staticmethod
    def get_deskew(input_file: Path, options) -> float:
        """For `--deskew`: the angle in degrees OCRmyPDF passes to Pillow's rotate (counter-clockwise),
        which is what documents.deskew.skew_angle measures."""
        from polyocr.documents.deskew import skew_angle

        with Image.open(input_file) as image:
            return skew_angle(image)

    @staticmethod
    def generate_hocr(input_file: Path, output_hocr: Path, output_text: Path, options) -> None:
        result = recognise(Path(input_file), options)
        doc = DocumentResult(source=Path(input_file).name, pages=[result])
        Path(output_hocr).write_text(render_hocr(doc), encoding="utf-8")
        Path(output_text).write_text(page_text(result) + "\n", encoding="utf-8")

    @staticmethod
    def generate_pdf(input_file: Path, output_pdf: Path, output_text: Path, options) -> None:
        result = recognise(Path(input_file), options)
        with Image.open(input_file) as image:
            dpi = float(image.info.get("dpi", (300, 300))[0] or 300)
        text_only_pdf(result, Path(output_pdf), dpi=dpi)
        Path(output_text).write_text(page_text(result) + "\n", encoding="utf-8")


@hookimpl
def get_ocr_engine(options):
    if options is not None and getattr(options, "ocr_engine", "auto") not in ("auto", "polyocr"):
        return None
    return PolyocrEngine()
