"""The engine interface and the registry.

Engines are registered by name with the dotted path of their class, their kind and their place in
the auto chain, and imported only when asked for, so listing engines never imports torch, and an
engine whose optional packages are missing reports that instead of breaking the import of polyocr.
Nothing else in polyocr imports an engine module directly: it asks this registry. Adding an engine
is one module plus one `EngineEntry` below (CONTRIBUTING.md).

The contract an engine keeps with the router, in full:
- `Engine(model_path=None)`: an engine with weights (`takes_model_path`) is told the user's
  checkpoint at construction, because it reports availability (are the weights there?) before any
  plan reaches it; the others refuse a model path with EngineUnavailable.
- `available(profile)`, `load(plan)` (which keeps the plan as `self.plan`), `recognize(pages, task)`,
  `close()`.
- `reconfigure(plan) -> bool`: take new settings without a reload where only the fields it reads at
  each call changed (PER_CALL_FIELDS); False means the router must close and load it again.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, ClassVar

from polyocr.errors import EngineUnavailable
from polyocr.published import published, published_order
from polyocr.scripts import ANY_SCRIPT
from polyocr.types import ATTENTIONS, PER_CALL_FIELDS, Availability, EngineKind, EnginePlan, Task, TaskKind

if TYPE_CHECKING:
    from polyocr.documents import Page
    from polyocr.results import PageResult
    from polyocr.runtime.memory import ModelDims
    from polyocr.runtime.probe import Profile


class Engine:
    """Base class of every engine. Subclasses set the class attributes and implement the methods.

    An engine never decides fallback: it reports what happened (errors, generation stop reason and
    token counts) and the router decides.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    kind: ClassVar[EngineKind] = EngineKind.CLASSICAL
    scripts: ClassVar[frozenset[str]] = ANY_SCRIPT
    tasks: ClassVar[frozenset[TaskKind]] = frozenset(TaskKind)
    notes: ClassVar[str] = ""  # limits a user should know, shown by `polyocr engines`
    fp16_stable: ClassVar[bool] = False  # float16 is a safe fallback where the device lacks bfloat16
    takes_model_path: ClassVar[bool] = False  # a checkpoint (or a served model's name) can be named
    repo_id: ClassVar[str] = ""  # the hub repository of its published weights (`polyocr fetch`)
    # Further repositories it needs (PaddleOCR-VL's layout model); `polyocr fetch` downloads them too.
    companion_repos: ClassVar[tuple[str, ...]] = ()
    # The generation settings its authors use against repetition (GOT: no_repeat_ngram_size 20), which
    # the router's loop retries apply on top of their own (router/policy.py loop_plan).
    anti_repeat: ClassVar[dict[str, object]] = {}

    def __init__(self, model_path: str | None = None) -> None:
        if model_path is not None and not self.takes_model_path:
            raise EngineUnavailable(self.name, f"it takes no model path (got {model_path})")
        self.model_path = str(model_path) if model_path is not None else None
        self.plan = EnginePlan()

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

    def reconfigure(self, plan: EnginePlan) -> bool:
        """Take `plan` in place when only per-call fields differ from the loaded plan; False when the
        engine must be loaded again for it."""
        if not plan.changed_fields(self.plan) <= PER_CALL_FIELDS:
            return False
        self.plan = plan
        return True

    def close(self) -> None:
        """Release models and memory; the default has nothing to release."""

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class EngineEntry:
    """One registered engine: where its class lives, what kind it is, and where "auto" puts it.

    `rank` orders the classical engines in the auto chain after their recorded CER (lower first;
    None: never chosen by auto, only when named). A VLM's rank is not typed here: `ranked()` derives
    the VLMs' order from the published scores (polyocr/published.py, its RULE), so a VLM entry leaves
    `rank` None, and a registered VLM with no row in that table (a plug-in's) enters auto only with a
    rank of its own, after the table's engines. `evidence` says what the place rests on (for a VLM,
    derived from the table when left empty). `cer` is the recorded character error rate per script
    (classical engines, from benchmarks/classical-devset.md), which orders the CPU part of the chain
    per page script.
    """

    name: str
    target: str  # "package.module:Class"
    kind: EngineKind
    rank: int | None = None
    evidence: str = ""
    cer: tuple[tuple[str, float], ...] = ()


# The VLMs' order for "auto" on a GPU is derived from polyocr/published.py (scores with their sources,
# the rule written there), never typed here: leave a VLM's rank None.
# Classical engines: character error rate per script on the development set (`polyocr eval`,
# 2026-11-23: the eng rows for Latin, the rus row for Cyrillic); RapidOCR reads no Cyrillic at all.
ENTRIES: tuple[EngineEntry, ...] = (
    EngineEntry("tesseract", "polyocr.engines.tesseract:TesseractEngine", EngineKind.CLASSICAL, 0,
                "dev-set CER eng 0.0230, rus 0.1340", (("Latin", 0.0230), ("Cyrillic", 0.1340))),
    EngineEntry("rapidocr", "polyocr.engines.rapidocr:RapidOCREngine", EngineKind.CLASSICAL, 1,
                "dev-set CER eng 0.0746", (("Latin", 0.0746),)),
    EngineEntry("dots", "polyocr.engines.dots.engine:DotsEngine", EngineKind.VLM, None),
    EngineEntry("paddleocr-vl", "polyocr.engines.hf.paddleocr_vl:PaddleOCRVLEngine", EngineKind.VLM, None),
    EngineEntry("deepseek-ocr", "polyocr.engines.hf.deepseek_ocr:DeepseekOcrEngine", EngineKind.VLM, None),
    EngineEntry("qwen3vl", "polyocr.engines.hf.qwen3vl:Qwen3VLEngine", EngineKind.VLM, None),
    EngineEntry("qwen2vl", "polyocr.engines.hf.qwen2vl:Qwen2VLEngine", EngineKind.VLM, None),
    EngineEntry("got", "polyocr.engines.hf.got:GotOcr2Engine", EngineKind.VLM, None),
    EngineEntry("phi35v", "polyocr.engines.phi35v.engine:Phi35VEngine", EngineKind.VLM, None),
    EngineEntry("glm-ocr", "polyocr.engines.hf.glm_ocr:GlmOcrEngine", EngineKind.VLM, None),
    EngineEntry("lighton-ocr", "polyocr.engines.hf.lighton_ocr:LightOnOcrEngine", EngineKind.VLM, None),
    EngineEntry("dots-mocr", "polyocr.engines.dots.mocr:DotsMOCREngine", EngineKind.VLM, None),
    EngineEntry("paddleocr-vl-1.5", "polyocr.engines.hf.paddleocr_vl15:PaddleOCRVL15Engine", EngineKind.VLM, None),
    EngineEntry("olmocr", "polyocr.engines.hf.olmocr:OlmOCREngine", EngineKind.VLM, None),
    EngineEntry("mineru", "polyocr.engines.hf.mineru:MinerUEngine", EngineKind.VLM, None),
    EngineEntry("openai", "polyocr.engines.openai_server:OpenAIServerEngine", EngineKind.REMOTE, None,
                "a server you name: never chosen by auto"),
)  # fmt: skip

_REGISTRY: dict[str, EngineEntry] = {entry.name: entry for entry in ENTRIES}


def register(entry: EngineEntry) -> None:
    """Register an engine under `entry.name` (a plug-in's; a batch's workers register again what their
    driver had registered beyond the built-in table)."""
    _REGISTRY[entry.name] = entry


def entries() -> list[EngineEntry]:
    """Every registered engine's entry, built-in ones first."""
    return list(_REGISTRY.values())


def engine_names() -> list[str]:
    return list(_REGISTRY)


def engine_entry(name: str) -> EngineEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise EngineUnavailable(name, f"no such engine (known: {', '.join(_REGISTRY)})") from None


def ranked(kind: EngineKind) -> list[EngineEntry]:
    """The engines of one kind that auto may choose, best first, each with its place as `rank`.

    VLMs: the registered ones with a row in polyocr/published.py, in its RULE's order, leaving out any
    whose licence restricts commercial use or could not be verified (named, they still run); then
    registered VLMs without a row that carry a rank of their own (plug-ins), by that rank. Other
    kinds: by their typed rank.
    """
    entries = [e for e in _REGISTRY.values() if e.kind == kind]
    if kind != EngineKind.VLM:
        return sorted((e for e in entries if e.rank is not None), key=lambda e: e.rank or 0)
    by_name = {e.name: e for e in entries}
    order = [name for name in published_order(by_name) if _licence_allows_auto(name)]
    order += [
        e.name for e in sorted(entries, key=lambda e: e.rank or 0) if published(e.name) is None and e.rank is not None
    ]
    return [replace(by_name[name], rank=place) for place, name in enumerate(order)]


def _licence_allows_auto(name: str) -> bool:
    row = published(name)
    return row is not None and row.auto_allowed


def engine_class(name: str) -> type[Engine]:
    """The engine class for a name; EngineUnavailable when unknown or its module cannot import."""
    module_name, _, attr = engine_entry(name).target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise EngineUnavailable(
            name, f"its module failed to import: {exc}", "pip install 'polyocr[classic,vlm]'"
        ) from exc
    cls: type[Engine] = getattr(module, attr)
    return cls


def create_engine(name: str, model_path: str | None = None) -> Engine:
    """A new engine; EngineUnavailable when it is unknown, cannot import, or takes no model path."""
    return engine_class(name)(model_path=model_path)
