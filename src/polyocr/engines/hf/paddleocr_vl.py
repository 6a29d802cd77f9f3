"""PaddleOCR-VL 0.9B: the spec and its element prompts."""

from __future__ import annotations

from polyocr.engines.hf.engine import HFVLMEngine
from polyocr.engines.hf.spec import ALL_ATTENTION, VLMSpec, qwen_pixels
from polyocr.results import TextFormat
from polyocr.scripts import ARABIC, CYRILLIC, GREEK, HAN, HANGUL, KANA, LATIN

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
    pixel_kwargs=qwen_pixels(2048 * 28 * 28),
    scripts=frozenset({LATIN, CYRILLIC, HAN, KANA, HANGUL, GREEK, ARABIC}),
    notes="trained on cropped page elements; whole pages work but its layout stage (PP-DocLayout) is not here",
)


class PaddleOCRVLEngine(HFVLMEngine):
    spec = PADDLEOCR_VL
