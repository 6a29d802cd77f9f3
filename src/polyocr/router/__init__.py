"""Choosing engines for each page, checking what they produce, retrying and falling back."""

from polyocr.router.chain import Router, resolve_chain
from polyocr.router.config import RouterConfig, load_config
from polyocr.router.summary import RunSummary, summarize

__all__ = ["Router", "RouterConfig", "RunSummary", "load_config", "resolve_chain", "summarize"]
