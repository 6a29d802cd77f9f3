"""olmOCR-2 (allenai/olmOCR-2-7B-1025, Qwen2.5-VL 7B): its prompt, page rendering, front matter and
Markdown parsers, and the authors' re-run of rotated pages.

Everything follows allenai/olmocr (commit f7cfe4c of the GitHub repository; paths below are in it):
- the prompt is `build_no_anchoring_v4_yaml_prompt()` (olmocr/prompts/prompts.py), the one
  `pipeline.py build_page_query` sends and olmOCR-2 was trained on
  (olmocr/train/configs/v0.4.0/qwen25_vl_olmocrv4_rotation_1epoch_mix_1025.yaml:
  NewYamlFinetuningPromptWithNoAnchoring);
- the instruction comes before the image in the user message (build_page_query's content order;
  the training config's `InstructUserMessages: prompt_first: true`), under Qwen2.5-VL-7B-Instruct's
  chat template and processor (scripts/hf_local_test.py loads the processor from
  Qwen/Qwen2.5-VL-7B-Instruct; train/prepare_checkpoint.py);
- every page is rendered so that its longest side is 1,288 px (pipeline.py
  `--target_longest_image_dim` default 1288; data/renderpdf.py render_pdf_to_base64png; images are
  first converted to PDF, so they too end at 1,288 px);
- at most 8,000 new tokens (build_page_query MAX_TOKENS) within a 16,384-token context
  (try_single_page MODEL_MAX_CONTEXT; README `vllm serve ... --max-model-len 16384`);
- the answer is YAML front matter (primary_language, is_rotation_valid, rotation_correction, is_table,
  is_diagram) then Markdown with LaTeX equations and HTML tables (train/dataloader.py
  FrontMatterOutputFormat), parsed as train/front_matter.py FrontMatterParser does;
- a page whose front matter says its rotation is wrong is rendered again turned by the cumulative
  `rotation_correction` (PIL's counter-clockwise `Image.transpose(ROTATE_<n>)`) and read again, up
  to `--max_page_retries` 8 attempts in all (pipeline.py process_page, build_page_query).
The authors sample at temperature 0.1 and raise it on retries (TEMPERATURE_BY_ATTEMPT); polyocr
decodes greedily (the router's loop ladder raises the temperature on a looping page).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from polyocr.engines.hf.engine import HFVLMEngine, _task_image
from polyocr.engines.hf.spec import QWEN_COMMON, VLMSpec, page_result, qwen_pixels
from polyocr.errors import EngineError
from polyocr.results import Block, Generation, PageResult, TextFormat
from polyocr.types import Task, TaskKind

if TYPE_CHECKING:
    from PIL import Image

    from polyocr.documents import Page

log = logging.getLogger(__name__)

# olmocr/prompts/prompts.py build_no_anchoring_v4_yaml_prompt(), verbatim.
OLMOCR_PROMPT = (
    "Attached is one page of a document that you must process. "
    "Just return the plain text representation of this document as if you were reading it naturally. "
    "Convert equations to LateX and tables to HTML.\n"
    "If there are any figures or charts, label them with the following markdown syntax "
    "![Alt text describing the contents of the figure](page_startx_starty_width_height.png)\n"
    "Return your output as markdown, with a front matter section on top specifying values for the "
    "primary_language, is_rotation_valid, rotation_correction, is_table, and is_diagram parameters."
)
TARGET_LONGEST_IMAGE_DIM = 1288  # pipeline.py --target_longest_image_dim default
MAX_TOKENS = 8000  # pipeline.py build_page_query
MODEL_MAX_CONTEXT = 16384  # pipeline.py try_single_page
MAX_PAGE_RETRIES = 8  # pipeline.py --max_page_retries default: attempts per page in all
# olmocr/prompts/prompts.py PageResponse, natural_text aside.
FIELDS = ("primary_language", "is_rotation_valid", "rotation_correction", "is_table", "is_diagram")


@dataclass(frozen=True)
class OlmPage:
    """One answer as the authors' PageResponse: the front matter and the Markdown after it.

    `valid` is False where FrontMatterParser would raise (no front matter, a field missing or extra,
    a rotation outside 0/90/180/270): the authors then retry the page and finally fall back to
    pdftotext; polyocr keeps the answer's text and says so in `problem`.
    """

    primary_language: str | None
    is_rotation_valid: bool
    rotation_correction: int
    is_table: bool
    is_diagram: bool
    natural_text: str | None
    valid: bool
    problem: str = ""


def parse_olmocr(output: str) -> OlmPage:
    """The answer split as train/front_matter.py `_extract_front_matter_and_text` and typed as
    `_parse_front_matter` (booleans from "True"/"true", a YAML boolean language such as `no` is None)."""
    import yaml  # type: ignore[import-untyped]  # transformers requires PyYAML, so it is here with the engine

    front: Any = {}
    text = output.strip()
    problem = "no front matter"
    if output.startswith("---\n"):
        end = output.find("\n---", 4)
        if end != -1:
            try:
                front = yaml.safe_load(output[4:end]) or {}
                text = output[end + 4 :].strip()
                problem = ""
            except yaml.YAMLError as exc:
                problem = f"front matter is not YAML: {exc}"
    if not problem and not isinstance(front, dict):
        front, problem = {}, "front matter is not a mapping"
    values: dict[str, Any] = {}
    if not problem:
        missing = [f for f in FIELDS if f not in front]
        extra = sorted(set(front) - set(FIELDS))
        if missing or extra:
            problem = f"front matter fields missing {missing} or unexpected {extra}"
        else:
            values = {f: front[f] for f in FIELDS}
    language = values.get("primary_language")
    if isinstance(language, bool) or not language:
        language = None
    rotation = values.get("rotation_correction", 0)
    try:
        rotation = int(rotation)
    except (TypeError, ValueError):
        rotation, problem = 0, problem or f"rotation_correction {rotation!r} is not an integer"
    if rotation not in (0, 90, 180, 270):
        rotation, problem = 0, problem or "rotation_correction must be one of 0, 90, 180, 270"
    return OlmPage(
        primary_language=str(language) if language is not None else None,
        is_rotation_valid=_flag(values.get("is_rotation_valid", True)),
        rotation_correction=rotation,
        is_table=_flag(values.get("is_table", False)),
        is_diagram=_flag(values.get("is_diagram", False)),
        natural_text=text or None,
        valid=not problem,
        problem=problem,
    )


def _flag(value: Any) -> bool:
    return value.lower() == "true" if isinstance(value, str) else bool(value)


_TABLE = re.compile(r"<table\b.*?(?:</table>|\Z)", re.DOTALL | re.IGNORECASE)
_FIGURE = re.compile(r"^!\[(?P<alt>.*)\]\((?P<name>page_[\d_.]+\.png)\)$", re.DOTALL)
_DISPLAY = re.compile(r"^(?:\\\[(?P<a>.*)\\\]|\$\$(?P<b>.*)\$\$)$", re.DOTALL)


def markdown_blocks(text: str) -> list[Block]:
    """olmOCR's Markdown as blocks in reading order: HTML tables whole (Table, HTML), display equations
    (`\\[ \\]` or `$$ $$` alone in a paragraph: Formula, the LaTeX inside), `#` headings (Title, deeper
    ones Section-header), figure labels (Picture, the alt text; its page_x_y_w_h name is in pixels of
    a rendering the model does not see, so no box), the rest one Text block per paragraph."""
    blocks: list[Block] = []
    position = 0
    for match in _TABLE.finditer(text):
        blocks.extend(_paragraph_blocks(text[position : match.start()]))
        blocks.append(Block(category="Table", text=match.group(0).strip(), format=TextFormat.HTML))
        position = match.end()
    blocks.extend(_paragraph_blocks(text[position:]))
    return blocks


def _paragraph_blocks(text: str) -> list[Block]:
    blocks = []
    for paragraph in (p.strip() for p in re.split(r"\n\s*\n", text)):
        if not paragraph:
            continue
        if figure := _FIGURE.match(paragraph):
            blocks.append(Block(category="Picture", text=figure["alt"].strip()))
        elif display := _DISPLAY.match(paragraph):
            body = (display["a"] if display["a"] is not None else display["b"]).strip()
            blocks.append(Block(category="Formula", text=body, format=TextFormat.LATEX))
        elif heading := re.match(r"^(#{1,6})\s+\S", paragraph):
            category = "Title" if len(heading[1]) == 1 else "Section-header"
            blocks.append(Block(category=category, text=paragraph, format=TextFormat.MARKDOWN))
        else:
            blocks.append(Block(text=paragraph, format=TextFormat.MARKDOWN))
    return blocks


def render_page(image: Image.Image) -> Image.Image:
    """The page at the authors' rendering size: longest side 1,288 px (pipeline.py
    --target_longest_image_dim), larger or smaller pages alike, aspect kept."""
    from PIL import Image as PILImage

    longest = max(image.size)
    if longest == TARGET_LONGEST_IMAGE_DIM:
        return image
    scale = TARGET_LONGEST_IMAGE_DIM / longest
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, PILImage.Resampling.LANCZOS)


def rotate(image: Image.Image, degrees: int) -> Image.Image:
    """build_page_query's rotation: Image.transpose(ROTATE_90/180/270), counter-clockwise."""
    from PIL import Image as PILImage

    transpose = {
        90: PILImage.Transpose.ROTATE_90,
        180: PILImage.Transpose.ROTATE_180,
        270: PILImage.Transpose.ROTATE_270,
    }.get(degrees % 360)
    return image.transpose(transpose) if transpose is not None else image


OLMOCR = VLMSpec(
    name="olmocr",
    repo_id="allenai/olmOCR-2-7B-1025",
    description="olmOCR-2 7B (transformers native, Qwen2.5-VL): Markdown with HTML tables and LaTeX, no boxes",
    model_class="Qwen2_5_VLForConditionalGeneration",
    processor_class="Qwen2_5_VLProcessor",
    module="qwen2_5_vl",
    # One trained prompt for every task (the model has no other mode).
    prompts={"text": OLMOCR_PROMPT, "markdown": OLMOCR_PROMPT},
    parse_layout=None,
    # Qwen2.5-VL-7B-Instruct's preprocessor: 3,136..12,845,056 pixels; the 1,288 px page fits whole.
    pixel_kwargs=qwen_pixels(12_845_056),
    max_new_tokens=MAX_TOKENS,
    context_length=MODEL_MAX_CONTEXT,
    instruction_first=True,
    prepare_image=render_page,
    notes=(
        "whole pages only, rendered to 1,288 px on the longest side as its authors do; no boxes; "
        "rotated pages are read again turned as its front matter says; Apache-2.0 (allenai/olmocr). The FP8 checkpoint "
        "(allenai/olmOCR-2-7B-1025-FP8, the authors' vLLM default) is not supported: use the bf16 one"
    ),
    **QWEN_COMMON,
)


class OlmOCREngine(HFVLMEngine):
    spec = OLMOCR

    def recognize(self, pages: Sequence[Page], task: Task) -> list[PageResult]:
        if self._model is None:
            raise EngineError(self.name, "recognize() called before load()")
        if task.kind == TaskKind.REGION and task.region is None:
            raise EngineError(self.name, "a region task needs task.region")
        mode = self._mode(task)
        results: list[PageResult] = []
        step = max(1, self.plan.batch_size)
        for start in range(0, len(pages), step):
            results.extend(self._read(pages[start : start + step], mode, task))
        return results

    def _read(self, pages: Sequence[Page], mode: str, task: Task) -> list[PageResult]:
        """A batch read as process_page reads a page: rows whose front matter says the rotation is
        wrong go again, turned by the cumulative correction, until it is right, the correction is
        one already tried (greedy decoding would answer the same), or 8 attempts in all."""
        images = [_task_image(page, task) for page in pages]
        tried: list[set[int]] = [{0} for _ in pages]
        rotation = [0] * len(pages)
        answers: list[tuple[OlmPage, Generation] | None] = [None] * len(pages)
        pending = list(range(len(pages)))
        for attempt in range(MAX_PAGE_RETRIES):
            outputs = self._generate([rotate(images[i], rotation[i]) for i in pending], mode, task)
            again = []
            for i, (tokens, generation) in zip(pending, outputs, strict=True):
                answer = parse_olmocr(self._processor.tokenizer.decode(tokens, skip_special_tokens=True))
                previous = answers[i]
                answers[i] = (answer, _add(previous[1], generation) if previous else generation)
                if not (answer.valid and not answer.is_rotation_valid) or attempt == MAX_PAGE_RETRIES - 1:
                    continue
                turned = (rotation[i] + answer.rotation_correction) % 360
                if turned in tried[i]:
                    continue
                log.info("%s: page %s reads as rotated; reading it again turned %d degrees", self.name, i, turned)
                rotation[i] = turned
                tried[i].add(turned)
                again.append(i)
            pending = again
            if not pending:
                break
        return [
            self._page_result(page, *answer, task)
            for page, answer in zip(pages, answers, strict=True)
            if answer is not None
        ]

    def _page_result(self, page: Page, answer: OlmPage, generation: Generation, task: Task) -> PageResult:
        text = answer.natural_text or ""
        if task.kind == TaskKind.REGION:
            blocks = [Block(bbox=task.region, text=text, format=TextFormat.MARKDOWN)] if text else []
        else:
            blocks = markdown_blocks(text)
        return page_result(
            self.name,
            page,
            blocks,
            generation,
            generation.stop_reason,
            language=answer.primary_language,
            errors=[f"{self.name}: {answer.problem}"] if answer.problem and text else [],
        )


def _add(first: Generation, then: Generation) -> Generation:
    """Two attempts at one page as one report: the last one's stop reason, the tokens and time of both."""
    return then.model_copy(
        update={
            "prompt_tokens": first.prompt_tokens + then.prompt_tokens,
            "generated_tokens": first.generated_tokens + then.generated_tokens,
            "seconds": round((first.seconds or 0.0) + (then.seconds or 0.0), 3),
        }
    )
