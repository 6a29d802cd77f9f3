"""PaddleOCR-VL 0.9B as its authors run it: PP-DocLayoutV2 finds the page's regions in reading order,
then the VLM reads each region with its element prompt (engines/hf/twostage.py).

The authors' pipeline is PaddleX's `paddleocr_vl` pipeline (paddlex/inference/pipelines/paddleocr_vl/
pipeline.py, configured by paddlex/configs/pipelines/PaddleOCR-VL.yaml; PaddleOCR's `PaddleOCRVL`
wraps it): layout detection (engines/hf/pp_doclayout.py), crops of the page by box, the element prompt
per label ("OCR:", "Table Recognition:", "Formula Recognition:"; "Chart Recognition:" only with
use_chart_recognition, off by default), the VLM's answer post-processed per label (tables from the
model's OTSL tokens to HTML, `\\( \\)` / `\\[ \\]` math to `$ $` / `$$ $$`), max_new_tokens 4096 per
element, and the processor's own pixel limits (preprocessor_config.json min_pixels 147,384, max_pixels
2,822,400) since the v1 pipeline passes none.

What polyocr's tasks get:
- layout: the two stages; blocks in the layout's reading order with its categories, tables HTML,
  formulas LaTeX, pictures (image, chart, seal) as boxed blocks without text.
- text: the same two stages; the page's text is the blocks' text in reading order.
- layout_only: the layout stage alone (no VLM call).
- region: "OCR:" on the region's crop (the pipeline without layout detection, prompt_label "ocr").

The layout stage and the engine's tasks are pp_doclayout.LayoutStageEngine's (shared with GLM-OCR). The
layout model's weights: a `layout/` (or `PP-DocLayoutV2/`) folder inside the VLM checkpoint directory
holding a transformers checkpoint of it, else PaddlePaddle/PP-DocLayoutV2_safetensors in the local
Hugging Face cache (`polyocr fetch paddleocr-vl` fetches both repositories). The PP-DocLayoutV2/
folder of the PaddlePaddle/PaddleOCR-VL repository itself is Paddle's format, which transformers
cannot load; it is not used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from polyocr.engines.hf.otsl import otsl_to_html
from polyocr.engines.hf.pp_doclayout import PP_DOCLAYOUT_V2, DetectorSpec, LayoutStageEngine
from polyocr.engines.hf.spec import ALL_ATTENTION, VLMSpec
from polyocr.engines.hf.twostage import Region, read_regions
from polyocr.results import TextFormat
from polyocr.scripts import ARABIC, CYRILLIC, GREEK, HAN, HANGUL, KANA, LATIN

if TYPE_CHECKING:
    from PIL import Image

    from polyocr.documents import Page
    from polyocr.results import PageResult
    from polyocr.types import Task

# The element prompts (PaddleX paddleocr_vl/pipeline.py; the model card's PROMPTS dict).
ELEMENT_PROMPTS = {
    "text": "OCR:",
    "table": "Table Recognition:",
    "formula": "Formula Recognition:",
    "chart": "Chart Recognition:",
}
# The processor's pixel limits (PaddlePaddle/PaddleOCR-VL preprocessor_config.json), used where the
# checkpoint's own image processor does not say.
MIN_PIXELS, MAX_PIXELS = 147_384, 2_822_400
# PaddleX paddleocr_vl/pipeline.py: vlm_kwargs["max_new_tokens"] = 4096 when the caller sets none.
ELEMENT_MAX_NEW_TOKENS = 4096


def paddle_pixels(
    sizes: list[tuple[int, int]], min_pixels: int | None, max_pixels: int | None, own: Mapping[str, Any]
) -> dict[str, Any]:
    """The processor's own limits (the authors pass none), unless the plan sets them."""
    return {
        "size": {
            "shortest_edge": min_pixels or own.get("shortest_edge") or own.get("min_pixels") or MIN_PIXELS,
            "longest_edge": max_pixels or own.get("longest_edge") or own.get("max_pixels") or MAX_PIXELS,
        }
    }


_MATH = re.compile(r"\\\(|\\\)|\\\[|\\\]")


def finish_element(region: Region, answer: str) -> tuple[str, TextFormat]:
    """A region's answer as the pipeline post-processes it (PaddleX paddleocr_vl/pipeline.py
    get_layout_parsing_results), as block text and format."""
    text = answer.strip()
    if region.mode == "table":
        html = otsl_to_html(text)
        return (html, TextFormat.HTML) if html else (text, TextFormat.PLAIN)
    if region.mode == "formula":
        body = text
        for opening, closing in (("\\[", "\\]"), ("$$", "$$"), ("\\(", "\\)"), ("$", "$")):
            if body.startswith(opening) and body.endswith(closing) and len(body) >= len(opening) + len(closing):
                body = body[len(opening) : len(body) - len(closing)].strip()
                break
        return body, TextFormat.LATEX
    fmt = TextFormat.PLAIN
    if ("\\(" in text and "\\)" in text) or ("\\[" in text and "\\]" in text):
        text = text.replace("$", "")
        text = (
            text.replace("\\(", " $ ")
            .replace("\\)", " $")
            .replace("\\[\\[", "\\[")
            .replace("\\]\\]", "\\]")
            .replace("\\[", " $$ ")
            .replace("\\]", " $$ ")
        )
        if region.label == "formula_number":
            text = text.replace("$", "")
        else:
            fmt = TextFormat.MARKDOWN
    return text.strip(), fmt


def crop_margin(image: Image.Image) -> Image.Image:
    """A formula crop without its blank margin (PaddleX paddleocr_vl/uilts.py crop_margin: grey
    levels stretched to 0..255, ink below 200, the ink's bounding rectangle), kept only when the
    trimmed image is more than 2 px each way (pipeline.py)."""
    from PIL import Image as PILImage

    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    # cv2.COLOR_BGR2GRAY on PaddleX's BGR array: 0.299 R + 0.587 G + 0.114 B, rounded to uint8
    grey = np.round(rgb @ np.array([0.299, 0.587, 0.114])).astype(np.uint8)
    low, high = int(grey.min()), int(grey.max())
    if low == high:
        return image
    data = ((grey.astype(np.float64) - low) / (high - low) * 255).astype(np.uint8)
    ys, xs = np.nonzero(data <= 200)  # THRESH_BINARY_INV at 200: ink is <= 200
    if len(xs) == 0:
        return image
    x1, x2, y1, y2 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
    if x2 - x1 <= 2 or y2 - y1 <= 2:
        return image
    return PILImage.fromarray(np.asarray(image.convert("RGB"))[y1:y2, x1:x2])


def prepare_element(region: Region, image: Image.Image) -> Image.Image:
    return crop_margin(image) if region.mode == "formula" else image


PADDLEOCR_VL = VLMSpec(
    name="paddleocr-vl",
    repo_id="PaddlePaddle/PaddleOCR-VL",
    description="PaddleOCR-VL 0.9B (transformers native) with PP-DocLayoutV2: layout, reading order, tables, formulas",
    model_class="PaddleOCRVLForConditionalGeneration",
    processor_class="PaddleOCRVLProcessor",
    module="paddleocr_vl",
    template=None,
    prompts=ELEMENT_PROMPTS,
    attention={"": ALL_ATTENTION, "vision_config": ALL_ATTENTION, "text_config": ALL_ATTENTION},
    stop_tokens=("</s>", "<|end_of_sentence|>"),
    parse_layout=None,
    markdown_format=TextFormat.PLAIN,
    pixel_kwargs=paddle_pixels,
    scripts=frozenset({LATIN, CYRILLIC, HAN, KANA, HANGUL, GREEK, ARABIC}),
    max_new_tokens=ELEMENT_MAX_NEW_TOKENS,
    notes=(
        "two stages as its authors run it: PP-DocLayoutV2 (PaddlePaddle/PP-DocLayoutV2_safetensors, or a "
        "layout/ folder in --model DIR) then one VLM call per region; charts and seals are kept as pictures"
    ),
)


class PaddleOCRVLEngine(LayoutStageEngine):
    """PaddleOCR-VL with its layout stage; PaddleOCR-VL-1.5 subclasses it with PP-DocLayoutV3."""

    spec = PADDLEOCR_VL
    detector: ClassVar[DetectorSpec] = PP_DOCLAYOUT_V2

    def read_elements(self, pages: Sequence[Page], regions: list[list[Region]], task: Task) -> list[PageResult]:
        # PaddleX keeps every layout block, read as empty or not (pipeline.py parsing_res_list)
        return read_regions(self, pages, regions, task, prepare=prepare_element, finish=finish_element, keep_empty=True)
