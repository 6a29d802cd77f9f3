"""The `dots` engine: dots.ocr run natively (no remote code, no flash-attn needed), any device.

The engine honours the EnginePlan the runtime chose (device, dtype, attention, pixel limits, batch
size, sampling) and reports what happened on each page: the stop reason and token counts of the
generation, and a partial status with the reasons when the answer was cut short or looped. Whether
a partial page is good enough, or worth a retry elsewhere, is the router's decision.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from polyocr.engines import vlm
from polyocr.engines.base import Engine
from polyocr.engines.dots.layout import page_text, parse_layout, to_blocks
from polyocr.engines.dots.prompts import TASK_MODES, PromptMode, prompt_text
from polyocr.engines.vlm import split_generation
from polyocr.errors import EngineError, EngineUnavailable, InputError
from polyocr.formats.markdown import blocks_to_markdown
from polyocr.results import Block, Generation, PageResult, PageStatus, TextFormat
from polyocr.runtime.memory import DTYPE_BYTES, ModelDims, kv_bytes_per_token
from polyocr.scripts import ANY_SCRIPT
from polyocr.types import Availability, EngineKind, EnginePlan, Task, TaskKind

if TYPE_CHECKING:
    from polyocr.documents import Page
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


class DotsEngine(Engine):
    name = "dots"
    description = "dots.ocr (rednote-hilab, 3B VLM): layout, text, HTML tables and LaTeX formulas in one pass"
    kind = EngineKind.VLM
    takes_model_path = True
    scripts = ANY_SCRIPT
    tasks = frozenset(TaskKind)
    notes: ClassVar[str] = (
        "weights: rednote-hilab/dots.ocr (6.1 GB in bf16); long or dense pages can end truncated at the "
        "token limit (the page is then marked partial, with its complete elements kept)"
    )

    def __init__(self, model_path: str | None = None) -> None:
        super().__init__(model_path)
        self.model: DotsOCRForCausalLM | None = None
        self.processor: DotsProcessor | None = None

    def available(self, profile: Profile) -> Availability:
        missing = [name for name in _REQUIRED if not profile.packages.get(name)]
        if missing:
            return Availability.no(f"needs {', '.join(missing)}", "pip install 'polyocr[vlm]'")
        if self.model_path is not None and Path(self.model_path).expanduser().is_dir():
            if not (Path(self.model_path).expanduser() / "config.json").is_file():
                return Availability.no(f"{self.model_path} is not a dots.ocr checkpoint (no config.json)", FETCH_FIX)
            weights = self.model_path
        elif self.model_path is not None and self.model_path not in profile.hf_cache_models:
            return Availability.no(
                f"{self.model_path} is neither a directory nor in the Hugging Face cache ({profile.hf_cache})",
                f"hf download {self.model_path}, or pass a checkpoint directory",
            )
        elif (self.model_path or REPO_ID) in profile.hf_cache_models:
            weights = f"{self.model_path or REPO_ID} in {profile.hf_cache}"
        else:
            return Availability.no(
                f"no dots.ocr weights: {REPO_ID} is not in the Hugging Face cache ({profile.hf_cache})", FETCH_FIX
            )
        gpus = profile.usable_gpus()
        if not gpus:
            return Availability.yes(f"weights: {weights}; {CPU_NOTE}")
        return Availability.yes(f"weights: {weights}; GPU {gpus[0].index}: {gpus[0].name}")

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

        directory = resolve_checkpoint(plan.model_path or self.model_path or REPO_ID, download=False)
        if not hasattr(torch, plan.dtype):
            raise EngineUnavailable(self.name, f"unknown dtype {plan.dtype!r}", "use bfloat16, float16 or float32")
        self.processor = DotsProcessor.from_pretrained(
            directory, min_pixels=plan.min_pixels, max_pixels=plan.max_pixels
        )
        self.model = DotsOCRForCausalLM.from_pretrained(
            directory,
            dtype=getattr(torch, plan.dtype),
            attn_implementation=_DECODER_ATTENTION.get(plan.attention, PACKED_DECODE),
            vision_attention=plan.attention if plan.attention in _VISION_ATTENTION else "sdpa",
            device=plan.device,
        )
        self.plan = plan

    def recognize(self, pages: Sequence[Page], task: Task) -> list[PageResult]:
        if self.model is None or self.processor is None:
            raise EngineError(self.name, "recognize() before load()")
        mode = TASK_MODES[task.kind]
        step = max(1, self.plan.batch_size)
        results: list[PageResult] = []
        for start in range(0, len(pages), step):
            results.extend(self._batch(pages[start : start + step], task, mode))
        return results

    def _batch(self, pages: Sequence[Page], task: Task, mode: PromptMode) -> list[PageResult]:
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
            settings = self._generation_kwargs(task, prompt_length)
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
            results.append(page_result(page, image, mode, task, self.processor.decode(kept), generation))
        return results

    def _prepare(self, page: Page) -> PreparedImage:
        assert self.processor is not None
        try:
            return self.processor.prepare(page.image)
        except ValueError as exc:
            raise InputError(page.source, f"page {page.number}: {exc}") from exc

    def _prompt(self, page: Page, image: PreparedImage, task: Task, mode: PromptMode) -> str:
        if mode != PromptMode.GROUNDING_OCR:
            return prompt_text(mode)
        if task.region is None:
            raise EngineError(self.name, f"{page.source} page {page.number}: the region task needs Task.region")
        x1, y1 = image.to_model(task.region[0], task.region[1])
        x2, y2 = image.to_model(task.region[2], task.region[3])
        return prompt_text(mode, (x1, y1, x2, y2))

    def _generation_kwargs(self, task: Task, prompt_tokens: int) -> dict[str, Any]:
        """generate()'s settings (engines/vlm.py): greedy unless sampling is asked for (the reference's
        temperature 0.1 is close to greedy anyway); on CUDA a static cache, so transformers compiles the
        decoding step: 4.0-4.4 ms/token against 20 ms with the dynamic cache on an H100
        (benchmarks/dots-gpu.md)."""
        assert self.processor is not None
        return vlm.generation_settings(
            self.plan,
            task,
            eos_token_ids=self.processor.eos_token_ids,
            pad_token_id=self.processor.pad_token_id,
            prompt_tokens=prompt_tokens,
        )

    def close(self) -> None:
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
    page: Page, image: PreparedImage, mode: PromptMode, task: Task, output: str, generation: Generation
) -> PageResult:
    """A page's result from the model's answer; partial, with the reasons, when the answer was not clean."""
    result = PageResult(
        page=page.number,
        source=page.source,
        width=page.image.width,
        height=page.image.height,
        engine=DotsEngine.name,
        generation=generation,
    )
    stop, count = generation.stop_reason, generation.generated_tokens
    if not output.strip():
        result.status = PageStatus.FAILED
        result.errors.append(f"{DotsEngine.name}: empty output (stop: {stop} after {count} token(s))")
        return result
    problems = [] if stop == "eos" else [f"generation stopped by {stop} after {count} tokens"]
    unparsed = False
    if mode in (PromptMode.LAYOUT_ALL, PromptMode.LAYOUT_ONLY):
        parsed = parse_layout(output)
        problems += parsed.problems
        result.blocks = to_blocks(
            parsed.elements, image.resized_size, image.original_size, with_text=mode == PromptMode.LAYOUT_ALL
        )
        unparsed = mode == PromptMode.LAYOUT_ALL and not parsed.elements and parsed.partial
    else:
        bbox = task.region if mode == PromptMode.GROUNDING_OCR else None
        result.blocks = [Block(bbox=bbox, text=output.strip(), format=TextFormat.MARKDOWN)]
    if unparsed:
        # No elements, but the words may still be right: keep them as the page's text, with no blocks,
        # so the router sees a layout answer that did not parse and can still fall back on the text.
        loose = Block(text=output.strip(), format=TextFormat.MARKDOWN)
        result.markdown, result.text = loose.text, page_text([loose])
    else:
        result.markdown = blocks_to_markdown(result.blocks)
        result.text = page_text(result.blocks)
    if problems:
        result.status = PageStatus.PARTIAL
        result.errors += [f"{DotsEngine.name}: {problem}" for problem in problems]
    return result
