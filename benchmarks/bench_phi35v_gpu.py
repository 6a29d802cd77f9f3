"""Phi-3.5-Vision (the native `phi35v` port) at full size on a GPU: ms/token at batch 1 and 8, peak memory.

No model hub is reachable where this runs, so it writes a random-weight checkpoint with the published
dimensions in the published layout (tests/tiny_phi35v.py's writer with the published sizes: Phi3
decoder 3072 wide, 32 layers, 32 heads, vocabulary 32064; CLIP ViT-L/14-336; two safetensors shards
and an index) to local disk, loads it with the strict loader (Phi35VForCausalLM.from_pretrained, sdpa,
bf16), and feeds A4 pages at 200 DPI (1654 x 2339) through the engine's own processor: num_crops 4
gives a 2x2 grid plus the global view, 757 image tokens, about 790 prompt tokens. Random weights do not
change the arithmetic: time per token and memory are those of the real model at that prompt length.

For each batch size (1 and 8) and cache (transformers' dynamic cache; the static cache the engine uses
on CUDA, which transformers compiles), it times a 1-token generate (prefill) and an N-token generate
forced to full length (min_new_tokens), after one warm-up call each, and reports
ms/token = (t(N) - t(1)) / (N - 1) per decoding step, tokens/s over the batch, and the peak memory
allocated (torch.cuda.max_memory_allocated) of each run. Variants run side by side in one process.

    PYTHONPATH=src:tests python3 benchmarks/bench_phi35v_gpu.py --out benchmarks/phi35v-gpu.md

`--tiny` runs the same path with the tiny sizes on the CPU (a code-path check only, no figures).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from polyocr.engines import vlm
from polyocr.engines.phi35v.config import CLIP_VIT_L_14_336, PUBLISHED_TEXT
from polyocr.engines.phi35v.engine import TEXT_PROMPT
from polyocr.engines.phi35v.model import Phi35VForCausalLM
from polyocr.engines.phi35v.processor import Phi35VProcessor
from tiny_phi35v import TEXT, VISION, build_tiny_phi35v

FULL_TEXT = {k: PUBLISHED_TEXT[k] for k in TEXT}
FULL_VISION = {k: CLIP_VIT_L_14_336[k] for k in VISION}
VOCAB = PUBLISHED_TEXT["vocab_size"]
A4_200DPI = (1654, 2339)
TINY_PAGE = (500, 300)


def page(size: tuple[int, int], seed: int) -> Image.Image:
    """Page-like image: white paper with dark random strokes."""
    rng = np.random.default_rng(seed)
    width, height = size
    pixels = np.full((height, width, 3), 245, dtype=np.uint8)
    for row in rng.integers(0, height - 8, size=max(1, height // 12)):
        start = int(rng.integers(0, width // 2))
        pixels[row : row + 6, start : start + int(rng.integers(width // 8, width // 2))] = 30
    return Image.fromarray(pixels)


def _timed(model: Any, inputs: dict[str, Any], tokens: int, cache: str, sync: Any) -> float:
    settings: dict[str, Any] = {"max_new_tokens": tokens, "min_new_tokens": tokens, "do_sample": False}
    if cache == "static":
        settings |= {
            "cache_implementation": "static",
            "max_cache_len": vlm.static_cache_length(int(inputs["input_ids"].shape[1]), tokens),
        }
    sync()
    start = time.perf_counter()
    with torch.inference_mode():
        model.generate(**inputs, **settings, pad_token_id=0)
    sync()
    return time.perf_counter() - start


def measure(
    tiny: bool, device: str, new_tokens: int, batches: list[int], caches: list[str], repeats: int, workdir: Path
) -> dict[str, Any]:
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    dtype = torch.bfloat16 if cuda else torch.float32
    text, vision = (TEXT, VISION) if tiny else (FULL_TEXT, FULL_VISION)
    report: dict[str, Any] = {"dtype": str(dtype).removeprefix("torch."), "new_tokens": new_tokens, "rows": []}
    start = time.perf_counter()
    build_tiny_phi35v(
        workdir,
        text=text,
        vision=vision,
        vocab_size=None if tiny else VOCAB,
        dtype=dtype,
        device=device,
        shards=1 if tiny else 2,
    )
    report["write_checkpoint_s"] = round(time.perf_counter() - start, 1)
    start = time.perf_counter()
    model = Phi35VForCausalLM.from_pretrained(workdir, dtype=dtype, attn_implementation="sdpa", device=device)
    sync()
    report["load_s"] = round(time.perf_counter() - start, 1)
    report["parameters"] = sum(p.numel() for p in model.parameters())
    processor = Phi35VProcessor.from_pretrained(workdir, image_token_id=model.config.image_token_id)
    size = TINY_PAGE if tiny else A4_200DPI
    images = [processor.prepare(page(size, seed)) for seed in range(max(batches))]
    report["image_tokens"] = images[0].token_count
    for batch_size in batches:
        batch = processor.batch(images[:batch_size], [TEXT_PROMPT] * batch_size)
        inputs = batch.model_inputs(device, dtype)
        for cache in caches:
            if cache == "static" and not cuda:
                continue  # transformers compiles the static-cache step on accelerators only
            _timed(model, inputs, new_tokens, cache, sync)  # warm-up (compiles the static step)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            prefill = [_timed(model, inputs, 1, cache, sync) for _ in range(repeats)]
            full = [_timed(model, inputs, new_tokens, cache, sync) for _ in range(repeats)]
            step = (statistics.median(full) - statistics.median(prefill)) / (new_tokens - 1)
            report["rows"].append(
                {
                    "batch": batch_size,
                    "cache": cache,
                    "prompt_tokens": int(inputs["input_ids"].shape[1]),
                    "prefill_ms": round(statistics.median(prefill) * 1000, 1),
                    "ms_per_step": round(step * 1000, 2),
                    "tokens_per_s": round(batch_size / step, 1) if step > 0 else None,
                    "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
                }
            )
    return report


def render(report: dict[str, Any], command: str, machine: str) -> str:
    lines = [
        "# phi35v at full size (random weights)",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine}  ",
        f"Date: {report['date']}  ",
        f"dtype {report['dtype']}, {report['parameters']:,} parameters, {report['image_tokens']} image tokens per "
        f"page, {report['new_tokens']} generated tokens per run (forced), medians of {report['repeats']} runs; "
        f"checkpoint written in {report['write_checkpoint_s']} s, loaded strictly in {report['load_s']} s.",
        "",
        "| batch | cache | prompt tokens | prefill ms | ms per step | tokens/s | peak GiB |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['batch']} | {row['cache']} | {row['prompt_tokens']} | {row['prefill_ms']} | {row['ms_per_step']} "
            f"| {row['tokens_per_s']} | {row['peak_gib'] if row['peak_gib'] is not None else '-'} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes on the CPU: a code-path check")
    parser.add_argument("--device", default=None)
    parser.add_argument("--new-tokens", type=int, default=None)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--caches", default="dynamic,static")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None, help="write OUT (.md) and OUT with .json")
    args = parser.parse_args(argv)
    device = args.device or ("cpu" if args.tiny or not torch.cuda.is_available() else "cuda")
    new_tokens = args.new_tokens or (4 if args.tiny else 128)
    with tempfile.TemporaryDirectory() as scratch:
        report = measure(
            args.tiny,
            device,
            new_tokens,
            [int(b) for b in args.batches.split(",")],
            args.caches.split(","),
            args.repeats,
            Path(scratch) / "phi35v",
        )
    report |= {
        "date": datetime.date.today().isoformat(),
        "repeats": args.repeats,
        "device": device,
        "torch": torch.__version__,
    }
    machine = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU ({platform.machine()})"
    command = "PYTHONPATH=src:tests python3 benchmarks/bench_phi35v_gpu.py" + (" --tiny" if args.tiny else "")
    text = render(report, command, machine)
    if args.out:
        args.out.write_text(text)
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    print(text)
    return report


if __name__ == "__main__":
    main()
