"""The `phi35v` engine: microsoft/Phi-3.5-vision-instruct run natively (no remote code), any device.

Phi-3.5-Vision reads a page as plain text; it has no layout mode (no boxes, no categories), so the
engine declares the text task (and the region task, which reads a crop of the page) and the router
never asks it for layout. Like every engine it honours the EnginePlan (device, dtype, attention,
pixel budget, batch size, sampling) and reports each page's stop reason and token counts; whether a
partial page is good enough is the router's decision.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from polyocr.engines import vlm
from polyocr.engines.base import Engine
from polyocr.errors import EngineError, EngineUnavailable, InputError
from polyocr.formats.markdown import blocks_to_markdown
from polyocr.formats.text import blocks_to_text
from polyocr.results import Block, Generation, PageResult, PageStatus, TextFormat
from polyocr.runtime.memory import DTYPE_BYTES, ModelDims, kv_bytes_per_token
from polyocr.scripts import LATIN
from polyocr.types import Availability, EngineKind, EnginePlan, Task, TaskKind

if TYPE_CHECKING:
    from PIL import Image

    from polyocr.documents import Page
    from polyocr.engines.phi35v.model import Phi35VForCausalLM
    from polyocr.engines.phi35v.processor import Phi35VProcessor
    from polyocr.runtime.probe import Profile

REPO_ID = "microsoft/Phi-3.5-vision-instruct"
FETCH_FIX = f"hf download {REPO_ID}  (about 8.3 GB in bf16), or pass --model DIR"
# The instruction is polyocr's (the model card gives the chat format, not an OCR prompt; see processor.py).
TEXT_PROMPT = "Read all the text in the image in reading order. Output only the text."
CROP_PIXELS = 336 * 336
# The model card suggests "num_crops=4 for multi-frame and num_crops=16 for single-frame"; the
# published preprocessor_config.json says 4, which is what runs (set "num_crops" there for 16). A
# plan's pixel budget (max_pixels) can only lower it.
_REQUIRED = ("torch", "transformers", "safetensors", "tokenizers")
# plan.attention -> transformers' name, for the decoder and the CLIP tower alike; the rest run sdpa.
_ATTENTION = {"sdpa": "sdpa", "eager": "eager", "flash_attention_2": "flash_attention_2"}


class Phi35VEngine(Engine):
    name = "phi35v"
    description = "Phi-3.5-Vision (Microsoft, 4.2B VLM, run natively): plain text in reading order, no boxes"
    kind = EngineKind.VLM
    takes_model_path = True
    scripts = frozenset({LATIN})
    tasks = frozenset({TaskKind.TEXT, TaskKind.REGION})
    notes: ClassVar[str] = (
        "text only: no layout mode (no boxes or categories), so never asked for layout; English-centred; "
        "pages read as the checkpoint's num_crops (4) crops of 336 px plus a global view; max_pixels lowers it"
    )

    def __init__(self, model_path: str | None = None) -> None:
        super().__init__(model_path or None)
        self.model: Phi35VForCausalLM | None = None
        self.processor: Phi35VProcessor | None = None
        self.own_crops = 4  # the checkpoint's num_crops, read at load

    @classmethod
    def supported_attention(cls) -> dict[str, tuple[str, ...]]:
        return {"": ("flash_attention_2", "sdpa", "eager"), "vision_config": ("flash_attention_2", "sdpa", "eager")}

    def available(self, profile: Profile) -> Availability:
        missing = [name for name in _REQUIRED if importlib.util.find_spec(name) is None]
        if missing:
            return Availability.no(f"needs {', '.join(missing)}", "pip install 'polyocr[vlm]'")
        weights = vlm.find_weights(self.model_path, REPO_ID)
        if weights is None:
            where = self.model_path or "the local Hugging Face cache"
            return Availability.no(f"no weights of {REPO_ID} in {where}", FETCH_FIX)
        return Availability.yes(f"weights at {weights}")

    def model_dims(self, dtype: str) -> ModelDims:
        """The published model: 4.2 B parameters (model card); 32 decoder layers with 32 KV heads of 96;
        CLIP patches of 14 px merged 2x2. The vision activation per patch is estimated from the CLIP
        widths (1024 hidden, 4096 MLP), not measured."""
        size = DTYPE_BYTES[dtype]
        return ModelDims(
            weight_bytes=4_150_000_000 * size,
            kv_bytes_per_token=kv_bytes_per_token(32, 32, 96, dtype),
            vision_bytes_per_patch=(4096 + 4 * 1024) * size,
            patch_pixels=14 * 14,
            tokens_per_patch=0.25,
            prompt_tokens=40,
            prefill_bytes_per_token=(3 * 8192 + 4 * 3072) * size,
        )

    def num_crops(self, default: int) -> int:
        """The crop budget: the checkpoint's own, lowered to what the plan's pixel budget allows (at
        least one crop). The budget only lowers it: the router sets max_pixels when GPU memory is short."""
        if self.plan.max_pixels is None:
            return default
        return max(1, min(default, self.plan.max_pixels // CROP_PIXELS))

    def load(self, plan: EnginePlan) -> None:
        import torch

        from polyocr.engines.phi35v.model import Phi35VForCausalLM
        from polyocr.engines.phi35v.processor import Phi35VProcessor

        model_path = plan.model_path or self.model_path
        weights = vlm.find_weights(model_path, REPO_ID)
        if weights is None:
            raise EngineUnavailable(self.name, f"no weights of {REPO_ID} in {model_path or 'the cache'}", FETCH_FIX)
        if not hasattr(torch, plan.dtype):
            raise EngineUnavailable(self.name, f"unknown dtype {plan.dtype!r}", "use bfloat16, float16 or float32")
        model = Phi35VForCausalLM.from_pretrained(
            weights,
            dtype=getattr(torch, plan.dtype),
            attn_implementation=_ATTENTION.get(plan.attention, "sdpa"),
            device=plan.device,
        )
        self.processor = Phi35VProcessor.from_pretrained(weights, image_token_id=model.config.image_token_id)
        self.own_crops = self.processor.num_crops
        self.model = model
        self.plan = plan

    def recognize(self, pages: Sequence[Page], task: Task) -> list[PageResult]:
        if self.model is None or self.processor is None:
            raise EngineError(self.name, "recognize() before load()")
        # `tasks` keeps auto from choosing it for layout; named for the default layout task the router
        # gives it the text task instead (Task.for_engine), as the other box-less VLMs (GOT-OCR2).
        if task.kind == TaskKind.LAYOUT_ONLY:
            raise EngineError(self.name, "Phi-3.5-Vision gives no boxes, so it cannot do layout_only")
        if task.kind == TaskKind.REGION and task.region is None:
            raise EngineError(self.name, "a region task needs task.region")
        step = max(1, self.plan.batch_size)
        results: list[PageResult] = []
        for start in range(0, len(pages), step):
            batch = pages[start : start + step]
            images = [_task_image(page, task) for page in batch]
            for page, (tokens, generation) in zip(batch, self.generate(images, task, batch), strict=True):
                results.append(self._result(page, tokens, generation, task))
        return results

    def inputs(self, images: list[Image.Image], pages: Sequence[Page] | None = None) -> Any:
        """The batch for these images under the text prompt (tensors on the CPU); `pages` name the
        inputs in errors."""
        assert self.processor is not None and self.model is not None
        self.processor.num_crops = self.num_crops(self.own_crops)
        prepared = []
        for i, image in enumerate(images):
            try:
                prepared.append(self.processor.prepare(image))
            except ValueError as exc:
                where = f"{pages[i].source}" if pages else "image"
                raise InputError(where, f"page {pages[i].number if pages else i + 1}: {exc}") from exc
        return self.processor.batch(prepared, [TEXT_PROMPT] * len(prepared))

    def generation_settings(self, task: Task, prompt_tokens: int) -> dict[str, Any]:
        """generate()'s keyword arguments (engines/vlm.py: greedy unless sampling is asked for, a static
        cache compiled by transformers on CUDA, the plan's repetition controls, the time limit)."""
        assert self.processor is not None
        return vlm.generation_settings(
            self.plan,
            task,
            eos_token_ids=self.processor.eos_token_ids,
            pad_token_id=self.processor.pad_token_id,
            prompt_tokens=prompt_tokens,
        )

    def generate(
        self, images: list[Image.Image], task: Task, pages: Sequence[Page] | None = None
    ) -> list[tuple[list[int], Generation]]:
        """Generation for a batch of images (left-padded): each row's answer tokens and report."""
        import torch

        assert self.model is not None and self.processor is not None
        batch = self.inputs(images, pages)
        model_inputs = batch.model_inputs(self.model.device, self.model.dtype)
        settings = self.generation_settings(task, int(batch.input_ids.shape[1]))
        started = time.perf_counter()
        with torch.inference_mode():
            sequences = self.model.generate(**model_inputs, **settings)
        seconds = round((time.perf_counter() - started) / len(images), 4)  # a page's share of the batch
        outputs = []
        for tokens, prompt_length in zip(
            sequences[:, batch.input_ids.shape[1] :].tolist(), batch.prompt_lengths, strict=True
        ):
            answer, reason, count = vlm.split_generation(
                tokens, self.processor.eos_token_ids, settings["max_new_tokens"]
            )
            generation = Generation(
                stop_reason=reason, prompt_tokens=prompt_length, generated_tokens=count, seconds=seconds
            )
            outputs.append((answer, generation))
        return outputs

    def _result(self, page: Page, tokens: list[int], generation: Generation, task: Task) -> PageResult:
        assert self.processor is not None
        text = self.processor.decode(tokens).strip()
        if task.kind == TaskKind.REGION:
            blocks = [Block(bbox=task.region, text=text)] if text else []
        else:
            blocks = [Block(text=p.strip(), format=TextFormat.PLAIN) for p in text.split("\n\n") if p.strip()]
        result = PageResult(
            page=page.number,
            source=page.source,
            width=page.image.width,
            height=page.image.height,
            engine=self.name,
            blocks=blocks,
            text=blocks_to_text(blocks),
            markdown=blocks_to_markdown(blocks),
            generation=generation,
        )
        if not text:
            result.status = PageStatus.FAILED
            result.errors.append(f"{self.name}: empty output (stop: {generation.stop_reason})")
        elif generation.stop_reason != "eos":
            result.status = PageStatus.PARTIAL
            stop, count = generation.stop_reason, generation.generated_tokens
            result.errors.append(f"{self.name}: generation stopped by {stop} after {count} tokens")
        return result

    def close(self) -> None:
        self.model = None
        self.processor = None


def _task_image(page: Page, task: Task) -> Image.Image:
    if task.kind != TaskKind.REGION or task.region is None:
        return page.image
    x1, y1, x2, y2 = (round(v) for v in task.region)
    return page.image.crop((x1, y1, x2, y2))
