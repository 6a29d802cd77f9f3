"""What to do after an attempt: accept it, retry with new settings, or pass the page on to the next
engine. `decide()` is pure: it reads the outcome, the page's history with this engine and the plan,
and returns a decision; the router carries it out.

Smaller pages after running out of memory, repetition controls and then sampling after a loop,
another engine after a timeout, a crash or a rejected answer.

The ladder of settings follows olmOCR's practice (retry a looping page with rising temperature)
with a gentler first step: a light repetition penalty and a ban on repeating long n-grams, which
stops most loops while still decoding greedily.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from polyocr.results import Outcome
from polyocr.types import EnginePlan

# Below about a megapixel an A4 page is under 100 DPI and body text stops being legible, so an
# engine that runs out of memory even there is given up on rather than fed a smaller page.
OOM_PIXEL_FLOOR = 1_000_000

# Generation settings for the retries of a page whose output looped or hit the token limit.
LOOP_LADDER: tuple[dict[str, Any], ...] = (
    {"repetition_penalty": 1.05, "no_repeat_ngram_size": 20},
    {"repetition_penalty": 1.05, "no_repeat_ngram_size": 20, "do_sample": True, "temperature": 0.3, "top_p": 0.95},
    {"repetition_penalty": 1.1, "no_repeat_ngram_size": 20, "do_sample": True, "temperature": 0.7, "top_p": 0.95},
)

_OOM_MESSAGES = (
    "out of memory",
    "cuda_error_out_of_memory",
    "cublas_status_alloc_failed",
    "failed to allocate memory",
    "cannot allocate memory",
)


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


def loop_plan(plan: EnginePlan, step: int, own: Mapping[str, Any] | None = None) -> EnginePlan | None:
    """The plan for retry number `step` (0-based) of a page whose output looped; None when the ladder
    is used up. `own` is the engine's authors' anti-repeat settings (Engine.anti_repeat): every
    rung keeps them, so a retry never decodes with less than the model's own recipe."""
    if step >= len(LOOP_LADDER):
        return None
    settings = {**LOOP_LADDER[step], **(own or {})}
    return replace(
        plan,
        generation={**plan.generation, **settings},
        reasons={**plan.reasons, "generation": f"retry {step + 1} after a loop: {settings}"},
    )


@dataclass(frozen=True)
class History:
    """What the router knows of a batch's attempts with one engine so far."""

    loop_step: int = 0  # loop retries already made
    page_pixels: int = 0  # the largest page of the batch
    looped: bool = False  # the rejected answer failed a loop check
    can_retry_loops: bool = True  # the engine generates (a classical engine's repetition is its input's)
    anti_repeat: Mapping[str, Any] = field(default_factory=dict)  # the engine's own (Engine.anti_repeat)


@dataclass(frozen=True)
class Decision:
    action: str  # "accept" | "retry" | "pass_on"
    plan: EnginePlan | None = None  # the retry's plan


ACCEPT = Decision("accept")
PASS_ON = Decision("pass_on")


def decide(outcome: Outcome, history: History, plan: EnginePlan) -> Decision:
    """Accept an OK answer; retry an out-of-memory batch smaller, or a looping answer with the next
    rung of the loop ladder; pass everything else (and a retry with nothing left to try) on."""
    if outcome == Outcome.OK:
        return ACCEPT
    retry: EnginePlan | None = None
    if outcome == Outcome.OOM:
        retry = smaller_plan(plan, history.page_pixels)
    elif outcome == Outcome.REJECTED and history.looped and history.can_retry_loops:
        retry = loop_plan(plan, history.loop_step, history.anti_repeat)
    return PASS_ON if retry is None else Decision("retry", retry)
