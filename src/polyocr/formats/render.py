"""A DocumentResult rendered in one of the output formats."""

from __future__ import annotations

from polyocr.results import DocumentResult, PageStatus

# Text formats, rendered from a DocumentResult alone; "pdf" (formats/pdf.py) also needs the pages.
FORMATS = ("txt", "md", "json", "hocr", "alto")
BINARY_FORMATS = ("pdf",)
_SUFFIX = {"txt": ".txt", "md": ".md", "json": ".json", "hocr": ".hocr", "alto": ".alto.xml", "pdf": ".pdf"}
PAGE_BREAK = "\f"  # between pages in text output, as pdftotext does


def suffix_for(fmt: str) -> str:
    return _SUFFIX[fmt]


def render(doc: DocumentResult, fmt: str) -> str:
    """The document as text, Markdown, JSON, hOCR or ALTO; failed pages are marked, never silently dropped."""
    if fmt == "json":
        return doc.to_json() + "\n"
    if fmt == "hocr":
        from polyocr.formats.hocr import render_hocr

        return render_hocr(doc)
    if fmt == "alto":
        from polyocr.formats.alto import render_alto

        return render_alto(doc)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    chunks = []
    for page in doc.pages:
        if page.status == PageStatus.FAILED:
            reason = "; ".join(page.errors) or "failed on every engine"
            body = f"[page {page.page} failed: {reason}]"
            chunks.append(f"<!-- {body} -->" if fmt == "md" else body)
        elif fmt == "md":
            chunks.append(page.markdown or page.text)
        else:
            chunks.append(page.text)
    separator = "\n\n---\n\n" if fmt == "md" else f"\n{PAGE_BREAK}"
    return separator.join(chunks).rstrip() + "\n"
