"""What differs between the transformers VLMs polyocr runs, and the pieces their specs share.

engine.py holds the one engine and each model has its own module (qwen2vl.py, got.py, ...) with its
spec, prompts and output parser; a spec names the checkpoint and the transformers classes, the
prompts per task, how page size limits become processor arguments, which attention
implementations each sub-model accepts, the stop tokens, and how the model's answer becomes
Blocks. Prompts follow each model's published conventions (model cards, transformers docs).
Nothing here imports torch or transformers at import time, so `polyocr engines` stays fast.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from polyocr.formats.markdown import blocks_to_markdown
from polyocr.formats.text import blocks_to_text
from polyocr.results import CATEGORIES, Block, Generation, PageResult, PageStatus, TextFormat
from polyocr.scripts import ARABIC, CYRILLIC, GREEK, HAN, HANGUL, KANA, LATIN

if TYPE_CHECKING:
    from PIL import Image

    from polyocr.documents import Page

Size = tuple[int, int]
Parser = Callable[[str, Size], list[Block]]
# (answer, page size, the mode's text format) -> Blocks, for answers to the text and markdown modes
AnswerParser = Callable[[str, Size, TextFormat], list[Block]]

ALL_ATTENTION = ("flash_attention_2", "sdpa", "eager")
WITHOUT_FLASH = ("sdpa", "eager")


@dataclass(frozen=True)
class VLMSpec:
    name: str
    repo_id: str
    description: str
    model_class: str  # attribute of transformers
    processor_class: str  # attribute of transformers
    # task mode -> instruction: "text" (plain reading order), "markdown" (structured, no boxes),
    # "layout" (blocks with boxes); a model offers the modes it was trained for.
    prompts: Mapping[str, str]
    # None: the checkpoint's chat template with one image and the instruction. Otherwise the whole
    # prompt, "{prompt}" standing for the instruction, for checkpoints published without a template.
    template: str | None
    # sub-config key ("" = the top model) -> attention implementations it accepts, best first.
    attention: Mapping[str, tuple[str, ...]]
    stop_tokens: tuple[str, ...]
    parse_layout: Parser | None
    markdown_format: TextFormat  # what the "markdown" mode returns
    # (page sizes in the batch, plan's min and max pixels, the image processor's own size) -> kwargs
    pixel_kwargs: Callable[[list[Size], int | None, int | None, Mapping[str, Any]], dict[str, Any]]
    scripts: frozenset[str]
    notes: str = ""
    image_only: bool = False  # build the processor without its video processor (needs torchvision)
    module: str = ""  # transformers.models.<module>, to check availability without importing it
    # The instruction when the processor cuts a page into patches (GOT's multi-crop prompt); "" = the mode's.
    cropped_prompt: str = ""
    # (tokenizer, prompt length) -> the logits processors the model's authors decode with (None: none).
    logits_processors: Callable[[Any, int], list[Any]] | None = None
    # The authors' decoding settings (generate() options); plan.generation overrides them.
    generation: Mapping[str, Any] = field(default_factory=dict)
    # The authors' cap on new tokens, and the model's context (prompt + answer) where it is shorter
    # than what the task allows; None = no cap of the model's own.
    max_new_tokens: int | None = None
    context_length: int | None = None
    # How the text and markdown modes' answer becomes Blocks where it carries more than paragraphs
    # (LightOnOCR-2's bbox variants put image boxes in their Markdown); None = one block a paragraph.
    parse_answer: AnswerParser | None = None
    # The instruction before the image in the user message where the authors put it there (olmOCR's
    # pipeline and training, prompt_first); False: the image first, as most model cards do.
    instruction_first: bool = False
    # A system message the authors' client sends before the user message (MinerU2.5's); None: none,
    # so the checkpoint's chat template adds its own default where it has one.
    system_prompt: str | None = None
    # The authors' own page preparation before the processor (olmOCR renders every page to a fixed
    # longest side); None: the page as the loader gives it.
    prepare_image: Callable[[Image.Image], Image.Image] | None = None

    def token_budget(self, prompt_tokens: int) -> int | None:
        """The most new tokens this model may generate after a prompt of `prompt_tokens`."""
        limits = [v for v in (self.max_new_tokens,) if v is not None]
        if self.context_length is not None:
            limits.append(max(1, self.context_length - prompt_tokens))
        return min(limits) if limits else None

    def implementation(self, requested: str) -> dict[str, str]:
        """Attention per sub-model: the requested one where accepted, else that part's best fallback."""
        chosen = {}
        for part, accepted in self.attention.items():
            if requested in accepted:
                chosen[part] = requested
            else:
                chosen[part] = next(i for i in WITHOUT_FLASH if i in accepted)
        return chosen


def image_only_processor(processor_cls: type) -> type:
    """A subclass of a Qwen-style processor that has no video processor.

    transformers resolves the video processor class through torchvision; without torchvision (the
    supported install) building the processor fails even though only images are ever processed.
    The subclass's signature lacks `video_processor`, so from_pretrained never looks for one.
    """

    def __init__(
        self: Any, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **kwargs: Any
    ) -> None:
        processor_cls.__init__(  # type: ignore[misc]  # the base class's own __init__, on purpose
            self,
            image_processor,
            tokenizer,
            None,
            chat_template=chat_template,
            **kwargs,
        )

    return type(f"{processor_cls.__name__}ImageOnly", (processor_cls,), {"__init__": __init__})


# ---------------------------------------------------------------------------- output parsers

_LABELS = {c.lower(): c for c in CATEGORIES} | {
    "paragraph": "Text",
    "plain text": "Text",
    "text": "Text",
    "heading": "Section-header",
    "header": "Page-header",
    "footer": "Page-footer",
    "sub_title": "Section-header",
    "subtitle": "Section-header",
    "image": "Picture",
    "figure": "Picture",
    "image_caption": "Caption",
    "table_caption": "Caption",
    "figure_caption": "Caption",
    "equation": "Formula",
    "formula": "Formula",
    "list": "List-item",
    "page_header": "Page-header",
    "page_footer": "Page-footer",
    "table_footnote": "Footnote",
}


def category(label: str) -> str:
    """A model's own label mapped onto polyocr's categories; unknown labels are Text."""
    key = label.strip().lower().replace("-", "_")
    return _LABELS.get(key) or _LABELS.get(key.replace("_", "-")) or _LABELS.get(key.replace("_", " "), "Text")


def scale_box(box: Sequence[float], size: Size, norm: float) -> tuple[float, float, float, float]:
    """A box in 0..norm relative coordinates to page pixels, ordered and clamped to the page."""
    width, height = size
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    xs = sorted((min(max(x1, 0.0), norm) / norm * width, min(max(x2, 0.0), norm) / norm * width))
    ys = sorted((min(max(y1, 0.0), norm) / norm * height, min(max(y2, 0.0), norm) / norm * height))
    return (round(xs[0], 1), round(ys[0], 1), round(xs[1], 1), round(ys[1], 1))


def page_result(
    engine: str, page: Page, blocks: list[Block], generation: Generation | None, reason: str | None, **fields: Any
) -> PageResult:
    """One page's result from an engine's blocks: the page's size and source, text and Markdown from
    the blocks, OK only where generation ended at an end token (`reason` "eos")."""
    return PageResult(
        page=page.number,
        source=page.source,
        width=page.image.width,
        height=page.image.height,
        status=PageStatus.OK if reason == "eos" else PageStatus.PARTIAL,
        engine=engine,
        blocks=blocks,
        text=blocks_to_text(blocks),
        markdown=blocks_to_markdown(blocks),
        generation=generation,
        **fields,
    )


def paragraphs(text: str, fmt: TextFormat = TextFormat.PLAIN) -> list[Block]:
    """Text without boxes as one block per paragraph, so reading order survives into formats."""
    return [Block(text=p.strip(), format=fmt) for p in re.split(r"\n\s*\n", text) if p.strip()]


# ---------------------------------------------------------------------------- processor settings

PixelKwargs = Callable[[list[Size], int | None, int | None, Mapping[str, Any]], dict[str, Any]]


def qwen_pixels(default_max: int) -> PixelKwargs:
    """Qwen-style resizers take a pixel budget per image (size: shortest_edge = min, longest_edge = max).

    The checkpoints' own maximum (12.8 MP for Qwen2-VL) would give a 200 DPI page ~16k visual
    tokens; `default_max` caps it where OCR quality is still good, unless the plan says otherwise.
    """

    def kwargs(
        sizes: list[Size], min_pixels: int | None, max_pixels: int | None, own: Mapping[str, Any]
    ) -> dict[str, Any]:
        return {
            "size": {
                "shortest_edge": min_pixels or own.get("shortest_edge", 56 * 56),
                "longest_edge": max_pixels or min(default_max, own.get("longest_edge", default_max)),
            }
        }

    return kwargs


# ---------------------------------------------------------------------------- what the Qwen-VL models share

QWEN_STOPS = ("<|im_end|>", "<|endoftext|>")
QWEN_TEXT_PROMPTS = {
    "text": "Read all the text in the image in reading order. Output only the text.",
    "markdown": "Convert the document in the image to Markdown. Output only the Markdown.",
}
# What Qwen2-VL and Qwen3-VL share: chat template, any attention, stop tokens, scripts.
QWEN_COMMON: dict[str, Any] = {
    "image_only": True,
    "template": None,
    "attention": {"": ALL_ATTENTION, "vision_config": ALL_ATTENTION, "text_config": ALL_ATTENTION},
    "stop_tokens": QWEN_STOPS,
    "markdown_format": TextFormat.MARKDOWN,
    "scripts": frozenset({LATIN, CYRILLIC, HAN, KANA, HANGUL, GREEK, ARABIC}),
}
