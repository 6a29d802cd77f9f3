"""hOCR 1.2 (http://kba.github.io/hocr-spec/1.2/): XHTML with the page's areas, lines and words.

Every engine's result is written through formats.layout, so a VLM's boxed blocks give ocr_carea >
ocr_par > ocr_line > ocrx_word as Tesseract's do (their line and word boxes spread over the block).
Tables become ocr_table (one ocr_line per row), formulas an ocr_math span inside their line, and
pictures ocr_image. Confidences are x_wconf (0-100) where the engine gave one. A failed page is an
empty ocr_page whose title says nothing more than its size; the reason is in an XML comment.
"""

from __future__ import annotations

from html import escape

from polyocr.formats.layout import Box, Line, page_regions, polyocr_version
from polyocr.results import DocumentResult, PageResult, PageStatus

CAPABILITIES = "ocr_page ocr_carea ocr_par ocr_line ocrx_word ocr_table ocr_image ocr_math ocrp_wconf ocrp_lang"


def _bbox(box: Box) -> str:
    x1, y1, x2, y2 = (round(v) for v in box)
    return f"bbox {x1} {y1} {max(x2, x1 + 1)} {max(y2, y1 + 1)}"


def _attr(value: str) -> str:
    return escape(value, quote=True)


def hocr_language(result: PageResult | None) -> str | None:
    """The page's first language as a BCP 47 tag where it is one we know (eng -> en, rus -> ru)."""
    if result is None or not result.language:
        return None
    first = result.language.replace(",", "+").split("+")[0].strip()
    return _ISO639_1.get(first, first if len(first) == 2 else None)


_ISO639_1 = {"eng": "en", "rus": "ru", "ukr": "uk", "deu": "de", "fra": "fr", "spa": "es", "ita": "it", "nld": "nl"}


def render_hocr(doc: DocumentResult) -> str:
    first = doc.pages[0] if doc.pages else None
    lang = hocr_language(first) or "und"
    engines = sorted({p.engine for p in doc.pages if p.engine})
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN"',
        '    "http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">',
        f'<html xmlns="http://www.w3.org/1999/xhtml" xml:lang="{lang}" lang="{lang}">',
        "<head>",
        f"<title>{escape(doc.source)}</title>",
        '<meta http-equiv="Content-Type" content="text/html;charset=utf-8"/>',
        f'<meta name="ocr-system" content="polyocr {polyocr_version()} ({_attr(", ".join(engines) or "no engine")})"/>',
        f'<meta name="ocr-capabilities" content="{CAPABILITIES}"/>',
        f'<meta name="ocr-number-of-pages" content="{len(doc.pages)}"/>',
        "</head>",
        "<body>",
    ]
    for message in doc.errors:
        out.append(f"<!-- {_comment(message)} -->")
    for index, page in enumerate(doc.pages):
        out += _page(page, index)
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def _comment(text: str) -> str:
    return escape(text).replace("--", "- -")


def _page(page: PageResult, index: int) -> list[str]:
    n = page.page
    title = f'image "{_attr(page.source)}"; {_bbox((0, 0, page.width, page.height))}; ppageno {index}'
    out = [f'<div class="ocr_page" id="page_{n}" title=\'{title}\'>']
    if page.status == PageStatus.FAILED:
        out.append(f"<!-- page failed: {_comment('; '.join(page.errors))} -->")
    else:
        lang = hocr_language(page)
        lang_attr = f' lang="{lang}"' if lang else ""
        for b, region in enumerate(page_regions(page), start=1):
            rid = f"{n}_{b}"
            if region.kind == "picture":
                out.append(f'<div class="ocr_image" id="image_{rid}" title="{_bbox(region.bbox)}"></div>')
                continue
            if region.kind == "table":
                out.append(f'<div class="ocr_table" id="table_{rid}" title="{_bbox(region.bbox)}">')
                out += [_line(line, f"{rid}_{i}") for i, line in enumerate(region.lines, start=1)]
                out.append("</div>")
                continue
            out.append(f'<div class="ocr_carea" id="block_{rid}" title="{_bbox(region.bbox)}">')
            out.append(f'<p class="ocr_par" id="par_{rid}"{lang_attr} title="{_bbox(region.bbox)}">')
            math = region.kind == "formula"
            out += [_line(line, f"{rid}_{i}", math=math) for i, line in enumerate(region.lines, start=1)]
            out += ["</p>", "</div>"]
    out.append("</div>")
    return out


def _line(line: Line, lid: str, *, math: bool = False) -> str:
    size = max(1, round(line.bbox[3] - line.bbox[1]))
    descent = round(size * 0.2)
    title = f"{_bbox(line.bbox)}; baseline 0 {-descent}; x_size {size}; x_descenders {descent}; x_ascenders {descent}"
    words = []
    for w, word in enumerate(line.words, start=1):
        conf = f"; x_wconf {round(word.confidence * 100)}" if word.confidence is not None else ""
        words.append(
            f'<span class="ocrx_word" id="word_{lid}_{w}" title="{_bbox(word.bbox)}{conf}">{escape(word.text)}</span>'
        )
    body = " ".join(words)
    if math:
        body = f'<span class="ocr_math" title="{_bbox(line.bbox)}">{body}</span>'
    return f'<span class="ocr_line" id="line_{lid}" title="{title}">{body}</span>'
