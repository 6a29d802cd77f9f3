"""Loading inputs (images, multi-page TIFFs, PDFs, directories) into pages."""

from polyocr.documents.loader import (
    DEFAULT_DPI,
    DEFAULT_MAX_PAGES,
    DEFAULT_MAX_PIXELS,
    Page,
    Source,
    expand_inputs,
    load_pages,
    open_source,
)

__all__ = [
    "DEFAULT_DPI",
    "DEFAULT_MAX_PAGES",
    "DEFAULT_MAX_PIXELS",
    "Page",
    "Source",
    "expand_inputs",
    "load_pages",
    "open_source",
]
