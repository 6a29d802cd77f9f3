"""Qwen2-VL 2B Instruct: the spec, its prompts and its grounding parser."""

from __future__ import annotations

import re

from polyocr.engines.hf.engine import HFVLMEngine
from polyocr.engines.hf.spec import QWEN_COMMON, QWEN_TEXT_PROMPTS, Size, VLMSpec, category, qwen_pixels, scale_box
from polyocr.results import LAYOUT_CATEGORIES, Block

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
            "followed by the block's text, where category is one of: " + ", ".join(LAYOUT_CATEGORIES) + "."
        ),
    },
    parse_layout=parse_qwen2_grounding,
    pixel_kwargs=qwen_pixels(2048 * 28 * 28),
    notes="grounding boxes are relative (0..1000); a page is capped at ~1.6 MP (2048 visual tokens)",
    **QWEN_COMMON,
)


class Qwen2VLEngine(HFVLMEngine):
    spec = QWEN2VL
