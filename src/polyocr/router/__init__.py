"""Choosing engines for each page, checking what they produce, retrying and falling back.

resolve.py turns `--engine` into a chain; pool.py keeps the chain's engines; policy.py decides what
follows each attempt; router.py runs pages through the chain; checks.py judges answers; plans.py
makes each engine's EnginePlan; summary.py counts what happened. The user's routing settings are
polyocr.config.RouterConfig.
"""

from polyocr.router.resolve import resolve_chain
from polyocr.router.router import Router
from polyocr.router.summary import RunSummary, summarize

__all__ = ["Router", "RunSummary", "resolve_chain", "summarize"]
