"""The largest page and batch that fit in the memory a device has free.

A VLM's memory for one page is its weights (once) plus, per page, the vision tower's activations
(linear in patches when attention is memory-bounded) and the decoder's KV cache for the prompt (image
tokens included) and the generated tokens. All of these are linear in the page's pixels, so the
largest page that fits is a division, not a search; polyocr lowers max_pixels rather than letting a
12 GB card run out of memory half-way through a page.
"""

from __future__ import annotations

from dataclasses import dataclass

from polyocr.runtime.probe import Profile

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ModelDims:
    """What one model costs in memory, from its configuration."""

    weight_bytes: int
    kv_bytes_per_token: int  # decoder KV cache per token, all layers
    vision_bytes_per_patch: int  # peak vision-tower activation bytes per patch of one page
    patch_pixels: int  # image pixels per vision patch (patch_size ** 2)
    tokens_per_patch: float = 1.0  # decoder tokens per patch, e.g. 0.25 after a 2x2 merge
    prompt_tokens: int = 64  # text tokens of the prompt around the image
    prefill_bytes_per_token: int = 0  # decoder activations per prompt token at prefill, beyond the KV

    @property
    def pixel_step(self) -> int:
        """Pixels per decoder token: page sizes are rounded down to a multiple of this."""
        return max(1, round(self.patch_pixels / self.tokens_per_patch))


def kv_bytes_per_token(num_layers: int, num_kv_heads: int, head_dim: int, dtype: str) -> int:
    """Keys and values of one token in every layer."""
    return 2 * num_layers * num_kv_heads * head_dim * DTYPE_BYTES[dtype]


@dataclass(frozen=True)
class Limits:
    max_pixels: int  # 0 when not even min_pixels fits
    batch_size: int  # pages per batch at max_pixels; 0 when nothing fits
    reason: str

    @property
    def fits(self) -> bool:
        return self.batch_size > 0


def page_bytes(dims: ModelDims, pixels: int, max_new_tokens: int) -> int:
    """Memory one page of `pixels` needs beyond the weights."""
    patches = pixels / dims.patch_pixels
    prompt = dims.prompt_tokens + patches * dims.tokens_per_patch
    per_prompt_token = dims.kv_bytes_per_token + dims.prefill_bytes_per_token
    return int(
        patches * dims.vision_bytes_per_patch + prompt * per_prompt_token + max_new_tokens * dims.kv_bytes_per_token
    )


def fit(
    dims: ModelDims,
    free_bytes: int,
    *,
    max_new_tokens: int = 4096,
    max_pixels: int = 11_289_600,
    min_pixels: int = 3136,
    max_batch: int = 8,
    margin: float = 0.15,
    reserve_bytes: int = GIB // 2,
    weights_loaded: bool = False,
) -> Limits:
    """The largest page (up to `max_pixels`) and batch that fit in `free_bytes`.

    `margin` is kept free as a fraction of `free_bytes` and `reserve_bytes` on top, for the CUDA
    context, allocator fragmentation and the kernels' workspaces, which no formula predicts well.
    `weights_loaded`: `free_bytes` was measured after the weights were loaded.
    """
    budget = int(free_bytes * (1 - margin)) - reserve_bytes - (0 if weights_loaded else dims.weight_bytes)
    fixed = page_bytes(dims, 0, max_new_tokens)
    per_token = dims.kv_bytes_per_token + dims.prefill_bytes_per_token
    per_pixel = (dims.vision_bytes_per_patch + dims.tokens_per_patch * per_token) / dims.patch_pixels
    largest = int((budget - fixed) / per_pixel) if per_pixel > 0 else max_pixels
    pixels = min(max_pixels, largest) // dims.pixel_step * dims.pixel_step
    budget_text = f"{budget / GIB:.2f} GiB usable of {free_bytes / GIB:.2f} GiB free"
    if pixels < min_pixels:
        need = dims.weight_bytes * (not weights_loaded) + page_bytes(dims, min_pixels, max_new_tokens)
        return Limits(
            0,
            0,
            f"does not fit: even a {min_pixels}-pixel page needs {need / GIB:.2f} GiB "
            f"with the weights; {budget_text} after a {margin:.0%} margin",
        )
    batch = max(1, min(max_batch, budget // page_bytes(dims, pixels, max_new_tokens)))
    capped = "the engine's max_pixels" if max_pixels <= largest else "free memory"
    return Limits(
        pixels,
        batch,
        f"{pixels / 1e6:.2f} MP pages (limited by {capped}), batch {batch}: "
        f"{budget_text} after a {margin:.0%} margin and the weights",
    )


def free_bytes(profile: Profile, device: str) -> int:
    """Free memory on a decided device ("cpu" or "cuda:N") as the probe saw it."""
    if device.startswith("cuda"):
        gpu = profile.gpu(int(device.partition(":")[2] or 0))
        return gpu.free_memory if gpu else 0
    return profile.ram_available
