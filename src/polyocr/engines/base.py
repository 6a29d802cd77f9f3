"""The engine interface and the registry.

Engines are registered by name with the dotted path of their class and imported only when asked
for, so listing engines never imports torch, and an engine whose optional packages are missing
reports that instead of breaking the import of polyocr. Nothing else in polyocr imports an engine
module directly: it asks this registry.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar

from polyocr.errors import EngineUnavailable
from polyocr.runtime.attention import ATTENTIONS

if TYPE_CHECKING:
    from polyocr.documents import Page
    from polyocr.results import PageResult
    from polyocr.runtime.memory import ModelDims
    from polyocr.runtime.probe import Profile


class TaskKind(StrEnum):
    TEXT = "text"  # plain text in reading order
    LAYOUT = "layout"  # blocks with boxes, categories and text
    LAYOUT_ONLY = "layout_only"  # blocks with boxes and categories, no text
    REGION = "region"  # text of one box on the page


@dataclass(frozen=True)
class Task:
    """What is wanted from a page; engines map it to their own prompts or modes."""

    kind: TaskKind = TaskKind.LAYOUT
    languages: tuple[str, ...] = ("eng", "rus")
    max_new_tokens: int = 16384
    timeout: float | None = None
    region: tuple[float, float, float, float] | None = None


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


# Scripts an engine can read, used to keep e.g. Cyrillic pages away from Latin-only engines.
LATIN, CYRILLIC, HAN, KANA, HANGUL = "Latin", "Cyrillic", "Han", "Kana", "Hangul"
ANY_SCRIPT = frozenset({LATIN, CYRILLIC, HAN, KANA, HANGUL, "Greek", "Arabic", "Kannada"})


class Engine:
    """Base class of every engine. Subclasses set the class attributes and implement the methods.

    An engine never decides fallback: it reports what happened (errors, generation stop reason and
    token counts) and the router decides.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    kind: ClassVar[str] = "classical"  # classical | vlm | remote
    scripts: ClassVar[frozenset[str]] = ANY_SCRIPT
    tasks: ClassVar[frozenset[TaskKind]] = frozenset(TaskKind)
    notes: ClassVar[str] = ""  # limits a user should know, shown by `polyocr engines`
    fp16_stable: ClassVar[bool] = False  # float16 is a safe fallback where the device lacks bfloat16

    @classmethod
    def supported_attention(cls) -> dict[str, tuple[str, ...]]:
        """Attention implementations per sub-model, best first ("" is the whole model), for
        runtime.attention.choose(); a model whose parts differ (GOT-OCR2's eager-only vision) says so."""
        return {"": ATTENTIONS}

    def model_dims(self, dtype: str) -> ModelDims | None:
        """What the model costs in memory at `dtype`, so the router can size pages and batches with
        runtime.memory.fit() before loading; None where it is not known (classical engines)."""
        return None

    def available(self, profile: Profile) -> Availability:
        raise NotImplementedError

    def load(self, plan: EnginePlan) -> None:
        raise NotImplementedError

    def recognize(self, pages: Sequence[Page], task: Task) -> list[PageResult]:
        raise NotImplementedError

    def close(self) -> None:
        """Release models and memory; the default has nothing to release."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_REGISTRY: dict[str, str] = {
    "tesseract": "polyocr.engines.tesseract:TesseractEngine",
    "rapidocr": "polyocr.engines.rapidocr:RapidOCREngine",
    "dots": "polyocr.engines.dots.engine:DotsEngine",
    "qwen2vl": "polyocr.engines.hf_vlm:Qwen2VLEngine",
    "qwen3vl": "polyocr.engines.hf_vlm:Qwen3VLEngine",
    "got": "polyocr.engines.hf_vlm:GotOcr2Engine",
    "deepseek-ocr": "polyocr.engines.hf_vlm:DeepseekOcrEngine",
    "paddleocr-vl": "polyocr.engines.hf_vlm:PaddleOCRVLEngine",
    "openai": "polyocr.engines.openai_server:OpenAIServerEngine",
}


def register(name: str, target: str) -> None:
    """Register an engine class by dotted path ("package.module:Class")."""
    _REGISTRY[name] = target


def engine_names() -> list[str]:
    return list(_REGISTRY)


def engine_class(name: str) -> type[Engine]:
    """The engine class for a name; EngineUnavailable when unknown or its module cannot import."""
    try:
        target = _REGISTRY[name]
    except KeyError:
        known = ", ".join(_REGISTRY)
        raise EngineUnavailable(name, f"no such engine (known: {known})") from None
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EngineUnavailable(
            name, f"its module failed to import: {exc}", "pip install 'polyocr[classic,vlm]'"
        ) from exc
    return getattr(module, attr)


def create_engine(name: str) -> Engine:
    return engine_class(name)()
