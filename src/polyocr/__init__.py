"""polyocr: OCR with whichever engine works best on the machine at hand."""

from polyocr.api import batch, ocr
from polyocr.results import Block, DocumentResult, PageResult

__version__ = "0.1.0"
__all__ = ["Block", "DocumentResult", "PageResult", "__version__", "batch", "ocr"]
