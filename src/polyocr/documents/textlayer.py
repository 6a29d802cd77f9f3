"""A PDF page's own text layer: read it (pypdfium2), and decide whether it can be trusted.

Born-digital pages carry their text exactly; reading it is one to two orders of magnitude faster
than OCR. But a layer can be empty, garbage (glyphs with no Unicode mapping, private-use or
replacement characters, mojibake), cover only part of the page (a scan with a caption typed on
top), or be an earlier invisible OCR layer of unknown quality. `assess` checks the layer against
the rendered page and says why it is or is not used:

- `empty`: no characters at all;
- `garbage`: more than GARBAGE_SHARE of the characters are unmapped, replacement, private-use or
  control characters, or MOJIBAKE_SHARE of the words are UTF-8 read as Latin-1, mix scripts
  within one run of letters (Latin look-alikes inside a Cyrillic word), or are a legacy 8-bit
  Cyrillic encoding read as Latin-1 (every letter of the word accented Latin-1: "Ïðèâåò");
- `partial`: the page's ink is not covered by the characters' boxes: of the marks of ink (the
  glyph tops estimate_glyphs counts) outside small embedded pictures, more than UNCOVERED_SHARE
  (and at least UNCOVERED_MIN) lie outside every character box. A page that draws nothing but
  text objects is covered by construction and is not rendered; the others are counted on a small
  grey render (CHECK_MAX_SIDE), made only once the checks on the characters have passed;
- `invisible`: most characters are drawn in render mode 3, i.e. someone's OCR layer. In `auto`
  mode the router reads a strip of the page with its own chain and keeps the layer only if the two
  agree (router/textlayer.py); `always` takes it.

Modes: `auto` (use the layer when it passes), `always` (use any non-empty layer), `never` (OCR).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from PIL import Image

from polyocr.results import Attempt, Block, Outcome, PageResult

TEXT_LAYER_MODES = ("auto", "always", "never")
ENGINE = "text-layer"

GARBAGE_SHARE = 0.02
MOJIBAKE_SHARE = 0.05
UNCOVERED_SHARE = 0.10
UNCOVERED_MIN = 30  # marks of ink: a page number or a stray logo outside the layer is fine
INVISIBLE_SHARE = 0.5
SMALL_PICTURE = 0.5  # embedded pictures below this share of the page are figures, not scanned text
LEGACY_MIN_LETTERS = 4  # a word this long made only of accented Latin-1 letters is cp1251/KOI8-R misread
# A UTF-8 multi-byte sequence decoded as Latin-1/cp1252: Ã or Â before a continuation byte, Ð/Ñ before
# one (Cyrillic), â€ (punctuation).
_MOJIBAKE = re.compile(r"[ÃÂ][\x80-\xbf\u00a0-\u00bf]|[ÐÑ][\x80-\xbf\u00a0-\u00bf\u0152-\u0178\u2018-\u203a]|â€")


# A run of letters: one script expected within it ("z⟨суффикс⟩" is two runs, "пpивeт" one mixed run).
_LETTERS = re.compile(r"[^\W\d_]+")


@dataclass
class Char:
    text: str
    box: tuple[float, float, float, float]  # page pixels at the render scale, top-left origin


@dataclass
class TextLayer:
    chars: list[Char] = field(default_factory=list)
    invisible_share: float = 0.0
    picture_boxes: list[tuple[float, float, float, float]] = field(default_factory=list)
    size: tuple[int, int] | None = None  # the pixel size the boxes are in (None: the checked image's)
    # The page draws nothing but text objects (no image, path, shading, annotation): all its ink is
    # glyphs of the layer's characters, so the layer covers the ink by construction.
    text_only: bool = False

    @property
    def text(self) -> str:
        return "".join(c.text for c in self.chars)


@dataclass
class Verdict:
    use: bool
    check: str  # ok | empty | garbage | partial | invisible | never
    reason: str
    # Marks of ink on the page (router.checks.estimate_glyphs' measure) where the check counted them.
    glyphs: int | None = None


def extract(page, width: int, height: int) -> TextLayer:
    """The characters of a pypdfium2 page with their loose boxes mapped onto its rendering of
    `width` x `height` pixels (rotation and crop box included, through FPDF_PageToDevice). Needs no
    rendering: pdfium's raw text API is used character by character (its helper objects cost more
    than the characters)."""
    import pypdfium2.raw as pdfium_c

    to_pixels = _device_map(page, width, height)
    textpage = page.get_textpage()
    raw = textpage.raw
    rect = pdfium_c.FS_RECTF()
    try:
        count = pdfium_c.FPDFText_CountChars(raw)
        chars: list[Char] = []
        invisible = 0
        drawn = 0
        previous = None
        for index in range(count):
            code = pdfium_c.FPDFText_GetUnicode(raw, index)
            if 0xDC00 <= code <= 0xDFFF:  # the second half of a surrogate pair, joined below
                continue
            if 0xD800 <= code <= 0xDBFF:
                low = pdfium_c.FPDFText_GetUnicode(raw, index + 1) if index + 1 < count else 0
                code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00) if 0xDC00 <= low <= 0xDFFF else 0xFFFD
            # 0: a glyph with no Unicode mapping; 2: pdfium's mark for a hyphen that ends a line.
            ch = "\ufffd" if code == 0 else "-" if code == 2 else chr(code)
            if ch in "\r\n":
                if ch == "\n" and chars and chars[-1].text != "\n":
                    chars.append(Char("\n", (0, 0, 0, 0)))
                continue
            if pdfium_c.FPDFText_GetLooseCharBox(raw, index, rect):
                box = _box(to_pixels, rect.left, rect.bottom, rect.right, rect.top)
            else:
                box = (0.0, 0.0, 0.0, 0.0)
            if not ch.isspace():
                # pdfium ends a line after a hyphen without a line break: a character whose middle
                # is above or below the previous one's box starts a new line all the same.
                middle = (box[1] + box[3]) / 2
                if previous is not None and not (previous[1] <= middle <= previous[3]) and chars[-1].text != "\n":
                    chars.append(Char("\n", (0, 0, 0, 0)))
                previous = box
            chars.append(Char(ch, box))
            if not ch.isspace():
                obj = pdfium_c.FPDFText_GetTextObject(raw, index)
                if obj:
                    drawn += 1
                    invisible += pdfium_c.FPDFTextObj_GetTextRenderMode(obj) == pdfium_c.FPDF_TEXTRENDERMODE_INVISIBLE
    finally:
        textpage.close()
    pictures = []
    text_only = pdfium_c.FPDFPage_GetAnnotCount(page.raw) == 0
    for obj in page.get_objects(max_depth=15):
        if obj.type == pdfium_c.FPDF_PAGEOBJ_IMAGE:
            left, bottom, right, top = obj.get_bounds()
            pictures.append(_box(to_pixels, left, bottom, right, top))
        if obj.type not in (pdfium_c.FPDF_PAGEOBJ_TEXT, pdfium_c.FPDF_PAGEOBJ_FORM):
            text_only = False
    return TextLayer(
        chars=chars,
        invisible_share=invisible / drawn if drawn else 0.0,
        picture_boxes=pictures,
        size=(width, height),
        text_only=text_only,
    )


def _device_map(page, width: int, height: int):
    """Page (user-space) coordinates to pixels of the page rendered at width x height."""
    import ctypes

    import pypdfium2.raw as pdfium_c

    def point(x: float, y: float) -> tuple[float, float]:
        dx, dy = ctypes.c_int(), ctypes.c_int()
        pdfium_c.FPDF_PageToDevice(page.raw, 0, 0, width * 16, height * 16, 0, x, y, dx, dy)
        return dx.value / 16.0, dy.value / 16.0  # x16 keeps sub-pixel precision through the int API

    ox, oy = point(0, 0)
    ax, ay = point(1000, 0)
    bx, by = point(0, 1000)
    matrix = ((ax - ox) / 1000, (bx - ox) / 1000, ox, (ay - oy) / 1000, (by - oy) / 1000, oy)

    def to_pixels(x: float, y: float) -> tuple[float, float]:
        a, b, c, d, e, f = matrix
        return a * x + b * y + c, d * x + e * y + f

    return to_pixels


def _box(to_pixels, left: float, bottom: float, right: float, top: float) -> tuple[float, float, float, float]:
    x1, y1 = to_pixels(left, top)
    x2, y2 = to_pixels(right, bottom)
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def _bad_char(ch: str) -> bool:
    code = ord(ch)
    if ch in "\t\n\r ":
        return False
    if code == 0xFFFD or code < 0x20 or 0x7F <= code <= 0x9F:
        return True
    return unicodedata.category(ch) in ("Co", "Cn", "Cs")  # private use, unassigned, lone surrogates


def _scripts(word: str) -> set[str]:
    found = set()
    for ch in word:
        if ch.isalpha():
            name = unicodedata.name(ch, "")
            found.add(name.split(" ")[0])
    return found


def assess(layer: TextLayer, image: Image.Image | Callable[[], Image.Image] | None, mode: str = "auto") -> Verdict:
    """Whether the page should be read from its layer, and why (or why not).

    `image` is the page as rendered (any resolution: the layer's boxes are scaled to it), or a
    function that renders it, called only when the ink has to be looked at: the checks on the
    characters come first, and a page that draws nothing but text (`layer.text_only`) is covered by
    its layer without looking.
    """
    if mode == "never":
        return Verdict(False, "never", "--text-layer never")
    visible = [c for c in layer.chars if not c.text.isspace()]
    if not visible:
        return Verdict(False, "empty", "the page has no text layer")
    if mode == "always":
        return Verdict(True, "ok", f"--text-layer always: {len(visible)} characters")
    bad = sum(_bad_char(c.text) for c in visible)
    if bad / len(visible) > GARBAGE_SHARE:
        return Verdict(
            False, "garbage", f"{bad} of {len(visible)} characters are unmapped, private-use or replacement characters"
        )
    words = layer.text.split()
    odd = sum(_odd_word(w) for w in words)
    if words and odd / len(words) > MOJIBAKE_SHARE:
        return Verdict(False, "garbage", f"{odd} of {len(words)} words look like mojibake (mixed or misread encodings)")
    if layer.invisible_share > INVISIBLE_SHARE:
        return Verdict(
            False,
            "invisible",
            f"{layer.invisible_share:.0%} of the characters are invisible (an earlier OCR layer)",
        )
    if layer.text_only:
        # Every mark of ink is a glyph of one of these characters: as many marks as characters.
        return Verdict(
            True,
            "ok",
            f"{len(visible)} characters, covering all of the page's ink (the page draws only text)",
            glyphs=len(visible),
        )
    if image is None:
        raise ValueError("assess needs the page's image for a page that draws more than text")
    picture = image() if callable(image) else image
    covered, total, glyphs = ink_coverage(layer, picture)
    uncovered = total - covered
    if uncovered >= UNCOVERED_MIN and uncovered > UNCOVERED_SHARE * total:
        return Verdict(
            False,
            "partial",
            f"the layer covers {covered} of {total} marks of ink ({covered / total:.0%}) on the page",
            glyphs=glyphs,
        )
    share = f"{covered / total:.0%}" if total else "no ink"
    return Verdict(True, "ok", f"{len(visible)} characters, covering {share} of the page's ink", glyphs=glyphs)


def _odd_word(word: str) -> bool:
    """A word that reads as a misread encoding: UTF-8 bytes read as Latin-1/cp1252 (Ã©, Ð¿), scripts
    mixed inside one run of letters (Latin look-alikes inside a Cyrillic word), or a legacy 8-bit
    Cyrillic encoding (cp1251, KOI8-R) read as Latin-1: "Ïðèâåò" for "Привет", where every letter of
    the word is an accented Latin-1 letter (U+00C0-U+00FF). Real Latin-script words carry one or
    two accented letters among plain ones ("élève", "Straße", "déjà": at most 2/3 of 3 letters),
    so a word of four or more letters all in that block is not a real word."""
    if _MOJIBAKE.search(word):
        return True
    for run in _LETTERS.findall(word):
        if len(_scripts(run)) > 1:
            return True
        if len(run) >= LEGACY_MIN_LETTERS and all("\u00c0" <= ch <= "\u00ff" for ch in run):
            return True
    return False


# The check image's longest side: the ink is counted at router.checks.estimate_glyphs' own size, so the
# count doubles as the page's glyph estimate for the router's checks.
CHECK_MAX_SIDE = 1600


def ink_coverage(layer: TextLayer, image: Image.Image, max_side: int = CHECK_MAX_SIDE) -> tuple[int, int, int]:
    """(marks of ink inside a character box, marks of ink outside small pictures, all marks of ink).

    Marks are the tops of ink runs, as router.checks.estimate_glyphs counts them: about one per
    glyph. `image` may be the page at any resolution (a render made small for this check): boxes,
    in the layer's pixels (`layer.size`), are scaled to it. Boxes are grown by a fifth of their
    height, since loose boxes can sit a little off the drawn glyph.
    """
    gray = image if image.mode == "L" else image.convert("L")
    if max(gray.size) > max_side:
        factor = max_side / max(gray.size)
        gray = gray.resize(
            (max(1, round(gray.width * factor)), max(1, round(gray.height * factor))), Image.Resampling.BOX
        )
    size = layer.size or image.size
    scale = gray.width / size[0]
    pixels = np.asarray(gray)
    dark = pixels < _otsu(pixels)
    if dark.mean() > 0.5:
        dark = ~dark
    tops = _mark_tops(dark)
    glyphs = int(tops.sum())
    page_area = size[0] * size[1]
    for x1, y1, x2, y2 in layer.picture_boxes:
        if (x2 - x1) * (y2 - y1) < SMALL_PICTURE * page_area:
            tops[_slice(y1, y2, scale, tops.shape[0]), _slice(x1, x2, scale, tops.shape[1])] = False
    total = int(tops.sum())
    mask = np.zeros_like(tops)
    for char in layer.chars:
        if char.text.isspace():
            continue
        x1, y1, x2, y2 = char.box
        pad = 0.2 * (y2 - y1)
        mask[_slice(y1 - pad, y2 + pad, scale, mask.shape[0]), _slice(x1 - pad, x2 + pad, scale, mask.shape[1])] = True
    return int((tops & mask).sum()), total, glyphs


def _mark_tops(dark: np.ndarray) -> np.ndarray:
    """The first pixel of every horizontal run of ink that no ink touches from the row above: the
    top of a connected mark, as router.checks.estimate_glyphs counts them (a line or a curve of a
    drawing is one mark however long, a letter one or two)."""
    starts = dark & ~np.pad(dark, ((0, 0), (1, 0)))[:, :-1]
    above = np.zeros_like(dark)
    above[1:] = dark[:-1]
    near_above = above | np.pad(above, ((0, 0), (1, 0)))[:, :-1] | np.pad(above, ((0, 0), (0, 1)))[:, 1:]
    run_ids = np.cumsum(starts, axis=1, dtype=np.int32)
    width = dark.shape[1] + 1
    rows = np.nonzero(dark)[0]
    touched = np.unique((rows.astype(np.int64) * width + run_ids[dark])[near_above[dark]])
    start_rows, start_cols = np.nonzero(starts)
    start_keys = start_rows.astype(np.int64) * width + run_ids[start_rows, start_cols]
    tops = np.zeros_like(dark)
    untouched = ~np.isin(start_keys, touched)
    tops[start_rows[untouched], start_cols[untouched]] = True
    return tops


def _slice(a: float, b: float, scale: float, limit: int) -> slice:
    return slice(max(0, int(a * scale)), min(limit, int(np.ceil(b * scale)) + 1))


def _otsu(pixels: np.ndarray) -> int:
    hist = np.bincount(pixels.ravel(), minlength=256).astype(np.float64)
    total = hist.sum()
    levels = np.arange(256)
    weight = np.cumsum(hist)
    mean = np.cumsum(hist * levels)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = np.nan_to_num((mean[-1] * weight / total - mean) ** 2 / (weight * (total - weight)))
    return int(np.argmax(between)) + 1 if between.max() > 0 else 0


def blocks(layer: TextLayer) -> list[Block]:
    """The layer as Text blocks of Line blocks of Word blocks: lines where pdfium broke them, words at
    spaces, blocks where the gap to the next line exceeds the line's height."""
    lines: list[Block] = []
    words: list[Block] = []
    current: list[Char] = []

    def end_word() -> None:
        if current:
            words.append(_unit("".join(c.text for c in current), [c.box for c in current], "Word"))
            current.clear()

    def end_line() -> None:
        end_word()
        if words:
            line = _unit(" ".join(w.text for w in words), [w.bbox for w in words], "Line")
            line.children = list(words)
            lines.append(line)
            words.clear()

    for char in layer.chars:
        if char.text == "\n":
            end_line()
        elif char.text.isspace():
            end_word()
        else:
            current.append(char)
    end_line()
    result: list[Block] = []
    group: list[Block] = []
    for line in lines:
        if group:
            last = group[-1]
            assert last.bbox is not None and line.bbox is not None  # layer lines always have boxes
            height = last.bbox[3] - last.bbox[1]
            if line.bbox[1] - last.bbox[3] > height or line.bbox[3] < last.bbox[1]:
                result.append(_paragraph(group))
                group = []
        group.append(line)
    if group:
        result.append(_paragraph(group))
    return result


def _unit(text: str, boxes: list, category: str) -> Block:
    box = (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
    return Block(bbox=box, category=category, text=text, confidence=1.0)


def _paragraph(lines: list[Block]) -> Block:
    block = _unit("\n".join(line.text for line in lines), [line.bbox for line in lines], "Text")
    block.children = lines
    return block


def layer_result(layer: TextLayer, verdict: Verdict, number: int, source: str, size: tuple[int, int]) -> PageResult:
    """The page as read from its layer, with the attempt that records the path taken."""
    found = blocks(layer)
    return PageResult(
        page=number,
        source=source,
        width=size[0],
        height=size[1],
        engine=ENGINE,
        blocks=found,
        text="\n\n".join(b.text for b in found),
        attempts=[Attempt(engine=ENGINE, outcome=Outcome.OK, settings={"path": "text-layer", "check": verdict.reason})],
    )


def declined_attempt(verdict: Verdict, seconds: float) -> Attempt:
    """The attempt a page records when its layer was not used and it went to OCR (a page with no
    layer at all records none: it is a scan, and OCR was the only path)."""
    return Attempt(
        engine=ENGINE,
        settings={"path": "ocr", "check": verdict.check},
        outcome=Outcome.REJECTED,
        seconds=seconds,
        error=verdict.reason,
    )
