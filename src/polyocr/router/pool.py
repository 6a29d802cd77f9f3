"""The engines of a run: created and loaded once, on first use; kept until the router closes; given
new settings in place or reloaded; closed to make room on the GPU; dropped when they cannot go on.

Three things end an engine early: it cannot load (skipped for the rest of the run), it timed out
(its call is abandoned in a background thread, so it is never called again), or another large model
needs the GPU memory (closed now, reloaded if a later page needs it). Only one VLM is loaded at a
time unless the device has room for twice the largest one loaded.
"""

from __future__ import annotations

import gc
import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from polyocr.config import RouterConfig
from polyocr.engines.base import Engine, create_engine
from polyocr.errors import ConfigError, EngineUnavailable, PageTimeout
from polyocr.router.plans import make_plan
from polyocr.router.policy import is_oom
from polyocr.runtime.probe import Profile
from polyocr.types import EngineKind, EnginePlan

T = TypeVar("T")
log = logging.getLogger(__name__)


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
    value: T = box["value"]
    return value


@dataclass
class Slot:
    engine: Engine
    plan: EnginePlan
    resident_bytes: int | None = None  # GPU memory its load took, where that can be measured


class EnginePool:
    """The loaded engines of one router and the reasons of those that cannot run."""

    def __init__(
        self,
        profile: Profile,
        config: RouterConfig,
        plans: dict[str, EnginePlan] | None = None,
        max_new_tokens: int | None = None,
    ) -> None:
        self.profile = profile
        self.config = config
        self.plans = dict(plans or {})  # given plans are used as they are
        self.max_new_tokens = max_new_tokens
        self._loaded: dict[str, Slot] = {}
        self._unavailable: dict[str, str] = {}

    def create(self, name: str) -> Engine:
        """A new, unloaded engine, given the user's model path (plans, then polyocr.toml)."""
        given = self.plans.get(name)
        model_path = given.model_path if given else self.config.plan_overrides(name).get("model_path")
        return create_engine(name, model_path=model_path)

    def plan_for(self, engine: Engine) -> EnginePlan:
        """The given plan, else the one runtime/ and the user's overrides make; ConfigError for an
        override that cannot run here."""
        given = self.plans.get(engine.name)
        if given is not None:
            return given
        overrides = self.config.plan_overrides(engine.name)
        tokens = {} if self.max_new_tokens is None else {"max_new_tokens": self.max_new_tokens}
        return make_plan(engine, self.profile, overrides, **tokens)

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    def reason(self, name: str) -> str:
        return self._unavailable.get(name, "not loaded")

    def plan(self, name: str) -> EnginePlan:
        return self._loaded[name].plan

    def engine(self, name: str) -> Engine:
        return self._loaded[name].engine

    def get(self, name: str) -> Slot:
        """The loaded engine, loading it first; EngineUnavailable (or ConfigError) when it cannot run."""
        if name in self._unavailable:
            raise EngineUnavailable(name, self._unavailable[name])
        if name in self._loaded:
            return self._loaded[name]
        try:
            engine = self.create(name)
            availability = engine.available(self.profile)
            if not availability.ok:
                raise EngineUnavailable(name, availability.reason, availability.fix)
            plan = self.plan_for(engine)
            self._make_room(engine, plan)
            before = device_free_bytes(plan.device)
            started = time.perf_counter()
            engine.load(plan)
        except EngineUnavailable as exc:
            self._unavailable[name] = exc.reason
            log.info("engine %s cannot run: %s", name, exc.reason)
            raise
        except ConfigError as exc:
            self._unavailable[name] = str(exc)
            log.info("engine %s cannot run: %s", name, exc)
            raise
        except Exception as exc:  # a broken checkpoint or an OOM while loading: skip the engine
            if is_oom(exc):
                free_memory()
            self._unavailable[name] = f"failed to load: {type(exc).__name__}: {exc}"
            log.warning("engine %s %s", name, self._unavailable[name])
            raise EngineUnavailable(name, self._unavailable[name]) from exc
        log.info(
            "engine %s loaded in %.1f s (%s, %s, attention %s, batch %d)",
            name,
            time.perf_counter() - started,
            plan.device,
            plan.dtype,
            plan.attention,
            plan.batch_size,
        )
        after = device_free_bytes(plan.device)
        resident = before - after if before is not None and after is not None else None
        self._loaded[name] = Slot(engine, plan, resident)
        return self._loaded[name]

    def _make_room(self, engine: Engine, plan: EnginePlan) -> None:
        """Close the other large models first, unless the device has room for this one beside them."""
        if engine.kind != EngineKind.VLM:
            return
        others = {n: slot for n, slot in self._loaded.items() if slot.engine.kind == EngineKind.VLM}
        if not others:
            return
        free = device_free_bytes(plan.device)
        largest = max((slot.resident_bytes or 0) for slot in others.values())
        if free is not None and largest and free > 2 * largest:
            return  # room for a model as large as the largest one loaded, with as much again to run it
        for name in others:
            log.info("engine %s closed to make room for %s", name, engine.name)
            self._loaded.pop(name).engine.close()
        free_memory()

    def set_plan(self, name: str, plan: EnginePlan) -> bool:
        """Give a loaded engine new settings: in place where the engine takes them (reconfigure), else by
        closing and loading it again. False when that reload failed: the engine is then done."""
        slot = self._loaded[name]
        if not plan.changed_fields(slot.plan):
            return True
        if not slot.engine.reconfigure(plan):
            slot.engine.close()
            free_memory()
            try:
                slot.engine.load(plan)
            except Exception as exc:  # the engine cannot run with these settings: drop it for this run
                del self._loaded[name]
                self._unavailable[name] = f"could not reload with new settings: {type(exc).__name__}: {exc}"
                log.warning("engine %s %s", name, self._unavailable[name])
                return False
        slot.plan = plan
        return True

    def drop(self, name: str, reason: str) -> None:
        """An engine that said during a call that it cannot go on: never used again this run."""
        log.warning("engine %s dropped for the rest of the run: %s", name, reason)
        self._loaded.pop(name, None)
        self._unavailable[name] = reason

    def abandon(self, name: str, reason: str) -> None:
        """Forget an engine whose call is still running in an abandoned thread; never close it, since
        close() may wait on the very call that hangs."""
        self.drop(name, reason)

    def close(self) -> None:
        for slot in self._loaded.values():
            slot.engine.close()
        self._loaded.clear()
