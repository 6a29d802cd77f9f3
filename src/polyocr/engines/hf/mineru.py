"""MinerU2.5 (opendatalab/MinerU2.5-2509-1.2B, Qwen2-VL architecture): its two stages as its authors run
them, the prompts, the layout and table parsers, and the post-processing polyocr keeps.

The reference is opendatalab/mineru-vl-utils (tag mineru_vl_utils-0.1.22-released, the 0.1 series
released with the 2509 model; mineru_vl_utils/ paths below are in it, and HEAD keeps every constant
named here) and the MinerU2.5 report (arXiv 2509.22186):
- stage 1, layout: the whole page resized to 1036 x 1036 px, bicubic, aspect not kept
  (mineru_client.py MinerUClient layout_image_size, MinerUClientHelper.prepare_for_layout), prompt
  "\\nLayout Detection:"; the answer is one region a line,
  `<|box_start|>x1 y1 x2 y2<|box_end|><|ref_start|>type<|ref_end|><|rotate_up|>` with coordinates in
  0..1000 of the page (parse_layout_output, _convert_bbox: divided by 1000; boxes outside 0..1000 or
  empty are dropped; unknown types dropped);
- stage 2, elements: each region cropped from the original page (prepare_for_extract: bbox x page
  size), turned back by its angle (`Image.rotate(angle, expand=True)`), padded to an edge ratio of at
  most 50 and scaled up to a 28 px shortest edge (resize_by_need), and read with its type's prompt
  (DEFAULT_PROMPTS: table "\\nTable Recognition:", equation "\\nFormula Recognition:", everything else
  "\\nText Recognition:"); image, list and equation_block regions are not read (skip_list);
- every request: system prompt "You are a helpful assistant." then the image then the prompt
  (vlm_client/base_client.py DEFAULT_SYSTEM_PROMPT, transformers_client.py build_messages), greedy
  (MinerUSamplingParams temperature 0, top_k 1: do_sample False), no_repeat_ngram_size 100 (the
  transformers backend passes it to generate(); presence/frequency penalties reach only vLLM), up to
  the model's max_position_embeddings in all (build_generate_kwargs: max_length);
- post-processing (post_process/__init__.py): tables from OTSL to HTML (otsl2html.py), four of the
  six LaTeX repairs (repair_latex), the equations
  an equation_block covers (> 0.9 of their area) combined into one `\\begin{array}{l} .. \\end{array}`
  (equation_block.py), equation_block regions dropped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from polyocr.engines.hf import twostage
from polyocr.engines.hf.engine import HFVLMEngine
from polyocr.engines.hf.otsl import otsl_to_html, pad_to_longest
from polyocr.engines.hf.spec import QWEN_COMMON, Size, VLMSpec, qwen_pixels
from polyocr.errors import EngineError
from polyocr.results import Block, Generation, PageResult, PageStatus, TextFormat
from polyocr.scripts import HAN, LATIN
from polyocr.types import Task, TaskKind

if TYPE_CHECKING:
    from PIL import Image

    from polyocr.documents import Page

SYSTEM_PROMPT = "You are a helpful assistant."  # vlm_client/base_client.py DEFAULT_SYSTEM_PROMPT
# mineru_client.py DEFAULT_PROMPTS
# polyocr's mode names for them (VLMSpec.prompts keys; the element stage reads a region with its mode).
PROMPTS: Mapping[str, str] = {
    "layout": "\nLayout Detection:",
    "text": "\nText Recognition:",
    "table": "\nTable Recognition:",
    "formula": "\nFormula Recognition:",
}
# MinerU's region type -> the mode that reads it (prepare_for_extract: table and equation have their
# own prompts, every other type the default; skip_list types are kept unread).
MODES: Mapping[str, str] = {"table": "table", "equation": "formula"}
LAYOUT_IMAGE_SIZE = (1036, 1036)  # MinerUClient layout_image_size
MIN_IMAGE_EDGE = 28  # MinerUClient min_image_edge
MAX_IMAGE_EDGE_RATIO = 50.0  # MinerUClient max_image_edge_ratio
NO_REPEAT_NGRAM_SIZE = 100  # MinerUSamplingParams no_repeat_ngram_size
SKIP_TYPES = frozenset({"image", "list", "equation_block"})  # prepare_for_extract skip_list
# structs.py BLOCK_TYPES (the 2509 model's layout vocabulary).
BLOCK_TYPES = frozenset(
    {
        "text",
        "title",
        "table",
        "image",
        "code",
        "header",
        "footer",
        "page_number",
        "page_footnote",
        "aside_text",
        "equation",
        "equation_block",
        "ref_text",
        "table_caption",
        "image_caption",
        "table_footnote",
        "image_footnote",
        "algorithm",
        "code_caption",
        "list",
        "phonetic",
        "unknown",
    }
)
ANGLES = {"<|rotate_up|>": 0, "<|rotate_right|>": 90, "<|rotate_down|>": 180, "<|rotate_left|>": 270}
# MinerU's types as polyocr's categories (structs.py BlockType's comments say what each is: title is a
# paragraph heading, aside_text margin text, ref_text one reference entry, unknown an unknown block).
CATEGORIES: Mapping[str, str] = {
    "text": "Text",
    "title": "Section-header",
    "table": "Table",
    "image": "Picture",
    # 0.1.22 reads an unknown region with the text prompt (it is not in skip_list); HEAD, for later
    # models, treats it as an image.
    "unknown": "Text",
    "code": "Text",
    "algorithm": "Text",
    "header": "Page-header",
    "footer": "Page-footer",
    "page_number": "Page-footer",
    "page_footnote": "Footnote",
    "aside_text": "Text",
    "equation": "Formula",
    "equation_block": "Formula",
    "ref_text": "List-item",
    "list": "List-item",
    "phonetic": "Text",
    "table_caption": "Caption",
    "image_caption": "Caption",
    "code_caption": "Caption",
    "table_footnote": "Footnote",
    "image_footnote": "Footnote",
}

# mineru_client.py _layout_re (HEAD's form, which also reads regions not split by newlines; 0.1.22
# matched the same fields line by line).
_LAYOUT = re.compile(
    r"<\|box_start\|>(\d+)\s+(\d+)\s+(\d+)\s+(\d+)<\|box_end\|><\|ref_start\|>(\w+?)<\|ref_end\|>"
    r"(.*?)(?=<\|box_start\|>|$)",
    re.DOTALL,
)


@dataclass(frozen=True)
class LayoutLine:
    """One region of stage 1's answer: MinerU's type, its box relative to the page (0..1), its angle."""

    type: str
    box: tuple[float, float, float, float]
    angle: int | None = None


def parse_layout(output: str) -> list[LayoutLine]:
    """Stage 1's answer as regions in reading order (parse_layout_output, _convert_bbox, _parse_angle)."""
    lines = []
    for match in _LAYOUT.finditer(output):
        x1, y1, x2, y2 = (int(v) for v in match.groups()[:4])
        kind, tail = match[5].lower(), match[6]
        if any(v < 0 or v > 1000 for v in (x1, y1, x2, y2)):
            continue
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        if x1 == x2 or y1 == y2 or kind not in BLOCK_TYPES:
            continue
        angle = next((a for token, a in ANGLES.items() if token in tail), None)
        lines.append(LayoutLine(kind, (x1 / 1000, y1 / 1000, x2 / 1000, y2 / 1000), angle))
    return lines


def regions(lines: Sequence[LayoutLine], size: Size) -> list[twostage.Region]:
    """Stage 1's regions for the element stage: boxes in page pixels rounded as PIL's crop rounds them
    (prepare_for_extract crops `bbox x page size`), MinerU's types as polyocr categories and modes."""
    width, height = size
    out = []
    for order, line in enumerate(lines):
        x1, y1, x2, y2 = line.box
        box = (float(round(x1 * width)), float(round(y1 * height)), float(round(x2 * width)), float(round(y2 * height)))
        mode = None if line.type in SKIP_TYPES else MODES.get(line.type, "text")
        out.append(twostage.Region(bbox=box, category=CATEGORIES[line.type], label=line.type, order=order, mode=mode))
    return out


def layout_image(page: Image.Image) -> Image.Image:
    """prepare_for_layout: RGB, resized to 1036 x 1036, bicubic."""
    from PIL import Image as PILImage

    return page.convert("RGB").resize(LAYOUT_IMAGE_SIZE, PILImage.Resampling.BICUBIC)


def element_image(piece: Image.Image, angle: int | None) -> Image.Image:
    """prepare_for_extract after the crop: turned upright by the region's angle (`rotate(angle,
    expand=True)`), then resize_by_need: an over-long strip padded (white, centred) to an edge ratio of
    50, a thin one scaled up to a 28 px shortest edge (bicubic)."""
    from PIL import Image as PILImage

    if angle in (90, 180, 270):
        piece = piece.rotate(angle, expand=True)
    if max(piece.size) / min(piece.size) > MAX_IMAGE_EDGE_RATIO:
        width, height = piece.size
        if width > height:
            new = (width, math.ceil(width / MAX_IMAGE_EDGE_RATIO))
        else:
            new = (math.ceil(height / MAX_IMAGE_EDGE_RATIO), height)
        canvas = PILImage.new(piece.mode, new, (255, 255, 255))
        canvas.paste(piece, (int((new[0] - width) / 2), int((new[1] - height) / 2)))
        piece = canvas
    if min(piece.size) < MIN_IMAGE_EDGE:
        scale = MIN_IMAGE_EDGE / min(piece.size)
        piece = piece.resize(
            (math.ceil(piece.width * scale), math.ceil(piece.height * scale)), PILImage.Resampling.BICUBIC
        )
    return piece


def finish(region: twostage.Region, answer: str) -> tuple[str, TextFormat]:
    """An element's answer as block text (post_process simple_process): tables from OTSL to HTML (rows
    padded to the longest, an answer that already is a table kept), formulas as bare LaTeX, text as is."""
    text = answer.strip()
    if region.mode == "table":
        table = text if text.startswith("<table") and text.endswith("</table>") else otsl_to_html(text, pad_to_longest)
        return (table, TextFormat.HTML) if table else (text, TextFormat.PLAIN)
    if region.mode == "formula":
        return latex_body(repair_latex(text)), TextFormat.LATEX
    return text, TextFormat.PLAIN


_DOUBLE_SUBSCRIPT = re.compile(r"_\s*\{([^{}]|\{[^{}]*\})*\}\s*_\s*\{([^{}]|\{[^{}]*\})*\}")


def repair_latex(latex: str) -> str:
    """Four of post_process/__init__.py _process_equation's six repairs, in its order: a double
    subscript `_{a}_{b}` removed (equation_double_subscript.py), `\\eqqcolon` -> `=:` and `\\coloneqq` ->
    `:=` (equation_fix_eqqcolon.py), a space after every `<` (equation_leq.py), braces without a partner
    dropped, escaped ones ignored (equation_unbalanced_braces.py). equation_left_right.py and
    equation_big.py (\\left/\\right pairing, \\big sizes; 850 lines) are not done."""
    latex = _DOUBLE_SUBSCRIPT.sub("", latex)
    latex = latex.replace("\\eqqcolon", "=:").replace("\\coloneqq", ":=")
    latex = latex.replace("<", "< ")
    return _balanced_braces(latex)


def _balanced_braces(latex: str) -> str:
    open_at: list[int] = []
    unmatched: set[int] = set()
    for i, char in enumerate(latex):
        if char not in "{}":
            continue
        j = i
        while j > 0 and latex[j - 1] == "\\":
            j -= 1
        if (i - j) % 2:
            continue  # an escaped brace
        if char == "{":
            open_at.append(i)
        elif open_at:
            open_at.pop()
        else:
            unmatched.add(i)
    unmatched.update(open_at)
    return "".join(c for i, c in enumerate(latex) if i not in unmatched)


def latex_body(content: str) -> str:
    """A formula's LaTeX without the display delimiters the model writes (`\\[ .. \\]`): polyocr's
    Formula blocks hold the bare LaTeX (formats/markdown.py adds its own)."""
    text = content.strip()
    if text.startswith("\\[") and text.endswith("\\]"):
        text = text[2:-2]
    return text.strip()


def _covered(inner: Sequence[float], outer: Sequence[float]) -> float:
    """The share of `inner`'s area inside `outer` (equation_block.py _bbox_cover_ratio)."""
    w = max(0.0, min(inner[2], outer[2]) - max(inner[0], outer[0]))
    h = max(0.0, min(inner[3], outer[3]) - max(inner[1], outer[1]))
    area = (inner[2] - inner[0]) * (inner[3] - inner[1])
    return w * h / area if area else 0.0


def combine_equation_blocks(labelled: Sequence[tuple[str, Block]]) -> list[Block]:
    """equation_block.py do_handle_equation_block over (MinerU type, block) in reading order: an
    equation_block covering more than one equation (> 0.9 of each one's area) becomes one Formula
    `\\begin{array}{l} a \\\\ b \\\\ \\end{array}` in its place, those equations dropped (several
    \\tag{x} become (x)); equation_blocks then go (post_process drops them anyway)."""
    spans: dict[int, list[int]] = {}
    for i, (kind, block) in enumerate(labelled):
        if kind != "equation_block" or block.bbox is None:
            continue
        inside = [
            j
            for j, (k, b) in enumerate(labelled)
            if k == "equation" and b.bbox is not None and _covered(b.bbox, block.bbox) > 0.9
        ]
        if len(inside) > 1:
            spans[i] = inside
    used = {j for inside in spans.values() for j in inside}
    out = []
    for i, (kind, block) in enumerate(labelled):
        if i in used:
            continue
        if i in spans:
            contents = [labelled[j][1].text for j in spans[i]]
            if sum(len(re.findall(r"\\tag\s*\{[^}]*\}", c)) for c in contents) > 1:
                contents = [re.sub(r"\\tag\s*\{([^}]*)\}", r"(\1)", c) for c in contents]
            body = "\\begin{array}{l} " + "".join(c + " \\\\ " for c in contents) + "\\end{array}"
            out.append(block.model_copy(update={"category": "Formula", "text": body, "format": TextFormat.LATEX}))
        elif kind != "equation_block":
            out.append(block)
    return out


MINERU = VLMSpec(
    name="mineru",
    repo_id="opendatalab/MinerU2.5-2509-1.2B",
    description="MinerU2.5 1.2B (transformers native, Qwen2-VL): layout on a 1036 px page, then each region read",
    model_class="Qwen2VLForConditionalGeneration",
    processor_class="Qwen2VLProcessor",
    module="qwen2_vl",
    prompts=PROMPTS,
    parse_layout=None,  # two stages: MinerUEngine.recognize
    # The checkpoint's own preprocessor limits (MinerUClient passes none); the plan can lower them.
    pixel_kwargs=qwen_pixels(10**9),
    generation={"no_repeat_ngram_size": NO_REPEAT_NGRAM_SIZE},
    system_prompt=SYSTEM_PROMPT,
    notes=(
        "two stages as its authors run them (layout on the page at 1036x1036, then text, table and "
        "formula recognition on each region cropped from the full page); tables as HTML, formulas as "
        "LaTeX; images and lists kept as boxes; AGPL-3.0 (as docs.voxel51.com lists its model card)"
    ),
    **{**QWEN_COMMON, "scripts": frozenset({LATIN, HAN})},
)


class MinerUEngine(HFVLMEngine):
    spec = MINERU
    # The authors decode every request with no_repeat_ngram_size 100; loop retries keep it.
    anti_repeat: ClassVar[dict[str, object]] = {"no_repeat_ngram_size": NO_REPEAT_NGRAM_SIZE}

    def decode(self, tokens: Sequence[int], skip_special_tokens: bool = True) -> str:
        """transformers_client.py _predict_one_batch: bos/eos/pad ids dropped, the rest decoded with
        the special tokens kept (the layout's box and type tags are special tokens)."""
        tokenizer = self._processor.tokenizer
        drop = {tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id, *self._stop_ids}
        return str(tokenizer.decode([t for t in tokens if t not in drop], skip_special_tokens=False))

    def generation_settings(self, task: Task, prompt_tokens: int) -> dict[str, Any]:
        """The shared settings, with new tokens capped by the model's context as the authors cap them
        (build_generate_kwargs: max_length = config max_position_embeddings, prompt included)."""
        settings = super().generation_settings(task, prompt_tokens)
        config = self._model.config
        context = getattr(getattr(config, "text_config", config), "max_position_embeddings", None)
        if context:
            settings["max_new_tokens"] = max(1, min(settings["max_new_tokens"], int(context) - prompt_tokens))
        return settings

    def recognize(self, pages: Sequence[Page], task: Task) -> list[PageResult]:
        if self._model is None:
            raise EngineError(self.name, "recognize() called before load()")
        if task.kind == TaskKind.REGION:
            if task.region is None:
                raise EngineError(self.name, "a region task needs task.region")
            box = task.region
            region = twostage.Region(bbox=box, category="Text", label="text", order=0, mode="text")
            prepare = lambda r, piece: element_image(piece, None)  # noqa: E731
            return twostage.read_regions(self, pages, [[region]] * len(pages), task, prepare=prepare, finish=finish)
        results: list[PageResult] = []
        step = max(1, self.plan.batch_size)
        for start in range(0, len(pages), step):
            results.extend(self._two_stages(pages[start : start + step], task))
        return results

    def _two_stages(self, pages: Sequence[Page], task: Task) -> list[PageResult]:
        layout = self._generate([layout_image(page.image) for page in pages], "layout", task)
        lines = [parse_layout(self.decode(tokens)) for tokens, _ in layout]
        found = [regions(page_lines, page.image.size) for page, page_lines in zip(pages, lines, strict=True)]
        if task.kind == TaskKind.LAYOUT_ONLY:
            return [
                _with_layout(twostage.layout_only(page, page_regions, self.name), generation)
                for page, page_regions, (_, generation) in zip(pages, found, layout, strict=True)
            ]
        angles = {id(r): line.angle for page_regions, page_lines in zip(found, lines, strict=True)
                  for r, line in zip(page_regions, page_lines, strict=True)}  # fmt: skip
        read = twostage.read_regions(
            self,
            pages,
            found,
            task,
            prepare=lambda r, piece: element_image(piece, angles[id(r)]),
            finish=finish,
            # each block with the MinerU type of its region, for the equation-block merge
            assemble=lambda pairs, size: combine_equation_blocks([(region.label, block) for region, block in pairs]),
        )
        return [_with_layout(result, generation) for result, (_, generation) in zip(read, layout, strict=True)]


def _with_layout(result: PageResult, layout: Generation) -> PageResult:
    """The page's report with its layout pass counted: tokens and time added, the worse stop reason."""
    elements = result.generation
    if elements is None:
        generation = layout
    else:
        generation = elements.model_copy(
            update={
                "stop_reason": twostage.worst_stop([layout.stop_reason, elements.stop_reason]),
                "prompt_tokens": layout.prompt_tokens + elements.prompt_tokens,
                "generated_tokens": layout.generated_tokens + elements.generated_tokens,
                "seconds": round((layout.seconds or 0.0) + (elements.seconds or 0.0), 3),
                "nonfinite_logits": layout.nonfinite_logits or elements.nonfinite_logits,
            }
        )
    status = PageStatus.OK if generation.stop_reason == "eos" else PageStatus.PARTIAL
    return result.model_copy(update={"generation": generation, "status": status})
