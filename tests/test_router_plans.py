"""Plans sized to the device: page size and batch from runtime.memory.fit on recorded profiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyocr.defaults import VLM_MAX_PIXELS as DEFAULT_MAX_PIXELS
from polyocr.engines.dots.engine import DotsEngine
from polyocr.engines.tesseract import TesseractEngine
from polyocr.errors import EngineUnavailable
from polyocr.router.plans import make_plan
from polyocr.runtime.memory import page_bytes
from polyocr.runtime.probe import Profile

PROFILES = Path(__file__).parent / "fixtures" / "profiles"


def profile(name: str) -> Profile:
    return Profile.load(PROFILES / f"{name}.json")


def test_a_12_gb_laptop_reads_smaller_pages_that_fit() -> None:
    laptop = profile("rtx5070ti-laptop-cu130")
    plan = make_plan(DotsEngine(), laptop, max_new_tokens=16384)
    assert plan.device == "cuda:0" and plan.dtype == "bfloat16"
    assert 3_000_000 < plan.max_pixels < DEFAULT_MAX_PIXELS  # an A4 page at 200 DPI (3.9 MP) still fits
    assert "limited by free memory" in plan.reasons["max_pixels"]
    dims = DotsEngine().model_dims("bfloat16")
    needed = dims.weight_bytes + page_bytes(dims, plan.max_pixels, 16384)
    assert needed < laptop.gpus[0].free_memory


def test_a_large_card_keeps_the_engine_limit_and_may_batch() -> None:
    plan = make_plan(DotsEngine(), profile("h100"), {"batch_size": 8}, max_new_tokens=16384)
    assert plan.max_pixels is None and plan.batch_size == 8
    assert "limited by the engine's max_pixels" in plan.reasons["max_pixels"]


def test_a_model_that_cannot_fit_is_unavailable_with_the_reason() -> None:
    # A T4 has no bfloat16, dots.ocr is not known to be stable in float16: float32 weights (12 GB) do not fit.
    with pytest.raises(EngineUnavailable, match="does not fit") as info:
        make_plan(DotsEngine(), profile("t4-no-bf16"), max_new_tokens=16384)
    assert "float16" in info.value.fix


def test_cpu_and_classical_plans_are_not_sized() -> None:
    assert make_plan(DotsEngine(), profile("cpu-only")).max_pixels is None
    assert make_plan(TesseractEngine(), profile("rtx5070ti-laptop-cu130")).max_pixels is None
