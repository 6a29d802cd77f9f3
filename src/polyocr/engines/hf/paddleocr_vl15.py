"""PaddleOCR-VL-1.5 (PaddlePaddle/PaddleOCR-VL-1.5, arXiv:2601.21957): the same 0.9B architecture
(model_type paddleocr_vl, transformers' PaddleOCRVLForConditionalGeneration) run as its authors run it,
with PP-DocLayoutV3 as the layout stage (paddlex/configs/pipelines/PaddleOCR-VL-1.5.yaml: model_name
PP-DocLayoutV3, threshold 0.3, layout_nms, the same merge modes as v1), sharing PaddleOCR-VL's two-stage
code (engines/hf/paddleocr_vl.py, twostage.py, pp_doclayout.py).

Differences from v1 that polyocr follows: the layout model (PP-DocLayoutV3, one threshold 0.3), and the
element crops' pixel limits, which the current pipeline passes to the VLM when the caller gives none
(paddlex/inference/pipelines/paddleocr_vl/pipeline.py: default_min_pixels 112896, default_max_pixels
1003520). 1.5's new seal and spotting prompts are off in the default pipeline (use_seal_recognition
False; spotting only without layout detection), so they are not used here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar

from polyocr.engines.hf.paddleocr_vl import PADDLEOCR_VL, PaddleOCRVLEngine
from polyocr.engines.hf.pp_doclayout import PP_DOCLAYOUT_V3, DetectorSpec

# paddlex/inference/pipelines/paddleocr_vl/pipeline.py get_layout_parsing_results
MIN_PIXELS_15, MAX_PIXELS_15 = 112_896, 1_003_520


def pipeline_pixels(
    sizes: list[tuple[int, int]], min_pixels: int | None, max_pixels: int | None, own: Mapping[str, Any]
) -> dict[str, Any]:
    """The pipeline's own limits for element crops, unless the plan sets them."""
    return {"size": {"shortest_edge": min_pixels or MIN_PIXELS_15, "longest_edge": max_pixels or MAX_PIXELS_15}}


PADDLEOCR_VL_15 = replace(
    PADDLEOCR_VL,
    name="paddleocr-vl-1.5",
    repo_id="PaddlePaddle/PaddleOCR-VL-1.5",
    description="PaddleOCR-VL-1.5 0.9B (transformers native) with PP-DocLayoutV3: layout, order, tables, formulas",
    pixel_kwargs=pipeline_pixels,
    notes=(
        "two stages as its authors run it: PP-DocLayoutV3 (PaddlePaddle/PP-DocLayoutV3_safetensors, or a "
        "layout/ folder in --model DIR) then one VLM call per region; charts and seals are kept as pictures; "
        "PP-DocLayoutV3's polygons are not used (boxes only)"
    ),
)


class PaddleOCRVL15Engine(PaddleOCRVLEngine):
    spec = PADDLEOCR_VL_15
    detector: ClassVar[DetectorSpec] = PP_DOCLAYOUT_V3
