"""RapidOCR (PP-OCR models on onnxruntime): CPU, offline, with the models shipped in its wheel.

The bundled recognizer covers Latin, Han and Kana but has no Cyrillic: on Russian pages it drops
or mangles the text. So a task that names only languages in scripts it cannot read is refused with
an EngineError instead of returning plausible-looking garbage, and `scripts` keeps the router away.

RapidOCR returns text lines (quadrilaterals, text, score) in detection order. Lines are grouped
into paragraphs and the paragraphs put in reading order with a recursive XY-cut, so multi-column
pages read column by column (as far as the detector keeps columns apart: on a narrow gutter it can
return one line spanning two columns, which no ordering can undo).
"""

from __future__ import annotations

import importlib.util
import statistics
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from polyocr.engines.base import Engine
from polyocr.errors import EngineError, EngineUnavailable
from polyocr.formats.text import blocks_to_text
from polyocr.results import Block, PageResult
from polyocr.scripts import HAN, KANA, LATIN, scripts_for
from polyocr.types import Availability, EngineKind, EnginePlan, Task, TaskKind

if TYPE_CHECKING:
    from polyocr.documents import Page
    from polyocr.runtime.probe import Profile

# The models rapidocr's wheel ships (its default config); passing them explicitly means rapidocr
# never reaches for its download path.
MODEL_FILES = {
    "Det": "PP-OCRv6_det_small.onnx",
    "Rec": "PP-OCRv6_rec_small.onnx",
    "Cls": "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
}


def models_dir() -> Path | None:
    """The models folder inside the installed rapidocr package, found without importing it."""
    spec = importlib.util.find_spec("rapidocr")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _installation() -> Availability:
    """Whether the packages and the bundled models are in place; nothing is imported."""
    for package in ("rapidocr", "onnxruntime"):
        if importlib.util.find_spec(package) is None:
            return Availability.no(f"the {package} package is not installed", "pip install 'polyocr[classic]'")
    folder = models_dir()
    assert folder is not None
    missing = [name for name in MODEL_FILES.values() if not (folder / name).is_file()]
    if missing:
        return Availability.no(
            f"bundled model(s) {', '.join(missing)} missing from {folder}",
            "reinstall rapidocr from its wheel (pip install --force-reinstall rapidocr)",
        )
    return Availability.yes(f"bundled models in {folder}")


class RapidOCREngine(Engine):
    name: ClassVar[str] = "rapidocr"
    description: ClassVar[str] = "RapidOCR (PP-OCRv6 on onnxruntime, bundled models): CPU, offline, text lines"
    kind: ClassVar[EngineKind] = EngineKind.CLASSICAL
    scripts: ClassVar[frozenset[str]] = frozenset({LATIN, HAN, KANA})
    tasks: ClassVar[frozenset[TaskKind]] = frozenset({TaskKind.TEXT, TaskKind.LAYOUT, TaskKind.REGION})
    notes: ClassVar[str] = (
        "reads Latin, Chinese and Japanese but NOT Cyrillic: never use it for Russian (a Russian-only task is refused)"
    )

    def __init__(self, model_path: str | None = None) -> None:
        super().__init__(model_path)
        self._ocr: Any = None
        self._lock = threading.Lock()

    def available(self, profile: Profile) -> Availability:
        return _installation()

    def load(self, plan: EnginePlan) -> None:
        availability = _installation()
        if not availability.ok:
            raise EngineUnavailable(self.name, availability.reason, availability.fix)
        try:
            from rapidocr import RapidOCR
        except ImportError as exc:
            raise EngineUnavailable(
                self.name, f"rapidocr does not import: {exc}", "pip install 'polyocr[classic]'"
            ) from exc
        folder = models_dir()
        assert folder is not None
        params: dict[str, Any] = {"Global.log_level": "error"}
        for stage, filename in MODEL_FILES.items():
            params[f"{stage}.model_path"] = str(folder / filename)
        self._ocr = RapidOCR(params=params)

    def recognize(self, pages: Sequence[Page], task: Task) -> list[PageResult]:
        if task.kind not in self.tasks:
            raise EngineError(self.name, f"task {task.kind.value!r} is not supported (text lines only)")
        scripts = scripts_for(task.languages)  # None: a language it cannot judge, so let it try
        if scripts is not None and not scripts & self.scripts:
            raise EngineError(
                self.name,
                f"cannot read {'+'.join(task.languages)}: its models have no "
                f"{', '.join(sorted(scripts))} characters; use tesseract",
            )
        if self._ocr is None:
            self.load(EnginePlan())
        with self._lock:
            return [self._recognize_page(page, task) for page in pages]

    def close(self) -> None:
        self._ocr = None

    def _recognize_page(self, page: Page, task: Task) -> PageResult:
        image = page.image
        dx = dy = 0.0
        if task.kind == TaskKind.REGION and task.region is not None:
            dx, dy = task.region[0], task.region[1]
            x1, y1, x2, y2 = (round(v) for v in task.region)
            image = image.crop((x1, y1, x2, y2))
        output = self._ocr(image)
        lines = []
        if output.txts:
            for box, text, score in zip(output.boxes, output.txts, output.scores, strict=True):
                xs = [float(point[0]) for point in box]
                ys = [float(point[1]) for point in box]
                bbox = (min(xs) + dx, min(ys) + dy, max(xs) + dx, max(ys) + dy)
                lines.append(TextLine(bbox, text.strip(), float(score)))
        blocks = [paragraph.block() for paragraph in reading_order(paragraphs(lines))]
        width, height = page.image.size
        return PageResult(
            page=page.number,
            source=page.source,
            width=width,
            height=height,
            engine=self.name,
            language="+".join(task.languages),
            blocks=blocks,
            text=blocks_to_text(blocks),
        )


@dataclass
class TextLine:
    bbox: tuple[float, float, float, float]
    text: str
    score: float

    @property
    def height(self) -> float:
        return self.bbox[3] - self.bbox[1]


@dataclass
class Paragraph:
    lines: list[TextLine] = field(default_factory=list)

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        return _union([line.bbox for line in self.lines])

    @property
    def line_height(self) -> float:
        return statistics.median(line.height for line in self.lines)

    def block(self) -> Block:
        return Block(
            bbox=self.bbox,
            category="Text",
            text="\n".join(line.text for line in self.lines),
            confidence=statistics.fmean(line.score for line in self.lines),
        )


def _union(boxes: Sequence[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def paragraphs(lines: Sequence[TextLine]) -> list[Paragraph]:
    """Group lines into paragraphs: stacked, overlapping horizontally, with small gaps between.

    Pieces of one row that the detector split stay apart here; the XY-cut orders them left to
    right. Joining them would risk joining two columns across a narrow gutter.
    """
    groups: list[Paragraph] = []
    for line in sorted(lines, key=lambda item: (item.bbox[1], item.bbox[0])):
        for group in reversed(groups):
            last = group.lines[-1]
            gap = line.bbox[1] - last.bbox[3]
            shared = _overlap(last.bbox[0], last.bbox[2], line.bbox[0], line.bbox[2])
            narrower = min(last.bbox[2] - last.bbox[0], line.bbox[2] - line.bbox[0])
            if -0.3 * line.height < gap < 0.8 * max(line.height, last.height) and shared > 0.5 * narrower:
                group.lines.append(line)
                break
        else:
            groups.append(Paragraph([line]))
    return groups


# Boxes that overlap along an axis by less than this share of the smaller one's line height are taken
# as apart: the detector's boxes of neighbouring lines, or of the pieces of one line, touch by a few
# pixels, and an exact cut then found no gap and sorted by top edge (issue 20: worse than RapidOCR's
# own order on 15 of 70 UW3 lines). benchmarks/mixed-script.md: on 70 UW3 lines worse than RapidOCR's
# own order on 3 before, on none after; dev-set non-Russian pages CER 0.0741 -> 0.0622.
TOUCH_TOLERANCE = 0.3
# Two boxes are in one row when they overlap vertically by at least this share of the smaller height.
ROW_OVERLAP = 0.5


def reading_order(groups: list[Paragraph]) -> list[Paragraph]:
    """Recursive XY-cut: split at full-width horizontal gaps first, then at column gutters, where
    boxes touching by a few pixels still count as apart; what no cut separates is read row by row."""
    if len(groups) <= 1:
        return groups
    for axis in (1, 0):
        parts = _cut(groups, axis)
        if len(parts) > 1:
            return [group for part in parts for group in reading_order(part)]
    return [group for row in rows(groups) for group in row]


def rows(groups: Sequence[Paragraph]) -> list[list[Paragraph]]:
    """Groups as rows, top to bottom, each left to right: a group joins the row it overlaps
    vertically by ROW_OVERLAP of the smaller height (top edges alone scramble a line whose pieces
    start a pixel apart)."""
    found: list[list[Paragraph]] = []
    for group in sorted(groups, key=lambda g: (g.bbox[1] + g.bbox[3]) / 2):
        y1, y2 = group.bbox[1], group.bbox[3]
        for row in found:
            top, bottom = min(g.bbox[1] for g in row), max(g.bbox[3] for g in row)
            if _overlap(top, bottom, y1, y2) >= ROW_OVERLAP * min(bottom - top, y2 - y1):
                row.append(group)
                break
        else:
            found.append([group])
    found.sort(key=lambda row: min(g.bbox[1] for g in row))
    return [sorted(row, key=lambda g: g.bbox[0]) for row in found]


def _cut(groups: list[Paragraph], axis: int) -> list[list[Paragraph]]:
    """Groups split wherever no box covers a stretch of the given axis (1: y, 0: x), allowing boxes
    to overlap there by TOUCH_TOLERANCE of a line height."""
    ordered = sorted(groups, key=lambda group: group.bbox[axis])
    parts: list[list[Paragraph]] = [[ordered[0]]]
    end = ordered[0].bbox[axis + 2]
    end_height = ordered[0].line_height
    for group in ordered[1:]:
        tolerance = TOUCH_TOLERANCE * min(end_height, group.line_height)
        if group.bbox[axis] >= end - tolerance:
            parts.append([group])
        else:
            parts[-1].append(group)
        if group.bbox[axis + 2] >= end:
            end, end_height = group.bbox[axis + 2], group.line_height
    return parts
