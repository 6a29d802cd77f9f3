"""The dots engine end to end at full size on a GPU: checkpoint load, compile, pages/s, ms/token, memory.

No model hub is reachable where this runs, so it writes a random-weight checkpoint with the published
dimensions in the published layout (tests/tiny_dots.py's writer with the published sizes: config.json,
two safetensors shards and an index, tokenizer, templates) to local disk, loads it through
DotsEngine.load (the strict loader, at full scale) and runs A4-like pages at 200 DPI through
DotsEngine.recognize with a fixed number of generated tokens per page (min_new_tokens), as the engine
runs on CUDA by default (static compiled cache, packed-decode attention). Pages differ a little in
size, so prompts differ in length and the static cache must be reused or regrown across them.

    PYTHONPATH=src:tests python3 benchmarks/bench_dots_engine_gpu.py --out benchmarks/dots-engine-gpu.md

`--tiny` runs the same path with the tiny sizes and small pages on the CPU (a code-path check only).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from polyocr.documents import Page
from polyocr.engines.dots.config import DotsVisionConfig
from polyocr.engines.dots.engine import DotsEngine
from polyocr.types import EnginePlan, Task, TaskKind
from tiny_dots import TEXT, VISION, build_tiny_dots

# The published decoder (config.json of rednote-hilab/dots.ocr); the vision tower's published sizes
# are DotsVisionConfig's defaults.
FULL_TEXT = {
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
}
VOCAB = 151936
# A4 at 200 DPI (1654 x 2339), US letter at 200 DPI, and two A4 scans cropped a little: four prompt lengths.
PAGE_SIZES = [(1654, 2339), (1700, 2200), (1620, 2339), (1654, 2300)]
TINY_PAGE_SIZES = [(112, 140), (140, 112), (112, 112), (126, 140)]


def _pages(sizes: list[tuple[int, int]]) -> list[Page]:
    """Page-like images: white paper with dark random strokes (not zeros, not pure noise)."""
    rng = np.random.default_rng(0)
    pages = []
    for number, (width, height) in enumerate(sizes, 1):
        pixels = np.full((height, width, 3), 245, dtype=np.uint8)
        rows = rng.integers(0, height - 8, size=height // 12)
        for row in rows:
            start = int(rng.integers(0, width // 2))
            pixels[row : row + 6, start : start + int(rng.integers(width // 8, width // 2))] = 30
        pages.append(Page(image=Image.fromarray(pixels), number=number, source="synthetic-a4", dpi=200))
    return pages


def _run(engine: DotsEngine, pages: list[Page], task: Task, sync: Any) -> tuple[float, list[Any]]:
    sync()
    start = time.perf_counter()
    results = engine.recognize(pages, task)
    sync()
    return time.perf_counter() - start, results


def measure(tiny: bool, device: str, new_tokens: int, workdir: Path) -> dict[str, Any]:
    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    text, vision = (
        (TEXT, VISION)
        if tiny
        else (
            FULL_TEXT,
            {**VISION, **{k: getattr(DotsVisionConfig(), k) for k in VISION if hasattr(DotsVisionConfig(), k)}},
        )
    )
    dtype = "bfloat16" if cuda else "float32"
    row: dict[str, Any] = {"new_tokens_per_page": new_tokens, "dtype": dtype}
    start = time.perf_counter()
    build_tiny_dots(
        workdir,
        shards=2,
        text=text,
        vision=vision,
        vocab_size=None if tiny else VOCAB,
        dtype=getattr(torch, dtype),
        device=device,
    )
    row["write_checkpoint_s"] = round(time.perf_counter() - start, 1)
    row["checkpoint_gib"] = round(sum(f.stat().st_size for f in workdir.glob("*.safetensors")) / 2**30, 2)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    engine = DotsEngine(model_path=workdir)
    plan = EnginePlan(
        device=device, dtype=dtype, attention="sdpa", batch_size=1, generation={"min_new_tokens": new_tokens}
    )
    sync()
    start = time.perf_counter()
    engine.load(plan)
    sync()
    row["load_s"] = round(time.perf_counter() - start, 2)
    row["parameters_b"] = round(sum(p.numel() for p in engine.model.parameters()) / 1e9, 3)
    if cuda:
        row["weights_gib"] = round(torch.cuda.memory_allocated() / 2**30, 2)
    pages = _pages(TINY_PAGE_SIZES if tiny else PAGE_SIZES)
    task = Task(kind=TaskKind.LAYOUT, max_new_tokens=new_tokens)
    runs = []
    for batch in (1, 4):
        engine.plan.batch_size = batch
        for label in ("first", "steady"):  # the first call per batch size compiles the decoding step
            seconds, results = _run(engine, pages[:batch] if label == "first" else pages, task, sync)
            generations = [r.generation for r in results]
            tokens = sum(g.generated_tokens for g in generations)
            runs.append(
                {
                    "batch": batch,
                    "call": label,
                    "pages": len(results),
                    "seconds": round(seconds, 2),
                    "pages_per_s": round(len(results) / seconds, 3),
                    "prompt_tokens": [g.prompt_tokens for g in generations],
                    "generated_tokens": [g.generated_tokens for g in generations],
                    "page_seconds": [g.seconds for g in generations],
                    # a page's share of its batch's time over its tokens: prefill included
                    "ms_per_token": round(sum(g.seconds for g in generations) / tokens * 1000 * batch, 2),
                    "statuses": sorted({str(r.status) for r in results}),
                }
            )
            print(json.dumps(runs[-1]), flush=True)
    row["runs"] = runs
    if cuda:
        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        row["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2**30, 2)
    return row


def report(row: dict[str, Any], command: str, machine: str, tiny: bool) -> str:
    lines = [
        "# dots engine end to end at full size (random bf16 weights, published checkpoint layout)",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine}",
        f"- Date: {datetime.date.today().isoformat()}",
        f"- Checkpoint: written by tests/tiny_dots.py's writer with the published sizes "
        f"({row['parameters_b']} B parameters, {row['checkpoint_gib']} GiB in 2 shards, "
        f"{row['write_checkpoint_s']} s to write), loaded through DotsEngine.load in {row['load_s']} s.",
        f"- Pages: {len(PAGE_SIZES)} page images of A4/letter size at 200 DPI (sizes {PAGE_SIZES}), task layout, "
        f"{row['new_tokens_per_page']} generated tokens per page forced with min_new_tokens, engine defaults "
        "on CUDA (static compiled cache, packed-decode attention, sdpa vision).",
        "- Each batch size: a first call (batch-size pages; compiles the decoding step) then a steady call "
        "over all pages. ms/step = the pages' seconds (PageResult.generation: each page's share of its batch) x batch "
        "/ their generated tokens: time per generated token of one page, prefill (vision tower + prompt) included.",
    ]
    if tiny:
        lines.append("- Tiny sizes on the CPU (`--tiny`): a code-path check, not a measurement.")
    lines += [
        "",
        "| batch | call | pages | seconds | pages/s | prompt tokens | generated | ms/step | status |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in row["runs"]:
        lines.append(
            f"| {r['batch']} | {r['call']} | {r['pages']} | {r['seconds']} | {r['pages_per_s']} | "
            f"{', '.join(map(str, r['prompt_tokens']))} | {sum(r['generated_tokens'])} | "
            f"{r['ms_per_token']} | {', '.join(r['statuses'])} |"
        )
    if "peak_gib" in row:
        lines += [
            "",
            f"Weights {row['weights_gib']} GiB; peak allocated {row['peak_gib']} GiB "
            f"({row['peak_reserved_gib']} GiB reserved) over all calls.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="Markdown report to write (a .json beside it too)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes on the CPU: code-path check only")
    parser.add_argument("--new-tokens", type=int, default=1024)
    parser.add_argument("--workdir", default=None, help="where to write the checkpoint (a temporary folder)")
    parser.add_argument("--command", default=None, help="the command line to record in the report")
    args = parser.parse_args()
    device = "cpu" if args.tiny else "cuda"
    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        row = measure(args.tiny, device, args.new_tokens, Path(workdir) / "dots")
    gpu = torch.cuda.get_device_name(0) if device == "cuda" else platform.processor() or "CPU"
    import transformers

    machine = f"{gpu}; torch {torch.__version__}; transformers {transformers.__version__}; {platform.platform()}"
    command = (
        args.command
        or "PYTHONPATH=src:tests python3 benchmarks/bench_dots_engine_gpu.py --out benchmarks/dots-engine-gpu.md"
    )
    text = report(row, command, machine, args.tiny)
    Path(args.out).write_text(text)
    Path(args.out).with_suffix(".json").write_text(json.dumps(row, indent=2))
    print(text)


if __name__ == "__main__":
    main()
