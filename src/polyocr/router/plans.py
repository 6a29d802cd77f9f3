"""How each engine of a chain runs here: its EnginePlan, from the runtime's decisions and the user's.

A VLM's device, dtype and attention come from runtime.attention.choose (what actually ran on this
machine), with the user's `device`/`dtype`/`attention` from the config as overrides that choose()
validates; the other fields (model_path, max_pixels, batch_size, generation...) are taken as given.
A classical engine gets the CPU defaults plus the user's fields.

Engines that publish their ModelDims (Engine.model_dims) get page size and batch from
runtime.memory.fit() on a GPU; the others keep their own page-size limit. Either way the router
halves the page size if a page still runs out of memory.
"""

from __future__ import annotations

from typing import Any

from polyocr import defaults
from polyocr.engines.base import Engine
from polyocr.errors import EngineUnavailable
from polyocr.runtime.attention import choose
from polyocr.runtime.memory import fit, free_bytes
from polyocr.runtime.probe import Profile
from polyocr.types import EngineKind, EnginePlan


def make_plan(
    engine: Engine,
    profile: Profile,
    overrides: dict[str, Any] | None = None,
    *,
    max_new_tokens: int = defaults.MAX_NEW_TOKENS,
) -> EnginePlan:
    """The plan for one engine; raises ConfigError when a user override cannot run here.

    On a GPU, an engine that publishes its ModelDims gets the page size and batch that fit the
    memory the probe found free (runtime.memory.fit), so a 12 GB card reads smaller pages instead of
    running out of memory mid-page; EngineUnavailable when not even the smallest page fits.
    """
    fields = dict(overrides or {})
    if engine.kind != EngineKind.VLM:
        return EnginePlan(**fields, reasons={"device": f"{engine.kind} engine: runs on the CPU"})
    attn, dtype, device = fields.pop("attention", None), fields.pop("dtype", None), fields.pop("device", None)
    parts = engine.supported_attention()
    supports = tuple(parts.get("", next(iter(parts.values()))))
    decision = choose(
        engine.name, profile, attn=attn, dtype=dtype, device=device, supports=supports, fp16_stable=engine.fp16_stable
    )
    plan = decision.to_plan(**fields)
    dims = engine.model_dims(plan.dtype)
    if dims is None or not plan.device.startswith("cuda"):
        return plan
    cap = plan.max_pixels or defaults.VLM_MAX_PIXELS
    limits = fit(dims, free_bytes(profile, plan.device), max_new_tokens=max_new_tokens, max_pixels=cap)
    if not limits.fits:
        raise EngineUnavailable(
            engine.name,
            f"{plan.device}: {limits.reason}",
            "free GPU memory, or use a smaller dtype (--dtype float16) or --device cpu",
        )
    if limits.max_pixels < cap:
        plan.max_pixels = limits.max_pixels
    plan.batch_size = min(plan.batch_size, limits.batch_size)
    plan.reasons["max_pixels"] = limits.reason
    return plan


def plan_settings(engine: Engine, plan: EnginePlan) -> dict[str, Any]:
    """What an Attempt records of the plan: the settings that could explain its outcome."""
    if engine.kind != EngineKind.VLM:
        return {"device": plan.device} if plan.device != "cpu" else {}
    settings: dict[str, Any] = {
        "device": plan.device,
        "dtype": plan.dtype,
        "attention": plan.attention,
        "batch_size": plan.batch_size,
    }
    if plan.max_pixels is not None:
        settings["max_pixels"] = plan.max_pixels
    if plan.generation:
        settings["generation"] = dict(plan.generation)
    return settings
