"""dots.ocr's prompt modes, with the texts the model was trained on.

The four texts are copied character for character from the reference repository
github.com/rednote-hilab/dots.ocr, file dots_ocr/utils/prompts.py, dict_promptmode_to_prompt keys
prompt_layout_all_en, prompt_layout_only_en, prompt_ocr and prompt_grounding_ocr (commit be77dff,
the 2025-07-30 release; unchanged in b06a781 of 2026-02-16). The model answers noticeably worse to
paraphrases, so these strings must not be edited, re-wrapped or re-indented.
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
}

TASK_MODES: dict[TaskKind, PromptMode] = {
    TaskKind.LAYOUT: PromptMode.LAYOUT_ALL,
    TaskKind.LAYOUT_ONLY: PromptMode.LAYOUT_ONLY,
    TaskKind.TEXT: PromptMode.OCR,
    TaskKind.REGION: PromptMode.GROUNDING_OCR,
}


def prompt_text(mode: PromptMode, box: Sequence[float] | None = None) -> str:
    """The prompt for a mode; grounding appends the box as the reference does (`str([x1, y1, x2, y2])`).

    The box must already be in the pixel coordinates of the resized image the model sees.
    """
    if mode == PromptMode.GROUNDING_OCR:
        if box is None or len(box) != 4:
            raise ValueError(f"prompt mode {mode.value!r} needs a box [x1, y1, x2, y2], got {box!r}")
        return PROMPTS[mode] + str([int(v) for v in box])
    return PROMPTS[mode]
