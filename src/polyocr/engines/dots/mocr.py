"""The `dots-mocr` engine: dots.mocr (rednote-hilab, dots.ocr-1.5) on polyocr's native dots port.

dots.mocr is dots.ocr retrained, not a new architecture. What its public files and code establish
(docs/engines.md, "dots.mocr", lists each difference with its source):

- The checkpoint: config.json is dots.ocr's (model_type `dots_ocr`, `DotsOCRForCausalLM`, the same
  decoder and 42-block vision tower: huggingface.co/rednote-hilab/dots.mocr/blob/main/config.json;
  contrapuntal/dots.mocr weights/DotsMOCR/config.json), so the same strict loader reads the same
  tensor names (model.py); the preprocessor is dots.ocr's later 432-byte revision (3,136 to
  11,289,600 pixels, patch 14, merge 2, temporal patch 1; contrapuntal/dots.mocr
  weights/DotsMOCR/preprocessor_config.json).
- End tokens: eos [151643, 151672, 151673], i.e. `<|assistant|>` (151672) added to dots.ocr's
  `<|endoftext|>` and `<|endofassistant|>` (mlx-community/dots.mocr-6bit config.json, whose
  converter carries generation_config.json's eos_token_id; a C++ port's GenerationConfig that
  "mirrors config.json + generation_config.json"). The engine reads the ids from the checkpoint's
  generation_config.json as for dots.ocr; END_TOKENS below only stand in when that file is absent.
- Prompt modes: dots.ocr's four texts unchanged, plus web parsing, scene spotting and image to SVG
  (prompts.py). Choose one with `[engines.dots-mocr] generation = {prompt_mode = "..."}` in
  polyocr.toml; it applies to the task it answers (prompts.MODE_TASKS), other tasks keep theirs.
- Decoding: the authors' parser samples at temperature 0.1, top_p 1.0 with up to 32,768 new tokens
  (github.com/rednote-hilab/dots.mocr dots_mocr/parser.py DotsMOCRParser defaults at 23f3e56);
  polyocr decodes greedily as for dots.ocr. Image to SVG is sampled at temperature 0.9, top_p 1.0
  as the authors do ("SVG: low temperature often causes repetitive/looping output",
  demo/demo_vllm_svg.py).
"""

from __future__ import annotations

from typing import Any, ClassVar

from polyocr.engines.dots.engine import DotsEngine
from polyocr.engines.dots.prompts import DOTS_MOCR_MODES, PromptMode

REPO_ID = "rednote-hilab/dots.mocr"
# generation_config.json's eos as dots.mocr's derivatives carry it (module docstring).
END_TOKENS = ("<|endoftext|>", "<|assistant|>", "<|endofassistant|>")


class DotsMOCREngine(DotsEngine):
    name = "dots-mocr"
    description = (
        "dots.mocr (rednote-hilab, dots.ocr-1.5, 3B VLM): layout, text, HTML tables and LaTeX formulas in one "
        "pass; web-page layout, scene-text spotting and image-to-SVG modes"
    )
    repo_id = REPO_ID
    notes: ClassVar[str] = (
        "weights: rednote-hilab/dots.mocr (the dots.ocr architecture, about 6.1 GB in bf16); licence: MIT with the "
        "'dots.mocr LICENSE AGREEMENT' (model card: license mit); prompt modes beyond the four tasks via "
        "[engines.dots-mocr] generation.prompt_mode = web_parsing | scene_spotting | image_to_svg (the authors "
        "recommend rednote-hilab/dots.mocr-svg, the same architecture, for SVG); long or dense pages can end "
        "truncated at the token limit (then partial, complete elements kept)"
    )
    modes: ClassVar[frozenset[PromptMode]] = DOTS_MOCR_MODES
    mode_generation: ClassVar[dict[PromptMode, dict[str, Any]]] = {
        PromptMode.IMAGE_TO_SVG: {"temperature": 0.9, "top_p": 1.0},  # demo/demo_vllm_svg.py
    }
    end_tokens: ClassVar[tuple[str, ...] | None] = END_TOKENS
