"""Rendering results: plain text, Markdown, JSON, hOCR, ALTO, searchable PDF and page overlays."""

from polyocr.formats.markdown import blocks_to_markdown
from polyocr.formats.render import BINARY_FORMATS, FORMATS, render, suffix_for
from polyocr.formats.text import blocks_to_text

__all__ = ["BINARY_FORMATS", "FORMATS", "blocks_to_markdown", "blocks_to_text", "render", "suffix_for"]
