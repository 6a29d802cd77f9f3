"""Qwen3-VL 2B Instruct: the spec, its prompts and its JSON grounding parser."""

from __future__ import annotations

import json
import re
from typing import Any

from polyocr.engines.hf.engine import HFVLMEngine
from polyocr.engines.hf.spec import QWEN_COMMON, QWEN_TEXT_PROMPTS, Size, VLMSpec, category, qwen_pixels, scale_box
from polyocr.results import LAYOUT_CATEGORIES, Block


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
            + ", ".join(LAYOUT_CATEGORIES)
            + ') and "text".'
        ),
    },
    parse_layout=parse_qwen3_json,
    pixel_kwargs=qwen_pixels(2048 * 32 * 32),
    notes="boxes are relative (0..1000); a page is capped at ~2.1 MP (2048 visual tokens)",
    **QWEN_COMMON,
)


class Qwen3VLEngine(HFVLMEngine):
    spec = QWEN3VL
