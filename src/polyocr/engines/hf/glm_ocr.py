"""GLM-OCR 0.9B (zai-org/GLM-OCR): the spec, its recognition prompts, decoding and pixel budget.

The authors' document pipeline (github.com/zai-org/GLM-OCR, glmocr/config.yaml and the model card)
runs PP-DocLayoutV3 first and then the model on each region with the prompt of the region's kind:
"Text Recognition:", "Table Recognition:" or "Formula Recognition:". That layout stage is not here
(it is the same PP-DocLayoutV3 stage as PaddleOCR-VL-1.5's): polyocr runs the model as transformers'
model docs and the card's model-only usage do, one image with "Text Recognition:", so the engine
reads text (pages and regions) and gives no boxes. Tables and formulas come back inside the text.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from polyocr.engines.hf.engine import HFVLMEngine
from polyocr.engines.hf.spec import ALL_ATTENTION, Size, VLMSpec
from polyocr.results import TextFormat
from polyocr.scripts import CYRILLIC, HAN, HANGUL, KANA, LATIN

# glmocr/config.yaml pipeline.page_loader.task_prompt_mapping (the card's "Supported Prompts" table
# lists the same three strings for document parsing).
GLM_PROMPTS = {"text": "Text Recognition:", "table": "Table Recognition:", "formula": "Formula Recognition:"}
# glmocr/config.yaml pipeline.page_loader: max_tokens 8192, temperature 0.0, top_k 1 (greedy),
# repetition_penalty 1.1 on every request.
GLM_GENERATION = {"repetition_penalty": 1.1}
GLM_MAX_NEW_TOKENS = 8192
# The published preprocessor_config.json (zai-org/GLM-OCR): size {"shortest_edge": 12544,
# "longest_edge": 9633792}, patch 14, merge 2, temporal_patch_size 2. Glm46VImageProcessor applies
# the bounds to temporal_patch_size frames (t x h x w, transformers glm46v smart_resize), so one
# page gets at most 4,816,896 pixels, 6,144 visual tokens: the authors' budget, used unchanged.
GLM_TEMPORAL_FRAMES = 2


def glm_pixels(
    sizes: list[Size], min_pixels: int | None, max_pixels: int | None, own: Mapping[str, Any]
) -> dict[str, Any]:
    """The checkpoint's own pixel bounds, or the plan's page pixels counted as the processor counts
    them (over its two temporal frames)."""
    return {
        "size": {
            "shortest_edge": min_pixels * GLM_TEMPORAL_FRAMES if min_pixels else own.get("shortest_edge", 12544),
            "longest_edge": max_pixels * GLM_TEMPORAL_FRAMES if max_pixels else own.get("longest_edge", 9633792),
        }
    }


GLM_OCR = VLMSpec(
    name="glm-ocr",
    repo_id="zai-org/GLM-OCR",
    description="GLM-OCR 0.9B (transformers native): text recognition; no layout without PP-DocLayoutV3",
    model_class="GlmOcrForConditionalGeneration",
    processor_class="Glm46VProcessor",  # the checkpoint's preprocessor_config.json processor_class
    module="glm_ocr",
    prompts={"text": GLM_PROMPTS["text"]},
    template=None,  # the checkpoint's chat template
    attention={"": ALL_ATTENTION, "vision_config": ALL_ATTENTION, "text_config": ALL_ATTENTION},
    # config.json text_config.eos_token_id [59246, 59253]: <|endoftext|> and <|user|>
    stop_tokens=("<|endoftext|>", "<|user|>"),
    parse_layout=None,
    markdown_format=TextFormat.PLAIN,  # no markdown mode: the text mode's answer
    pixel_kwargs=glm_pixels,
    # The card's languages: zh, en, fr, es, ru, de, ja, ko.
    scripts=frozenset({LATIN, CYRILLIC, HAN, KANA, HANGUL}),
    notes=(
        "MIT licence; element recogniser run on whole pages: its authors' PP-DocLayoutV3 stage "
        "(region crops with table/formula prompts) is not here; up to 6,144 visual tokens a page"
    ),
    image_only=True,  # Glm46VProcessor's video processor needs torchvision
    generation=GLM_GENERATION,
    max_new_tokens=GLM_MAX_NEW_TOKENS,
)


class GlmOcrEngine(HFVLMEngine):
    spec = GLM_OCR
    # The authors decode every request with repetition_penalty 1.1: the loop ladder keeps it.
    anti_repeat: ClassVar[dict[str, object]] = dict(GLM_GENERATION)
