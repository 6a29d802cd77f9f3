"""Qwen2-VL 2B Instruct: the spec and its prompts.

Qwen2-VL has no documented page-layout mode. Its grounding is the referring kind: a phrase in,
its box out, written `<|object_ref_start|>phrase<|object_ref_end|><|box_start|>(x1,y1),(x2,y2)<|box_end|>`
with coordinates normalised to 0..1000 (the Qwen2-VL technical report, arXiv:2409.12191, on its
grounding data; the special tokens are in the published tokenizer_config.json's added tokens; the
report's text itself could not be read here, only its abstract). polyocr has no task that asks
for a phrase's box, so the engine offers plain text (the default, and what a named `--engine qwen2vl`
gives for the default layout task) and the text of a region; the layout prompt polyocr used to invent
is gone, and with it any box parsed from a format the model was not trained for.
"""

from __future__ import annotations

from polyocr.engines.hf.engine import HFVLMEngine
from polyocr.engines.hf.spec import QWEN_COMMON, QWEN_TEXT_PROMPTS, VLMSpec, qwen_pixels

QWEN2VL = VLMSpec(
    name="qwen2vl",
    repo_id="Qwen/Qwen2-VL-2B-Instruct",
    description="Qwen2-VL 2B Instruct (transformers native): plain text",
    model_class="Qwen2VLForConditionalGeneration",
    processor_class="Qwen2VLProcessor",
    module="qwen2_vl",
    # Plain text extraction only: no Markdown or layout mode is documented for Qwen2-VL.
    prompts={"text": QWEN_TEXT_PROMPTS["text"]},
    parse_layout=None,
    pixel_kwargs=qwen_pixels(2048 * 28 * 28),
    notes="plain text only (no documented layout mode); a page is capped at ~1.6 MP (2048 visual tokens)",
    **QWEN_COMMON,
)


class Qwen2VLEngine(HFVLMEngine):
    spec = QWEN2VL
