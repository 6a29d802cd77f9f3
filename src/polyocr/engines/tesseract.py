"""Tesseract through tesserocr: CPU, offline, any language whose traineddata is installed.

The tessdata directory is found once and passed explicitly, so the result never depends on where
the tesserocr wheel's bundled Tesseract was compiled to look. One TessBaseAPI per engine instance
is reused across pages (re-initialised only when the languages change); a lock makes an instance
safe to share between threads, since the API object itself is not.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from polyocr.documents.deskew import Box, box_mapper, skew_angle, straighten
from polyocr.engines.base import Engine
from polyocr.errors import EngineError, EngineUnavailable
from polyocr.formats.text import blocks_to_text
from polyocr.langdetect import (
    candidate_languages,
    choose_languages,
    normalise_page,
    page_scripts,
    requested_only,
    word_scripts,
)
from polyocr.results import Block, LanguageChoice, PageResult
from polyocr.runtime.probe import tessdata_dirs
from polyocr.scripts import ANY_SCRIPT, ARABIC, CYRILLIC, DEVANAGARI, GREEK, HAN, HANGUL, HEBREW, KANA, KANNADA, LATIN
from polyocr.types import Availability, EngineKind, EnginePlan, Task, TaskKind

if TYPE_CHECKING:
    from polyocr.documents import Page
    from polyocr.runtime.probe import Profile

DEFAULT_LANGUAGES = ("eng", "rus")
DESKEW_MIN_DEGREES = 1.0  # Tesseract reads pages skewed by less as they are (benchmarks/README.md)
# The first pass that finds a page's scripts reads this many of its text lines, spread over the
# page, with every candidate language: about a third of a full read (benchmarks/mixed-script.md).
DETECT_LINES = 10
DETECT_METHOD = f"tesseract: {DETECT_LINES} sampled lines, words classified by Unicode script"
# Tesseract OSD's script names (its osd.traineddata) to the scripts named in polyocr.scripts.
OSD_SCRIPTS: dict[str, tuple[str, ...]] = {
    "Latin": (LATIN,),
    "Cyrillic": (CYRILLIC,),
    "Greek": (GREEK,),
    "Arabic": (ARABIC,),
    "Hebrew": (HEBREW,),
    "Han": (HAN,),
    "Japanese": (HAN, KANA),
    "Katakana": (KANA,),
    "Hiragana": (KANA,),
    "Hangul": (HANGUL,),
    "Korean": (HANGUL, HAN),
    "Kannada": (KANNADA,),
    "Devanagari": (DEVANAGARI,),
}
MAX_APIS = 3  # TessBaseAPI objects kept per engine, one per language set (a re-Init costs ~0.3 s)

# ISO 639-1 codes people type, to Tesseract's names; three-letter codes are Tesseract's already.
_TESSERACT_CODES = {
    "en": "eng",
    "ru": "rus",
    "uk": "ukr",
    "be": "bel",
    "bg": "bul",
    "sr": "srp",
    "de": "deu",
    "fr": "fra",
    "it": "ita",
    "es": "spa",
    "pt": "por",
    "nl": "nld",
    "pl": "pol",
    "cs": "ces",
    "sv": "swe",
    "fi": "fin",
    "da": "dan",
    "no": "nor",
    "tr": "tur",
    "el": "ell",
    "ja": "jpn",
    "ko": "kor",
    "zh": "chi_sim",
    "zho": "chi_sim",
    "ar": "ara",
    "he": "heb",
    "hi": "hin",
    "kn": "kan",
}

# Tesseract's layout-analysis block types (tesserocr.PT) as result categories; rules and noise
# carry nothing a reader wants and are dropped.
_CATEGORIES = {
    1: "Text",
    2: "Section-header",
    3: "Text",
    4: "Formula",
    5: "Formula",
    6: "Table",
    7: "Text",
    8: "Caption",
    9: "Picture",
    10: "Picture",
    11: "Picture",
}


def find_tessdata() -> Path | None:
    """The first tessdata directory that holds language files, in runtime.probe's search order.

    TESSDATA_PREFIX comes first and is accepted both as the tessdata directory itself (Tesseract 4+)
    and as its parent (Tesseract 3's convention, still common in old set-up instructions).
    """
    for candidate in tessdata_dirs():
        if candidate.is_dir() and any(candidate.glob("*.traineddata")):
            return candidate
    return None


def installed_languages(tessdata: Path) -> list[str]:
    return sorted(p.stem for p in tessdata.glob("*.traineddata") if p.stem != "osd")


def tesseract_languages(languages: Sequence[str]) -> list[str]:
    """Task languages ("en", "eng", "eng+rus") as Tesseract names, in order, without repeats."""
    names: list[str] = []
    for entry in languages:
        for code in entry.split("+"):
            code = code.strip()
            name = _TESSERACT_CODES.get(code.lower(), code)
            if name and name not in names:
                names.append(name)
    return names


def _apt_fix(missing: Sequence[str]) -> str:
    packages = " ".join(f"tesseract-ocr-{name.replace('_', '-')}" for name in missing)
    files = ", ".join(f"{name}.traineddata" for name in missing)
    return f"apt-get install {packages}, or put {files} in a directory named by TESSDATA_PREFIX"


class TesseractEngine(Engine):
    name: ClassVar[str] = "tesseract"
    description: ClassVar[str] = "Tesseract 5 (tesserocr): CPU, offline, layout-analysis blocks"
    kind: ClassVar[EngineKind] = EngineKind.CLASSICAL
    scripts: ClassVar[frozenset[str]] = ANY_SCRIPT
    notes: ClassVar[str] = "reads the languages whose traineddata is installed (default eng+rus)"

    def __init__(self, model_path: str | None = None) -> None:
        super().__init__(model_path)
        self._apis: dict[str, Any] = {}
        self._osd: Any = None
        self._tessdata: Path | None = None
        self._lock = threading.Lock()

    def available(self, profile: Profile) -> Availability:
        """Usable when tesserocr imports and tessdata holds at least one language.

        A missing default language does not make the engine unusable for the others; the reason
        names it with the package that provides it, and recognizing it fails with the same words.
        """
        if importlib.util.find_spec("tesserocr") is None:
            return Availability.no("the tesserocr package is not installed", "pip install 'polyocr[classic]'")
        tessdata = find_tessdata()
        if tessdata is None:
            searched = ", ".join(str(d) for d in tessdata_dirs())
            return Availability.no(
                f"no tessdata directory with *.traineddata found (searched {searched})",
                _apt_fix(DEFAULT_LANGUAGES),
            )
        have = installed_languages(tessdata)
        if not have:
            return Availability.no(f"{tessdata} holds no language traineddata", _apt_fix(DEFAULT_LANGUAGES))
        missing = [lang for lang in DEFAULT_LANGUAGES if lang not in have]
        reason = f"languages in {tessdata}: {', '.join(have)}"
        if missing:
            reason += f"; default language(s) {', '.join(missing)} missing"
            return Availability(True, reason, _apt_fix(missing))
        return Availability.yes(reason)

    def load(self, plan: EnginePlan) -> None:
        """Find tessdata and import tesserocr now, so a broken install fails before any page."""
        try:
            import tesserocr  # noqa: F401
        except ImportError as exc:
            raise EngineUnavailable(
                self.name, f"tesserocr does not import: {exc}", "pip install 'polyocr[classic]'"
            ) from exc
        self._tessdata = find_tessdata()
        if self._tessdata is None:
            raise EngineUnavailable(self.name, "no tessdata directory found", _apt_fix(DEFAULT_LANGUAGES))

    def recognize(self, pages: Sequence[Page], task: Task) -> list[PageResult]:
        if self._tessdata is None:
            self.load(EnginePlan())
        languages = self._check_languages(task.languages or DEFAULT_LANGUAGES)
        with self._lock:
            return [self._recognize_page(page, task, languages) for page in pages]

    def page_scripts(self, image: Any, languages: Sequence[str]) -> tuple[str, ...]:
        """The scripts on a page, most text first, for judging any engine's output: Tesseract's OSD
        names the main script whatever it is (it knows Han, Kannada, Arabic... without their
        traineddata); on a Latin or Cyrillic page the sampled first pass adds the minority script.
        Empty when neither can tell (no osd.traineddata and no language to add)."""
        if self._tessdata is None:
            self.load(EnginePlan())
        assert self._tessdata is not None
        with self._lock:
            main: tuple[str, ...] = ()
            if (self._tessdata / "osd.traineddata").is_file():
                found = self._detect_orientation_script(image)
                main = OSD_SCRIPTS.get((found or {}).get("script_name", ""), ())
            if main and main[0] not in (LATIN, CYRILLIC):
                return main
            have = installed_languages(self._tessdata)
            detected = self._detect(image, "+".join(n for n in tesseract_languages(languages) if n in have) or "eng")
            if detected is None or not detected[0]:
                return main
            return detected[0]

    def _detect_orientation_script(self, image: Any) -> dict[str, Any] | None:
        """Tesseract OSD on a page (orientation and script), through one lazily made OSD instance; the
        caller holds self._lock and has checked that osd.traineddata is installed."""
        from tesserocr import PSM, PyTessBaseAPI

        if self._osd is None:
            self._osd = PyTessBaseAPI(path=f"{self._tessdata}/", lang="osd", psm=PSM.OSD_ONLY)
        self._osd.SetImage(image)
        try:
            found: dict[str, Any] | None = self._osd.DetectOrientationScript()
        finally:
            self._osd.Clear()
        return found

    def orientation(self, image: Any) -> tuple[int, float] | None:
        """Tesseract OSD's orientation of a page: (the clockwise angle the page's text is turned by,
        0/90/180/270, as `tesseract --psm 0` prints "Orientation in degrees"; OSD's confidence in it,
        on Tesseract's scale, where OCRmyPDF rotates at 14 or more). None without osd.traineddata;
        (0, 0.0) when OSD cannot tell (too few characters)."""
        if self._tessdata is None:
            self.load(EnginePlan())
        assert self._tessdata is not None
        if not (self._tessdata / "osd.traineddata").is_file():
            return None
        with self._lock:
            found = self._detect_orientation_script(image)
        if not found:
            return 0, 0.0
        return int(found.get("orient_deg", 0)) % 360, float(found.get("orient_conf", 0.0))

    def close(self) -> None:
        with self._lock:
            for api in [*self._apis.values(), *([self._osd] if self._osd is not None else [])]:
                api.End()
            self._apis.clear()
            self._osd = None

    def _check_languages(self, requested: Sequence[str]) -> str:
        assert self._tessdata is not None
        names = tesseract_languages(requested)
        if not names:
            raise EngineError(self.name, "the task names no language")
        have = installed_languages(self._tessdata)
        missing = [name for name in names if name not in have]
        if missing:
            raise EngineError(
                self.name,
                f"no traineddata for {', '.join(missing)} in {self._tessdata} "
                f"(installed: {', '.join(have) or 'none'}); fix: {_apt_fix(missing)}",
            )
        return "+".join(names)

    def _choose(self, image: Any, task: Task, languages: str) -> LanguageChoice:
        """The languages for this page: the task's, plus those the page's scripts call for."""
        requested = languages.split("+")
        if not task.lang_detect:
            return requested_only(requested, "language detection turned off")
        if task.kind in (TaskKind.REGION, TaskKind.LAYOUT_ONLY):
            return requested_only(requested, f"no detection for a {task.kind.value} task")
        detected = self._detect(image, languages)
        if detected is None:
            return requested_only(requested, "the requested languages cover every installed script")
        found, _ = detected
        assert self._tessdata is not None
        return choose_languages(
            requested, found, available=installed_languages(self._tessdata), method=DETECT_METHOD, engine=self.name
        )

    def _detect(self, image: Any, languages: str) -> tuple[tuple[str, ...], list[str]] | None:
        from tesserocr import PSM, RIL, iterate_level

        assert self._tessdata is not None
        candidates = candidate_languages(languages.split("+"), installed_languages(self._tessdata))
        if set(candidates) == set(languages.split("+")):
            return None
        api = self._api_for("+".join(candidates))
        api.SetImage(image)
        lines_read: list[str] = []
        try:
            iterator = api.AnalyseLayout()
            lines = [] if iterator is None else iterate_level(iterator, RIL.TEXTLINE)
            boxes = [box for box in (line.BoundingBox(RIL.TEXTLINE) for line in lines) if _readable(box)]
            api.SetPageSegMode(PSM.SINGLE_LINE)
            for x1, y1, x2, y2 in boxes[:: max(1, len(boxes) // DETECT_LINES)][:DETECT_LINES]:
                api.SetRectangle(x1, y1, x2 - x1, y2 - y1)
                if api.Recognize():
                    lines_read.append(" ".join(_words(api.GetIterator())))
        finally:
            api.SetPageSegMode(PSM.AUTO)
            api.Clear()
        return page_scripts(word_scripts(lines_read)), candidates

    def _api_for(self, languages: str) -> Any:
        from tesserocr import OEM, PSM, PyTessBaseAPI

        api = self._apis.pop(languages, None)
        if api is None:
            if len(self._apis) >= MAX_APIS:  # the least recently used goes
                self._apis.pop(next(iter(self._apis))).End()
            api = PyTessBaseAPI(path=f"{self._tessdata}/", lang=languages, psm=PSM.AUTO, oem=OEM.LSTM_ONLY)
        self._apis[languages] = api  # most recently used last
        return api

    def _recognize_page(self, page: Page, task: Task, languages: str) -> PageResult:
        # Tesseract loses most of a page skewed by 2 degrees or more (benchmarks/README.md, synthetic
        # set): it reads the page straightened and reports boxes on the page as given.
        angle = 0.0 if task.kind == TaskKind.REGION else skew_angle(page.image)
        straightened = abs(angle) >= DESKEW_MIN_DEGREES
        image = straighten(page.image, angle) if straightened else page.image
        choice = self._choose(image, task, languages)
        api = self._api_for("+".join(choice.used))
        api.SetImage(image)
        try:
            blocks = self._blocks(api, page, task)
        finally:
            api.Clear()
        if straightened:
            to_page = box_mapper(angle, page.image.size)
            blocks = [_mapped(block, to_page) for block in blocks]
        width, height = page.image.size
        result = PageResult(
            page=page.number,
            source=page.source,
            width=width,
            height=height,
            engine=self.name,
            language="+".join(choice.used),
            languages=choice,
            blocks=blocks,
            text=blocks_to_text(blocks),
        )
        return normalise_page(result)

    def _blocks(self, api: Any, page: Page, task: Task) -> list[Block]:
        """Layout-analysis blocks of the image set on `api`, with text unless only layout is asked for."""
        from tesserocr import RIL, iterate_level

        if page.dpi:
            api.SetSourceResolution(round(page.dpi))
        if task.kind == TaskKind.REGION and task.region is not None:
            x1, y1, x2, y2 = (round(v) for v in task.region)
            api.SetRectangle(x1, y1, max(1, x2 - x1), max(1, y2 - y1))
        with_text = task.kind != TaskKind.LAYOUT_ONLY
        if with_text:
            # Tesseract's own deadline (milliseconds); it returns False when it is cut short.
            timeout_ms = round(task.timeout * 1000) if task.timeout else 0
            if not api.Recognize(timeout_ms):
                why = f"timed out after {task.timeout:g} s" if task.timeout else "Recognize failed"
                raise EngineError(self.name, f"{page.source} page {page.number}: {why}")
            iterator = api.GetIterator()
        else:
            iterator = api.AnalyseLayout()
        if iterator is None:
            return []
        found = (_block(item, RIL.BLOCK, with_text) for item in iterate_level(iterator, RIL.BLOCK))
        blocks = [block for block in found if block is not None]
        if with_text:
            _attach_lines(blocks, _lines(api.GetIterator()))
        return blocks


def _readable(box: tuple[int, int, int, int] | None) -> bool:
    """A line box big enough for Leptonica to scale (smaller ones are rules and specks)."""
    return box is not None and box[2] - box[0] >= 8 and box[3] - box[1] >= 8


def _words(iterator: Any) -> list[str]:
    from tesserocr import RIL, iterate_level

    words = []
    for word in [] if iterator is None else iterate_level(iterator, RIL.WORD):
        try:
            words.append(word.GetUTF8Text(RIL.WORD) or "")
        except RuntimeError:  # an element with no text
            continue
    return words


def _mapped(block: Block, box: Callable[[Box], Box]) -> Block:
    return block.model_copy(
        update={
            "bbox": box(block.bbox) if block.bbox is not None else None,
            "children": [_mapped(child, box) for child in block.children],
        }
    )


def _lines(iterator: Any) -> list[Block]:
    """Every text line with its words, boxes and confidences, walked word by word in reading order."""
    from tesserocr import RIL

    lines: list[Block] = []
    current: Block | None = None
    if iterator is None:
        return lines
    while True:
        if iterator.IsAtBeginningOf(RIL.TEXTLINE):
            current = _unit(iterator, RIL.TEXTLINE, "Line")
            if current is not None:
                lines.append(current)
        word = _unit(iterator, RIL.WORD, "Word")
        if word is not None and current is not None:
            current.children.append(word)
        if not iterator.Next(RIL.WORD):
            return lines


def _unit(iterator: Any, level: int, category: str) -> Block | None:
    box = iterator.BoundingBox(level)
    try:
        text = (iterator.GetUTF8Text(level) or "").strip()
    except RuntimeError:  # tesserocr raises for an element with no text, e.g. inside an image region
        return None
    if box is None or not text:
        return None
    confidence = max(0.0, min(1.0, iterator.Confidence(level) / 100.0))
    x1, y1, x2, y2 = (float(v) for v in box)
    return Block(bbox=(x1, y1, x2, y2), category=category, text=text, confidence=confidence)


def _attach_lines(blocks: list[Block], lines: list[Block]) -> None:
    """Give each block the lines whose centre lies inside it (Tesseract's blocks do not overlap)."""
    for line in lines:
        if line.bbox is None:
            continue
        x1, y1, x2, y2 = line.bbox
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        for block in blocks:
            if block.bbox is None:
                continue
            bx1, by1, bx2, by2 = block.bbox
            if bx1 <= cx <= bx2 and by1 <= cy <= by2 and block.category != "Picture":
                block.children.append(line)
                break


def _block(item: Any, level: int, with_text: bool) -> Block | None:
    category = _CATEGORIES.get(item.BlockType())
    box = item.BoundingBox(level)
    if category is None or box is None:
        return None
    text = ""
    confidence = None
    if with_text and category != "Picture":
        text = (item.GetUTF8Text(level) or "").strip()
        if not text:
            return None
        confidence = max(0.0, min(1.0, item.Confidence(level) / 100.0))
    x1, y1, x2, y2 = (float(v) for v in box)
    return Block(bbox=(x1, y1, x2, y2), category=category, text=text, confidence=confidence)
