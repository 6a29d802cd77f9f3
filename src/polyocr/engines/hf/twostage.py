"""Two-stage page parsing: a layout stage finds the page's regions in reading order, then the VLM reads
each region with the element prompt its authors trained (PaddleOCR-VL with PP-DocLayoutV2/V3, GLM-OCR
with PP-DocLayoutV3; MinerU2.5, whose layout stage is the VLM itself on a downscaled page).

The interface, for an engine that runs this way:

- A layout stage produces, per page, a list of `Region`s: a box in page pixels, the polyocr category,
  the model's own label, the reading-order position, the detector's score, and `mode`: the key of
  the element prompt in the engine's `VLMSpec.prompts` that reads it ("text", "table", "formula",
  ...), or None for a region that is kept without recognition (a picture, a seal).
- `read_regions(engine, pages, regions, task, prepare=..., finish=..., assemble=...)` is the element
  stage: it crops every region that has a mode (`crop()`: the box, or `crop_bbox` where the authors
  crop another, rounded as the authors crop, plus an optional padding, clamped to the page),
  optionally passes each crop through `prepare` (PaddleOCR-VL trims a formula's white margin), groups
  the crops of all pages by mode, runs each group through `HFVLMEngine._generate` in batches of
  `plan.batch_size` (one prompt per batch, as the authors batch by prompt), turns each answer into
  text and a TextFormat with `finish(region, text)` (OTSL -> HTML for tables, LaTeX for formulas),
  and returns one `PageResult` per page whose blocks are the regions in reading order with the
  layout's categories (a region read as empty is dropped unless `keep_empty`: the PaddleX pipeline
  keeps them all), passed with their regions through `assemble` where the authors assemble a page
  further (GLM-OCR: formula numbers into formulas, hyphenated paragraphs, list items). The page's
  `Generation` sums the elements' tokens and seconds; its stop reason is the worst of theirs (error >
  timeout > loop > max_tokens > eos), so the router's checks (token limit, loop ladder) see a page
  with one runaway element.
- `layout_only(page, regions, engine)` is the result of the layout stage alone (no VLM call).

The task's time limit is the page's: each batch gets what is left of it. Nothing here imports torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from polyocr.engines.hf.spec import page_result
from polyocr.results import Block, Generation, PageResult, TextFormat
from polyocr.types import Task

if TYPE_CHECKING:
    from PIL import Image

    from polyocr.documents import Page
    from polyocr.engines.hf.engine import HFVLMEngine

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class Region:
    """One region of a page found by a layout stage."""

    bbox: Box  # page pixels, x1 y1 x2 y2
    category: str  # polyocr's category (results.LAYOUT_CATEGORIES)
    label: str  # the layout model's own label ("paragraph_title", "display_formula", ...)
    order: int  # reading-order position on the page, 0 first
    mode: str | None  # the element prompt's key in VLMSpec.prompts; None: kept, not read
    score: float | None = None
    # the box the authors crop where it is not `bbox` (the GLM-OCR SDK crops through 0-1000 coordinates)
    crop_bbox: Box | None = None


# (region, its crop) -> the image the VLM reads (e.g. margins trimmed); the crop by default.
Prepare = Callable[[Region, "Image.Image"], "Image.Image"]
# (region, the VLM's decoded answer) -> (block text, its format).
Finish = Callable[[Region, str], tuple[str, TextFormat]]
# (a page's (region, block) pairs in reading order, its size) -> its blocks (the authors' page-level
# assembly: GLM-OCR merges formula numbers into formulas, hyphenated paragraphs, list items).
Assemble = Callable[[list[tuple[Region, Block]], tuple[int, int]], list[Block]]

# Worst first: a page reports the worst stop reason among its elements.
_STOP_RANK = ("error", "timeout", "loop", "max_tokens", "stop_string", "eos")


def crop(image: Image.Image, bbox: Box, pad: int = 0) -> Image.Image:
    """The region's pixels: the box truncated to integers as the PaddleX cropper does
    (paddlex/inference/pipelines/components: `img[int(ymin):int(ymax), int(xmin):int(xmax)]`),
    widened by `pad` pixels each side and clamped to the page; at least one pixel each way."""
    width, height = image.size
    x1, y1, x2, y2 = (int(v) for v in bbox)
    x1, y1 = max(0, x1 - pad), max(0, y1 - pad)
    x2, y2 = min(width, x2 + pad), min(height, y2 + pad)
    x2, y2 = max(x2, min(width, x1 + 1)), max(y2, min(height, y1 + 1))
    return image.crop((x1, y1, x2, y2))


def worst_stop(reasons: Sequence[str]) -> str:
    """The stop reason a page reports for its elements' reasons ("eos" when there are none)."""
    ranked = [r for r in _STOP_RANK if r in reasons]
    unknown = [r for r in reasons if r not in _STOP_RANK]
    return (unknown or ranked or ["eos"])[0]


def read_regions(
    engine: HFVLMEngine,
    pages: Sequence[Page],
    regions: Sequence[Sequence[Region]],
    task: Task,
    *,
    prepare: Prepare | None = None,
    finish: Finish | None = None,
    pad: int = 0,
    keep_empty: bool = False,
    assemble: Assemble | None = None,
) -> list[PageResult]:
    """The element stage for a batch of pages: every region with a mode read by the engine's VLM with
    that mode's prompt, batched by mode across pages; one PageResult per page, blocks in reading order."""
    if len(pages) != len(regions):
        raise ValueError(f"{len(pages)} pages but {len(regions)} region lists")
    ordered = [sorted(page_regions, key=lambda r: r.order) for page_regions in regions]
    jobs: dict[str, list[tuple[int, int, Image.Image]]] = {}
    for p, (page, page_regions) in enumerate(zip(pages, ordered, strict=True)):
        rgb = page.image.convert("RGB") if any(r.mode is not None for r in page_regions) else None
        for r, region in enumerate(page_regions):
            if region.mode is None or rgb is None:
                continue
            image = crop(rgb, region.crop_bbox or region.bbox, pad)
            if prepare is not None:
                image = prepare(region, image)
            jobs.setdefault(region.mode, []).append((p, r, image))

    answers: dict[tuple[int, int], tuple[list[int], Generation, int]] = {}
    batch_seconds: list[float] = []
    step = max(1, engine.plan.batch_size)
    deadline = time.monotonic() + task.timeout if task.timeout else None
    for mode, items in jobs.items():
        for start in range(0, len(items), step):
            batch = items[start : start + step]
            left = task
            if deadline is not None:
                left = replace(task, timeout=max(0.001, deadline - time.monotonic()))
            outputs = engine._generate([image for _, _, image in batch], mode, left)
            # rows of one batch report the batch's time each: a page is charged each batch it was in once
            batch_seconds.append(max((g.seconds or 0.0) for _, g in outputs))
            for (p, r, _), (tokens, generation) in zip(batch, outputs, strict=True):
                answers[(p, r)] = (tokens, generation, len(batch_seconds) - 1)

    results = []
    for p, (page, page_regions) in enumerate(zip(pages, ordered, strict=True)):
        pairs: list[tuple[Region, Block]] = []
        generations: list[Generation] = []
        batches: set[int] = set()
        for r, region in enumerate(page_regions):
            text, fmt = "", TextFormat.PLAIN
            if (p, r) in answers:
                tokens, generation, batch_index = answers[(p, r)]
                generations.append(generation)
                batches.add(batch_index)
                answer = engine.decode(tokens)
                text, fmt = finish(region, answer) if finish is not None else (answer.strip(), TextFormat.PLAIN)
            if region.mode is not None and not text and not keep_empty:
                continue  # a region the VLM read as nothing adds nothing (unless the authors keep it)
            block = Block(bbox=region.bbox, category=region.category, text=text, confidence=region.score, format=fmt)
            pairs.append((region, block))
        blocks = assemble(pairs, page.image.size) if assemble is not None else [block for _, block in pairs]
        seconds = sum(batch_seconds[i] for i in batches)
        results.append(_page_result(page, engine.name, blocks, generations, seconds))
    return results


def layout_only(page: Page, regions: Sequence[Region], engine_name: str) -> PageResult:
    """The layout stage's answer alone: boxed, categorised blocks in reading order, no text."""
    blocks = [
        Block(bbox=r.bbox, category=r.category, confidence=r.score) for r in sorted(regions, key=lambda r: r.order)
    ]
    return _page_result(page, engine_name, blocks, [], None)


def _page_result(
    page: Page, engine_name: str, blocks: list[Block], generations: list[Generation], seconds: float | None
) -> PageResult:
    reason = worst_stop([g.stop_reason for g in generations])
    generation = (
        None
        if not generations
        else Generation(
            stop_reason=reason,
            prompt_tokens=sum(g.prompt_tokens for g in generations),
            generated_tokens=sum(g.generated_tokens for g in generations),
            seconds=round(seconds, 3) if seconds is not None else None,
            nonfinite_logits=any(g.nonfinite_logits for g in generations),
        )
    )
    return page_result(engine_name, page, blocks, generation, reason)
