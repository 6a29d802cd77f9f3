"""LightOnOCR-2 1B (lightonai/LightOnOCR-2-1B): the spec, its image-only prompt and its Markdown parser.

Recipe from the model card (huggingface.co/lightonai/LightOnOCR-2-1B, README.md): the user message
is the page image alone, no system or user text ("the model has a tendency to repeat the prompt in
its answer", the bbox-soup card's usage tips); pages rendered so the longest side is 1540 px (the
published preprocessor's PixtralImageProcessor size, and the vision tower's image_size 1540, past
which its 2D RoPE table ends); the answer is Markdown in reading order. The card's transformers
snippet decodes greedily; its vLLM recipe samples at temperature 0.2, top_p 0.9 with max_tokens
4096 (LIGHTON_SAMPLING, for plan.generation). The bbox variants (LightOnOCR-2-1B-bbox, -bbox-soup,
same architecture: `--model` one of them) write each embedded image as
`![image](image_N.png)x1,y1,x2,y2` with the box normalised to 0..1000; the parser turns those into
Picture blocks with boxes in page pixels.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from polyocr.engines.hf.engine import HFVLMEngine
from polyocr.engines.hf.spec import ALL_ATTENTION, Size, VLMSpec, paragraphs, scale_box
from polyocr.results import Block, TextFormat
from polyocr.scripts import HAN, KANA, LATIN

# The card's vLLM payload (temperature 0.2, top_p 0.9, max_tokens 4096). polyocr decodes greedily
# by default, as the card's transformers snippet does; these are the sampling settings to opt into.
LIGHTON_SAMPLING = {"temperature": 0.2, "top_p": 0.9}
LIGHTON_MAX_NEW_TOKENS = 4096
# config.json text_config.max_position_embeddings: 16384 (prompt + answer)
LIGHTON_CONTEXT = 16384
# preprocessor size {"longest_edge": 1540}; config.json vision_config.image_size 1540
LIGHTON_LONGEST_EDGE = 1540

# `![image](image_3.png)120,40,880,410` (bbox variants: 0..1000, x1,y1,x2,y2); a space may separate them.
_IMAGE_BOX = re.compile(
    r"!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]*)\)[ \t]*"
    r"(?:(?P<x1>\d+(?:\.\d+)?)\s*,\s*(?P<y1>\d+(?:\.\d+)?)\s*,\s*(?P<x2>\d+(?:\.\d+)?)\s*,\s*(?P<y2>\d+(?:\.\d+)?))?"
)


def parse_lighton_markdown(output: str, size: Size, fmt: TextFormat = TextFormat.MARKDOWN) -> list[Block]:
    """LightOnOCR-2's Markdown as blocks in reading order: one block per paragraph, and each embedded
    image (`![image](image_N.png)`, followed by `x1,y1,x2,y2` in 0..1000 from the bbox variants) a
    Picture block, with its box in page pixels where the model gave one."""
    blocks: list[Block] = []
    position = 0
    for match in _IMAGE_BOX.finditer(output):
        blocks.extend(paragraphs(output[position : match.start()], fmt))
        box = None
        if match["x1"] is not None:
            box = scale_box([float(match[k]) for k in ("x1", "y1", "x2", "y2")], size, 1000)
        blocks.append(Block(bbox=box, category="Picture", text="", format=fmt))
        position = match.end()
    blocks.extend(paragraphs(output[position:], fmt))
    return blocks


def lighton_pixels(
    sizes: list[Size], min_pixels: int | None, max_pixels: int | None, own: Mapping[str, Any]
) -> dict[str, Any]:
    """Pixtral resizes by the longest edge: the checkpoint's (1540), or lower where the plan caps a
    page's pixels (the edge that keeps every page of the batch within max_pixels)."""
    edge = int(own.get("longest_edge", LIGHTON_LONGEST_EDGE))
    if max_pixels:
        for width, height in sizes:
            long, short = max(width, height), max(1, min(width, height))
            edge = min(edge, int((max_pixels * long / short) ** 0.5))
    return {"size": {"longest_edge": max(28, edge)}}


LIGHTON_OCR = VLMSpec(
    name="lighton-ocr",
    repo_id="lightonai/LightOnOCR-2-1B",
    description="LightOnOCR-2 1B (transformers native): page to Markdown; image boxes with its bbox variants",
    model_class="LightOnOcrForConditionalGeneration",
    processor_class="LightOnOcrProcessor",
    module="lighton_ocr",
    # No instruction: the image alone (model card), for plain text and Markdown alike.
    prompts={"text": "", "markdown": ""},
    template=None,  # the checkpoint's chat template
    attention={"": ALL_ATTENTION, "vision_config": ALL_ATTENTION, "text_config": ALL_ATTENTION},
    # config.json eos_token_id 151645 (<|im_end|>), pad 151643 (<|endoftext|>)
    stop_tokens=("<|im_end|>", "<|endoftext|>"),
    parse_layout=None,
    markdown_format=TextFormat.MARKDOWN,
    pixel_kwargs=lighton_pixels,
    # The card's languages: en, fr, de, es, it, nl, pt, sv, da, zh, ja.
    scripts=frozenset({LATIN, HAN, KANA}),
    notes=(
        "Apache-2.0; one pass per page, Markdown without text boxes (the -bbox variants add boxes "
        "for embedded images); pages at most 1540 px on the longest side"
    ),
    parse_answer=parse_lighton_markdown,
    max_new_tokens=LIGHTON_MAX_NEW_TOKENS,
    context_length=LIGHTON_CONTEXT,
)


class LightOnOcrEngine(HFVLMEngine):
    spec = LIGHTON_OCR
