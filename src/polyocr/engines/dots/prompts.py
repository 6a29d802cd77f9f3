"""dots.ocr's and dots.mocr's prompt modes, with the texts the models were trained on.

The four dots.ocr texts are copied character for character from the reference repository
github.com/rednote-hilab/dots.ocr, file dots_ocr/utils/prompts.py, dict_promptmode_to_prompt keys
prompt_layout_all_en, prompt_layout_only_en, prompt_ocr and prompt_grounding_ocr (commit be77dff,
the 2025-07-30 release; unchanged in b06a781 of 2026-02-16). The model answers noticeably worse to
paraphrases, so these strings must not be edited, re-wrapped or re-indented.

dots.mocr (dots.ocr-1.5, renamed 2026-03-19) keeps those four texts unchanged and adds
prompt_web_parsing, prompt_scene_spotting, prompt_image_to_svg and prompt_general: added to
dots_ocr/utils/prompts.py in b06a781 ("updata inference demo", 2026-02-16, with the dots.ocr-1.5
demos) and identical in github.com/rednote-hilab/dots.mocr dots_mocr/utils/prompts.py at 23f3e56
(2026-03-20). prompt_general (free visual QA: a user question, and the only mode whose request
carries the system prompt "You are a helpful assistant.", dots_mocr/parser.py _inference_with_vllm)
is not offered: polyocr has no task that carries a question.
"""

# ruff: noqa: E501  (the prompt texts are kept on their original lines)

from __future__ import annotations

from collections.abc import Sequence
from enum import StrEnum

from polyocr.types import TaskKind


class PromptMode(StrEnum):
    LAYOUT_ALL = "layout_all"  # boxes, categories and text as one JSON list (the default)
    LAYOUT_ONLY = "layout_only"  # boxes and categories, no text
    OCR = "ocr"  # the page's text in reading order, page headers and footers skipped
    GROUNDING_OCR = "grounding_ocr"  # the text inside one box given in the prompt
    # dots.mocr only (the dots.mocr README's demos: demo_vllm.py --prompt_mode ..., demo_vllm_svg.py)
    WEB_PARSING = "web_parsing"  # a webpage screenshot's layout as JSON (parsed as layout_all is)
    SCENE_SPOTTING = "scene_spotting"  # scene text: "(x1, y1), (x2, y2), (x3, y3), (x4, y4) text" lines
    IMAGE_TO_SVG = "image_to_svg"  # SVG code that redraws the image (charts, diagrams, logos)


PROMPTS: dict[PromptMode, str] = {
    PromptMode.LAYOUT_ALL: """Please output the layout information from the PDF image, including each layout element's bbox, its category, and the corresponding text content within the bbox.

1. Bbox format: [x1, y1, x2, y2]

2. Layout Categories: The possible categories are ['Caption', 'Footnote', 'Formula', 'List-item', 'Page-footer', 'Page-header', 'Picture', 'Section-header', 'Table', 'Text', 'Title'].

3. Text Extraction & Formatting Rules:
    - Picture: For the 'Picture' category, the text field should be omitted.
    - Formula: Format its text as LaTeX.
    - Table: Format its text as HTML.
    - All Others (Text, Title, etc.): Format their text as Markdown.

4. Constraints:
    - The output text must be the original text from the image, with no translation.
    - All layout elements must be sorted according to human reading order.

5. Final Output: The entire output must be a single JSON object.
""",
    PromptMode.LAYOUT_ONLY: """Please output the layout information from this PDF image, including each layout's bbox and its category. The bbox should be in the format [x1, y1, x2, y2]. The layout categories for the PDF document include ['Caption', 'Footnote', 'Formula', 'List-item', 'Page-footer', 'Page-header', 'Picture', 'Section-header', 'Table', 'Text', 'Title']. Do not output the corresponding text. The layout result should be in JSON format.""",
    PromptMode.OCR: """Extract the text content from this image.""",
    PromptMode.GROUNDING_OCR: """Extract text from the given bounding box on the image (format: [x1, y1, x2, y2]).\nBounding Box:\n""",
    PromptMode.WEB_PARSING: """Parsing the layout info of this webpage image with format json:\n""",
    PromptMode.SCENE_SPOTTING: """Detect and recognize the text in the image.""",
    # {width} and {height} are the original image's (dots_mocr/parser.py get_prompt: origin_image.width
    # and .height replace them; demo_vllm_svg.py does the same with image.width/.height).
    PromptMode.IMAGE_TO_SVG: """Please generate the SVG code based on the image.viewBox="0 0 {width} {height}\"""",
}

# The dots.ocr modes; dots.mocr was trained on these and the three after them.
DOTS_OCR_MODES = frozenset({PromptMode.LAYOUT_ALL, PromptMode.LAYOUT_ONLY, PromptMode.OCR, PromptMode.GROUNDING_OCR})
DOTS_MOCR_MODES = frozenset(PromptMode)

TASK_MODES: dict[TaskKind, PromptMode] = {
    TaskKind.LAYOUT: PromptMode.LAYOUT_ALL,
    TaskKind.LAYOUT_ONLY: PromptMode.LAYOUT_ONLY,
    TaskKind.TEXT: PromptMode.OCR,
    TaskKind.REGION: PromptMode.GROUNDING_OCR,
}

# The task each mode answers: the default modes above, and the dots.mocr modes that can stand in for
# them (EnginePlan.generation["prompt_mode"]): a webpage's layout and an SVG (one Picture block) for
# a layout task, spotted scene text (boxed lines) for a text task.
MODE_TASKS: dict[PromptMode, TaskKind] = {
    **{mode: kind for kind, mode in TASK_MODES.items()},
    PromptMode.WEB_PARSING: TaskKind.LAYOUT,
    PromptMode.SCENE_SPOTTING: TaskKind.TEXT,
    PromptMode.IMAGE_TO_SVG: TaskKind.LAYOUT,
}


# What the model writes for each mode: a JSON list of elements with bbox, category and text
# ("layout"; "layout_only" without text), plain text ("text": OCR, and grounding's box), one
# "(x1, y1), (x2, y2), (x3, y3), (x4, y4) text" instance per text ("scene"), or SVG code ("svg")
# (dots_mocr/parser.py _parse_single_image at 23f3e56 post-processes the layout modes and web parsing
# as layout JSON, scene spotting with post_process_scene_text, image to SVG with
# extract_svg_from_response). The server's chat endpoint answers each prompt in its mode's form.
MODE_OUTPUTS: dict[PromptMode, str] = {
    PromptMode.LAYOUT_ALL: "layout",
    PromptMode.LAYOUT_ONLY: "layout_only",
    PromptMode.OCR: "text",
    PromptMode.GROUNDING_OCR: "text",
    PromptMode.WEB_PARSING: "layout",
    PromptMode.SCENE_SPOTTING: "scene",
    PromptMode.IMAGE_TO_SVG: "svg",
}


def prompt_text(mode: PromptMode, box: Sequence[float] | None = None, size: tuple[int, int] | None = None) -> str:
    """The prompt for a mode; grounding appends the box as the reference does (`str([x1, y1, x2, y2])`).

    The box must already be in the pixel coordinates of the resized image the model sees; `size` is
    the original image's (width, height), which image_to_svg writes into its viewBox.
    """
    if mode == PromptMode.GROUNDING_OCR:
        if box is None or len(box) != 4:
            raise ValueError(f"prompt mode {mode.value!r} needs a box [x1, y1, x2, y2], got {box!r}")
        return PROMPTS[mode] + str([int(v) for v in box])
    if mode == PromptMode.IMAGE_TO_SVG:
        if size is None:
            raise ValueError(f"prompt mode {mode.value!r} needs the image size for its viewBox")
        return PROMPTS[mode].replace("{width}", str(size[0])).replace("{height}", str(size[1]))
    return PROMPTS[mode]
