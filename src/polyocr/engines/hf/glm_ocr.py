"""GLM-OCR 0.9B (zai-org/GLM-OCR) as its authors run it: PP-DocLayoutV3, then the model on each region
with the prompt of the region's kind, then the SDK's result assembly.

The reference is the authors' SDK, github.com/zai-org/GLM-OCR (glmocr/, commit cef4d0e, 2026-04-21;
its default configuration is tests/fixtures/models/glm-ocr/config.yaml):
- layout (glmocr/layout/layout_detector.py, glmocr/utils/layout_postprocess_utils.py): transformers'
  PPDocLayoutV3 with its image processor and post_process_object_detection at threshold 0.3 (kept
  ">="), then the SDK's own post-processing, which differs from PaddleX's (GLM_RULES below): NMS
  (IoU 0.6 within a class, 0.98 across, on unrounded boxes), the page-sized-image filter, merge mode
  "large" for every class but "reference" ("small"), containment at 80% with image, seal and chart
  never dropped as contained, no unclip (ratio 1.0), boxes clamped and truncated; no PaddleOCR-VL
  overlap filter. Then label_task_mapping: text / table / formula regions read with that prompt,
  chart and image kept unread ("skip"), header, footer, number, footnote, aside_text, reference,
  header_image, footer_image dropped ("abandon"). Boxes go to 0-1000 integers and crops come back
  from them (image_utils.crop_image_region), so the crop is that box (`Region.crop_bbox`).
- recognition (dataloader/page_loader.py build_request_from_image): the crop resized by the SDK's
  smart_resize (28-pixel multiples, 12,544 <= 2 x h x w <= 71,372,800) with PIL bicubic and sent as
  JPEG, the image before the prompt in one user message; greedy, repetition_penalty 1.1, 8,192 tokens.
- assembly (postprocess/result_formatter.py): answers stripped, tables kept as HTML when the model
  writes `<table>...</table>`, formulas without their `$$`/`\\[`/`\\(` delimiters (LaTeX), text cleaned
  (repeated dots/underscores cut to three, a long answer's loop cut, inline `$x$` spacing) and set as
  Markdown (bullets, numbering, paragraphs); empty answers dropped; a formula_number merged into its
  formula as `\\tag{n}` and otherwise dropped; a paragraph ending in a hyphen joined to the next one
  when the joined word looks like a word (the SDK's heuristic: wordfreq is optional and not in its
  dependencies); list items between two bullets given a bullet.

polyocr's tasks: layout and text run both stages (blocks in the layout's order with its categories and
boxes in page pixels; the text is theirs in order), layout_only the detector alone, region "Text
Recognition:" on the crop. The whole page read with "Text Recognition:" and no layout (transformers'
model docs and the card's single-image usage) is kept as an option:
`[engines.glm-ocr] generation = {prompt_mode = "page"}` (the default is "layout").

Not done: the SDK's polygon crops (use_polygon is false by default), and the Markdown the SDK writes
around blocks (`# ` titles, image links): polyocr renders Markdown from the blocks' categories.
"""

from __future__ import annotations

import io
import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, ClassVar

from polyocr.engines.hf.engine import HFVLMEngine
from polyocr.engines.hf.pp_doclayout import PP_DOCLAYOUT_V3, DetectorSpec, LayoutRules, LayoutStageEngine
from polyocr.engines.hf.spec import ALL_ATTENTION, Size, VLMSpec
from polyocr.engines.hf.twostage import Region, read_regions
from polyocr.errors import EngineError
from polyocr.results import Block, TextFormat
from polyocr.scripts import CYRILLIC, HAN, HANGUL, KANA, LATIN
from polyocr.types import Task, TaskKind

if TYPE_CHECKING:
    from PIL import Image

    from polyocr.documents import Page
    from polyocr.results import PageResult

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
# glmocr/config.yaml page_loader: t_patch_size 2, patch_expand_factor 1, min_pixels 12544,
# max_pixels 71372800, image_format JPEG (what the SDK does to every image before sending it).
SDK_MIN_PIXELS, SDK_MAX_PIXELS, SDK_FACTOR = 12_544, 71_372_800, 28

# glmocr/config.yaml pipeline.layout.label_task_mapping.
LABEL_TASKS: dict[str, tuple[str, ...]] = {
    "text": (
        "abstract", "algorithm", "content", "doc_title", "figure_title", "paragraph_title",
        "reference_content", "text", "vertical_text", "vision_footnote", "seal", "formula_number",
    ),
    "table": ("table",),
    "formula": ("display_formula", "inline_formula"),
    "skip": ("chart", "image"),
    "abandon": ("header", "footer", "number", "footnote", "aside_text", "reference", "footer_image", "header_image"),
}  # fmt: skip
# pipeline.layout.layout_merge_bboxes_mode: "large" for every class id but 18 (reference), "small".
MERGE_MODES = {**dict.fromkeys(range(25), "large"), 18: "small"}
LAYOUT_THRESHOLD = 0.3  # pipeline.layout.threshold (no threshold_by_class)


def sdk_mode(label: str) -> str | None:
    """The prompt a region of this label is read with (label_task_mapping); None: kept unread.
    A label in no list is dropped by the detector (layout_detector.py), as "abandon" is."""
    for task in ("text", "table", "formula"):
        if label in LABEL_TASKS[task]:
            return task
    return None


GLM_RULES = LayoutRules(
    round_boxes=False,
    strict_threshold=False,
    merge=MERGE_MODES,
    containment=0.8,  # layout_postprocess_utils.py is_contained: >= 0.8
    preserve=frozenset({"image", "seal", "chart"}),  # apply_layout_postprocess preserve_labels
    check_before_int=True,
    overlap_filter=False,
    mode=sdk_mode,
    abandon=frozenset(LABEL_TASKS["abandon"]),
    # result_formatter label_visualization_mapping: a seal is read and shown as text
    categories={"seal": "Text"},
)
GLM_LAYOUT: DetectorSpec = replace(PP_DOCLAYOUT_V3, thresholds=LAYOUT_THRESHOLD, rules=GLM_RULES)


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


def sdk_size(width: int, height: int) -> tuple[int, int]:
    """glmocr/utils/image_utils.py smart_resize(t=2, h, w, t_factor=2, 28, 28, min, max): (w, h)."""
    t = GLM_TEMPORAL_FRAMES
    h_bar, w_bar = round(height / SDK_FACTOR) * SDK_FACTOR, round(width / SDK_FACTOR) * SDK_FACTOR
    if t * h_bar * w_bar > SDK_MAX_PIXELS:
        beta = math.sqrt(t * height * width / SDK_MAX_PIXELS)
        h_bar = math.floor(height / beta / SDK_FACTOR) * SDK_FACTOR
        w_bar = math.floor(width / beta / SDK_FACTOR) * SDK_FACTOR
    elif t * h_bar * w_bar < SDK_MIN_PIXELS:
        beta = math.sqrt(SDK_MIN_PIXELS / (t * height * width))
        h_bar = math.ceil(height * beta / SDK_FACTOR) * SDK_FACTOR
        w_bar = math.ceil(width * beta / SDK_FACTOR) * SDK_FACTOR
    return w_bar, h_bar


def sdk_image(image: Image.Image) -> Image.Image:
    """The image the SDK sends (image_utils.py load_image_to_base64): RGB, resized to sdk_size with
    PIL bicubic, encoded as JPEG (PIL's default quality) and decoded again, as the server sees it."""
    from PIL import Image as PILImage

    rgb = image.convert("RGB")
    resized = rgb.resize(sdk_size(*rgb.size), PILImage.Resampling.BICUBIC)
    buffer = io.BytesIO()
    resized.save(buffer, format="JPEG")
    return PILImage.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def sdk_crop_box(bbox: tuple[float, float, float, float], size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The box the SDK crops: the layout box as 0-1000 integers (layout_detector.py process) scaled
    back and truncated (image_utils.py crop_image_region)."""
    width, height = size
    x1, y1, x2, y2 = (int(v / d * 1000) for v, d in zip(bbox, (width, height, width, height), strict=True))
    return (
        float(int(x1 * width / 1000)),
        float(int(y1 * height / 1000)),
        float(int(x2 * width / 1000)),
        float(int(y2 * height / 1000)),
    )


# ---------------------------------------------------------------------------- result assembly
# glmocr/postprocess/result_formatter.py and glmocr/utils/result_postprocess_utils.py


def _consecutive_repeat(text: str, unit: int = 10, repeats: int = 10) -> str | None:
    """find_consecutive_repeat: a unit of >= 10 characters repeated >= 10 times kept once."""
    if len(text) < unit * repeats or len(text) // repeats < unit:
        return None
    pattern = "(.{" + f"{unit},{len(text) // repeats}" + "}?)\\1{" + f"{repeats - 1}" + ",}"
    match = re.search(pattern, text, re.DOTALL)
    return text[: match.start()] + match.group(1) if match else None


def clean_repeated(content: str, threshold: int = 10) -> str:
    """clean_repeated_content: a runaway repeat cut (consecutive, then a line filling >= 80% of
    >= 10 lines, cut after its first run of three)."""
    stripped = content.strip()
    if not stripped:
        return content
    if len(stripped) > 100:
        cut = _consecutive_repeat(stripped)
        if cut is not None:
            return cut
    lines = [line.strip() for line in content.split("\n") if line.strip()]
    if len(lines) >= threshold:
        common, count = Counter(lines).most_common(1)[0]
        if count >= threshold and count / len(lines) >= 0.8:
            for i, line in enumerate(lines):
                if line == common:
                    if sum(1 for j in range(i, min(i + 3, len(lines))) if lines[j] == common) >= 3:
                        seen = 0
                        original = content.split("\n")
                        for k, raw in enumerate(original):
                            if raw.strip():
                                seen += 1
                                if seen == i + 1:
                                    return "\n".join(original[: k + 1])
                    break
    return content


_INLINE = re.compile(r"(?<!\$)\$\s*((?:[^$\\]|\\.)+?)\s*\$(?!\$)")


def normalize_inline_formula(content: str) -> str:
    """normalize_inline_formula: `$ x $` -> `$x$`, a space between it and a letter or digit beside it."""
    if "$" not in content:
        return content
    parts: list[str] = []
    last = 0
    for match in _INLINE.finditer(content):
        formula = match.group(1).strip()
        if not formula:
            continue
        before = content[last : match.start()]
        if before and before[-1].isalnum():
            before += " "
        parts += [before, f"${formula}$"]
        if match.end() < len(content) and content[match.end()].isalnum():
            parts.append(" ")
        last = match.end()
    if not parts:
        return content
    return "".join(parts) + content[last:]


def clean_content(content: str) -> str:
    """ResultFormatter._clean_content."""
    content = re.sub(r"^(\\t)+", "", content).lstrip()
    content = re.sub(r"(\\t)+$", "", content).rstrip()
    for unit in (r"(\.)", r"(·)", r"(_)", r"(\\_)"):
        content = re.sub(unit + r"\1{2,}", r"\1\1\1", content)
    if len(content) >= 2048:
        content = clean_repeated(content)
    return normalize_inline_formula(content).strip()


def finish_element(region: Region, answer: str) -> tuple[str, TextFormat]:
    """A region's answer as ResultFormatter._format_content formats it, as block text and format."""
    content = answer.strip()  # _workers.py: content.strip()
    if region.mode == "table":
        if content.startswith("<table") and content.endswith("</table>"):
            return content, TextFormat.HTML
        return clean_content(content), TextFormat.PLAIN
    if region.mode == "formula":
        if not (content.startswith("$$") and content.endswith("$$")):
            content = clean_content(content)
        if content.startswith(("$$", "\\[", "\\(")):
            content = content[2:].strip()
        if content.endswith(("$$", "\\]", "\\)")):
            content = content[:-2].strip()
        return content, TextFormat.LATEX
    content = clean_content(content)
    # Titles: the SDK writes "# " / "## " itself; polyocr's Markdown does from the category.
    if region.label == "doc_title":
        content = re.sub(r"^#+\s*", "", content)
    elif region.label == "paragraph_title":
        if content.startswith(("- ", "* ")):
            content = content[2:].lstrip()
        content = re.sub(r"^#+\s*", "", content).lstrip()
    if content.startswith("```") and not content.endswith("```"):
        content += "\n```"
    if content.startswith(("·", "•", "* ")):
        content = "- " + content[1:].lstrip()
    match = re.match(r"^(\(|\（)(\d+|[A-Za-z])(\)|\）)(.*)$", content)
    if match:
        content = f"({match.group(2)}) {match.group(4).lstrip()}"
    match = re.match(r"^(\d+|[A-Za-z])(\.|\)|\）)(.*)$", content)
    if match:
        separator = ")" if match.group(2) == "）" else match.group(2)
        content = f"{match.group(1)}{separator} {match.group(3).lstrip()}"
    content = re.sub(r"(?<!\n)\n(?!\n)", "\n\n", content)
    return content, TextFormat.MARKDOWN


def _formula_number(text: str) -> str:
    """clean_formula_number: "(1)" or "（2.1）" -> "1", "2.1"."""
    text = text.strip()
    if (text.startswith("(") and text.endswith(")")) or (text.startswith("（") and text.endswith("）")):
        return text[1:-1]
    return text


def _tagged(formula: Block, number: Block) -> Block:
    return formula.model_copy(update={"text": f"{formula.text} \\tag{{{_formula_number(number.text)}}}"})


def merge_formula_numbers(pairs: list[tuple[Region, Block]]) -> list[tuple[Region, Block]]:
    """ResultFormatter._merge_formula_numbers: a formula_number beside a formula (either side) becomes
    its \\tag{}; a formula_number beside none is dropped."""
    out: list[tuple[Region, Block]] = []
    skip: set[int] = set()
    for i, (region, block) in enumerate(pairs):
        if i in skip:
            continue
        after = pairs[i + 1] if i + 1 < len(pairs) else None
        if region.label == "formula_number":
            if after is not None and after[0].mode == "formula":
                out.append((after[0], _tagged(after[1], block)))
                skip.add(i + 1)
            continue
        if region.mode == "formula" and after is not None and after[0].label == "formula_number":
            out.append((region, _tagged(block, after[1])))
            skip.add(i + 1)
            continue
        out.append((region, block))
    return out


def _looks_like_a_word(word: str) -> bool:
    """ResultFormatter._is_likely_valid_merged_word without wordfreq (not an SDK dependency)."""
    token = word.strip().lower()
    return bool(re.fullmatch(r"[a-z][a-z'\-]{2,30}", token)) and "--" not in token and "''" not in token


def merge_hyphenated(pairs: list[tuple[Region, Block]]) -> list[tuple[Region, Block]]:
    """ResultFormatter._merge_text_blocks: a text block ending in "-" joined to the next text block
    when that starts in lower case and the joined word looks like a word."""
    out: list[tuple[Region, Block]] = []
    skip: set[int] = set()
    for i, (region, block) in enumerate(pairs):
        if i in skip:
            continue
        text = block.text.rstrip()
        if region.mode != "text" or not text.endswith("-"):
            out.append((region, block))
            continue
        merged = False
        for j in range(i + 1, len(pairs)):
            if pairs[j][0].mode != "text":
                continue
            following = pairs[j][1].text.lstrip()
            before, after = text[:-1].split(), following.split()
            if following and following[0].islower() and before and after and _looks_like_a_word(before[-1] + after[0]):
                out.append((region, block.model_copy(update={"text": text[:-1] + following})))
                skip.add(j)
                merged = True
            break
        if not merged:
            out.append((region, block))
    return out


def bullet_list_items(pairs: list[tuple[Region, Block]], size: tuple[int, int]) -> list[Block]:
    """ResultFormatter._format_bullet_points: a "text" block between two bulleted "text" blocks whose
    left edges are within 10 (of 1000) of its own gets a bullet too."""
    blocks = [block for _, block in pairs]
    width = size[0] or 1
    for i in range(1, len(pairs) - 1):
        (prev_r, prev), (cur_r, cur), (next_r, nxt) = pairs[i - 1], pairs[i], pairs[i + 1]
        if not all(r.label == "text" for r in (prev_r, cur_r, next_r)) or cur.text.startswith("- "):
            continue
        if not (prev.text.startswith("- ") and nxt.text.startswith("- ")):
            continue
        left = [int((r.crop_bbox or r.bbox)[0] / width * 1000) for r in (prev_r, cur_r, next_r)]
        if abs(left[1] - left[0]) <= 10 and abs(left[1] - left[2]) <= 10:
            blocks[i] = cur.model_copy(update={"text": "- " + cur.text})
    return blocks


def assemble_page(pairs: list[tuple[Region, Block]], size: tuple[int, int]) -> list[Block]:
    """ResultFormatter.process after the per-region formatting (empty answers already dropped)."""
    return bullet_list_items(merge_hyphenated(merge_formula_numbers(pairs)), size)


GLM_OCR = VLMSpec(
    name="glm-ocr",
    repo_id="zai-org/GLM-OCR",
    description="GLM-OCR 0.9B (transformers native) with PP-DocLayoutV3: layout, order, tables (HTML), formulas",
    model_class="GlmOcrForConditionalGeneration",
    processor_class="Glm46VProcessor",  # the checkpoint's preprocessor_config.json processor_class
    module="glm_ocr",
    prompts=GLM_PROMPTS,
    template=None,  # the checkpoint's chat template
    attention={"": ALL_ATTENTION, "vision_config": ALL_ATTENTION, "text_config": ALL_ATTENTION},
    # config.json text_config.eos_token_id [59246, 59253]: <|endoftext|> and <|user|>
    stop_tokens=("<|endoftext|>", "<|user|>"),
    parse_layout=None,
    markdown_format=TextFormat.PLAIN,  # the whole-page option's answer
    pixel_kwargs=glm_pixels,
    # The card's languages: zh, en, fr, es, ru, de, ja, ko.
    scripts=frozenset({LATIN, CYRILLIC, HAN, KANA, HANGUL}),
    notes=(
        "MIT licence; two stages as its SDK runs it: PP-DocLayoutV3 (PaddlePaddle/PP-DocLayoutV3_safetensors, "
        "or a layout/ folder in --model DIR) with the SDK's thresholds and label mapping (headers, footers, "
        'footnotes dropped), then one call per region; [engines.glm-ocr] generation.prompt_mode = "page" '
        "reads the whole page instead"
    ),
    image_only=True,  # Glm46VProcessor's video processor needs torchvision
    generation=GLM_GENERATION,
    max_new_tokens=GLM_MAX_NEW_TOKENS,
    prepare_image=sdk_image,
)

PIPELINES = ("layout", "page")


class GlmOcrEngine(LayoutStageEngine):
    spec = GLM_OCR
    detector: ClassVar[DetectorSpec] = GLM_LAYOUT
    # The authors decode every request with repetition_penalty 1.1: the loop ladder keeps it.
    anti_repeat: ClassVar[dict[str, object]] = dict(GLM_GENERATION)

    def pipeline(self) -> str:
        """ "layout" (the SDK's two stages, the default) or "page" (the whole page, no layout stage)."""
        chosen = str(self.plan.generation.get("prompt_mode") or "layout")
        if chosen not in PIPELINES:
            raise EngineError(
                self.name,
                f"unknown prompt_mode {chosen!r}; set [engines.{self.name}] generation.prompt_mode to "
                f"{' or '.join(PIPELINES)}",
            )
        return chosen

    def recognize(self, pages: Sequence[Page], task: Task) -> list[PageResult]:
        if task.kind in (TaskKind.TEXT, TaskKind.LAYOUT) and self.pipeline() == "page":
            return HFVLMEngine.recognize(self, pages, task)
        return super().recognize(pages, task)

    def read_elements(self, pages: Sequence[Page], regions: list[list[Region]], task: Task) -> list[PageResult]:
        cropped = [
            [replace(r, crop_bbox=sdk_crop_box(r.bbox, page.image.size)) for r in page_regions]
            for page, page_regions in zip(pages, regions, strict=True)
        ]
        return read_regions(self, pages, cropped, task, finish=finish_element, assemble=assemble_page)
