"""How slowly dots.ocr runs on a CPU: full-width layers with random weights, timed and scaled up.

The whole model in float32 (12 GB) is more than a shared test machine should hold, and its cost is
the sum of identical layers, so this times the parts at full width and multiplies:
- vision: the tower with no block and with one of its 42 identical blocks at 5,040 patches (a page
  at the 1 M pixel cap; the difference is one block), and a block's attention alone: the rest grows
  with the patch count N and the attention with N^2, which scales the tower to a 200-DPI A4 page at
  the default cap (19,600 patches);
- decoder: the Qwen2 decoder with 1 and with 2 of its 28 layers (embeddings and lm_head at full
  vocabulary size), so the difference is one layer: prefill of a 1,500-token prompt and the time
  per generated token with its KV cache (median of 16 steps).

    OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/dots_cpu.py --out benchmarks/dots-cpu.md

Random weights do not change the arithmetic; the figures are for float32 on this machine's cores.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time

import torch
from transformers import DynamicCache, Qwen2Config, Qwen2ForCausalLM

from polyocr.engines.dots.config import PUBLISHED_TEXT, DotsVisionConfig
from polyocr.engines.dots.vision import DotsVisionTransformer, sdpa_attention

VISION_LAYERS, DECODER_LAYERS = 42, 28
DECODER = {k: v for k, v in PUBLISHED_TEXT.items() if k != "num_hidden_layers"}
PROMPT, STEPS = 1500, 16
PAGES = {"1 M pixel cap (840 x 1176, 5,040 patches)": (84, 60), "200-DPI A4, default cap (19,600 patches)": (168, 118)}


def _best(fn, repeats: int = 2) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def vision_seconds(layers: int, grid_h: int, grid_w: int) -> float:
    """The vision tower with `layers` blocks (patch embedding and merger included) on one image."""
    torch.manual_seed(0)
    tower = DotsVisionTransformer(DotsVisionConfig(num_hidden_layers=layers)).eval()
    pixels = torch.randn(grid_h * grid_w, 3 * 14 * 14)
    grid = torch.tensor([[1, grid_h, grid_w]])
    with torch.inference_mode():
        return _best(lambda: tower(pixels, grid))


def attention_seconds(grid_h: int, grid_w: int) -> float:
    """One block's attention alone (SDPA over the image's patches, 12 heads of 128)."""
    n = grid_h * grid_w
    q, k, v = (torch.randn(n, 12, 128) for _ in range(3))
    cu = torch.tensor([0, n], dtype=torch.int32)
    with torch.inference_mode():
        return _best(lambda: sdpa_attention(q, k, v, cu))


def decoder_seconds(layers: int) -> tuple[float, float]:
    """(prefill of PROMPT tokens, seconds per generated token) for a decoder with `layers` layers."""
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**DECODER, num_hidden_layers=layers)).eval()
    ids = torch.randint(0, 1000, (1, PROMPT))
    with torch.inference_mode():
        cache = DynamicCache(config=model.config)
        start = time.perf_counter()
        out = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1)
        prefill = time.perf_counter() - start
        token = out.logits[:, -1:].argmax(-1)
        steps = []
        for _ in range(STEPS):
            start = time.perf_counter()
            out = model(input_ids=token, past_key_values=out.past_key_values, use_cache=True)
            token = out.logits[:, -1:].argmax(-1)
            steps.append(time.perf_counter() - start)
        step = statistics.median(steps)  # the median resists stalls from other work on shared cores
    del model
    return prefill, step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/dots-cpu.md")
    args = parser.parse_args()
    torch.manual_seed(0)
    threads = torch.get_num_threads()

    grid = next(iter(PAGES.values()))
    n = grid[0] * grid[1]
    bare, one = vision_seconds(0, *grid), vision_seconds(1, *grid)
    block, attention = one - bare, attention_seconds(*grid)
    rest = max(block - attention, 0.0)
    vision = {
        name: (bare + VISION_LAYERS * rest) * (h * w / n) + VISION_LAYERS * attention * (h * w / n) ** 2
        for name, (h, w) in PAGES.items()
    }

    (p1, s1), (p2, s2) = decoder_seconds(1), decoder_seconds(2)
    prefill = p1 + (DECODER_LAYERS - 1) * (p2 - p1)
    per_token = s1 + (DECODER_LAYERS - 1) * (s2 - s1)

    page = vision[next(iter(PAGES))] + prefill + 1000 * per_token
    lines = [
        "# dots.ocr on a CPU (float32, full-width layers, random weights)",
        "",
        f"Command: `OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '?')} PYTHONPATH=src python "
        f"benchmarks/dots_cpu.py --out {args.out}`",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__} using {threads} "
        f"thread(s); shared with other work while it ran, so these are upper-end figures.",
        f"Date: {datetime.date.today():%Y-%m-%d}",
        "",
        "Measured:",
        "",
        "| part | seconds |",
        "|---|---|",
        f"| vision tower without blocks (patch embedding, merger), {n:,} patches | {bare:.2f} |",
        f"| vision tower with one block, {n:,} patches | {one:.2f} |",
        f"| its attention alone (SDPA, 12 heads) | {attention:.2f} |",
        f"| decoder with 1 layer: prefill {PROMPT:,} tokens / one generated token | {p1:.2f} / {s1:.3f} |",
        f"| decoder with 2 layers: prefill {PROMPT:,} tokens / one generated token | {p2:.2f} / {s2:.3f} |",
        "",
        "Scaled to the whole model (42 vision blocks, attention by N^2 and the rest by N; 28 decoder layers):",
        "",
        "| estimate | seconds |",
        "|---|---|",
        *(f"| vision tower, {name} | {seconds:,.0f} |" for name, seconds in vision.items()),
        f"| decoder prefill, {PROMPT:,}-token prompt | {prefill:,.0f} |",
        f"| decoder, per generated token | {per_token:.2f} |",
        f"| a page at the 1 M pixel cap with 1,000 generated tokens | {page:,.0f} ({page / 60:.0f} min) |",
        "",
    ]
    with open(args.out, "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
