"""The `dots` engine: dots.ocr run natively (no remote code, no flash-attn needed), any device.

The engine honours the EnginePlan the runtime chose (device, dtype, attention, pixel limits, batch
size, sampling) and reports what happened on each page: the stop reason and token counts of the
generation, and a partial status with the reasons when the answer was cut short or looped. Whether
a partial page is good enough, or worth a retry elsewhere, is the router's decision.

Decoding: on CUDA, greedy pages go through polyocr's slot decoder (decode.py: continuous batching on
one static cache, a compiled CUDA-graph step; batch_size is its number of rows); sampling, repetition
controls, `decoder: generate` and the CPU use transformers' generate(). Measured on an H200 in
benchmarks/dots-throughput-gpu.md: 2.48 ms/token at batch 1, 2.0-2.2 pages/s at batch 16-64 with
512 tokens per page, 2.51 with `vision_fused`.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from polyocr.engines import vlm
from polyocr.engines.base import Engine
from polyocr.engines.dots.layout import (
    extract_svg,
    page_text,
    parse_layout,
    parse_scene_text,
    scene_blocks,
    svg_text,
    to_blocks,
)
from polyocr.engines.dots.prompts import DOTS_OCR_MODES, MODE_TASKS, TASK_MODES, PromptMode, prompt_text
from polyocr.engines.vlm import split_generation
from polyocr.errors import EngineError, EngineUnavailable, InputError
from polyocr.formats.markdown import blocks_to_markdown
from polyocr.results import Block, Generation, PageResult, PageStatus, TextFormat
from polyocr.runtime.memory import DTYPE_BYTES, ModelDims, kv_bytes_per_token
from polyocr.scripts import ANY_SCRIPT
from polyocr.types import Availability, EngineKind, EnginePlan, Task, TaskKind

_LAYOUT_MODES = (PromptMode.LAYOUT_ALL, PromptMode.LAYOUT_ONLY, PromptMode.WEB_PARSING)

if TYPE_CHECKING:
    from polyocr.documents import Page
    from polyocr.engines.dots.decode import Request, SlotDecoder
    from polyocr.engines.dots.model import DotsOCRForCausalLM
    from polyocr.engines.dots.processor import DotsProcessor, PreparedImage
    from polyocr.runtime.probe import Profile

REPO_ID = "rednote-hilab/dots.ocr"
FETCH_FIX = f"hf download {REPO_ID}  (the Hugging Face CLI; about 6.1 GB), or pass --model DIR"
CPU_NOTE = (
    "no usable GPU, so it runs on the CPU, very slowly: over half an hour for a page at a 1 M-pixel cap with "
    "1,000 generated tokens on 2 cores, and about 40 minutes in the vision tower alone for a 200-DPI A4 page "
    "at the default cap (benchmarks/dots-cpu.md); lower max_pixels to cut the vision cost"
)
_REQUIRED = ("torch", "transformers", "safetensors", "tokenizers", "huggingface_hub")
# The decoder's transformers attention per plan.attention. sdpa (and varlen, which transformers lacks)
# use model.PACKED_DECODE: SDPA for the prompt, and for one-token decoding steps a grouped-query
# product that does not copy the KV cache per step (see model.py; it is what makes batches pay off).
_DECODER_ATTENTION = {"flash_attention_2": "flash_attention_2", "flex": "flex_attention", "eager": "eager"}
_VISION_ATTENTION = ("sdpa", "varlen", "flash_attention_2", "eager")
# plan.generation keys of polyocr's own decoder (decode.SlotDecoder), the default on CUDA for greedy
# decoding: "decoder" ("slots" | "generate"), "decode_chunk" (steps between host syncs), "compile"
# and "graphs" (the step under torch.compile / one CUDA graph), "overlap" (prefill the next pages on
# a second stream while the others decode), "refill" ("continuous" | "static": a static batch waits
# for its longest page).
_SLOT_DEFAULTS: dict[str, Any] = {
    "decode_chunk": 16,
    "compile": True,
    "graphs": True,
    "overlap": False,
    "refill": "continuous",
}


class DotsEngine(Engine):
    name = "dots"
    description = "dots.ocr (rednote-hilab, 3B VLM): layout, text, HTML tables and LaTeX formulas in one pass"
    kind = EngineKind.VLM
    takes_model_path = True
    repo_id = REPO_ID
    scripts = ANY_SCRIPT
    tasks = frozenset(TaskKind)
    notes: ClassVar[str] = (
        "weights: rednote-hilab/dots.ocr (6.1 GB in bf16); long or dense pages can end truncated at the "
        "token limit (the page is then marked partial, with its complete elements kept)"
    )
    # The prompt modes this checkpoint was trained on (prompts.py), the generation defaults a mode's
    # authors use where they differ from the engine's (the plan's own settings win), and the end
    # tokens used when a checkpoint has no generation_config.json (processor.END_TOKENS).
    modes: ClassVar[frozenset[PromptMode]] = DOTS_OCR_MODES
    mode_generation: ClassVar[dict[PromptMode, dict[str, Any]]] = {}
    end_tokens: ClassVar[tuple[str, ...] | None] = None

    def __init__(self, model_path: str | None = None) -> None:
        super().__init__(model_path)
        self.model: DotsOCRForCausalLM | None = None
        self.processor: DotsProcessor | None = None
        self._decoder: SlotDecoder | None = None
        self._decoder_key: tuple = ()

    def available(self, profile: Profile) -> Availability:
        missing = [name for name in _REQUIRED if not profile.packages.get(name)]
        if missing:
            return Availability.no(f"needs {', '.join(missing)}", "pip install 'polyocr[vlm]'")
        fix = self.fetch_fix()
        if self.model_path is not None and Path(self.model_path).expanduser().is_dir():
            if not (Path(self.model_path).expanduser() / "config.json").is_file():
                return Availability.no(f"{self.model_path} is not a {self.model_name} checkpoint (no config.json)", fix)
            weights = self.model_path
        elif self.model_path is not None and self.model_path not in profile.hf_cache_models:
            return Availability.no(
                f"{self.model_path} is neither a directory nor in the Hugging Face cache ({profile.hf_cache})",
                f"hf download {self.model_path}, or pass a checkpoint directory",
            )
        elif (self.model_path or self.repo_id) in profile.hf_cache_models:
            weights = f"{self.model_path or self.repo_id} in {profile.hf_cache}"
        else:
            return Availability.no(
                f"no {self.model_name} weights: {self.repo_id} is not in the Hugging Face cache ({profile.hf_cache})",
                fix,
            )
        gpus = profile.usable_gpus()
        if not gpus:
            return Availability.yes(f"weights: {weights}; {CPU_NOTE}")
        return Availability.yes(f"weights: {weights}; GPU {gpus[0].index}: {gpus[0].name}")

    @property
    def model_name(self) -> str:
        return str(self.repo_id).rsplit("/", 1)[-1]

    def fetch_fix(self) -> str:
        return FETCH_FIX if self.repo_id == REPO_ID else f"hf download {self.repo_id}, or pass --model DIR"

    def model_dims(self, dtype: str) -> ModelDims:
        """The published model's memory (specs/dots-ocr.md: 3.04 B parameters; 28 decoder layers with
        2 KV heads of 128; 14 px patches merged 2x2), with the vision tower's activations as measured
        on an H100: 0.73 GiB above the weights for a 19,824-patch page with sdpa in bf16, about 20 kB
        per patch per byte of dtype (benchmarks/dots-gpu.md)."""
        size = DTYPE_BYTES[dtype]
        return ModelDims(
            weight_bytes=3_040_000_000 * size,
            kv_bytes_per_token=kv_bytes_per_token(28, 2, 128, dtype),
            vision_bytes_per_patch=20_000 * size,
            patch_pixels=14 * 14,
            tokens_per_patch=0.25,
            prompt_tokens=300,
            prefill_bytes_per_token=(3 * 8960 + 4 * 1536) * size,  # MLP and attention activations
        )

    def load(self, plan: EnginePlan) -> None:
        import torch

        from polyocr.engines.dots.model import PACKED_DECODE, DotsOCRForCausalLM, resolve_checkpoint
        from polyocr.engines.dots.processor import DotsProcessor

        directory = resolve_checkpoint(plan.model_path or self.model_path or str(self.repo_id), download=False)
        if not hasattr(torch, plan.dtype):
            raise EngineUnavailable(self.name, f"unknown dtype {plan.dtype!r}", "use bfloat16, float16 or float32")
        self.processor = DotsProcessor.from_pretrained(
            directory, min_pixels=plan.min_pixels, max_pixels=plan.max_pixels, end_tokens=self.end_tokens
        )
        self.model = DotsOCRForCausalLM.from_pretrained(
            directory,
            dtype=getattr(torch, plan.dtype),
            attn_implementation=_DECODER_ATTENTION.get(plan.attention, PACKED_DECODE),
            vision_attention=plan.attention if plan.attention in _VISION_ATTENTION else "sdpa",
            device=plan.device,
        )
        backends = plan.generation.get("vision_sdpa")  # e.g. "cudnn,flash": torch SDPA backends, in order
        if backends:
            names = backends.split(",") if isinstance(backends, str) else list(backends)
            try:
                self.model.vision_tower.set_sdpa_backends([n.strip() for n in names])
            except ValueError as exc:
                raise EngineError(self.name, str(exc)) from exc
        # "vision_fused": each vision block as two torch.compile'd functions around its attention (CUDA)
        self.model.vision_tower.set_fused(bool(plan.generation.get("vision_fused", False)))
        self._decoder = None
        self.plan = plan

    def recognize(self, pages: Sequence[Page], task: Task) -> list[PageResult]:
        if self.model is None or self.processor is None:
            raise EngineError(self.name, "recognize() before load()")
        mode = self.mode_for(task)
        plan = self.plan_for(mode)
        if pages and self._uses_slots(plan):
            return self._recognize_slots(pages, task, mode)
        step = max(1, self.plan.batch_size)
        results: list[PageResult] = []
        for start in range(0, len(pages), step):
            results.extend(self._batch(pages[start : start + step], task, mode, plan))
        return results

    def mode_for(self, task: Task) -> PromptMode:
        """The prompt mode for a task: plan.generation["prompt_mode"] where it answers this task, else
        the task's own mode (prompts.TASK_MODES). A mode the checkpoint was not trained on is an error."""
        chosen = self.plan.generation.get("prompt_mode")
        if chosen is None:
            return TASK_MODES[task.kind]
        known = sorted(m.value for m in self.modes)
        try:
            mode: PromptMode | None = PromptMode(str(chosen))
        except ValueError:
            mode = None
        if mode is None or mode not in self.modes:
            raise EngineError(
                self.name,
                f"unknown prompt_mode {chosen!r} (the modes of {self.repo_id}: {', '.join(known)}); "
                f"set [engines.{self.name}] generation.prompt_mode to one of them",
            )
        return mode if MODE_TASKS[mode] == task.kind else TASK_MODES[task.kind]

    def plan_for(self, mode: PromptMode) -> EnginePlan:
        """The plan with the mode's own generation defaults under the plan's settings."""
        defaults = self.mode_generation.get(mode)
        if not defaults:
            return self.plan
        return replace(self.plan, generation={**defaults, **self.plan.generation})

    def _batch(
        self, pages: Sequence[Page], task: Task, mode: PromptMode, plan: EnginePlan | None = None
    ) -> list[PageResult]:
        import torch
        from transformers import StoppingCriteriaList

        assert self.model is not None and self.processor is not None
        began = time.perf_counter()
        images = [self._prepare(page) for page in pages]
        prompts = [self._prompt(page, image, task, mode) for page, image in zip(pages, images, strict=True)]
        batch = self.processor.batch(images, prompts)
        inputs = batch.model_inputs(self.model.device, next(self.model.vision_tower.parameters()).dtype)
        watch = _nonfinite_watch()
        prompt_length = batch.input_ids.shape[1]
        # Rows whose tail repeats end while they loop (engines/vlm.py loop_stop).
        loops = vlm.loop_stop(
            prompt_length,
            self.processor.eos_token_ids,
            self.processor.decode,
            enabled=vlm.loop_stop_enabled(self.plan),
        )
        with torch.inference_mode():
            settings = self._generation_kwargs(task, prompt_length, plan)
            output = self.model.generate(
                **inputs, **settings, logits_processor=[watch], stopping_criteria=StoppingCriteriaList([loops])
            )
        generated = output[:, prompt_length:].tolist()
        nonfinite = watch.rows(len(pages))
        seconds = (time.perf_counter() - began) / len(pages)  # a page's share of the batch's time
        results = []
        rows = zip(pages, images, generated, batch.prompt_lengths, nonfinite, strict=True)
        for row, (page, image, tokens, prompt_tokens, bad_logits) in enumerate(rows):
            kept, stop, count = split_generation(
                tokens, self.processor.eos_token_ids, task.max_new_tokens, loops.loops.get(row)
            )
            generation = Generation(
                stop_reason=stop,
                prompt_tokens=prompt_tokens,
                generated_tokens=count,
                seconds=round(seconds, 4),
                nonfinite_logits=bad_logits,
            )
            results.append(page_result(page, image, mode, task, self.processor.decode(kept), generation, self.name))
        return results

    def _uses_slots(self, plan: EnginePlan | None = None) -> bool:
        """polyocr's slot decoder (continuous batching, one CUDA graph per step) or transformers' generate."""
        assert self.model is not None
        options = (plan or self.plan).generation
        choice = options.get("decoder") or ("slots" if self.model.device.type == "cuda" else "generate")
        if choice not in ("slots", "generate"):
            raise EngineError(self.name, f"unknown decoder {choice!r} (slots or generate)")
        sampling = bool(options.get("do_sample")) or float(options.get("temperature") or 0.0) > 0.0
        repetition = (
            float(options.get("repetition_penalty") or 1.0) != 1.0 or int(options.get("no_repeat_ngram_size") or 0) > 0
        )
        return (
            choice == "slots" and not sampling and not repetition and options.get("cache_implementation") != "dynamic"
        )

    def _recognize_slots(self, pages: Sequence[Page], task: Task, mode: PromptMode) -> list[PageResult]:
        from polyocr.engines.dots.decode import cache_length_for

        assert self.processor is not None and self.model is not None
        began = time.perf_counter()
        shapes = [self._shape(page) for page in pages]
        prompts = [self._prompt(page, shape, task, mode) for page, shape in zip(pages, shapes, strict=True)]
        lengths = [len(self.processor.prompt_ids(p, s.token_count)) for p, s in zip(prompts, shapes, strict=True)]
        decoder = self.slot_decoder(max(cache_length_for(n, task.max_new_tokens) for n in lengths))
        processor = self.processor
        # Rows whose tail repeats end while they loop (engines/vlm.py, as in the generate() path).
        decoder.loop_check = (
            (lambda tokens: vlm.find_loop(tokens, processor.decode)) if vlm.loop_stop_enabled(self.plan) else None
        )
        decoder.loop_every = vlm.LOOP_CHECK_EVERY
        finished = {f.key: f for f in decoder.run(self._requests(pages, prompts, task))}
        seconds = (time.perf_counter() - began) / len(pages)  # a page's share of the call's time
        results = []
        for index, (page, shape) in enumerate(zip(pages, shapes, strict=True)):
            done = finished[index]
            kept, stop, count = split_generation(
                done.tokens, self.processor.eos_token_ids, task.max_new_tokens, done.loop
            )
            generation = Generation(
                stop_reason=stop,
                prompt_tokens=done.prompt_tokens,
                generated_tokens=count,
                seconds=round(seconds, 4),
                nonfinite_logits=done.nonfinite,
            )
            results.append(page_result(page, shape, mode, task, self.processor.decode(kept), generation, self.name))
        return results

    def slot_decoder(self, cache_len: int) -> SlotDecoder:
        """The engine's slot decoder: batch_size rows, a cache of at least `cache_len` positions.

        It is kept across calls and rebuilt (recompiled, recaptured) only when a page needs a longer
        cache than the one it has, or the plan's settings change: the cache only grows.
        """
        from polyocr.engines.dots.decode import SlotDecoder

        assert self.model is not None and self.processor is not None
        options = {**_SLOT_DEFAULTS, **{k: v for k, v in self.plan.generation.items() if k in _SLOT_DEFAULTS}}
        key = (max(1, self.plan.batch_size), *sorted(options.items()))
        if self._decoder is not None and self._decoder_key == key and self._decoder.cache_len >= cache_len:
            return self._decoder
        self._decoder = None
        if self.model.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()
        self._decoder = SlotDecoder(
            self.model,
            max(1, self.plan.batch_size),
            cache_len,
            self.processor.eos_token_ids,
            self.processor.pad_token_id,
            chunk=int(options["decode_chunk"]),
            compile=bool(options["compile"]),
            graphs=bool(options["graphs"]),
            overlap=bool(options["overlap"]),
            refill=str(options["refill"]),
        )
        self._decoder_key = key
        return self._decoder

    def _requests(self, pages: Sequence[Page], prompts: Sequence[str], task: Task) -> Iterator[Request]:
        """Each page's model inputs, made on two worker threads a few pages ahead of the decoder's need."""
        from polyocr.engines.dots.decode import Request

        assert self.processor is not None
        processor = self.processor
        min_new = int(self.plan.generation.get("min_new_tokens") or 0)

        def make(index: int) -> Request:
            batch = processor.batch([self._prepare(pages[index])], [prompts[index]])
            inputs = {
                "input_ids": batch.input_ids,
                "attention_mask": batch.attention_mask,
                "pixel_values": batch.pixel_values,
                "image_grid_thw": batch.image_grid_thw,
            }
            return Request(index, inputs, task.max_new_tokens, min_new, task.timeout)

        ahead = max(2, self.plan.batch_size + 1)
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="dots-prepare") as pool:
            futures = deque(pool.submit(make, i) for i in range(min(ahead, len(pages))))
            submitted = len(futures)
            while futures:
                request = futures.popleft().result()
                if submitted < len(pages):
                    futures.append(pool.submit(make, submitted))
                    submitted += 1
                yield request

    def _shape(self, page: Page) -> PreparedImage:
        assert self.processor is not None
        try:
            return self.processor.shape(page.image)
        except ValueError as exc:
            raise InputError(page.source, f"page {page.number}: {exc}") from exc

    def _prepare(self, page: Page) -> PreparedImage:
        assert self.processor is not None
        try:
            return self.processor.prepare(page.image)
        except ValueError as exc:
            raise InputError(page.source, f"page {page.number}: {exc}") from exc

    def _prompt(self, page: Page, image: PreparedImage, task: Task, mode: PromptMode) -> str:
        if mode == PromptMode.IMAGE_TO_SVG:
            return prompt_text(mode, size=page.image.size)
        if mode != PromptMode.GROUNDING_OCR:
            return prompt_text(mode)
        if task.region is None:
            raise EngineError(self.name, f"{page.source} page {page.number}: the region task needs Task.region")
        x1, y1 = image.to_model(task.region[0], task.region[1])
        x2, y2 = image.to_model(task.region[2], task.region[3])
        return prompt_text(mode, (x1, y1, x2, y2))

    def _generation_kwargs(self, task: Task, prompt_tokens: int, plan: EnginePlan | None = None) -> dict[str, Any]:
        """generate()'s settings (engines/vlm.py): greedy unless sampling is asked for (the reference's
        temperature 0.1 is close to greedy anyway); on CUDA a static cache, so transformers compiles the
        decoding step: 4.0-4.4 ms/token against 20 ms with the dynamic cache on an H100
        (benchmarks/dots-gpu.md)."""
        assert self.processor is not None
        return vlm.generation_settings(
            plan or self.plan,
            task,
            eos_token_ids=self.processor.eos_token_ids,
            pad_token_id=self.processor.pad_token_id,
            prompt_tokens=prompt_tokens,
        )

    def close(self) -> None:
        self._decoder = None
        self.model = None
        self.processor = None


def _nonfinite_watch() -> Any:
    """A logits processor that notes, per row, whether any step's logits held NaN or +inf.

    It only accumulates a flag on the device (no synchronisation per step); -inf is left alone
    because sampling filters (top-k, top-p) write it on purpose.
    """
    import torch
    from transformers import LogitsProcessor

    class NonFiniteLogits(LogitsProcessor):
        def __init__(self) -> None:
            self.flags: torch.Tensor | None = None

        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            bad = torch.isnan(scores).any(dim=-1) | torch.isposinf(scores).any(dim=-1)
            self.flags = bad if self.flags is None else self.flags | bad
            return scores

        def rows(self, count: int) -> list[bool]:
            return [False] * count if self.flags is None else [bool(f) for f in self.flags.tolist()]

    return NonFiniteLogits()


def page_result(
    page: Page,
    image: PreparedImage,
    mode: PromptMode,
    task: Task,
    output: str,
    generation: Generation,
    engine: str = DotsEngine.name,
) -> PageResult:
    """A page's result from the model's answer; partial, with the reasons, when the answer was not clean."""
    result = PageResult(
        page=page.number,
        source=page.source,
        width=page.image.width,
        height=page.image.height,
        engine=engine,
        generation=generation,
    )
    stop, count = generation.stop_reason, generation.generated_tokens
    if not output.strip():
        result.status = PageStatus.FAILED
        result.errors.append(f"{engine}: empty output (stop: {stop} after {count} token(s))")
        return result
    problems = [] if stop == "eos" else [f"generation stopped by {stop} after {count} tokens"]
    unparsed = svg = False
    if mode in _LAYOUT_MODES:
        # web_parsing answers the same JSON list (dots_mocr/parser.py post-processes it with the
        # layout modes); its categories are kept as the model names them.
        parsed = parse_layout(output)
        problems += parsed.problems
        result.blocks = to_blocks(
            parsed.elements, image.resized_size, image.original_size, with_text=mode != PromptMode.LAYOUT_ONLY
        )
        unparsed = mode != PromptMode.LAYOUT_ONLY and not parsed.elements and parsed.partial
    elif mode == PromptMode.SCENE_SPOTTING:
        instances = parse_scene_text(output)
        result.blocks = scene_blocks(instances, image.resized_size, image.original_size)
        unparsed = not instances
        if unparsed:
            problems.append("no '(x1, y1), (x2, y2), (x3, y3), (x4, y4) text' instances in the answer")
    elif mode == PromptMode.IMAGE_TO_SVG:
        found = extract_svg(output)
        unparsed, svg = not found.svg, bool(found.svg)
        if unparsed:
            problems.append("no <svg> element in the answer")
        else:
            if found.repaired:
                problems.append("the SVG was cut short; its open elements were closed")
            # One Picture block over the page holding the SVG as HTML (TextFormat has no SVG; inline
            # <svg> is HTML5 content); the page's Markdown is the SVG itself (raw HTML in Markdown), its
            # text the words the SVG draws.
            width, height = image.original_size
            result.blocks = [
                Block(
                    bbox=(0.0, 0.0, float(width), float(height)),
                    category="Picture",
                    text=found.svg,
                    format=TextFormat.HTML,
                )
            ]
            result.markdown, result.text = found.svg, svg_text(found.svg)
    else:
        bbox = task.region if mode == PromptMode.GROUNDING_OCR else None
        result.blocks = [Block(bbox=bbox, text=output.strip(), format=TextFormat.MARKDOWN)]
    if unparsed:
        # No elements, but the words may still be right: keep them as the page's text, with no blocks,
        # so the router sees a layout answer that did not parse and can still fall back on the text.
        loose = Block(text=output.strip(), format=TextFormat.MARKDOWN)
        result.markdown, result.text = loose.text, page_text([loose])
    elif not svg:  # the SVG branch above set the page's Markdown and text itself
        result.markdown = blocks_to_markdown(result.blocks)
        result.text = page_text(result.blocks)
    if problems:
        result.status = PageStatus.PARTIAL
        result.errors += [f"{engine}: {problem}" for problem in problems]
    return result
