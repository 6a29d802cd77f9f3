"""How each engine of a chain runs here: its EnginePlan, from the runtime's decisions and the user's.

A VLM's device, dtype and attention come from runtime.attention.choose (what actually ran on this
machine), with the user's `device`/`dtype`/`attention` from the config as overrides that choose()
validates; the other fields (model_path, max_pixels, batch_size, generation...) are taken as given.
A classical engine gets the CPU defaults plus the user's fields.

runtime.memory.fit() needs a model's dimensions (ModelDims); no engine publishes them yet, so a
plan keeps the engine's own page-size limit, and the router halves it if the page runs out of memory.
"""

from __future__ import annotations

from typing import Any

from polyocr.engines.base import Engine, EnginePlan
from polyocr.runtime.attention import choose
from polyocr.runtime.probe import Profile


def make_plan(engine: Engine, profile: Profile, overrides: dict[str, Any] | None = None) -> EnginePlan:
    """The plan for one engine; raises ConfigError when a user override cannot run here."""
    fields = dict(overrides or {})
    if engine.kind != "vlm":
        return EnginePlan(**fields, reasons={"device": f"{engine.kind} engine: runs on the CPU"})
    attn, dtype, device = fields.pop("attention", None), fields.pop("dtype", None), fields.pop("device", None)
    parts = engine.supported_attention()
    supports = tuple(parts.get("", next(iter(parts.values()))))
    decision = choose(engine.name, profile, attn=attn, dtype=dtype, device=device, supports=supports,
                      fp16_stable=engine.fp16_stable)
    return decision.to_plan(**fields)


def plan_settings(engine: Engine, plan: EnginePlan) -> dict[str, Any]:
    """What an Attempt records of the plan: the settings that could explain its outcome."""
    if engine.kind != "vlm":
        return {"device": plan.device} if plan.device != "cpu" else {}
    settings: dict[str, Any] = {"device": plan.device, "dtype": plan.dtype, "attention": plan.attention,
                                "batch_size": plan.batch_size}
    if plan.max_pixels is not None:
        settings["max_pixels"] = plan.max_pixels
    if plan.generation:
        settings["generation"] = dict(plan.generation)
    return settings
