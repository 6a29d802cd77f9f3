"""GOT-OCR 2.0 (transformers form): the spec, its prompts and its page views."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from polyocr.engines.hf.engine import HFVLMEngine
from polyocr.engines.hf.spec import ALL_ATTENTION, Size, VLMSpec
from polyocr.results import TextFormat
from polyocr.scripts import HAN, LATIN

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


class GotOcr2Engine(HFVLMEngine):
    spec = GOT
    # The authors decode greedily with no_repeat_ngram_size=20 (GOT/demo/run_ocr_2.0.py).
    anti_repeat: ClassVar[dict[str, object]] = {"no_repeat_ngram_size": 20}
