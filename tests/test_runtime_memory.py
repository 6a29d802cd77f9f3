"""Page size and batch that fit: the arithmetic, checked against sums done by hand."""

from __future__ import annotations

from pathlib import Path

from polyocr.runtime.memory import GIB, ModelDims, fit, free_bytes, kv_bytes_per_token, page_bytes
from polyocr.runtime.probe import Profile

FIXTURES = Path(__file__).parent / "fixtures" / "profiles"

# A dots.ocr-sized model: 1.7B-parameter Qwen2 decoder (28 layers, 2 KV heads of 128) and a vision
# tower over 14x14 patches merged 2x2 into one decoder token.
DOTS = ModelDims(
    weight_bytes=int(3.4 * GIB),
    kv_bytes_per_token=kv_bytes_per_token(28, 2, 128, "bfloat16"),
    vision_bytes_per_patch=40_000,
    patch_pixels=14 * 14,
    tokens_per_patch=0.25,
    prompt_tokens=100,
)


def test_kv_bytes_per_token():
    assert kv_bytes_per_token(28, 2, 128, "bfloat16") == 2 * 28 * 2 * 128 * 2 == 28_672


def test_page_bytes_by_hand():
    pixels = 196 * 4000  # 4000 patches -> 1000 image tokens
    expected = 4000 * 40_000 + (100 + 1000) * 28_672 + 500 * 28_672
    assert page_bytes(DOTS, pixels, max_new_tokens=500) == expected


def test_largest_page_fills_the_budget_and_no_more():
    free = 8 * GIB
    limits = fit(DOTS, free, max_new_tokens=2000, max_pixels=50_000_000)
    budget = int(free * 0.85) - GIB // 2 - DOTS.weight_bytes
    assert limits.fits and limits.batch_size == 1
    assert limits.max_pixels % DOTS.pixel_step == 0
    assert page_bytes(DOTS, limits.max_pixels, 2000) <= budget
    assert page_bytes(DOTS, limits.max_pixels + DOTS.pixel_step, 2000) > budget
    assert "limited by free memory" in limits.reason


def test_large_card_is_capped_by_the_engine_and_batches():
    limits = fit(DOTS, 80 * GIB, max_pixels=11_289_600, max_batch=8)
    assert limits.max_pixels == 11_289_600 // 784 * 784
    assert limits.batch_size == 8
    assert "limited by the engine's max_pixels" in limits.reason


def test_weights_already_loaded_leave_more_room():
    before = fit(DOTS, 6 * GIB, max_pixels=50_000_000)
    after = fit(DOTS, 6 * GIB, max_pixels=50_000_000, weights_loaded=True)
    assert after.max_pixels > before.max_pixels


def test_too_small_a_device_says_by_how_much():
    limits = fit(DOTS, 3 * GIB)
    assert not limits.fits and limits.max_pixels == 0
    assert limits.reason.startswith("does not fit: even a 3136-pixel page needs 3.")


def test_free_bytes_from_a_recorded_profile():
    laptop = Profile.load(FIXTURES / "rtx5070ti-laptop-cu130.json")
    assert free_bytes(laptop, "cuda:0") == 11_540_000_000
    assert free_bytes(laptop, "cpu") == laptop.ram_available
    limits = fit(DOTS, free_bytes(laptop, "cuda:0"))
    assert limits.fits and limits.max_pixels == 11_289_600 // 784 * 784
