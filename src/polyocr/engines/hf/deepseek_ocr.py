"""DeepSeek-OCR-2: the spec, its prompts, its tiles and its grounding parser."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from polyocr.engines.hf.engine import HFVLMEngine
from polyocr.engines.hf.spec import ALL_ATTENTION, WITHOUT_FLASH, Size, VLMSpec, category, scale_box
from polyocr.results import Block, TextFormat
from polyocr.scripts import ARABIC, CYRILLIC, GREEK, HAN, HANGUL, KANA, LATIN

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


def _deepseek_pixels(
    sizes: list[Size], min_pixels: int | None, max_pixels: int | None, own: Mapping[str, Any]
) -> dict[str, Any]:
    """DeepSeek-OCR-2 reads a 1024 px global view plus 2..6 tiles of 768 px (fixed by its learned queries)."""
    if max_pixels is None:
        return {}
    return {"max_patches": min(6, max(2, max_pixels // (768 * 768)))}


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
    scripts=frozenset({LATIN, CYRILLIC, HAN, KANA, HANGUL, GREEK, ARABIC}),
    notes="boxes are relative (0..999); a 1024 px global view plus 2..6 tiles of 768 px",
)


class DeepseekOcrEngine(HFVLMEngine):
    spec = DEEPSEEK_OCR
