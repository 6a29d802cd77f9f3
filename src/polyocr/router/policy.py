"""What to try next after a failed attempt: smaller pages after running out of memory, repetition
controls and then sampling after a loop, another engine after a timeout or a crash.

The ladder of settings follows olmOCR's practice (retry a looping page with rising temperature)
with a gentler first step: a light repetition penalty and a ban on repeating long n-grams, which
stops most loops while still decoding greedily.
"""

from __future__ import annotations

import gc
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from polyocr.engines.base import EnginePlan
from polyocr.results import Outcome

# Below about a megapixel an A4 page is under 100 DPI and body text stops being legible, so an
# engine that runs out of memory even there is given up on rather than fed a smaller page.
OOM_PIXEL_FLOOR = 1_000_000

# Generation settings for the retries of a page whose output looped or hit the token limit.
LOOP_LADDER: tuple[dict[str, Any], ...] = (
    {"repetition_penalty": 1.05, "no_repeat_ngram_size": 20},
    {"repetition_penalty": 1.05, "no_repeat_ngram_size": 20, "do_sample": True, "temperature": 0.3, "top_p": 0.95},
    {"repetition_penalty": 1.1, "no_repeat_ngram_size": 20, "do_sample": True, "temperature": 0.7, "top_p": 0.95},
)

# Plan fields an engine reads at each recognize() call; changing only these needs no reload.
PER_CALL_FIELDS = frozenset({"generation", "batch_size"})

_OOM_MESSAGES = (
    "out of memory",
    "cuda_error_out_of_memory",
    "cublas_status_alloc_failed",
    "failed to allocate memory",
    "cannot allocate memory",
)

T = TypeVar("T")


class PageTimeout(Exception):
    """The engine did not answer within the page's time limit; its call was abandoned."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        super().__init__(f"no answer within {seconds:.1f} s")


def is_oom(exc: BaseException) -> bool:
    """Out of memory on the GPU (torch.cuda.OutOfMemoryError) or the host (MemoryError), or an
    error whose message says so (allocators in onnxruntime and cuBLAS raise plain RuntimeErrors)."""
    if isinstance(exc, MemoryError):
        return True
    torch = sys.modules.get("torch")
    oom_type = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None) if torch else None
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return any(message in str(exc).lower() for message in _OOM_MESSAGES)


def outcome_of(exc: BaseException) -> Outcome:
    if isinstance(exc, PageTimeout):
        return Outcome.TIMEOUT
    return Outcome.OOM if is_oom(exc) else Outcome.ERROR


def free_memory() -> None:
    """Give back what a failed attempt left allocated, before the retry allocates again."""
    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def device_free_bytes(device: str) -> int | None:
    """Free memory on a CUDA device now, or None when that cannot be known cheaply."""
    torch = sys.modules.get("torch")
    if not device.startswith("cuda") or torch is None or not torch.cuda.is_available():
        return None
    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return int(free)


def smaller_plan(plan: EnginePlan, page_pixels: int) -> EnginePlan | None:
    """The plan for a retry after running out of memory: half the pixels down to the floor, then
    half the batch; None once both are at their minimum."""
    current = min(plan.max_pixels or page_pixels, page_pixels)
    if current > OOM_PIXEL_FLOOR:
        pixels = max(OOM_PIXEL_FLOOR, current // 2)
        return replace(
            plan,
            max_pixels=pixels,
            reasons={**plan.reasons, "max_pixels": f"halved to {pixels} after running out of memory at {current}"},
        )
    if plan.batch_size > 1:
        batch = plan.batch_size // 2
        return replace(
            plan,
            batch_size=batch,
            reasons={**plan.reasons, "batch_size": f"halved to {batch} after running out of memory at the pixel floor"},
        )
    return None


def loop_plan(plan: EnginePlan, step: int) -> EnginePlan | None:
    """The plan for retry number `step` (0-based) of a page whose output looped; None when the ladder
    is used up."""
    if step >= len(LOOP_LADDER):
        return None
    settings = LOOP_LADDER[step]
    return replace(
        plan,
        generation={**plan.generation, **settings},
        reasons={**plan.reasons, "generation": f"retry {step + 1} after a loop: {settings}"},
    )


def call_with_timeout(fn: Callable[[], T], seconds: float | None) -> T:
    """fn() in a daemon thread, abandoned after `seconds` (a hung engine cannot stop the run).

    Python cannot kill a thread: an abandoned call runs on in the background until it returns, so
    the caller must not use that engine again. With no limit fn() runs here, in this thread.
    """
    if seconds is None:
        return fn()
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread below
            box["error"] = exc

    worker = threading.Thread(target=target, name="polyocr-engine-call", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise PageTimeout(seconds)
    if "error" in box:
        raise box["error"]
    return box["value"]
