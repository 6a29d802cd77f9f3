"""Choosing engines for each page, checking what they produce, retrying and falling back."""

from polyocr.router.chain import Router, resolve_chain

__all__ = ["Router", "resolve_chain"]
