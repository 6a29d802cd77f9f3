"""GOT-OCR 2.0 (transformers form): the spec, its prompts and its page views.

As its authors run it (Ucas-HaoranWei/GOT-OCR2.0, GOT/demo/run_ocr_2.0.py): the whole page resized
to one 1024 x 1024 view (BlipImageEvalProcessor(image_size=1024); the README calls that sufficient
for A4 pages), the prompt "OCR: " or, for formatted output, "OCR with format: ", greedy decoding with
no_repeat_ngram_size=20 and at most 4096 new tokens. Multi-crop (run_ocr_2.0_crop.py: up to 6 tiles
of 1024 px plus a thumbnail, prompt "OCR with format upon the patch reference: ") is for stitched or
oddly shaped inputs only, which here means a page more than twice as long as it is wide (or wide
as it is long): A4, Letter and Legal pages stay one view.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from polyocr.engines import vlm
from polyocr.engines.hf import got_original
from polyocr.engines.hf.engine import HFVLMEngine
from polyocr.engines.hf.spec import ALL_ATTENTION, Size, VLMSpec
from polyocr.results import TextFormat
from polyocr.scripts import HAN, LATIN

GOT_TILE = 1024
# A page longer than this ratio of its short side is stitched or odd-shaped: cut into tiles.
CROP_ASPECT = 2.0
# The authors' decoding (run_ocr_2.0.py: do_sample=False, num_beams=1, no_repeat_ngram_size=20,
# max_new_tokens=4096).
GOT_GENERATION = {"no_repeat_ngram_size": 20}
GOT_MAX_NEW_TOKENS = 4096
# The authors' conversation ("mpt" in GOT/utils/conversation.py) with the image placeholder and the
# query as run_ocr_2.0.py writes them: "<img>" + pads + "</img>\n" + "OCR: ". transformers'
# GotOcr2Processor writes the query with a leading space (" OCR: ", from its empty box slot); this
# keeps the authors' string, and the processor expands the one <imgpad> to the view's 256 tokens.
GOT_TEMPLATE = (
    "<|im_start|>system\nYou should follow the instructions carefully and explain your answers in detail."
    "<|im_end|><|im_start|>user\n<img><imgpad></img>\n{prompt}: <|im_end|><|im_start|>assistant\n"
)


def odd_shaped(size: Size) -> bool:
    width, height = size
    return max(width, height) > CROP_ASPECT * max(1, min(width, height))


def _got_pixels(
    sizes: list[Size], min_pixels: int | None, max_pixels: int | None, own: Mapping[str, Any]
) -> dict[str, Any]:
    """One 1024 px view per page; tiles only for stitched or odd-shaped pages (odd_shaped).

    The choice is per batch (the processor takes one setting): a batch with any odd-shaped page is
    cropped, and the prompt is then the multi-crop one.
    """
    crop = any(odd_shaped(size) for size in sizes)
    # The authors' multi-crop cuts at most 6 tiles; the plan's pixel budget can lower that.
    max_patches = max(1, (max_pixels or 6 * GOT_TILE * GOT_TILE) // (GOT_TILE * GOT_TILE))
    return {"crop_to_patches": crop, "max_patches": max_patches}


GOT = VLMSpec(
    name="got",
    repo_id="stepfun-ai/GOT-OCR-2.0-hf",
    description="GOT-OCR 2.0 (transformers native): plain or formatted (Markdown/LaTeX) text, no boxes",
    model_class="GotOcr2ForConditionalGeneration",
    processor_class="GotOcr2Processor",
    module="got_ocr2",
    template=GOT_TEMPLATE,
    prompts={"text": "OCR", "markdown": "OCR with format"},
    cropped_prompt="OCR with format upon the patch reference",
    # Its SAM vision encoder has only an eager attention; the Qwen2 decoder takes any.
    attention={"": ("eager",), "vision_config": ("eager",), "text_config": ALL_ATTENTION},
    stop_tokens=("<|im_end|>", "<|endoftext|>"),
    parse_layout=None,
    markdown_format=TextFormat.MARKDOWN,
    pixel_kwargs=_got_pixels,
    scripts=frozenset({LATIN, HAN}),
    generation=GOT_GENERATION,
    max_new_tokens=GOT_MAX_NEW_TOKENS,
    notes=(
        "English and Chinese; one 1024 px view per page as its authors run it (tiles only for pages over "
        "2:1); greedy, no_repeat_ngram_size 20, at most 4,096 tokens; no boxes"
    ),
)


class GotOcr2Engine(HFVLMEngine):
    """Either checkpoint: transformers' stepfun-ai/GOT-OCR-2.0-hf, or the original ucaslcl/GOT-OCR2_0
    (remote-code layout) mapped onto the same native model by got_original.py."""

    spec = GOT
    # The authors decode greedily with no_repeat_ngram_size=20 (GOT/demo/run_ocr_2.0.py).
    anti_repeat: ClassVar[dict[str, object]] = dict(GOT_GENERATION)

    def _weights(self, model_path: str | None) -> Path | None:
        found = vlm.find_weights(model_path, self.spec.repo_id)
        return found if found or model_path else vlm.cached_snapshot(got_original.ORIGINAL_REPO)

    def _no_weights(self, model_path: str | None) -> tuple[str, str]:
        reason, fix = super()._no_weights(model_path)
        return f"{reason} (nor of the original {got_original.ORIGINAL_REPO})", fix

    def _load_parts(self, weights: Path, processor_cls: type, model_cls: Any, dtype: Any) -> tuple[Any, Any]:
        if not got_original.is_original(weights):
            return super()._load_parts(weights, processor_cls, model_cls, dtype)
        model = got_original.load_model(weights, dtype=dtype, attention=self.attention)
        return got_original.load_processor(weights), model
