"""The words every layer shares: what is asked of a page (Task), how an engine runs here (EnginePlan),
whether it can (Availability), what sort of engine it is (EngineKind), and the attention and dtype
names the runtime decides between.

This module imports nothing of polyocr's but `defaults`, so runtime/, engines/, router/ and the
server can all depend on it without depending on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from polyocr import defaults

# Attention implementations, best first where all run; "varlen" and "flex" are torch's own.
ATTENTIONS: tuple[str, ...] = ("flash_attention_2", "sdpa", "varlen", "flex", "eager")
DTYPES: tuple[str, ...] = ("bfloat16", "float16", "float32")


class TaskKind(StrEnum):
    TEXT = "text"  # plain text in reading order
    LAYOUT = "layout"  # blocks with boxes, categories and text
    LAYOUT_ONLY = "layout_only"  # blocks with boxes and categories, no text
    REGION = "region"  # text of one box on the page


class EngineKind(StrEnum):
    CLASSICAL = "classical"  # CPU OCR (Tesseract, RapidOCR): no plan beyond the CPU
    VLM = "vlm"  # a vision-language model run here: device, dtype, attention and memory planned
    REMOTE = "remote"  # a model behind a server: nothing to plan here


@dataclass(frozen=True)
class Task:
    """What is wanted from a page; engines map it to their own prompts or modes."""

    kind: TaskKind = TaskKind.LAYOUT
    languages: tuple[str, ...] = defaults.LANGUAGES
    max_new_tokens: int = defaults.MAX_NEW_TOKENS
    timeout: float | None = None
    region: tuple[float, float, float, float] | None = None
    # Add languages for scripts found on the page that `languages` do not cover (langdetect.py).
    lang_detect: bool = True
    # The caller named `kind` (False: the default, layout, which a named engine without layout may
    # answer with the best it has; see `for_engine`).
    explicit: bool = False
    # Set by `for_engine` on the task an engine is given instead of the one asked for.
    degraded_from: TaskKind | None = None

    def for_engine(self, offered: frozenset[TaskKind]) -> Task | None:
        """This task as an engine offering `offered` can take it: itself when offered; for the default
        layout task (not `explicit`) on an engine without layout, the text task (its richest text:
        an HF engine then uses its Markdown mode where it has one), marked `degraded_from`; None when
        the engine lacks the task (the router never asks it)."""
        if self.kind in offered:
            return self
        if self.kind == TaskKind.LAYOUT and not self.explicit and TaskKind.TEXT in offered:
            return replace(self, kind=TaskKind.TEXT, degraded_from=TaskKind.LAYOUT)
        return None


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""
    fix: str = ""

    @classmethod
    def yes(cls, reason: str = "") -> Availability:
        return cls(True, reason)

    @classmethod
    def no(cls, reason: str, fix: str = "") -> Availability:
        return cls(False, reason, fix)


# Plan fields an engine reads at each recognize() call; changing only these needs no reload.
PER_CALL_FIELDS = frozenset({"generation", "batch_size"})


@dataclass
class EnginePlan:
    """How to run an engine here: decided by runtime/ and the router, honoured by the engine."""

    device: str = "cpu"
    dtype: str = "float32"
    attention: str = "sdpa"
    max_pixels: int | None = None
    min_pixels: int | None = None
    batch_size: int = 1
    model_path: str | None = None
    generation: dict[str, Any] = field(default_factory=dict)  # temperature, top_p, repetition controls
    reasons: dict[str, str] = field(default_factory=dict)  # why each setting was chosen

    def changed_fields(self, other: EnginePlan) -> set[str]:
        """The settings that differ from `other` (reasons aside)."""
        return {k for k in vars(self) if k != "reasons" and getattr(self, k) != getattr(other, k)}
