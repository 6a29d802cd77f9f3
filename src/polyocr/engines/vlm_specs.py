"""What differs between the transformers VLMs polyocr runs: one small spec per model.

hf_vlm.py holds the one engine; a spec names the checkpoint and the transformers classes, the
prompts per task, how page size limits become processor arguments, which attention
implementations each sub-model accepts, the stop tokens, and how the model's answer becomes
Blocks. Prompts follow each model's published conventions (model cards, transformers docs).
Nothing here imports torch or transformers at import time, so `polyocr engines` stays fast.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from polyocr.engines.base import CYRILLIC, HAN, KANA, LATIN
from polyocr.results import CATEGORIES, Block, TextFormat

Size = tuple[int, int]
Parser = Callable[[str, Size], list[Block]]

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
    cropped_suffix: str = ""  # added to the instruction when the processor cuts pages into patches

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
        processor_cls.__init__(self, image_processor, tokenizer, None, chat_template=chat_template, **kwargs)

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


def scale_box(box: list[float], size: Size, norm: float) -> tuple[float, float, float, float]:
    """A box in 0..norm relative coordinates to page pixels, ordered and clamped to the page."""
    width, height = size
    x1, y1, x2, y2 = (float(v) for v in box[:4])
    xs = sorted((min(max(x1, 0.0), norm) / norm * width, min(max(x2, 0.0), norm) / norm * width))
    ys = sorted((min(max(y1, 0.0), norm) / norm * height, min(max(y2, 0.0), norm) / norm * height))
    return (round(xs[0], 1), round(ys[0], 1), round(xs[1], 1), round(ys[1], 1))


def paragraphs(text: str, fmt: TextFormat = TextFormat.PLAIN) -> list[Block]:
    """Text without boxes as one block per paragraph, so reading order survives into formats."""
    return [Block(text=p.strip(), format=fmt) for p in re.split(r"\n\s*\n", text) if p.strip()]


_QWEN2_BOX = re.compile(
    r"<\|object_ref_start\|>(?P<label>.*?)<\|object_ref_end\|>\s*"
    r"<\|box_start\|>\(\s*(?P<x1>\d+)\s*,\s*(?P<y1>\d+)\s*\)\s*,\s*\(\s*(?P<x2>\d+)\s*,\s*(?P<y2>\d+)\s*\)<\|box_end\|>"
)


def parse_qwen2_grounding(output: str, size: Size) -> list[Block]:
    """Qwen2-VL grounding: <|object_ref_start|>label<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>
    followed by the block's text; coordinates are relative, 0..1000."""
    matches = list(_QWEN2_BOX.finditer(output))
    blocks = []
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(output)
        box = [int(m[k]) for k in ("x1", "y1", "x2", "y2")]
        blocks.append(
            Block(bbox=scale_box(box, size, 1000), category=category(m["label"]), text=output[m.end() : end].strip())
        )
    return blocks


def parse_qwen3_json(output: str, size: Size) -> list[Block]:
    """Qwen3-VL grounding: a JSON list of {"bbox_2d": [x1, y1, x2, y2], "label", "text"}, relative 0..1000.

    A truncated answer still yields the objects that were complete.
    """
    body = re.sub(r"^```(?:json)?\s*|\s*```\s*$", "", output.strip())
    items: list[Any] = []
    decoder = json.JSONDecoder()
    position = body.find("{")
    while position != -1:
        try:
            item, end = decoder.raw_decode(body, position)
        except json.JSONDecodeError:
            position = body.find("{", position + 1)
            continue
        items.append(item)
        position = body.find("{", end)
    blocks = []
    for item in items:
        box = item.get("bbox_2d") if isinstance(item, dict) else None
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)):
            continue
        label = str(item.get("label") or item.get("category") or "Text")
        blocks.append(
            Block(bbox=scale_box(box, size, 1000), category=category(label), text=str(item.get("text") or "").strip())
        )
    return blocks


_DEEPSEEK_REF = re.compile(r"<\|ref\|>(?P<label>.*?)<\|/ref\|><\|det\|>(?P<boxes>.*?)<\|/det\|>", re.S)


def parse_deepseek_grounding(output: str, size: Size) -> list[Block]:
    """DeepSeek-OCR grounding: <|ref|>label<|/ref|><|det|>[[x1, y1, x2, y2], ...]<|/det|> then the
    block's Markdown; coordinates are relative, 0..999. Several boxes for one label are united."""
    matches = list(_DEEPSEEK_REF.finditer(output))
    blocks = []
    for i, m in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(output)
        numbers = [int(v) for v in re.findall(r"\d+", m["boxes"])]
        if len(numbers) < 4:
            continue
        quads = [numbers[j : j + 4] for j in range(0, len(numbers) - 3, 4)]
        box = [min(q[0] for q in quads), min(q[1] for q in quads), max(q[2] for q in quads), max(q[3] for q in quads)]
        label = category(m["label"])
        text = output[m.end() : end].strip()
        fmt = TextFormat.LATEX if label == "Formula" else TextFormat.MARKDOWN
        blocks.append(Block(bbox=scale_box(box, size, 999), category=label, text=text, format=fmt))
    return blocks


# ---------------------------------------------------------------------------- processor settings

PixelKwargs = Callable[[list[Size], int | None, int | None, Mapping[str, Any]], dict[str, Any]]


def _qwen_pixels(default_max: int) -> PixelKwargs:
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


GOT_TILE = 1024


def _got_pixels(
    sizes: list[Size], min_pixels: int | None, max_pixels: int | None, own: Mapping[str, Any]
) -> dict[str, Any]:
    """GOT reads one 1024 px view; larger pages are cut into 1024 px patches plus a thumbnail.

    The choice is per batch (the processor takes one setting): a batch with any page larger than
    one view is cropped, and the prompt says so.
    """
    crop = any(max(size) > GOT_TILE for size in sizes)
    # GOT's own multi-crop inference cuts at most 6 patches; the plan's pixel budget can lower that.
    max_patches = max(1, (max_pixels or 6 * GOT_TILE * GOT_TILE) // (GOT_TILE * GOT_TILE))
    return {"crop_to_patches": crop, "max_patches": max_patches}


def _deepseek_pixels(
    sizes: list[Size], min_pixels: int | None, max_pixels: int | None, own: Mapping[str, Any]
) -> dict[str, Any]:
    """DeepSeek-OCR-2 reads a 1024 px global view plus 2..6 tiles of 768 px (fixed by its learned queries)."""
    if max_pixels is None:
        return {}
    return {"max_patches": min(6, max(2, max_pixels // (768 * 768)))}


# ---------------------------------------------------------------------------- the five models

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
    "scripts": frozenset({LATIN, CYRILLIC, HAN, KANA, "Hangul", "Greek", "Arabic"}),
}

QWEN2VL = VLMSpec(
    name="qwen2vl",
    repo_id="Qwen/Qwen2-VL-2B-Instruct",
    description="Qwen2-VL 2B Instruct (transformers native): text, Markdown, grounded blocks",
    model_class="Qwen2VLForConditionalGeneration",
    processor_class="Qwen2VLProcessor",
    module="qwen2_vl",
    prompts={
        **QWEN_TEXT_PROMPTS,
        "layout": (
            "Find every layout block of the document in reading order. For each block output "
            "<|object_ref_start|>category<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|> "
            "followed by the block's text, where category is one of: " + ", ".join(CATEGORIES[:11]) + "."
        ),
    },
    parse_layout=parse_qwen2_grounding,
    pixel_kwargs=_qwen_pixels(2048 * 28 * 28),
    notes="grounding boxes are relative (0..1000); a page is capped at ~1.6 MP (2048 visual tokens)",
    **QWEN_COMMON,
)

QWEN3VL = VLMSpec(
    name="qwen3vl",
    repo_id="Qwen/Qwen3-VL-2B-Instruct",
    description="Qwen3-VL 2B Instruct (transformers native): text, Markdown, JSON-grounded blocks",
    model_class="Qwen3VLForConditionalGeneration",
    processor_class="Qwen3VLProcessor",
    module="qwen3_vl",
    prompts={
        **QWEN_TEXT_PROMPTS,
        "layout": (
            "Locate every layout block of the document in reading order and output them as a JSON list; "
            'each item has "bbox_2d": [x1, y1, x2, y2], "label" (one of: '
            + ", ".join(CATEGORIES[:11])
            + ') and "text".'
        ),
    },
    parse_layout=parse_qwen3_json,
    pixel_kwargs=_qwen_pixels(2048 * 32 * 32),
    notes="boxes are relative (0..1000); a page is capped at ~2.1 MP (2048 visual tokens)",
    **QWEN_COMMON,
)

GOT = VLMSpec(
    name="got",
    repo_id="stepfun-ai/GOT-OCR-2.0-hf",
    description="GOT-OCR 2.0 (transformers native): plain or formatted (Markdown/LaTeX) text, no boxes",
    model_class="GotOcr2ForConditionalGeneration",
    processor_class="GotOcr2Processor",
    module="got_ocr2",
    # As GotOcr2Processor writes it: the checkpoint has no chat template.
    template=(
        "<|im_start|>system\nYou should follow the instructions carefully and explain your answers in detail."
        "<|im_end|><|im_start|>user\n<img><imgpad></img>\n{prompt}: <|im_end|><|im_start|>assistant\n"
    ),
    prompts={"text": "OCR", "markdown": "OCR with format"},
    cropped_suffix=" upon the patch reference",
    # Its SAM vision encoder has only an eager attention; the Qwen2 decoder takes any.
    attention={"": ("eager",), "vision_config": ("eager",), "text_config": ALL_ATTENTION},
    stop_tokens=("<|im_end|>", "<|endoftext|>"),
    parse_layout=None,
    markdown_format=TextFormat.MARKDOWN,
    pixel_kwargs=_got_pixels,
    scripts=frozenset({LATIN, HAN}),
    notes="English and Chinese; 1024 px views (large pages cut into up to 6 patches); no boxes",
)

DEEPSEEK_OCR = VLMSpec(
    name="deepseek-ocr",
    repo_id="deepseek-community/DeepSeek-OCR-2",
    description="DeepSeek-OCR-2 (transformers native): free OCR, Markdown with grounded blocks",
    model_class="DeepseekOcr2ForConditionalGeneration",
    processor_class="DeepseekOcr2Processor",
    module="deepseek_ocr2",
    template="<image>\n{prompt}",
    prompts={
        "text": "Free OCR.",
        "markdown": "Convert the document to markdown.",
        "layout": "<|grounding|>Convert the document to markdown.",
    },
    # The SAM and Qwen2 vision encoders have no flash-attention path; the MoE decoder has.
    attention={"": WITHOUT_FLASH, "vision_config": WITHOUT_FLASH, "text_config": ALL_ATTENTION},
    stop_tokens=("<｜end▁of▁sentence｜>",),
    parse_layout=parse_deepseek_grounding,
    markdown_format=TextFormat.MARKDOWN,
    pixel_kwargs=_deepseek_pixels,
    scripts=frozenset({LATIN, CYRILLIC, HAN, KANA, "Hangul", "Greek", "Arabic"}),
    notes="boxes are relative (0..999); a 1024 px global view plus 2..6 tiles of 768 px",
)

PADDLEOCR_VL = VLMSpec(
    name="paddleocr-vl",
    repo_id="PaddlePaddle/PaddleOCR-VL",
    description="PaddleOCR-VL 0.9B (transformers native): element OCR; no layout without PP-DocLayout",
    model_class="PaddleOCRVLForConditionalGeneration",
    processor_class="PaddleOCRVLProcessor",
    module="paddleocr_vl",
    template=None,
    prompts={"text": "OCR:"},
    attention={"": ALL_ATTENTION, "vision_config": ALL_ATTENTION, "text_config": ALL_ATTENTION},
    stop_tokens=("</s>", "<|end_of_sentence|>"),
    parse_layout=None,
    markdown_format=TextFormat.PLAIN,
    pixel_kwargs=_qwen_pixels(2048 * 28 * 28),
    scripts=frozenset({LATIN, CYRILLIC, HAN, KANA, "Hangul", "Greek", "Arabic"}),
    notes="trained on cropped page elements; whole pages work but its layout stage (PP-DocLayout) is not here",
)

SPECS: dict[str, VLMSpec] = {s.name: s for s in (QWEN2VL, QWEN3VL, GOT, DEEPSEEK_OCR, PADDLEOCR_VL)}
