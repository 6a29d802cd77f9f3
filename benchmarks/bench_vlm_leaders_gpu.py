"""The 2026 OCR leaders beside polyocr's other VLMs on one GPU: decode speed, page prefill, memory.

Issue 19's GPU paragraph: for each VLM at full size with random bf16 weights, ms/token at batch 1
and at batch 8, the prefill of one 200-DPI A4 page (1654 x 2339 px) at the pixel cap each polyocr
engine uses, and peak memory, all in one run so the figures compare. No model hub is reachable on
the GPU machine, so each model is built from its checkpoint's published config.json (dimensions
below, each with its source) with random weights, initialised on the GPU in bf16. Random weights do
not change the arithmetic: time and memory are those of the real model at that prompt length.

The page goes through each model's own transformers image processor (published preprocessor
values, the engine's cap as processor arguments), so pixel tensors and the image-token count are
the processor's; the prompt around the image is PROMPT_TEXT_TOKENS ordinary tokens (a chat template
and a short instruction). dots.ocr and dots.mocr run on polyocr's own port (engines/dots) with its
processor, as benchmarks/bench_dots_gpu.py does. Generation as the engines run it on CUDA
(engines/vlm.py generation_settings): greedy, static cache of the engine's length (prompt + the
engine's answer budget, rounded up to STATIC_CACHE_MULTIPLE), which transformers compiles; the
length is forced with min_new_tokens.

Per model and batch size: one full-length warm-up (compiles the decoding step) and a short one,
then, holding a lock that keeps every other model's timed calls off the GPU, the fastest of three
1-token calls (prefill: vision encoder + prompt) and of three (NEW_TOKENS + 1)-token calls;
ms/token = (long - short) / NEW_TOKENS. Peak = torch.cuda.max_memory_allocated over the timed calls.
Each (model, batch size) runs in its own process, `--jobs` at a time, so that compilations (CPU)
overlap and each starts as a fresh engine would (its own compile, no memory left by another run); a
failure (an exception or a dead process) becomes that row's error; the report is rewritten after
every row; runs still going at `--budget-s` are stopped and reported as cut.

On the GPU machine (carry `.whl`: transformers 5.23.0, the version polyocr pins and the CPU check
used, plus pydantic, rapidfuzz and their dependencies, which `import polyocr` needs and the machine
lacks; the machine's transformers 5.17 has every model class too, but not the same image
processors' names), one line:

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:src || exit; timeout 500 python3 benchmarks/bench_vlm_leaders_gpu.py --out $OUT/vlm-leaders-gpu.md --budget-s 440

Code-path check on a CPU (every model, one layer per stack, a small page, batch 1 and 2):

    PYTHONPATH=src python benchmarks/bench_vlm_leaders_gpu.py --device cpu --layers 1 --page 224x308 \\
        --batches 1,2 --new-tokens 2 --jobs 1 --out /tmp/leaders.md
"""  # noqa: E501

from __future__ import annotations

import argparse
import datetime
import fcntl
import inspect
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_hf_vlm_gpu import ATTENTION, CONFIGS, GLM_OCR, LIGHTON_OCR, MINERU, OLMOCR
from bench_hf_vlm_gpu import _cap_layers as cap_layers  # shared, not copied
from bench_hf_vlm_gpu import _machine as machine

A4_200DPI = (1654, 2339)  # (width, height): 210 x 297 mm at 200 DPI
NEW_TOKENS = 128
REPEATS = 3  # timed calls of each length; the fastest counts (others' warm-ups may share the GPU)
PROMPT_TEXT_TOKENS = 32  # chat template + instruction around the image (dots: its own, ~150)
TEXT_ID = 1000  # an ordinary token id, valid in every vocabulary below
SDPA = {"": "sdpa", "vision_config": "sdpa", "text_config": "sdpa"}
DOTS_ATTENTION = {"decoder": "sdpa_packed_decode", "vision": "sdpa"}  # the dots engine's defaults on CUDA

# (the page's size, the processor's own size setting) -> processor arguments
Kwargs = Callable[[tuple[int, int], Mapping[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class Bench:
    """One model: how to build it, how its processor sees the page, and where the numbers come from."""

    name: str  # polyocr's engine name (the new engines' names as issue 19 proposes them)
    checkpoint: str
    source: str  # where the dimensions were read
    layout: str  # how the processor lays image tokens into the prompt: qwen, glm, lighton, got, deepseek, dots
    prefix: str = ""  # transformers' <prefix>Config / <prefix>ForConditionalGeneration
    config: Mapping[str, Any] = field(default_factory=dict)
    attention: Mapping[str, str] = field(default_factory=lambda: dict(SDPA))
    processor: str = ""  # transformers image processor class
    processor_config: Mapping[str, Any] = field(default_factory=dict)  # published preprocessor values
    page_size: Callable[[tuple[int, int]], tuple[int, int]] = lambda size: size  # the page the engine feeds
    pixel_kwargs: Kwargs = lambda size, own: {}  # the engine's cap, as processor arguments
    cap_note: str = ""
    spec: str = ""  # polyocr.engines.hf.<module>:<SPEC> whose pixel_kwargs and token_budget apply
    # (max new tokens, context) of the authors' recipe, while the spec is not in this checkout
    budget: tuple[int | None, int | None] = (None, None)
    new: bool = False


def _spec(path: str) -> Any:
    """polyocr's VLMSpec at `module:NAME`, or None where that engine is not in this checkout yet."""
    if not path:
        return None
    module, attr = path.split(":")
    try:
        return getattr(__import__(module, fromlist=[attr]), attr)
    except (ImportError, AttributeError):
        return None


def _spec_kwargs(path: str, fallback: Kwargs | None = None) -> Kwargs:
    """The engine's own pixel_kwargs (engines/hf/*.py) for one page and no plan limits; `fallback`
    (the authors' cap, as the engine being written takes it) while that engine is not merged."""

    def kwargs(size: tuple[int, int], own: Mapping[str, Any]) -> dict[str, Any]:
        spec = _spec(path)
        if spec is None:
            return fallback(size, own) if fallback else {}
        return dict(spec.pixel_kwargs([size], None, None, own))

    return kwargs


def _longest(edge: int) -> Callable[[tuple[int, int]], tuple[int, int]]:
    """A page rendered with its longest side `edge` px (aspect kept), as a PDF renderer would."""

    def size(page: tuple[int, int]) -> tuple[int, int]:
        w, h = page
        scale = edge / max(w, h)
        return max(1, round(w * scale)), max(1, round(h * scale))

    return size


# ---------------------------------------------------------------------------- published preprocessors

# ../shared/models/Qwen2-VL-2B-Instruct/preprocessor_config.json (hub blob c8bf52bd, SOURCES.md V1)
QWEN2VL_PRE = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2}
# ../shared/models/Qwen3-VL-2B-Instruct_family-files-from-4B/preprocessor_config.json
QWEN3VL_PRE = {
    "size": {"shortest_edge": 65536, "longest_edge": 16777216},
    "patch_size": 16,
    "temporal_patch_size": 2,
    "merge_size": 2,
}
# ../shared/models/PaddleOCR-VL/preprocessor_config.json (temporal_patch_size 1 in the preprocessor)
PADDLE_PRE = {"min_pixels": 147384, "max_pixels": 2822400, "patch_size": 14, "temporal_patch_size": 1, "merge_size": 2}
# GOT-OCR-2.0-hf: one 1024 px view per tile (vision_config.image_size 1024, engines/hf/got.py GOT_TILE)
GOT_PRE = {"size": {"height": 1024, "width": 1024}}
# GLM-OCR preprocessor_config.json as printed from huggingface.co/zai-org/GLM-OCR/raw/main (a public
# session log, find_string id 54743329449): Glm46VImageProcessor, shortest_edge 12544, longest_edge
# 9633792 (12288 * 28 * 28), patch 14, temporal 2, merge 2.
GLM_PRE = {
    "size": {"shortest_edge": 12544, "longest_edge": 9633792},
    "patch_size": 14,
    "temporal_patch_size": 2,
    "merge_size": 2,
}
# LightOnOCR preprocessor_config.json (nikolay-grudanov/Team_5_AI_Tutor@9361419:
# models/LightOnOCR-1B-1025/preprocessor_config.json): PixtralImageProcessor, longest_edge 1540,
# patch 14; the LightOnOCR-2 card: "Trained at 1540px maximum longest edge" (docs.voxel51.com
# plugins/lightonocr_2).
LIGHTON_PRE = {"size": {"longest_edge": 1540}, "patch_size": 14}

# ---------------------------------------------------------------------------- the table

BENCHES: dict[str, Bench] = {
    b.name: b
    for b in [
        Bench(
            name="olmocr",
            checkpoint="allenai/olmOCR-2-7B-1025",
            source="config.json of olmOCR-2-7B-1025-FP8 (see OLMOCR)",
            layout="qwen",
            prefix="Qwen2_5_VL",
            config=OLMOCR,
            processor="Qwen2VLImageProcessor",
            processor_config=QWEN2VL_PRE,  # Qwen2.5-VL's preprocessor = Qwen2-VL's values
            # olmOCR renders each PDF page with its longest side 1288 px (allenai/olmocr
            # olmocr/pipeline.py --target_longest_image_dim default 1288), then Qwen2.5-VL's resizer.
            page_size=_longest(1288),
            pixel_kwargs=_spec_kwargs("polyocr.engines.hf.olmocr:OLMOCR"),
            spec="polyocr.engines.hf.olmocr:OLMOCR",
            budget=(8000, 16384),  # olmocr/pipeline.py: max_tokens 8000, model_max_context 16384
            cap_note="page rendered at 1288 px longest side (olmOCR pipeline default)",
            new=True,
        ),
        Bench(
            name="dots-mocr",
            checkpoint="rednote-hilab/dots.mocr",
            source="polyocr.engines.dots.config.PUBLISHED_TEXT (the HF dots.mocr config.json carries "
            "dots.ocr's values: ../shared/models/SOURCES.md)",
            layout="dots",
            cap_note="polyocr dots processor, max_pixels 11,289,600",
            new=True,
        ),
        Bench(
            name="glm-ocr",
            checkpoint="zai-org/GLM-OCR",
            source="hub config.json as printed in public logs (see GLM_OCR)",
            layout="glm",
            prefix="GlmOcr",
            config=GLM_OCR,
            processor="Glm46VImageProcessor",
            processor_config=GLM_PRE,
            cap_note="the processor's own longest_edge 9,633,792 px (whole page, no downscale)",
            new=True,
        ),
        Bench(
            name="lighton-ocr",
            checkpoint="lightonai/LightOnOCR-2-1B",
            source="LightOnOCR-1B-1025 config.json + LightOnOCR-2-1B GGUF card (see LIGHTON_OCR)",
            layout="lighton",
            prefix="LightOnOcr",
            config=LIGHTON_OCR,
            processor="PixtralImageProcessor",
            processor_config=LIGHTON_PRE,
            cap_note="longest edge 1540 px (its preprocessor and card)",
            new=True,
        ),
        Bench(
            name="mineru",
            checkpoint="opendatalab/MinerU2.5-2509-1.2B",
            source="arXiv 2509.22186 parts: Qwen2-VL vision + Qwen2-0.5B-Instruct (see MINERU)",
            layout="qwen",
            prefix="Qwen2VL",
            config=MINERU,
            processor="Qwen2VLImageProcessor",
            # Stage 1 (layout) sees the page resized to 1036 x 1036 regardless of its aspect; stage 2
            # crops are capped at 2048 * 28 * 28 px (arXiv 2509.22186, section 3.1).
            processor_config={**QWEN2VL_PRE, "max_pixels": 2048 * 28 * 28},
            page_size=lambda size: (1036, 1036),
            cap_note="layout stage: page resized to 1036 x 1036 (its crops, stage 2, are not timed here)",
            new=True,
        ),
        Bench(
            name="paddleocr-vl-1.5",
            checkpoint="PaddlePaddle/PaddleOCR-VL-1.5",
            source="no public copy of its config.json found: PaddleOCR-VL's (../shared/models/PaddleOCR-VL), "
            "the paper (arXiv 2601.21957) keeps the 0.9 B architecture",
            layout="qwen",
            prefix="PaddleOCRVL",
            config=CONFIGS["paddleocr-vl"][2],
            processor="PaddleOCRVLImageProcessor",
            processor_config=PADDLE_PRE,
            # The VLM sees layout crops (PP-DocLayoutV3 first), capped by the pipeline at 1,003,520 px
            # (paddlex/inference/pipelines/paddleocr_vl/pipeline.py default_max_pixels): here the
            # whole page as one element at that cap, the most one call can cost.
            pixel_kwargs=_spec_kwargs(
                "polyocr.engines.hf.paddleocr_vl15:PADDLEOCR_VL_15",
                lambda size, own: {"size": {"shortest_edge": 112896, "longest_edge": 1003520}},
            ),
            spec="polyocr.engines.hf.paddleocr_vl15:PADDLEOCR_VL_15",
            cap_note="one element crop at the 1.5 pipeline's cap (1,003,520 px): the whole page",
            new=True,
        ),
        Bench(
            name="dots",
            checkpoint="rednote-hilab/dots.ocr",
            source="polyocr.engines.dots.config.PUBLISHED_TEXT",
            layout="dots",
            cap_note="polyocr dots processor, max_pixels 11,289,600",
        ),
        Bench(
            name="qwen3vl",
            checkpoint=CONFIGS["qwen3vl"][0],
            source="benchmarks/bench_hf_vlm_gpu.py CONFIGS",
            layout="qwen",
            prefix="Qwen3VL",
            config=CONFIGS["qwen3vl"][2],
            attention=ATTENTION["qwen3vl"],
            processor="Qwen2VLImageProcessor",
            processor_config=QWEN3VL_PRE,
            pixel_kwargs=_spec_kwargs("polyocr.engines.hf.qwen3vl:QWEN3VL"),
            spec="polyocr.engines.hf.qwen3vl:QWEN3VL",
            cap_note="engine cap 2048 * 32 * 32 px",
        ),
        Bench(
            name="qwen2vl",
            checkpoint=CONFIGS["qwen2vl"][0],
            source="benchmarks/bench_hf_vlm_gpu.py CONFIGS",
            layout="qwen",
            prefix="Qwen2VL",
            config=CONFIGS["qwen2vl"][2],
            attention=ATTENTION["qwen2vl"],
            processor="Qwen2VLImageProcessor",
            processor_config=QWEN2VL_PRE,
            pixel_kwargs=_spec_kwargs("polyocr.engines.hf.qwen2vl:QWEN2VL"),
            spec="polyocr.engines.hf.qwen2vl:QWEN2VL",
            cap_note="engine cap 2048 * 28 * 28 px",
        ),
        Bench(
            name="deepseek-ocr",
            checkpoint=CONFIGS["deepseek-ocr"][0],
            source="benchmarks/bench_hf_vlm_gpu.py CONFIGS",
            layout="deepseek",
            prefix="DeepseekOcr2",
            config=CONFIGS["deepseek-ocr"][2],
            attention=ATTENTION["deepseek-ocr"],
            processor="DeepseekOcr2ImageProcessor",
            pixel_kwargs=_spec_kwargs("polyocr.engines.hf.deepseek_ocr:DEEPSEEK_OCR"),
            spec="polyocr.engines.hf.deepseek_ocr:DEEPSEEK_OCR",
            cap_note="engine: the processor's default tiling (1024 px global view + 768 px tiles)",
        ),
        Bench(
            name="paddleocr-vl",
            checkpoint=CONFIGS["paddleocr-vl"][0],
            source="benchmarks/bench_hf_vlm_gpu.py CONFIGS",
            layout="qwen",
            prefix="PaddleOCRVL",
            config=CONFIGS["paddleocr-vl"][2],
            attention=ATTENTION["paddleocr-vl"],
            processor="PaddleOCRVLImageProcessor",
            processor_config=PADDLE_PRE,
            pixel_kwargs=_spec_kwargs("polyocr.engines.hf.paddleocr_vl:PADDLEOCR_VL"),
            spec="polyocr.engines.hf.paddleocr_vl:PADDLEOCR_VL",
            cap_note="engine cap 2048 * 28 * 28 px",
        ),
        Bench(
            name="got",
            checkpoint=CONFIGS["got"][0],
            source="benchmarks/bench_hf_vlm_gpu.py CONFIGS",
            layout="got",
            prefix="GotOcr2",
            config=CONFIGS["got"][2],
            attention=ATTENTION["got"],
            processor="GotOcr2ImageProcessor",
            processor_config=GOT_PRE,
            pixel_kwargs=_spec_kwargs("polyocr.engines.hf.got:GOT"),
            spec="polyocr.engines.hf.got:GOT",
            cap_note="engine: one 1024 px view (tiles only for odd-shaped pages)",
        ),
    ]
}


# ---------------------------------------------------------------------------- inputs


def _prompt(torch: Any, image_part: list[int], batch: int) -> dict[str, Any]:
    half = PROMPT_TEXT_TOKENS // 2
    ids = torch.tensor([[TEXT_ID] * half + image_part + [TEXT_ID] * (PROMPT_TEXT_TOKENS - half)] * batch)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def page_inputs(torch: Any, bench: Bench, config: Mapping[str, Any], page: tuple[int, int], batch: int) -> dict:
    """`batch` copies of one page as the model's processor and prompt layout give them (CPU tensors),
    and what the processor made of the page."""
    import transformers
    from PIL import Image

    size = bench.page_size(page)
    image = Image.new("RGB", size, "white")
    if bench.layout == "dots":
        from polyocr.engines.dots.processor import prepare_image

        prepared = prepare_image(image)
        info = {"model_px": prepared.resized_size, "image_tokens": prepared.token_count}
        return {"grid": prepared.grid_thw, **info}
    processor = getattr(transformers, bench.processor)(**dict(bench.processor_config))
    own = dict(getattr(processor, "size", None) or {})  # as HFVLMEngine.inputs passes it
    kwargs = bench.pixel_kwargs(size, own)
    out = dict(processor(images=[image], return_tensors="pt", **kwargs))
    if bench.layout in ("qwen", "glm"):
        merge = int(processor.merge_size)
        tokens = int(out["image_grid_thw"][0].prod()) // (merge * merge)
        _, h, w = (int(v) for v in out["image_grid_thw"][0])
        px = (w * processor.patch_size, h * processor.patch_size)
        if bench.layout == "qwen":
            start, end = config["vision_start_token_id"], config["vision_end_token_id"]
        else:
            start, end = config["image_start_token_id"], config["image_end_token_id"]
        part = [start] + [config["image_token_id"]] * tokens + [end]
    elif bench.layout == "lighton":  # LightOnOcrProcessor.replace_image_token: (H // 28) * (W // 28)
        h, w = (int(v) for v in out["image_sizes"][0])
        step = LIGHTON_PRE["patch_size"] * config["spatial_merge_size"]
        tokens = (h // step) * (w // step)
        px = (w, h)
        part = [config["image_token_id"]] * tokens
    elif bench.layout == "got":  # GotOcr2Processor: image_seq_length tokens per view
        views = int(out["pixel_values"].shape[0])
        tokens = config["image_seq_length"] * views
        px = (views * 1024, 1024)
        part = [config["image_token_index"]] * tokens
        out.pop("num_patches", None)
    elif bench.layout == "deepseek":  # DeepseekOcr2Processor.replace_image_token
        patch, ratio = 16, 4
        global_q = -(-processor.size["height"] // patch // ratio)
        local_q = -(-processor.tile_size // patch // ratio)
        crops = int(out["num_local_patches"][0])
        tokens = global_q * global_q + local_q * local_q * crops + 1
        px = (processor.size["height"], processor.size["height"])
        part = [config["image_token_id"]] * tokens
        ids = torch.tensor([part + [TEXT_ID] * PROMPT_TEXT_TOKENS] * batch)
        return {
            **_repeat(torch, out, batch),
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
            "model_px": px,
            "image_tokens": tokens,
            "crops": crops,
        }
    else:
        raise ValueError(bench.layout)
    prompt = _prompt(torch, part, batch)
    if bench.layout in ("qwen", "glm"):
        prompt["mm_token_type_ids"] = (prompt["input_ids"] == config["image_token_id"]).long()
    return {**_repeat(torch, out, batch), **prompt, "model_px": px, "image_tokens": tokens}


def _repeat(torch: Any, out: Mapping[str, Any], batch: int) -> dict[str, Any]:
    """The processor's tensors for `batch` copies of the page (images concatenated in batch order)."""
    return {k: torch.cat([v] * batch) for k, v in out.items() if hasattr(v, "shape")}


# ---------------------------------------------------------------------------- one model, in its own process


@contextmanager
def gpu_lock(path: str) -> Iterator[None]:
    """Only one model's timed calls on the GPU at a time."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def build(torch: Any, bench: Bench, device: str, layers: int | None) -> tuple[Any, dict[str, Any]]:
    """The model with random bf16 weights, initialised where it runs, and its (capped) config dict."""
    import transformers

    if bench.layout == "dots":
        from polyocr.engines.dots.config import PUBLISHED_TEXT, DotsOCRConfig
        from polyocr.engines.dots.model import PACKED_DECODE, DotsOCRForCausalLM

        text = cap_layers(dict(PUBLISHED_TEXT), layers) if layers else dict(PUBLISHED_TEXT)
        vision = {"num_hidden_layers": layers} if layers else {}
        config = DotsOCRConfig(**text, vision_config=vision)
        with torch.device(device):
            model = DotsOCRForCausalLM._from_config(config, dtype=torch.bfloat16, attn_implementation=PACKED_DECODE)
        return model.eval(), text
    cfg = cap_layers(dict(bench.config), layers) if layers else json.loads(json.dumps(bench.config))
    config = getattr(transformers, f"{bench.prefix}Config")(**cfg)
    model_cls = getattr(transformers, f"{bench.prefix}ForConditionalGeneration")
    with torch.device(device):
        model = model_cls._from_config(config, dtype=torch.bfloat16, attn_implementation=dict(bench.attention))
    return model.eval(), cfg


def answer_budget(bench: Bench, config: Mapping[str, Any], prompt_tokens: int) -> int:
    """New tokens the engine allows after this prompt: the task's default, capped by the model's own
    budget (the spec's token_budget, or the context the config gives)."""
    from polyocr.defaults import MAX_NEW_TOKENS

    spec = _spec(bench.spec)
    if spec is not None:
        own = spec.token_budget(prompt_tokens)
        return min(MAX_NEW_TOKENS, own) if own is not None else MAX_NEW_TOKENS
    most, context = bench.budget
    if most is not None or context is not None:
        limits = [MAX_NEW_TOKENS, most or MAX_NEW_TOKENS]
        return min(*limits, context - prompt_tokens) if context else min(limits)
    context = (config.get("text_config") or config).get("max_position_embeddings")
    return min(MAX_NEW_TOKENS, context - prompt_tokens) if context else MAX_NEW_TOKENS


def measure(name: str, args: argparse.Namespace, save: Callable[[list[dict[str, Any]]], None]) -> None:
    """Rows for one model at each batch size, saved after each (a cut run keeps the first)."""
    import torch

    from polyocr.engines.vlm import static_cache_length

    bench = BENCHES[name]
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    page = tuple(int(v) for v in args.page.lower().split("x"))
    started = time.perf_counter()
    torch.manual_seed(0)
    model, cfg = build(torch, bench, args.device, args.layers)
    sync()
    base = {
        "engine": name,
        "checkpoint": bench.checkpoint,
        "new": bench.new,
        "parameters_b": round(sum(p.numel() for p in model.parameters()) / 1e9, 3),
        "build_s": round(time.perf_counter() - started, 1),
        "page_px": list(page),
        "cap": bench.cap_note,
        "cap_from": f"engine spec {bench.spec}" if _spec(bench.spec) is not None else "this script",
        "attention": DOTS_ATTENTION if bench.layout == "dots" else dict(bench.attention),
    }
    if cuda:
        base["weights_gib"] = round(torch.cuda.memory_allocated() / 2**30, 2)
    accepted = set(inspect.signature(model.forward).parameters)
    rows = []
    for batch in args.batch_sizes:
        row = dict(base, batch=batch)
        try:
            row.update(_measure_batch(torch, model, bench, cfg, page, batch, accepted, args, sync, static_cache_length))
        except Exception as exc:  # one batch size failing (memory, say) must not lose the other
            row["error"] = f"{type(exc).__name__}: {exc}"[:300]
            if cuda:
                torch.cuda.empty_cache()
        rows.append(row)
        save(rows)
        print(json.dumps(row), flush=True)


def _measure_batch(
    torch: Any,
    model: Any,
    bench: Bench,
    cfg: Mapping[str, Any],
    page: tuple[int, int],
    batch: int,
    accepted: set[str],
    args: argparse.Namespace,
    sync: Callable[[], None],
    static_cache_length: Callable[[int, int], int],
) -> dict[str, Any]:
    cuda = args.device.startswith("cuda")
    if bench.layout == "dots":
        from bench_dots_gpu import page_inputs as dots_page_inputs

        info = page_inputs(torch, bench, cfg, page, batch)
        inputs = dots_page_inputs(batch, info.pop("grid"), torch.device(args.device))
    else:
        info = page_inputs(torch, bench, cfg, page, batch)
        inputs = {k: info.pop(k) for k in list(info) if hasattr(info[k], "shape")}
    inputs = {
        k: (v.to(args.device, torch.bfloat16) if v.is_floating_point() else v.to(args.device))
        for k, v in inputs.items()
        if k in accepted or k in ("input_ids", "attention_mask")
    }
    prompt = int(inputs["input_ids"].shape[1])
    budget = answer_budget(bench, cfg, prompt)
    cache_len = static_cache_length(prompt, budget)
    settings: dict[str, Any] = {
        "do_sample": False,
        "pad_token_id": 0,
        "eos_token_id": None,
        "cache_implementation": "static",
        "max_cache_len": cache_len,
    }

    def generate(new_tokens: int) -> float:
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **settings)
        sync()
        assert out.shape[1] == prompt + new_tokens, (out.shape, prompt, new_tokens)
        return time.perf_counter() - start

    new = args.new_tokens
    warm = time.perf_counter()
    generate(new + 1)  # compiles the decoding step and captures its graph
    generate(4)
    warm = time.perf_counter() - warm
    with gpu_lock(args.lock):
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        first = min(generate(1) for _ in range(REPEATS))
        full = min(generate(new + 1) for _ in range(REPEATS))
        peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    ms_token = (full - first) / new * 1000
    return {
        **{k: v for k, v in info.items()},
        "model_px": list(info.get("model_px", ())),
        "prompt_tokens": prompt,
        "answer_budget": budget,
        "cache_len": cache_len,
        "compiled": getattr(model, "_compiled_call", None) is not None,
        "warmup_s": round(warm, 1),
        "prefill_ms": round(first * 1000, 1),
        "ms_per_token": round(ms_token, 2),
        "tokens_per_s": round(batch * 1000 / ms_token, 1) if ms_token > 0 else None,
        "peak_gib": round(peak, 2) if peak is not None else None,
    }


# ---------------------------------------------------------------------------- the run


def report(rows: list[dict[str, Any]], args: argparse.Namespace, started: float) -> str:
    lines = [
        "# OCR VLMs on one GPU: page prefill, decode speed and memory at full size (random bf16 weights)",
        "",
        f"- Command: `{args.command}`",
        f"- Machine: {machine(args.device)}",
        f"- Date: {datetime.date.today().isoformat()}; wall {time.perf_counter() - started:.0f} s so far, "
        f"{args.jobs} run(s) at a time, one process per model and batch size (timed calls serialised by a lock)",
        f"- Page: {args.page} px (A4 at 200 DPI is 1654x2339), through each model's image processor at the "
        f"engine's cap (cap column); prompt = the image tokens + {PROMPT_TEXT_TOKENS} text tokens (dots: its "
        "own ~150). Batch b = b copies of the page.",
        f"- Static cache of the engine's length (prompt + answer budget, rounded up to 256), compiled by "
        f"transformers; greedy; {args.new_tokens} tokens forced with min_new_tokens. prefill = fastest of three "
        f"1-token calls (vision + prompt); ms/token = (fastest of three {args.new_tokens + 1}-token calls - "
        f"prefill) / {args.new_tokens}; tokens/s = batch x 1000 / ms/token; peak = max allocated over the "
        "timed calls; warm-up = one full and one short call (the compile).",
        "- Weights are random: the arithmetic of the published architectures, not their answers. Sources "
        "of the dimensions and caps: benchmarks/bench_vlm_leaders_gpu.py.",
    ]
    if args.layers:
        lines.append(f"- Layer counts capped at {args.layers} (`--layers`): a code-path check, not a measurement.")
    lines += [
        "",
        "| engine | checkpoint | params (B) | batch | model input px | image tokens | prompt tokens | cache len "
        "| prefill ms | ms/token | tokens/s | weights GiB | peak GiB | warm-up s | cap | note |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    order = {name: i for i, name in enumerate(BENCHES)}
    for r in sorted(rows, key=lambda r: (order.get(r["engine"], 99), r.get("batch", 0))):
        name = f"**{r['engine']}**" if r.get("new") else r["engine"]
        px = "x".join(str(v) for v in r.get("model_px") or []) or "-"
        note = "not run: " + r["error"].replace("|", "/").replace("\n", " ") if "error" in r else ""
        if "error" not in r and not r.get("compiled", True):
            note = "decode step not compiled"
        cells = [
            name,
            r.get("checkpoint", "-"),
            r.get("parameters_b", "-"),
            r.get("batch", "-"),
            px,
            r.get("image_tokens", "-"),
            r.get("prompt_tokens", "-"),
            r.get("cache_len", "-"),
            r.get("prefill_ms", "-"),
            r.get("ms_per_token", "-"),
            r.get("tokens_per_s", "-"),
            r.get("weights_gib", "-"),
            r.get("peak_gib", "-"),
            r.get("warmup_s", "-"),
            r.get("cap", "-"),
            note,
        ]
        lines.append("| " + " | ".join("-" if c is None else str(c) for c in cells) + " |")
    lines += ["", "Bold: the engines issue 19 adds."]
    return "\n".join(lines) + "\n"


def write(rows: list[dict[str, Any]], args: argparse.Namespace, started: float) -> None:
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report(rows, args, started))
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2, default=str))


Task = tuple[str, int]  # (model, batch size): one process each


def _error_row(task: Task, why: str, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    name, batch = task
    keep = ("parameters_b", "weights_gib", "build_s", "cap", "cap_from")
    known = {k: base[k] for k in keep if base and k in base}
    bench = BENCHES[name]
    return {"engine": name, "checkpoint": bench.checkpoint, "new": bench.new, **known, "batch": batch, "error": why}


def run_all(args: argparse.Namespace) -> None:
    """Each (model, batch size) in its own process, `--jobs` at a time, as a fresh engine would run
    it (its own compile, no memory left by the other batch size); the report rewritten after each."""
    started = time.perf_counter()
    names = args.models.split(",")
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        raise SystemExit(f"unknown model(s) {unknown}; known: {', '.join(BENCHES)}")
    work = Path(tempfile.mkdtemp(prefix="vlm-leaders-"))
    args.lock = str(work / "gpu.lock")
    pending: list[Task] = [(n, b) for n in names for b in args.batch_sizes]
    running: dict[Task, subprocess.Popen] = {}
    rows: list[dict[str, Any]] = []
    worker_args = [
        "--device", args.device, "--page", args.page, "--new-tokens", str(args.new_tokens), "--lock", args.lock,
    ] + (["--layers", str(args.layers)] if args.layers else [])  # fmt: skip

    def stem(task: Task) -> Path:
        return work / f"{task[0]}-b{task[1]}"

    def finish(task: Task, proc: subprocess.Popen, reason: str = "") -> None:
        rows_file, log = stem(task).with_suffix(".json"), stem(task).with_suffix(".log")
        got = json.loads(rows_file.read_text()) if rows_file.exists() else []
        if not got:
            tail = log.read_text()[-600:] if log.exists() else ""
            got = [_error_row(task, f"{reason or f'worker exited with {proc.returncode}'}: {tail}")]
        if log.exists() and any("error" in r for r in got):  # the whole log of a failed run, beside the report
            logs = Path(args.out).with_name(Path(args.out).stem + "-logs")
            logs.mkdir(parents=True, exist_ok=True)
            (logs / log.name).write_text(log.read_text()[-200_000:])
        rows.extend(got)
        write(rows, args, started)

    def stop(*_: Any) -> None:
        for task, proc in list(running.items()):
            proc.kill()
            proc.wait()
            finish(task, proc, "stopped (the run was killed)")
        rows.extend(_error_row(t, "not started: the run was killed") for t in pending)
        write(rows, args, started)
        sys.exit(1)

    signal.signal(signal.SIGTERM, stop)
    while pending or running:
        while pending and len(running) < args.jobs:
            task = pending.pop(0)
            log = open(stem(task).with_suffix(".log"), "w")  # noqa: SIM115  # closed with the process
            cmd = [sys.executable, __file__, "--worker", task[0], "--batches", str(task[1])]
            cmd += ["--rows", str(stem(task).with_suffix(".json")), *worker_args]
            running[task] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            print(f"[{time.perf_counter() - started:5.0f} s] start {task[0]} batch {task[1]}", flush=True)
        time.sleep(0.5)
        over = time.perf_counter() - started > args.budget_s
        for task, proc in list(running.items()):
            if proc.poll() is None and not over:
                continue
            if proc.poll() is None:
                proc.kill()
                proc.wait()
                finish(task, proc, f"cut at the {args.budget_s:.0f} s budget")
            else:
                finish(task, proc)
            del running[task]
            print(f"[{time.perf_counter() - started:5.0f} s] done {task[0]} batch {task[1]}", flush=True)
        if over:
            rows.extend(_error_row(t, f"not started within the {args.budget_s:.0f} s budget") for t in pending)
            pending = []
            write(rows, args, started)
    print(report(rows, args, started))


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--out", help="Markdown report (a .json beside it)")
    parser.add_argument("--models", default=",".join(BENCHES), help="comma-separated: " + ", ".join(BENCHES))
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--layers", type=int, default=None, help="cap layer counts (code-path check only)")
    parser.add_argument("--page", default="x".join(map(str, A4_200DPI)), help="page size WxH in px")
    parser.add_argument("--batches", default="1,8", help="comma-separated batch sizes")
    parser.add_argument("--new-tokens", type=int, default=NEW_TOKENS)
    parser.add_argument("--jobs", type=int, default=None, help="runs at a time (default 4 on CUDA, 1 elsewhere)")
    parser.add_argument(
        "--budget-s", type=float, default=None, help="stop runs still going after this many s (CUDA default 440)"
    )
    parser.add_argument("--command", default=None, help="the command line to record in the report")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--rows", help=argparse.SUPPRESS)
    parser.add_argument("--lock", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.batch_sizes = [int(b) for b in args.batches.split(",")]
    if args.worker:
        measure(args.worker, args, lambda rows: Path(args.rows).write_text(json.dumps(rows)))
        return
    if not args.out:
        parser.error("--out is required")
    args.jobs = args.jobs or (4 if args.device.startswith("cuda") else 1)
    if args.budget_s is None:
        args.budget_s = 440.0 if args.device.startswith("cuda") else float("inf")
    args.command = args.command or "python3 " + " ".join(
        ["benchmarks/bench_vlm_leaders_gpu.py", *(a.replace(os.environ.get("OUT", "\0"), "$OUT") for a in sys.argv[1:])]
    )
    run_all(args)


if __name__ == "__main__":
    main()
