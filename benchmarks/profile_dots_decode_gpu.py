"""Where a dots.ocr static-cache decoding step spends its time on a GPU, at batch 1 and batch 8.

Same model, inputs and generate settings as benchmarks/bench_dots_gpu.py's static rows (full-size
random bf16 weights, an A4 page at 200 DPI per row, packed-decode attention, transformers' compiled
static cache). After a warm-up generate that compiles the step, one generate of STEPS tokens runs
under torch.profiler; the report gives the wall time per step, the GPU's busy time per step, and the
kernels that fill it, grouped (matrix products, attention, the rest).

    PYTHONPATH=src python3 benchmarks/profile_dots_decode_gpu.py --out benchmarks/dots-decode-profile.md
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import torch
import transformers
from bench_dots_gpu import A4_200DPI_GRID, FULL_TEXT, FULL_VISION, page_inputs
from torch.profiler import ProfilerActivity, profile

from polyocr.engines.dots.config import DotsOCRConfig
from polyocr.engines.dots.model import PACKED_DECODE, DotsOCRForCausalLM

STEPS = 32


def _group(name: str) -> str:
    lowered = name.lower()
    if any(k in lowered for k in ("gemm", "nvjet", "cutlass", "sm90_xmma", "gemv", "splitk")):
        return "matrix products"
    if any(k in lowered for k in ("attention", "flash", "fmha", "softmax", "bmm")):
        return "attention"
    if "memcpy" in lowered or "memset" in lowered:
        return "copies"
    return "other kernels"


def profile_batch(model: DotsOCRForCausalLM, batch: int) -> list[str]:
    inputs = page_inputs(batch, A4_200DPI_GRID, model.device)
    settings = {"do_sample": False, "pad_token_id": 0, "eos_token_id": None, "cache_implementation": "static"}
    with torch.no_grad():
        for _ in range(2):  # compile, then settle the CUDA graphs
            model.generate(**inputs, **settings, max_new_tokens=2 * STEPS, min_new_tokens=2 * STEPS)
        torch.cuda.synchronize()
        start = time.perf_counter()
        model.generate(**inputs, **settings, max_new_tokens=1, min_new_tokens=1)
        torch.cuda.synchronize()
        prefill = time.perf_counter() - start
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            start = time.perf_counter()
            model.generate(**inputs, **settings, max_new_tokens=STEPS + 1, min_new_tokens=STEPS + 1)
            torch.cuda.synchronize()
            wall = time.perf_counter() - start
    # Kernel events only (an operator's own "self CUDA" time repeats its kernels' time).
    per_kernel: dict[str, list[float]] = {}
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            per_kernel.setdefault(event.name, []).append(event.device_time_total / 1000)
    busy = sum(sum(times) for times in per_kernel.values())
    groups: dict[str, float] = {}
    for name, times in per_kernel.items():
        groups[_group(name)] = groups.get(_group(name), 0.0) + sum(times)
    lines = [
        f"## Batch {batch}",
        "",
        f"- generate of {STEPS + 1} tokens: {wall * 1000:.1f} ms wall under the profiler; "
        f"a 1-token generate (prefill incl. vision) takes {prefill * 1000:.1f} ms, so about "
        f"{(wall - prefill) / STEPS * 1000:.2f} ms per decoding step",
        f"- GPU busy {busy:.1f} ms in all (prefill included)",
        "",
        "| kernel group | GPU ms |",
        "| --- | ---: |",
    ]
    lines += [f"| {k} | {v:.1f} |" for k, v in sorted(groups.items(), key=lambda kv: -kv[1])]
    lines += ["", "| kernel | calls | GPU ms | group |", "| --- | ---: | ---: | --- |"]
    for name, times in sorted(per_kernel.items(), key=lambda kv: -sum(kv[1]))[:15]:
        lines.append(f"| `{name[:90]}` | {len(times)} | {sum(times):.2f} | {_group(name)} |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--batches", default="1,8")
    args = parser.parse_args()
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = DotsOCRForCausalLM._from_config(
            DotsOCRConfig(**FULL_TEXT, vision_config=FULL_VISION),
            dtype=torch.bfloat16,
            attn_implementation=PACKED_DECODE,
        ).eval()
    lines = [
        "# dots.ocr static-cache decoding step: GPU profile",
        "",
        "- Command: `PYTHONPATH=src python3 benchmarks/profile_dots_decode_gpu.py "
        "--out benchmarks/dots-decode-profile.md`",
        f"- Machine: {torch.cuda.get_device_name()}; torch {torch.__version__}; "
        f"transformers {transformers.__version__}",
        f"- Date: {datetime.date.today().isoformat()}",
        "",
    ]
    for batch in (int(b) for b in args.batches.split(",")):
        lines += profile_batch(model, batch)
        args.out.write_text("\n".join(lines) + "\n")
        print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
