"""One engine for the VLMs that transformers implements natively, parametrised by a VLMSpec.

Qwen2-VL, Qwen3-VL, GOT-OCR 2.0, DeepSeek-OCR-2, PaddleOCR-VL, GLM-OCR and LightOnOCR-2 differ in prompts, processor
settings, attention support and output format, each in its own module beside this one; loading,
batching, generation and reporting are the same and live here once. Weights come from a path the
user gives or the local Hugging Face cache, never from the network: absent weights make the engine
unavailable with the command that fetches them.
"""

from __future__ import annotations

import importlib.util
import re
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from polyocr.engines import vlm
from polyocr.engines.base import Engine
from polyocr.engines.hf.spec import VLMSpec, image_only_processor, page_result, paragraphs
from polyocr.errors import EngineError, EngineUnavailable
from polyocr.results import Block, Generation, PageResult, TextFormat
from polyocr.types import Availability, EngineKind, EnginePlan, Task, TaskKind

if TYPE_CHECKING:
    from PIL import Image

    from polyocr.documents import Page
    from polyocr.runtime.probe import Profile

_TAG = re.compile(r"<\|[^|<>]{1,40}\|>")


class HFVLMEngine(Engine):
    """A transformers-native VLM described by `spec`; subclasses only set the spec."""

    spec: ClassVar[VLMSpec]
    kind: ClassVar[EngineKind] = EngineKind.VLM
    takes_model_path: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not hasattr(cls, "spec"):
            return  # a base for engines of one kind (pp_doclayout.LayoutStageEngine): its subclasses set it
        spec = cls.spec
        cls.name = spec.name
        cls.description = spec.description
        cls.scripts = spec.scripts
        cls.notes = spec.notes
        cls.repo_id = spec.repo_id
        cls.tasks = frozenset(
            {TaskKind.TEXT, TaskKind.REGION}
            | ({TaskKind.LAYOUT, TaskKind.LAYOUT_ONLY} if "layout" in spec.prompts else set())
        )

    def __init__(self, model_path: str | None = None) -> None:
        super().__init__(model_path or None)
        self.attention: dict[str, str] = {}
        self._model: Any = None
        self._processor: Any = None
        self._stop_ids: list[int] = []

    @classmethod
    def supported_attention(cls) -> dict[str, tuple[str, ...]]:
        """What runtime.attention.choose picks from, per part, best first.

        "" is the language model: plan.attention is chosen for it. The other parts (the vision
        encoder) run the same implementation where they accept it, else their best fallback
        (VLMSpec.implementation), which is what `polyocr doctor` shows per part.
        """
        parts = {"": cls.spec.attention["text_config"]}
        parts.update((k, v) for k, v in cls.spec.attention.items() if k not in ("", "text_config"))
        return parts

    def _weights(self, model_path: str | None) -> Path | None:
        return vlm.find_weights(model_path, self.spec.repo_id)

    def available(self, profile: Profile) -> Availability:
        for package in ("torch", "transformers"):
            if importlib.util.find_spec(package) is None:
                return Availability.no(f"{package} is not installed", "pip install 'polyocr[vlm]'")
        if importlib.util.find_spec(f"transformers.models.{self.spec.module}") is None:
            return Availability.no(
                f"the installed transformers has no {self.spec.model_class}", "pip install -U 'transformers>=5'"
            )
        weights = self._weights(self.model_path)
        if weights is None:
            return Availability.no(*self._no_weights(self.model_path))
        return Availability.yes(f"weights at {weights}")

    def _no_weights(self, model_path: str | None) -> tuple[str, str]:
        """Why the weights are missing and the command that fetches them."""
        where = model_path or "the local Hugging Face cache"
        return f"no weights of {self.spec.repo_id} in {where}", f"hf download {self.spec.repo_id}"

    def load(self, plan: EnginePlan) -> None:
        import torch
        import transformers

        spec = self.spec
        model_path = plan.model_path or self.model_path
        weights = self._weights(model_path)
        if weights is None:
            raise EngineUnavailable(self.name, *self._no_weights(model_path))
        model_cls = getattr(transformers, spec.model_class, None)
        processor_cls = getattr(transformers, spec.processor_class, None)
        if model_cls is None or processor_cls is None:
            raise EngineUnavailable(
                self.name,
                f"transformers {transformers.__version__} has no {spec.model_class}",
                "pip install -U 'transformers>=5'",
            )
        if spec.image_only:
            processor_cls = image_only_processor(processor_cls)
        self.plan = plan
        self.attention = spec.implementation(plan.attention)
        self._processor, self._model = self._load_parts(weights, processor_cls, model_cls, getattr(torch, plan.dtype))
        self._processor.tokenizer.padding_side = "left"  # generation appends on the right
        self._model = self._model.to(plan.device).eval()
        self._stop_ids = self._stop_token_ids()

    def _load_parts(self, weights: Path, processor_cls: type, model_cls: Any, dtype: Any) -> tuple[Any, Any]:
        """The processor and the model of a checkpoint in transformers' layout; an engine whose model
        also comes in another published layout (GOT-OCR2's original checkpoint) overrides this."""
        processor = cast(Any, processor_cls).from_pretrained(weights, local_files_only=True)
        model = model_cls.from_pretrained(
            weights, dtype=dtype, attn_implementation=dict(self.attention), local_files_only=True
        )
        return processor, model

    def _stop_token_ids(self) -> list[int]:
        tokenizer = self._processor.tokenizer
        ids = {tokenizer.convert_tokens_to_ids(t) for t in self.spec.stop_tokens if t in tokenizer.get_vocab()}
        configured = self._model.generation_config.eos_token_id
        ids |= set(configured if isinstance(configured, list) else [configured] if configured is not None else [])
        if tokenizer.eos_token_id is not None:
            ids.add(tokenizer.eos_token_id)
        return sorted(ids)

    def close(self) -> None:
        self._model = None
        self._processor = None

    def _mode(self, task: Task) -> str:
        prompts = self.spec.prompts
        if task.kind == TaskKind.TEXT and task.degraded_from == TaskKind.LAYOUT:
            # The default layout task given as text to a model without layout (Task.for_engine): its
            # richest text, Markdown where it has a Markdown mode.
            return "markdown" if "markdown" in prompts else "text"
        if task.kind in (TaskKind.TEXT, TaskKind.REGION):
            return "text"
        if "layout" in prompts:
            return "layout"
        if task.kind == TaskKind.LAYOUT_ONLY:
            raise EngineError(self.name, "this model gives no boxes, so it cannot do layout_only")
        return "markdown" if "markdown" in prompts else "text"

    def recognize(self, pages: Sequence[Page], task: Task) -> list[PageResult]:
        if self._model is None:
            raise EngineError(self.name, "recognize() called before load()")
        mode = self._mode(task)
        if task.kind == TaskKind.REGION and task.region is None:
            raise EngineError(self.name, "a region task needs task.region")
        results: list[PageResult] = []
        step = max(1, self.plan.batch_size)
        for start in range(0, len(pages), step):
            batch = pages[start : start + step]
            images = [_task_image(page, task) for page in batch]
            outputs = self._generate(images, mode, task)
            results.extend(
                self._result(page, tokens, generation, mode, task)
                for page, (tokens, generation) in zip(batch, outputs, strict=True)
            )
        return results

    def _prompt(self, instruction: str) -> str:
        if self.spec.template is not None:
            return self.spec.template.format(prompt=instruction)
        # An empty instruction is a message with the image alone (LightOnOCR-2's card: no prompt).
        text = [{"type": "text", "text": instruction}] if instruction else []
        content: list[dict[str, Any]] = [{"type": "image"}, *text]
        if self.spec.instruction_first:
            content.reverse()
        messages: list[dict[str, Any]] = [{"role": "user", "content": content}]
        if self.spec.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.spec.system_prompt})
        return self._processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)

    def inputs(self, images: list[Image.Image], mode: str) -> Any:
        """The processor's batch for these images under a mode's prompt, on the model's device."""
        spec = self.spec
        if spec.prepare_image is not None:
            images = [spec.prepare_image(image) for image in images]
        own_size = dict(getattr(self._processor.image_processor, "size", None) or {})
        pixel_kwargs = spec.pixel_kwargs(
            [im.size for im in images], self.plan.min_pixels, self.plan.max_pixels, own_size
        )
        cropped = pixel_kwargs.get("crop_to_patches") and spec.cropped_prompt
        instruction = spec.cropped_prompt if cropped else spec.prompts[mode]
        prompt = self._prompt(instruction)
        batch = self._processor(
            images=images, text=[prompt] * len(images), padding=True, return_tensors="pt", **pixel_kwargs
        )
        batch = batch.to(self._model.device)
        if "pixel_values" in batch:
            batch["pixel_values"] = batch["pixel_values"].to(self._model.dtype)
        return batch

    def generation_settings(self, task: Task, prompt_tokens: int) -> dict[str, Any]:
        """generate()'s keyword arguments for a task under this plan (engines/vlm.py: static cache on
        CUDA, its length rounded, the plan's sampling and repetition controls, the time limit)."""
        plan = self.plan
        if self.spec.generation:  # the authors' settings, under whatever the plan sets
            plan = replace(plan, generation={**self.spec.generation, **plan.generation})
        return vlm.generation_settings(
            plan,
            task,
            eos_token_ids=self._stop_ids,
            pad_token_id=self._processor.tokenizer.pad_token_id,
            prompt_tokens=prompt_tokens,
            max_new_tokens=self.spec.token_budget(prompt_tokens),
        )

    def logits_processors(self, prompt_length: int) -> dict[str, Any]:
        """generate()'s logits_processor argument where the model's authors decode with their own
        (VLMSpec.logits_processors: DeepSeek-OCR-2's windowed n-gram ban); none otherwise."""
        if self.spec.logits_processors is None:
            return {}
        from transformers import LogitsProcessorList

        processors = self.spec.logits_processors(self._processor.tokenizer, prompt_length)
        return {"logits_processor": LogitsProcessorList(processors)}

    def _generate(self, images: list[Image.Image], mode: str, task: Task) -> list[tuple[list[int], Generation]]:
        """Greedy generation for a batch of images (left-padded): each row's answer tokens and report.

        Rows of a batch run together, so each row's `seconds` is the whole batch's time.
        """
        import torch
        from transformers import StoppingCriteriaList

        batch = self.inputs(images, mode)
        prompt_length = int(batch["input_ids"].shape[1])
        settings = self.generation_settings(task, prompt_length)
        # Rows whose tail repeats end while they loop (engines/vlm.py loop_stop).
        loops = vlm.loop_stop(
            prompt_length, self._stop_ids, self._processor.tokenizer.decode, enabled=vlm.loop_stop_enabled(self.plan)
        )
        started = time.perf_counter()
        with torch.inference_mode():
            sequences = self._model.generate(
                **batch,
                **settings,
                **self.logits_processors(prompt_length),
                stopping_criteria=StoppingCriteriaList([loops]),
            )
        seconds = round(time.perf_counter() - started, 3)
        new_tokens = sequences[:, prompt_length:].tolist()
        prompt_counts = batch["attention_mask"].sum(dim=1).tolist()
        outputs = []
        for row, (tokens, prompt_count) in enumerate(zip(new_tokens, prompt_counts, strict=True)):
            answer, reason, count = vlm.split_generation(
                tokens, self._stop_ids, settings["max_new_tokens"], loops.loops.get(row)
            )
            generation = Generation(
                stop_reason=reason, prompt_tokens=int(prompt_count), generated_tokens=count, seconds=seconds
            )
            outputs.append((answer, generation))
        return outputs

    def decode(self, tokens: Sequence[int], skip_special_tokens: bool = True) -> str:
        """An answer's text (the two-stage element stage decodes each region's answer with this)."""
        return str(self._processor.tokenizer.decode(list(tokens), skip_special_tokens=skip_special_tokens))

    def _result(self, page: Page, tokens: list[int], generation: Generation, mode: str, task: Task) -> PageResult:
        spec = self.spec
        # Layout answers carry their structure in special tokens (grounding tags); keep them there.
        output = self._processor.tokenizer.decode(tokens, skip_special_tokens=mode != "layout")
        if task.kind == TaskKind.REGION:
            blocks = [Block(bbox=task.region, text=output.strip())] if output.strip() else []
        elif mode == "layout":
            blocks = spec.parse_layout(output, page.image.size) if spec.parse_layout else []
            if not blocks:  # an answer that does not follow the layout format still carries text
                blocks = paragraphs(_TAG.sub("", output), spec.markdown_format)
            if task.kind == TaskKind.LAYOUT_ONLY:
                blocks = [b.model_copy(update={"text": ""}) for b in blocks if b.bbox is not None]
        else:
            fmt = spec.markdown_format if mode == "markdown" else TextFormat.PLAIN
            blocks = spec.parse_answer(output, page.image.size, fmt) if spec.parse_answer else paragraphs(output, fmt)
        return page_result(self.name, page, blocks, generation, generation.stop_reason)


def _task_image(page: Page, task: Task) -> Image.Image:
    if task.kind != TaskKind.REGION or task.region is None:
        return page.image
    x1, y1, x2, y2 = (round(v) for v in task.region)
    return page.image.crop((x1, y1, x2, y2))
