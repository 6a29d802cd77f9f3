"""dots.ocr throughput on one GPU, every variant in one run: vision SDPA backends, the decoding step,
pages/s of the engine (static vs continuous batching, vision overlapped or not), variable output
lengths, batch-16 vs batch-1 tokens, the reference remote code and transformers' generate side by
side, a 12 GB memory cap, and a second process's time to its first token.

No model hub is reachable where this runs: it writes a random-weight checkpoint with the published
dimensions in the published layout (tests/tiny_dots.py's writer), as benchmarks/bench_dots_engine_gpu.py
does, and makes 200-DPI A4-sized page images. Random weights never emit an end token on their own,
so the output length of every page is forced (min_new_tokens = max_new_tokens).

    PYTHONPATH=src:tests python3 benchmarks/bench_dots_throughput_gpu.py --out $OUT/dots-throughput.json \\
        --sections vision decode throughput correctness

`--tiny` runs every section with tiny sizes on the CPU (a code-path check; its numbers mean nothing).
Sections write their results into the JSON as they finish, so a run cut short keeps what it measured.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from polyocr.documents import Page
from polyocr.engines.base import EnginePlan, Task, TaskKind
from polyocr.engines.dots.config import PUBLISHED_TEXT, DotsVisionConfig
from polyocr.engines.dots.decode import SlotDecoder, cache_length_for
from polyocr.engines.dots.engine import DotsEngine
from tiny_dots import TEXT, VISION, build_tiny_dots

FULL_TEXT = {k: PUBLISHED_TEXT[k] for k in TEXT}
FULL_VISION = {**VISION, **{k: getattr(DotsVisionConfig(), k) for k in VISION if hasattr(DotsVisionConfig(), k)}}
A4_SIZES = [(1654, 2339), (1700, 2200), (1620, 2339), (1654, 2300)]  # A4 / letter at 200 DPI, cropped scans
TINY_SIZES = [(112, 140), (140, 112), (112, 112), (126, 140)]
REFERENCE = Path(__file__).resolve().parent.parent / "ref"  # default --reference: the remote code beside src/
GIB = 2**30


def log(*args: Any) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *args, flush=True)


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def pages(count: int, tiny: bool, start: int = 0) -> list[Page]:
    """Page-like images: white paper with dark random strokes (not zeros, not pure noise)."""
    sizes = TINY_SIZES if tiny else A4_SIZES
    out = []
    for number in range(start, start + count):
        rng = np.random.default_rng(number)
        width, height = sizes[number % len(sizes)]
        pixels = np.full((height, width, 3), 245, dtype=np.uint8)
        for row in rng.integers(0, height - 8, size=height // 12):
            begin = int(rng.integers(0, width // 2))
            pixels[row : row + 6, begin : begin + int(rng.integers(width // 8, width // 2))] = 30
        out.append(Page(image=Image.fromarray(pixels), number=number + 1, source="synthetic-a4", dpi=200))
    return out


class Bench:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.tiny = args.tiny
        self.cuda = torch.cuda.is_available() and not args.tiny
        self.device = "cuda" if self.cuda else "cpu"
        self.dtype = "bfloat16" if self.cuda else "float32"
        self.out = Path(args.out)
        self.results: dict[str, Any] = json.loads(self.out.read_text()) if self.out.exists() else {}
        self.checkpoint = Path(args.workdir) / "dots"
        self._engines: dict[tuple, DotsEngine] = {}

    def save(self) -> None:
        self.out.write_text(json.dumps(self.results, indent=1))

    # -- setup -------------------------------------------------------------------------------------

    def ensure_checkpoint(self) -> None:
        if (self.checkpoint / "config.json").exists():
            return
        began = time.perf_counter()
        text, vision = (TEXT, VISION) if self.tiny else (FULL_TEXT, FULL_VISION)
        build_tiny_dots(
            self.checkpoint,
            shards=2,
            text=text,
            vision=vision,
            vocab_size=None if self.tiny else PUBLISHED_TEXT["vocab_size"],
            dtype=getattr(torch, self.dtype),
            device=self.device,
        )
        self.results.setdefault("setup", {})["write_checkpoint_s"] = round(time.perf_counter() - began, 1)
        if self.cuda:
            torch.cuda.empty_cache()

    def engine(self, batch: int, **generation: Any) -> DotsEngine:
        """An engine on the checkpoint; one model shared by all (their plans differ only in settings)."""
        generation.setdefault("decoder", "slots")  # the CUDA default; forced so that --tiny runs it on the CPU too
        key = (batch, *sorted(generation.items()))
        backends = generation.get("vision_sdpa")
        if key in self._engines:
            engine = self._engines[key]
            engine.model.vision_tower.set_sdpa_backends(backends.split(",") if backends else None)
            engine.model.vision_tower.set_fused(bool(generation.get("vision_fused")))
            return engine
        engine = DotsEngine(model_path=self.checkpoint)
        base = next(iter(self._engines.values()), None)
        plan = EnginePlan(
            device=self.device, dtype=self.dtype, attention="sdpa", batch_size=batch, generation=dict(generation)
        )
        if base is None:
            began = time.perf_counter()
            engine.load(plan)
            self.results.setdefault("setup", {})["load_s"] = round(time.perf_counter() - began, 2)
        else:
            engine.model, engine.processor, engine.plan = base.model, base.processor, plan
        engine.model.vision_tower.set_sdpa_backends(backends.split(",") if backends else None)
        engine.model.vision_tower.set_fused(bool(generation.get("vision_fused")))
        self._engines[key] = engine
        return engine

    # -- 1. vision tower: SDPA backends against float32 ---------------------------------------------

    def vision(self) -> dict:
        engine = self.engine(1)
        model = engine.model
        image = engine.processor.prepare(pages(1, self.tiny)[0].image)
        pixels = torch.from_numpy(image.pixel_values).to(self.device)
        grid = torch.tensor([image.grid_thw], device=self.device)
        tower = model.vision_tower
        reference = copy.deepcopy(tower).float()
        reference.set_sdpa_backends(["efficient", "math"] if self.cuda else ["math"])
        with torch.inference_mode():
            want = reference(pixels.float(), grid).float()
        del reference
        torch.cuda.empty_cache() if self.cuda else None
        row: dict[str, Any] = {"patches": int(pixels.shape[0]), "grid": list(image.grid_thw), "variants": []}
        names = [None, "cudnn", "flash", "efficient"] if self.cuda else [None, "math"]
        for name in names:
            tower.set_sdpa_backends([name] if name else None)
            try:
                with torch.inference_mode():
                    seconds, peak, got = timed(lambda: tower(pixels, grid), 2 if self.tiny else 6, self.cuda)
                error = ((got.float() - want).norm() / want.norm()).item()
                variant = {
                    "sdpa_backend": name or "torch default",
                    "ms": round(seconds * 1000, 1),
                    "peak_above_weights_gib": round(peak / GIB, 2),
                    "rel_error_vs_float32": float(f"{error:.2e}"),
                }
            except Exception as exc:  # a backend that cannot run on this GPU says so
                variant = {"sdpa_backend": name, "error": f"{type(exc).__name__}: {str(exc)[:200]}"}
            row["variants"].append(variant)
            log("vision", variant)
        tower.set_sdpa_backends(None)
        # Fused blocks: norms, rotary, SwiGLU and residuals through torch.compile (dynamic patch count).
        tower.set_fused(True)
        try:
            with torch.inference_mode():
                began = time.perf_counter()
                tower(pixels, grid)
                sync()
                compile_s = time.perf_counter() - began
                seconds, peak, got = timed(lambda: tower(pixels, grid), 2 if self.tiny else 6, self.cuda)
                other = engine.processor.prepare(pages(2, self.tiny)[1].image)  # another size: no recompile
                began = time.perf_counter()
                tower(
                    torch.from_numpy(other.pixel_values).to(self.device),
                    torch.tensor([other.grid_thw], device=self.device),
                )
                sync()
                other_s = time.perf_counter() - began
            error = ((got.float() - want).norm() / want.norm()).item()
            variant = {
                "sdpa_backend": "torch default, fused blocks (torch.compile)",
                "ms": round(seconds * 1000, 1),
                "peak_above_weights_gib": round(peak / GIB, 2),
                "rel_error_vs_float32": float(f"{error:.2e}"),
                "first_call_compile_s": round(compile_s, 1),
                "other_page_size_first_call_s": round(other_s, 2),
                "other_grid": list(other.grid_thw),
            }
        except Exception as exc:
            variant = {"sdpa_backend": "fused blocks", "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            traceback.print_exc()
        tower.set_fused(False)
        row["variants"].append(variant)
        log("vision", variant)
        return row

    # -- 2. the decoding step ------------------------------------------------------------------------

    @torch.no_grad()
    def decode(self) -> dict:
        engine = self.engine(1)
        model = engine.model
        prompt = 60 if self.tiny else 5400
        cache = cache_length_for(prompt, 512)
        configs = [
            (1, "eager"),
            (1, "graph"),
            (1, "compile+graph"),
            (16, "compile+graph"),
            (32, "graph"),
            (32, "compile+graph"),
            (64, "compile+graph"),
        ]
        if self.tiny:
            configs = [(1, "eager"), (2, "eager")]
        rows = []
        for slots, mode in configs:
            decoder = SlotDecoder(
                model,
                slots,
                cache,
                engine.processor.eos_token_ids,
                engine.processor.pad_token_id,
                graphs=mode != "eager",
                compile=mode == "compile+graph",
            )
            began = time.perf_counter()
            decoder._build()
            build_s = time.perf_counter() - began
            decoder.active.fill_(True)
            decoder.pos.fill_(prompt)
            decoder.count.fill_(1)
            decoder.limit.fill_(10**9)
            steps = 8 if self.tiny else 50 if mode == "eager" else 200
            for _ in range(5):
                decoder._step()
            sync()
            began = time.perf_counter()
            for _ in range(steps):
                decoder._step()
            sync()
            ms = (time.perf_counter() - began) / steps * 1000
            row = {
                "slots": slots,
                "mode": decoder.stats.step_mode,
                "asked": mode,
                "cache_len": cache,
                "ms_per_step": round(ms, 3),
                "tokens_per_s": round(slots / ms * 1000, 1),
                "build_s": round(build_s, 1),
                "fallback": decoder.stats.fallback,
            }
            rows.append(row)
            log("decode", row)
            del decoder
            torch.cuda.empty_cache() if self.cuda else None
        # The floor at batch 1: every decoder weight (lm_head included, not the embedding table) and
        # the cache read once per step, over the copy bandwidth measured here.
        text = model.model
        weights = sum(p.numel() * p.element_size() for n, p in text.named_parameters() if "embed_tokens" not in n)
        weights += model.lm_head.weight.numel() * model.lm_head.weight.element_size()
        kv = 2 * model.config.num_hidden_layers * model.config.num_key_value_heads * 128 * 2
        floor = {"decoder_weight_bytes": weights, "kv_bytes_per_token": kv, "cache_len": cache}
        if self.cuda:
            bandwidth = copy_bandwidth()
            floor["copy_bandwidth_tb_s"] = round(bandwidth / 1e12, 2)
            for name, kv_tokens in (("valid_kv", prompt), ("whole_cache", cache)):
                floor[f"floor_ms_b1_{name}"] = round((weights + kv * kv_tokens) / bandwidth * 1000, 3)
        return {"steps": rows, "floor": floor}

    # -- 3. pages/s through DotsEngine.recognize --------------------------------------------------------

    def throughput(self) -> dict:
        new = 8 if self.tiny else 512
        count = self.args.pages
        variants = [
            ("slots, continuous", 1, {}),
            ("slots, continuous", 16, {}),
            ("slots, continuous", 32, {}),
            ("slots, continuous, overlap", 32, {"overlap": True}),
            ("slots, continuous, overlap, cudnn vision", 32, {"overlap": True, "vision_sdpa": "cudnn,flash"}),
            ("slots, continuous, overlap, cudnn vision", 64, {"overlap": True, "vision_sdpa": "cudnn,flash"}),
            ("generate (transformers static cache, the old default)", 16, {"decoder": "generate"}),
            ("slots, continuous, overlap, fused vision", 64, {"overlap": True, "vision_fused": True}),
            ("slots, continuous, fused vision", 64, {"vision_fused": True}),
        ]
        if self.tiny:
            variants = [(v[0], min(v[1], 4), v[2]) for v in (*variants[:4], variants[-1])]
        skip = set(self.args.skip_variants or [])
        only = set(self.args.only_variants or [])
        rows = []
        task = Task(kind=TaskKind.LAYOUT, max_new_tokens=new)
        for label, batch, settings in variants:
            if f"{label}@{batch}" in skip or (only and f"{label}@{batch}" not in only):
                continue
            engine = self.engine(batch, min_new_tokens=new, **settings)
            many = count if batch > 1 else max(2, count // 16)
            if settings.get("decoder") == "generate":
                many = min(many, 2 * batch)
            try:
                sync()
                began = time.perf_counter()
                first = engine.recognize(pages(batch if settings.get("decoder") == "generate" else 1, self.tiny), task)
                sync()
                first_s = time.perf_counter() - began
                before = copy.copy(engine._decoder.stats) if engine._decoder else None
                stream = pages(many, self.tiny, start=100)
                sync()
                began = time.perf_counter()
                results = engine.recognize(stream, task)
                sync()
                seconds = time.perf_counter() - began
            except Exception as exc:
                rows.append({"variant": label, "batch": batch, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
                log("throughput", rows[-1])
                traceback.print_exc()
                continue
            tokens = [r.generation.generated_tokens for r in results]
            row = {
                "variant": label,
                "batch": batch,
                "settings": settings,
                "first_call_s": round(first_s, 2),
                "first_call_pages": len(first),
                "pages": len(results),
                "seconds": round(seconds, 2),
                "pages_per_s": round(len(results) / seconds, 3),
                "generated_min_max": [min(tokens), max(tokens)],
                "prompt_tokens_min_max": [
                    min(r.generation.prompt_tokens for r in results),
                    max(r.generation.prompt_tokens for r in results),
                ],
            }
            if engine._decoder is not None and before is not None:
                stats = engine._decoder.stats
                row.update(
                    {
                        "step_mode": stats.step_mode,
                        "fallback": stats.fallback,
                        "compile_s": round(stats.compile_s, 1),
                        "steps": stats.steps - before.steps,
                        "host_prefill_s": round(stats.prefill_s - before.prefill_s, 2),
                        "host_decode_s": round(stats.decode_s - before.decode_s, 2),
                    }
                )
            if self.cuda:
                row["peak_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
            rows.append(row)
            log("throughput", row)
            self.results["throughput"] = {"new_tokens_per_page": new, "rows": rows, "partial": True}
            self.save()
        return {"new_tokens_per_page": new, "rows": rows}

    # -- 4. greedy tokens at batch 16 vs batch 1 ------------------------------------------------------

    def correctness(self) -> dict:
        new = 8 if self.tiny else 128
        count = 4 if self.tiny else 16
        task = Task(kind=TaskKind.LAYOUT, max_new_tokens=new)
        runs = {}
        for batch in (1, count, "eager"):  # "eager": batch 1, no CUDA graph, no compile, first 2 pages
            forced = 8 if self.tiny else 512  # the throughput section's engines, so their compiled steps
            if batch == "eager":
                engine = self.engine(1, min_new_tokens=forced, compile=False, graphs=False)
            else:
                engine = self.engine(batch, min_new_tokens=forced)
            page_list = pages(2 if batch == "eager" else count, self.tiny, start=100)
            prompts = [engine._prompt(p, engine._shape(p), task, TASK_LAYOUT) for p in page_list]
            longest = max(
                len(engine.processor.prompt_ids(pr, engine._shape(p).token_count))
                for pr, p in zip(prompts, page_list, strict=True)
            )
            decoder = engine.slot_decoder(cache_length_for(longest, forced))
            requests = list(engine._requests(page_list, prompts, task))
            for r in requests:
                r.min_new_tokens = new
            runs[batch] = {f.key: f.tokens for f in decoder.run(requests)}
        rows = []
        for key in sorted(runs[1]):
            a, b = runs[1][key], runs[count][key]
            diverge = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), None)
            rows.append({"page": key, "tokens": len(a), "first_divergence": diverge})
            if key in runs["eager"]:
                e = runs["eager"][key]
                rows[-1]["first_divergence_b1_compiled_vs_eager"] = next(
                    (i for i, (x, y) in enumerate(zip(a, e, strict=False)) if x != y), None
                )
        same = sum(r["first_divergence"] is None for r in rows)
        log("correctness", rows)
        return {
            "batch": count,
            "new_tokens": new,
            "pages": rows,
            "pages_identical": same,
            "earliest_divergence": min(
                (r["first_divergence"] for r in rows if r["first_divergence"] is not None), default=None
            ),
        }

    # -- 5. variable output lengths: static batch vs continuous ---------------------------------------

    def variable(self) -> dict:
        top = 16 if self.tiny else 2000
        low = 4 if self.tiny else 200
        count = min(self.args.pages, 32)
        rng = np.random.default_rng(7)
        # No recorded length distribution reaches this machine: log-uniform over [200, 2000] stands in for one.
        lengths = [int(x) for x in np.exp(rng.uniform(math.log(low), math.log(top), size=count))]
        batch = 4 if self.tiny else self.args.variable_batch
        page_list = pages(count, self.tiny, start=300)
        rows = []
        for label, refill, order in (
            ("static batch, arrival order", "static", "arrival"),
            ("static batch, sorted by length (oracle)", "static", "sorted"),
            ("continuous", "continuous", "arrival"),
        ):
            overlap = label.endswith("overlap")
            engine = self.engine(batch, overlap=overlap, refill=refill, compile=bool(self.args.variable_compile))
            task = Task(kind=TaskKind.LAYOUT, max_new_tokens=top)
            prompts = [engine._prompt(p, engine._shape(p), task, TASK_LAYOUT) for p in page_list]
            lengths_p = [
                len(engine.processor.prompt_ids(pr, engine._shape(p).token_count))
                for pr, p in zip(prompts, page_list, strict=True)
            ]
            decoder = engine.slot_decoder(cache_length_for(max(lengths_p), top))
            if not decoder._built:
                decoder._build()
            index = sorted(range(count), key=lambda i: -lengths[i]) if order == "sorted" else list(range(count))

            def requests(
                index: list[int] = index, engine: DotsEngine = engine, prompts: list = prompts, task: Task = task
            ) -> Any:
                for r in engine._requests([page_list[i] for i in index], [prompts[i] for i in index], task):
                    r.max_new_tokens = r.min_new_tokens = lengths[index[r.key]]
                    yield r

            steps0 = decoder.stats.steps
            sync()
            began = time.perf_counter()
            done = decoder.run(requests())
            sync()
            seconds = time.perf_counter() - began
            made = sum(len(f.tokens) for f in done)
            rows.append(
                {
                    "variant": label,
                    "batch": batch,
                    "pages": len(done),
                    "seconds": round(seconds, 2),
                    "pages_per_s": round(len(done) / seconds, 3),
                    "generated_tokens": made,
                    "steps": decoder.stats.steps - steps0,
                    "row_utilisation": round(made / ((decoder.stats.steps - steps0) * batch), 3),
                }
            )
            log("variable", rows[-1])
        return {
            "lengths": {
                "min": min(lengths),
                "median": int(statistics.median(lengths)),
                "max": max(lengths),
                "mean": round(statistics.mean(lengths), 1),
                "distribution": "log-uniform [200, 2000]",
            },
            "rows": rows,
        }

    # -- 6. side by side: the reference remote code, transformers' generate, polyocr --------------------

    def reference(self) -> dict:
        out: dict[str, Any] = {}
        new = 8 if self.tiny else 64
        engine = self.engine(1)
        page = pages(1, self.tiny)[0]
        task = Task(kind=TaskKind.LAYOUT, max_new_tokens=new)
        image = engine.processor.prepare(page.image)
        batch = engine.processor.batch([image], [engine._prompt(page, image, task, TASK_LAYOUT)])
        inputs = batch.model_inputs(self.device, getattr(torch, self.dtype))
        out["prompt_tokens"] = int(inputs["input_ids"].shape[1])
        eos = engine.processor.eos_token_ids
        settings = {
            "max_new_tokens": new,
            "min_new_tokens": new,
            "do_sample": False,
            "eos_token_id": eos,
            "pad_token_id": engine.processor.pad_token_id,
        }
        # transformers' default generate (dynamic cache) on polyocr's model
        out["transformers_generate_dynamic"] = generate_row(
            engine.model,
            inputs,
            settings,
            self.cuda,
            vision=lambda: engine.model.vision_tower(inputs["pixel_values"], inputs["image_grid_thw"]),
        )
        log("reference: generate dynamic", out["transformers_generate_dynamic"])
        polyocr_tokens = out["transformers_generate_dynamic"].pop("tokens")
        # the reference remote code (trust_remote_code), on a copy of the checkpoint with its .py files
        ref_dir = Path(self.args.workdir) / "dots-ref"
        try:
            if not ref_dir.exists():
                ref_dir.mkdir()
                for f in self.checkpoint.iterdir():
                    (ref_dir / f.name).symlink_to(f)
                for f in Path(self.args.reference).glob("*.py"):
                    shutil.copy(f, ref_dir / f.name)
            from transformers import AutoConfig, AutoModelForCausalLM

            for label, vision_attention in (
                ("reference (flash-attn absent: its eager fallback)", None),
                ("reference, vision attention forced to sdpa", "sdpa"),
            ):
                config = AutoConfig.from_pretrained(ref_dir, trust_remote_code=True)
                if vision_attention:
                    config.vision_config.attn_implementation = vision_attention
                ref = None
                try:
                    began = time.perf_counter()
                    ref = (
                        AutoModelForCausalLM.from_pretrained(
                            ref_dir, config=config, trust_remote_code=True, dtype=getattr(torch, self.dtype)
                        )
                        .to(self.device)
                        .eval()
                    )
                    load_s = time.perf_counter() - began
                    ref_inputs = {**inputs, "pixel_values": inputs["pixel_values"].to(getattr(torch, self.dtype))}
                    as_published = "ran"
                    try:  # as published: written for transformers 4.51
                        with torch.inference_mode():
                            ref.generate(**ref_inputs, **{**settings, "max_new_tokens": 3, "min_new_tokens": 3})
                    except Exception as exc:
                        as_published = f"{type(exc).__name__}: {str(exc)[:300]}"
                    shim_reference(ref)
                    row = generate_row(
                        ref,
                        ref_inputs,
                        settings,
                        self.cuda,
                        vision=lambda ref=ref, ref_inputs=ref_inputs: ref.vision_tower(
                            ref_inputs["pixel_values"], ref_inputs["image_grid_thw"], bf16=self.cuda
                        ),
                    )
                    row["load_s"] = round(load_s, 1)
                    row["as_published"] = as_published
                    row["shim"] = "pixel_values dropped after the first generation step (benchmark only)"
                    tokens = row.pop("tokens")
                    row["first_divergence_vs_polyocr"] = next(
                        (i for i, (x, y) in enumerate(zip(tokens, polyocr_tokens, strict=False)) if x != y), None
                    )
                except Exception as exc:
                    row = {"error": f"{type(exc).__name__}: {str(exc)[:400]}"}
                    traceback.print_exc()
                finally:
                    del ref
                    if self.cuda:
                        torch.cuda.empty_cache()
                out[label] = row
                log("reference:", label, row)
        except Exception as exc:
            out["reference_error"] = f"{type(exc).__name__}: {str(exc)[:400]}"
            traceback.print_exc()
        return out

    # -- 7. the 12 GB card: a child process capped with set_per_process_memory_fraction ----------------

    def memory12(self) -> dict:
        return run_child(self.args, "memory12-child", {})

    def memory12_child(self) -> dict:
        from polyocr.runtime.memory import fit

        cap = 12 * 10**9  # the 12 GB card
        if self.cuda:
            total = torch.cuda.get_device_properties(0).total_memory
            torch.cuda.set_per_process_memory_fraction(cap / total)
        new = 16 if self.tiny else 2000
        page = pages(1, self.tiny)[0]
        dims = DotsEngine().model_dims("bfloat16")
        limits = fit(dims, cap, max_new_tokens=new, max_pixels=page.image.width * page.image.height, max_batch=8)
        row: dict[str, Any] = {
            "cap_bytes": cap,
            "plan_batch": limits.batch_size,
            "plan_max_pixels": limits.max_pixels,
            "plan_reason": limits.reason,
            "new_tokens": new,
            "runs": [],
        }
        engine = DotsEngine(model_path=self.checkpoint)
        for batch in sorted({1, max(1, limits.batch_size)}):
            plan = EnginePlan(
                device=self.device,
                dtype=self.dtype,
                batch_size=batch,
                max_pixels=limits.max_pixels,
                generation={"min_new_tokens": new, "decoder": "slots", "compile": args_compile(self.args)},
            )
            try:
                engine.load(plan)
                if self.cuda:
                    torch.cuda.reset_peak_memory_stats()
                began = time.perf_counter()
                results = engine.recognize(pages(batch, self.tiny), Task(kind=TaskKind.LAYOUT, max_new_tokens=new))
                sync()
                run = {
                    "batch": batch,
                    "seconds": round(time.perf_counter() - began, 2),
                    "generated": [r.generation.generated_tokens for r in results],
                    "prompt_tokens": [r.generation.prompt_tokens for r in results],
                }
                if self.cuda:
                    run["peak_allocated_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
                    run["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / GIB, 2)
            except Exception as exc:
                run = {"batch": batch, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            row["runs"].append(run)
            log("memory12", run)
            engine.close()
            if self.cuda:
                torch.cuda.empty_cache()
        return row

    # -- 8. first token in a second process (persistent compile caches) --------------------------------

    def coldstart(self) -> dict:
        cache = Path(tempfile.mkdtemp(prefix="inductor-", dir=self.args.workdir))
        env = {"TORCHINDUCTOR_CACHE_DIR": str(cache)}
        return {
            "cache_dir": "fresh temporary dir, shared by both processes",
            "first_process": run_child(self.args, "coldstart-child", env),
            "second_process": run_child(self.args, "coldstart-child", env),
        }

    def coldstart_child(self) -> dict:
        import torch._dynamo.utils as dynamo_utils

        began = time.perf_counter()
        engine = DotsEngine(model_path=self.checkpoint)
        engine.load(
            EnginePlan(
                device=self.device, dtype=self.dtype, batch_size=8, generation={"min_new_tokens": 2, "decoder": "slots"}
            )
        )
        sync()
        row: dict[str, Any] = {"load_s": round(time.perf_counter() - began, 2)}
        began = time.perf_counter()
        engine.recognize(pages(1, self.tiny), Task(kind=TaskKind.LAYOUT, max_new_tokens=2))
        sync()
        row["first_page_2_tokens_s"] = round(time.perf_counter() - began, 2)
        row["compile_s"] = round(engine._decoder.stats.compile_s, 2)
        row["step_mode"] = engine._decoder.stats.step_mode
        graphs_before = dynamo_utils.counters["stats"]["unique_graphs"]
        calls = []
        for count, start, new in ((3, 10, 40), (8, 20, 16), (5, 31, 64)):  # other page counts, sizes, lengths
            began = time.perf_counter()
            results = engine.recognize(
                pages(count, self.tiny, start=start), Task(kind=TaskKind.LAYOUT, max_new_tokens=new)
            )
            sync()
            calls.append(
                {
                    "pages": count,
                    "prompt_tokens": sorted({r.generation.prompt_tokens for r in results}),
                    "new_tokens": new,
                    "seconds": round(time.perf_counter() - began, 2),
                }
            )
        row["later_calls"] = calls
        row["compile_s_after_later_calls"] = round(engine._decoder.stats.compile_s, 2)
        row["new_dynamo_graphs_in_later_calls"] = dynamo_utils.counters["stats"]["unique_graphs"] - graphs_before
        log("coldstart", row)
        return row


TASK_LAYOUT = None  # set below: the layout prompt mode (imported lazily to keep the header short)


def timed(fn: Any, repeats: int, cuda: bool) -> tuple[float, int, Any]:
    """Median seconds over `repeats` after a warm-up, the peak bytes above the start, and the last output."""
    out = fn()
    sync()
    base = torch.cuda.memory_allocated() if cuda else 0
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - began)
    peak = torch.cuda.max_memory_allocated() - base if cuda else 0
    return statistics.median(times), peak, out


def copy_bandwidth() -> float:
    """Bytes read + written per second by a 4 GiB device-to-device copy (median of 10)."""
    a = torch.empty(GIB, dtype=torch.float32, device="cuda").uniform_()
    b = torch.empty_like(a)
    times = []
    for _ in range(12):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        b.copy_(a)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    del a, b
    return 2 * 4 * GIB / statistics.median(times[2:])


class _StepClock:
    """A logits processor that stamps the time after each forward (it synchronises, as generate's stop test does)."""

    def __init__(self) -> None:
        self.stamps: list[float] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        sync()
        self.stamps.append(time.perf_counter())
        return scores


def generate_row(model: Any, inputs: dict, settings: dict, cuda: bool, vision: Any) -> dict:
    from transformers import LogitsProcessorList

    with torch.inference_mode():
        vision_s, vision_peak, _ = timed(vision, 1 if not cuda else 3, cuda)
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        clock = _StepClock()
        sync()
        began = time.perf_counter()
        output = model.generate(**inputs, **settings, logits_processor=LogitsProcessorList([clock]))
        sync()
    steps = [b - a for a, b in zip(clock.stamps, clock.stamps[1:], strict=False)]
    prefill = clock.stamps[0] - began
    ms = statistics.median(steps) * 1000 if steps else float("nan")
    row = {
        "vision_ms": round(vision_s * 1000, 1),
        "vision_peak_above_start_gib": round(vision_peak / GIB, 2),
        "prefill_incl_vision_s": round(prefill, 3),
        "ms_per_token": round(ms, 2),
        "pages_per_s_at_512_tokens_est": round(1 / (prefill + 511 * ms / 1000), 3),
        "tokens": output[0, inputs["input_ids"].shape[1] :].tolist(),
    }
    if cuda:
        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
    return row


def args_compile(args: argparse.Namespace) -> bool:
    return bool(args.memory_compile)


def shim_reference(model: Any) -> None:
    """The reference's prepare_inputs_for_generation keeps pixel_values unless cache_position[0] == 0; transformers
    5 no longer passes cache_position, so every decoding step re-runs the vision tower and then fails its own
    image-token assertion. Drop them after the first step, as its own code meant to."""
    import functools

    original = model.prepare_inputs_for_generation

    @functools.wraps(original)
    def prepare(*args: Any, is_first_iteration: bool = False, **kwargs: Any) -> dict:
        inputs = original(*args, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration:
            inputs["pixel_values"] = None
        return inputs

    model.prepare_inputs_for_generation = prepare


def run_child(args: argparse.Namespace, section: str, env: dict[str, str]) -> dict:
    out = Path(args.workdir) / f"{section}-{time.time_ns()}.json"
    command = [
        sys.executable,
        __file__,
        "--out",
        str(out),
        "--workdir",
        args.workdir,
        "--sections",
        section,
        "--reference",
        args.reference,
        "--memory-compile",
        str(args.memory_compile),
    ]
    if args.tiny:
        command.append("--tiny")
    began = time.perf_counter()
    done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True, timeout=600)
    row = json.loads(out.read_text()).get(section.removesuffix("-child"), {}) if out.exists() else {}
    row["process_s"] = round(time.perf_counter() - began, 1)
    if done.returncode:
        row["error"] = (done.stderr or done.stdout)[-800:]
    print(done.stdout[-2000:], flush=True)
    return row


def main() -> None:
    global TASK_LAYOUT
    from polyocr.engines.dots.prompts import PromptMode

    TASK_LAYOUT = PromptMode.LAYOUT_ALL
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="JSON file of results (updated section by section)")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes on the CPU: code-path check only")
    parser.add_argument("--sections", nargs="+", default=["vision", "decode", "throughput", "correctness"])
    parser.add_argument("--pages", type=int, default=64, help="pages per steady throughput call")
    parser.add_argument("--workdir", default=None, help="where the checkpoint goes (default: a temporary dir)")
    parser.add_argument("--skip-variants", nargs="*", help="throughput variants to skip, as 'label@batch'")
    parser.add_argument("--only-variants", nargs="*", help="the only throughput variants to run, as 'label@batch'")
    parser.add_argument("--memory-compile", type=int, default=1, help="0: memory12's decoding step is not compiled")
    parser.add_argument("--reference", default=str(REFERENCE), help="folder of the reference remote code (.py)")
    parser.add_argument("--variable-batch", type=int, default=32, help="slots in the variable-length section")
    parser.add_argument("--variable-compile", type=int, default=1, help="0: that section's step is not compiled")
    args = parser.parse_args()
    if args.tiny:
        args.pages = min(args.pages, 6)
    own_workdir = args.workdir is None
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="dots-bench-")
    bench = Bench(args)
    bench.results.setdefault(
        "machine",
        {
            "gpu": torch.cuda.get_device_name(0) if bench.cuda else platform.processor() or "CPU",
            "torch": torch.__version__,
            "transformers": __import__("transformers").__version__,
            "platform": platform.platform(),
            "date": datetime.date.today().isoformat(),
        },
    )
    bench.ensure_checkpoint()
    try:
        for section in args.sections:
            log("section", section)
            began = time.perf_counter()
            try:
                result = getattr(bench, section.replace("-", "_"))()
            except Exception as exc:
                result = {"error": f"{type(exc).__name__}: {str(exc)[:400]}"}
                traceback.print_exc()
            name = section.removesuffix("-child")
            result["section_s"] = round(time.perf_counter() - began, 1)
            bench.results[name] = result
            bench.save()
            log("section done", section, result.get("section_s"))
    finally:
        if own_workdir:
            shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
