"""PP-DocLayoutV2 / PP-DocLayoutV3: layout detection with reading order, the first stage of PaddleOCR-VL
(and -1.5) and of GLM-OCR; `LayoutStageEngine` is the engine base they share.

transformers ships the models (`PPDocLayoutV2ForObjectDetection`, `PPDocLayoutV3ForObjectDetection`,
checkpoints PaddlePaddle/PP-DocLayoutV2_safetensors and PaddlePaddle/PP-DocLayoutV3_safetensors), but
their image processors import torchvision, which the supported CPU install does not have. So the
preprocessing here is written against the published preprocessor config (PPDocLayoutV2ImageProcessor:
resize to 800 x 800 ignoring the aspect ratio, bicubic without antialiasing "to approximate the output
of cv2.resize" (transformers' image_processing_pp_doclayout_v2.py), rescale 1/255, mean 0, std 1; the
Paddle config PaddleOCR-VL/PP-DocLayoutV2/config.json: Resize interp 2 = cv2.INTER_CUBIC,
keep_ratio false, target 800 x 800, NormalizeImage mean 0 std 1) with torch alone, and the
post-processing is transformers' `post_process_object_detection` (reading-order votes from the
order logits, top-k over queries x classes) followed by PaddleX's layout post-processing as the
PaddleOCR-VL pipeline configures it (paddlex/inference/models/layout_analysis/processors.py
LayoutAnalysisProcess.apply; paddlex/configs/pipelines/PaddleOCR-VL.yaml and PaddleOCR-VL-1.5.yaml;
paddlex/inference/pipelines/paddleocr_vl/uilts.py filter_overlap_boxes): per-class score thresholds,
layout NMS (IoU 0.6 within a class, 0.98 across), the page-sized-image filter, the per-class
"large" merge mode, clamping to the page, then the pipeline's overlap filter. Those choices are a
`LayoutRules` (PADDLEX_RULES by default); another pipeline over the same detector sets its own in
`DetectorSpec.rules` (the GLM-OCR SDK's: glm_ocr.GLM_RULES).

Not done (and said in docs/engines.md): PP-DocLayoutV3's polygon masks (boxes are used, PaddleX's
`layout_shape_mode="rect"`), and the pipeline's `merge_layout_blocks` (which pastes vertically
adjacent text crops into one image for one VLM call); every region is read alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from polyocr.engines import vlm
from polyocr.engines.hf.engine import HFVLMEngine
from polyocr.engines.hf.twostage import Region, layout_only
from polyocr.errors import EngineError, EngineUnavailable
from polyocr.types import Availability, EnginePlan, Task, TaskKind

if TYPE_CHECKING:
    from PIL import Image

    from polyocr.documents import Page
    from polyocr.results import PageResult
    from polyocr.runtime.probe import Profile

# The published label list, in class-id order (PaddlePaddle/PaddleOCR-VL PP-DocLayoutV2/config.json
# label_list; PaddleOCR-VL-1.5.yaml comments the same 25 ids for PP-DocLayoutV3).
LABELS = (
    "abstract",
    "algorithm",
    "aside_text",
    "chart",
    "content",
    "display_formula",
    "doc_title",
    "figure_title",
    "footer",
    "footer_image",
    "footnote",
    "formula_number",
    "header",
    "header_image",
    "image",
    "inline_formula",
    "number",
    "paragraph_title",
    "reference",
    "reference_content",
    "seal",
    "table",
    "text",
    "vertical_text",
    "vision_footnote",
)

# The layout's labels as polyocr categories. transformers' test config names some ids differently
# ("formula" for 5 and 15, "footer"/"header" for the image variants): both spellings are here.
CATEGORY = {
    "abstract": "Text",
    "algorithm": "Text",
    "aside_text": "Text",
    "chart": "Picture",
    "content": "Text",
    "display_formula": "Formula",
    "inline_formula": "Formula",
    "formula": "Formula",
    "doc_title": "Title",
    "figure_title": "Caption",
    "footer": "Page-footer",
    "footer_image": "Picture",
    "footnote": "Footnote",
    "formula_number": "Text",
    "header": "Page-header",
    "header_image": "Picture",
    "image": "Picture",
    "number": "Page-footer",
    "paragraph_title": "Section-header",
    "reference": "Text",
    "reference_content": "Text",
    "seal": "Picture",
    "table": "Table",
    "text": "Text",
    "vertical_text": "Text",
    "vision_footnote": "Footnote",
}

# Labels the pipeline never sends to the VLM with its default settings (PaddleX paddleocr_vl/pipeline.py:
# IMAGE_LABELS = ["image", "header_image", "footer_image"], plus "chart" while use_chart_recognition is
# False and "seal" while use_seal_recognition is False, both False in PaddleOCR-VL.yaml / -1.5.yaml).
NOT_READ = frozenset({"image", "header_image", "footer_image", "chart", "seal"})


def element_mode(label: str) -> str | None:
    """The element prompt a region of this label is read with (PaddleX paddleocr_vl/pipeline.py
    get_layout_parsing_results: "table" -> Table Recognition:, a label containing "formula" other than
    formula_number -> Formula Recognition:, everything else read -> OCR:); None: not read."""
    if label in NOT_READ:
        return None
    if label == "table":
        return "table"
    if "formula" in label and label != "formula_number":
        return "formula"
    return "text"


# PaddleOCR-VL.yaml (v1, PP-DocLayoutV2) LayoutDetection.threshold, per class id; the published
# transformers config carries the same values as class_thresholds (tests/models/pp_doclayout_v2).
V2_THRESHOLDS = (
    0.5, 0.5, 0.5, 0.5, 0.5, 0.4, 0.4, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5,
    0.5, 0.5, 0.4, 0.5, 0.4, 0.5, 0.5, 0.45, 0.5, 0.4, 0.4, 0.5,
)  # fmt: skip
# PaddleOCR-VL-1.5.yaml (PP-DocLayoutV3): threshold 0.3 for every class.
V3_THRESHOLD = 0.3
# Both pipelines' layout_merge_bboxes_mode: "large" for chart, display_formula, doc_title,
# inline_formula, paragraph_title (ids 3, 5, 6, 15, 17); "union" (keep all) for the rest.
LARGE_MERGE_IDS = (3, 5, 6, 15, 17)
NMS_IOU_SAME, NMS_IOU_DIFF = 0.6, 0.98  # LayoutAnalysisProcess.apply: nms(iou_same=0.6, iou_diff=0.98)


@dataclass(frozen=True)
class LayoutRules:
    """How a pipeline turns the detector's raw detections into regions: where pipelines that run the
    same PP-DocLayout model differ (PaddleX's PaddleOCR-VL pipelines; the GLM-OCR SDK, glm_ocr.py)."""

    # PaddleX rounds the boxes before anything else and keeps scores above the threshold (">");
    # transformers' post_process_object_detection (the GLM-OCR SDK) keeps scores >= it, boxes unrounded.
    round_boxes: bool = True
    strict_threshold: bool = True
    # layout_merge_bboxes_mode per class id ("large": a box this much inside a box of that class is
    # dropped; "small": a box holding one of that class that much inside it is dropped)
    merge: Mapping[int, str] = field(default_factory=lambda: dict.fromkeys(LARGE_MERGE_IDS, "large"))
    containment: float = 0.9  # PaddleX is_contained(): 90% of the inner box's area
    preserve: frozenset[str] = frozenset()  # labels never dropped as contained
    # restructured_boxes (PaddleX): integer boxes, then the empty ones dropped; the SDK drops the
    # empty ones on the clamped floats first (apply_layout_postprocess), then truncates
    check_before_int: bool = False
    overlap_filter: bool = True  # the PaddleOCR-VL pipeline's filter_overlap_boxes
    # a label's element prompt (None: kept, not read); labels in `abandon` are no regions at all
    mode: Callable[[str], str | None] = element_mode
    abandon: frozenset[str] = frozenset()
    categories: Mapping[str, str] = field(default_factory=dict)  # polyocr categories over CATEGORY


PADDLEX_RULES = LayoutRules()


@dataclass(frozen=True)
class DetectorSpec:
    """What differs between PP-DocLayoutV2 and V3 for polyocr."""

    name: str
    repo_id: str
    model_class: str  # attribute of transformers
    model_type: str  # config.json model_type
    thresholds: float | tuple[float, ...]
    rules: LayoutRules = PADDLEX_RULES
    # The published preprocessor (used when a checkpoint has no preprocessor_config.json).
    preprocessor: Mapping[str, Any] = field(
        default_factory=lambda: {
            "size": {"height": 800, "width": 800},
            "rescale_factor": 1 / 255,
            "image_mean": [0.0, 0.0, 0.0],
            "image_std": [1.0, 1.0, 1.0],
        }
    )


PP_DOCLAYOUT_V2 = DetectorSpec(
    name="PP-DocLayoutV2",
    repo_id="PaddlePaddle/PP-DocLayoutV2_safetensors",
    model_class="PPDocLayoutV2ForObjectDetection",
    model_type="pp_doclayout_v2",
    thresholds=V2_THRESHOLDS,
)
PP_DOCLAYOUT_V3 = DetectorSpec(
    name="PP-DocLayoutV3",
    repo_id="PaddlePaddle/PP-DocLayoutV3_safetensors",
    model_class="PPDocLayoutV3ForObjectDetection",
    model_type="pp_doclayout_v3",
    thresholds=V3_THRESHOLD,
)


def is_detector_dir(path: Path, spec: DetectorSpec) -> bool:
    """A transformers checkpoint of this detector: config.json with its model_type, safetensors weights.
    (The PP-DocLayoutV2/ folder inside PaddlePaddle/PaddleOCR-VL is Paddle's format: not this.)"""
    config = path / "config.json"
    if not config.is_file() or not any(path.glob("*.safetensors")):
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("model_type") == spec.model_type
    except (OSError, ValueError):
        return False


# ---------------------------------------------------------------------------- preprocessing


def preprocess(images: Sequence[Image.Image], preprocessor: Mapping[str, Any]) -> Any:
    """pixel_values as PPDocLayoutV2ImageProcessor makes them, without torchvision: each page resized to
    the configured height x width with bicubic interpolation without antialiasing (what the processor's
    `self.resize(..., antialias=False)` does on a uint8 tensor: interpolate, round, clamp to 0..255),
    then rescaled and normalised."""
    import torch

    size = preprocessor.get("size") or {"height": 800, "width": 800}
    height, width = int(size["height"]), int(size["width"])
    scale = float(preprocessor.get("rescale_factor", 1 / 255))
    mean = torch.tensor(preprocessor.get("image_mean", [0.0, 0.0, 0.0]), dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(preprocessor.get("image_std", [1.0, 1.0, 1.0]), dtype=torch.float32).view(1, 3, 1, 1)
    tensors = []
    for image in images:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1).unsqueeze(0).to(torch.float32)
        resized = torch.nn.functional.interpolate(
            tensor, size=(height, width), mode="bicubic", align_corners=False, antialias=False
        )
        tensors.append(resized.round().clamp(0, 255))
    batch = torch.cat(tensors)
    return (batch * scale - mean) / std


# ---------------------------------------------------------------------------- post-processing


def order_sequence(order_logits: Any) -> Any:
    """Each query's reading-order rank (transformers' PPDocLayoutV2ImageProcessor._get_order_seqs):
    pairwise "i before j" scores voted into a ranking."""
    import torch

    scores = torch.sigmoid(order_logits.float())
    batch, length, _ = scores.shape
    votes = scores.triu(diagonal=1).sum(dim=1) + (1.0 - scores.transpose(1, 2)).tril(diagonal=-1).sum(dim=1)
    pointers = torch.argsort(votes, dim=1)
    ranks = torch.arange(length, device=pointers.device, dtype=pointers.dtype).expand(batch, -1)
    return torch.empty_like(pointers).scatter_(1, pointers, ranks)


def raw_detections(logits: Any, pred_boxes: Any, order_logits: Any, sizes: Sequence[tuple[int, int]]) -> list[Any]:
    """Per page, an array of rows [class id, score, x1, y1, x2, y2, order] in page pixels, in reading
    order: transformers' post_process_object_detection (top-k over queries x classes, each candidate
    carrying its query's order rank) with no score threshold yet (the per-class thresholds follow)."""
    import torch

    orders = order_sequence(order_logits)
    centers, dims = torch.split(pred_boxes.float(), 2, dim=-1)
    boxes = torch.cat([centers - 0.5 * dims, centers + 0.5 * dims], dim=-1)
    out = []
    for page, (width, height) in enumerate(sizes):
        scale = torch.tensor([width, height, width, height], dtype=boxes.dtype, device=boxes.device)
        page_boxes = boxes[page] * scale
        scores = torch.sigmoid(logits[page].float())
        queries, classes = scores.shape
        top, index = torch.topk(scores.flatten(), queries)
        labels, query = index % classes, index // classes
        rows = torch.cat(
            [labels[:, None].float(), top[:, None], page_boxes[query], orders[page][query][:, None].float()], dim=1
        )
        rows = rows[torch.argsort(rows[:, 6], stable=True)]
        out.append(rows.detach().cpu().numpy().astype(np.float64))
    return out


def _iou_inclusive(a: np.ndarray, b: np.ndarray) -> float:
    """PaddleX object_detection/processors.py iou(): pixel-inclusive areas (+1)."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]) + 1)
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]) + 1)
    inter = iw * ih
    area_a = (a[2] - a[0] + 1) * (a[3] - a[1] + 1)
    area_b = (b[2] - b[0] + 1) * (b[3] - b[1] + 1)
    return float(inter / (area_a + area_b - inter))


def layout_nms(rows: np.ndarray, iou_same: float = NMS_IOU_SAME, iou_diff: float = NMS_IOU_DIFF) -> list[int]:
    """PaddleX's nms(): best score first, drop a box overlapping a kept one above the class's IoU."""
    indices = list(np.argsort(rows[:, 1], kind="stable")[::-1])
    kept: list[int] = []
    while indices:
        current = int(indices.pop(0))
        kept.append(current)
        indices = [
            i
            for i in indices
            if _iou_inclusive(rows[current, 2:6], rows[i, 2:6])
            < (iou_same if rows[current, 0] == rows[i, 0] else iou_diff)
        ]
    return kept


def _overlap_small(a: Sequence[float], b: Sequence[float]) -> float:
    """PaddleX calculate_overlap_ratio(mode="small"): intersection over the smaller box's area."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    small = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(iw * ih / small) if small > 0 else 0.0


def merge_keep(rows: np.ndarray, labels: Sequence[str], rules: LayoutRules) -> np.ndarray:
    """The layout_merge_bboxes_mode filter per class (PaddleX LayoutAnalysisProcess.apply; GLM-OCR
    glmocr/utils/layout_postprocess_utils.py check_containment): which rows stay."""
    n = len(rows)
    keep = np.ones(n, dtype=bool)
    if n == 0:
        return keep
    # inside[i, j]: box i at least `containment` of its area inside box j (is_contained, every pair)
    x1, y1, x2, y2 = rows[:, 2], rows[:, 3], rows[:, 4], rows[:, 5]
    iw = np.clip(np.minimum(x2[:, None], x2[None, :]) - np.maximum(x1[:, None], x1[None, :]), 0, None)
    ih = np.clip(np.minimum(y2[:, None], y2[None, :]) - np.maximum(y1[:, None], y1[None, :]), 0, None)
    area = ((x2 - x1) * (y2 - y1))[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = (area > 0) & (iw * ih / np.where(area > 0, area, 1) >= rules.containment)
    np.fill_diagonal(inside, False)
    preserved = np.isin(rows[:, 0], [labels.index(label) for label in rules.preserve if label in labels])
    inside &= ~preserved[:, None]  # a preserved box is never the one contained
    classes = rows[:, 0]
    for category, merge in rules.merge.items():
        if merge == "large":  # a box inside a box of the class goes
            keep &= ~inside[:, classes == category].any(axis=1)
        elif merge == "small":  # a box holding one of the class goes, unless it is of the class inside another
            pairs = inside & (classes == category)[:, None]
            keep &= ~pairs.any(axis=0) | pairs.any(axis=1)
        # "union": keep all
    return keep


def postprocess(
    rows: np.ndarray,
    size: tuple[int, int],
    labels: Sequence[str],
    thresholds: float | Sequence[float],
    rules: LayoutRules = PADDLEX_RULES,
) -> list[Region]:
    """A pipeline's layout post-processing (PaddleX's by default) on one page's raw detections
    (reading order kept), as Regions."""
    width, height = size
    if len(rows) == 0:
        return []
    rows = rows.copy()
    if rules.round_boxes:
        rows[:, 2:6] = np.round(rows[:, 2:6])
    limit = (
        np.full(len(rows), float(thresholds))
        if isinstance(thresholds, float)
        else np.array([thresholds[int(c)] if int(c) < len(thresholds) else 0.5 for c in rows[:, 0]])
    )
    # PaddleX compares with ">", transformers' post_process_object_detection with ">="
    rows = rows[rows[:, 1] > limit] if rules.strict_threshold else rows[rows[:, 1] >= limit]
    if len(rows) == 0:
        return []
    rows = rows[sorted(layout_nms(rows))]  # keep reading order
    # Drop an "image" box covering most of the page (0.82 of a landscape page, 0.93 otherwise).
    if len(rows) > 1 and "image" in labels:
        image_id = labels.index("image")
        share = 0.82 if width > height else 0.93
        clipped = np.stack([
            np.clip(rows[:, 2], 0, width), np.clip(rows[:, 3], 0, height),
            np.clip(rows[:, 4], 0, width), np.clip(rows[:, 5], 0, height),
        ], axis=1)  # fmt: skip
        area = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
        keep = ~((rows[:, 0] == image_id) & (area > share * width * height))
        if keep.any():
            rows = rows[keep]
    # PaddleX: "large" for some classes (formula boxes are exempt only against a label named
    # "formula", which these label lists do not have); the GLM-OCR SDK: its own per-class modes.
    rows = rows[merge_keep(rows, labels, rules)]
    # Boxes clamped to the page, the empty ones dropped, coordinates truncated to integers.
    boxes = []
    for row in rows:
        fx1, fy1 = max(0.0, min(float(row[2]), width)), max(0.0, min(float(row[3]), height))
        fx2, fy2 = max(0.0, min(float(row[4]), width)), max(0.0, min(float(row[5]), height))
        if rules.check_before_int and (fx1 >= fx2 or fy1 >= fy2):
            continue
        x1, y1, x2, y2 = int(fx1), int(fy1), int(fx2), int(fy2)
        if rules.check_before_int or (x2 > x1 and y2 > y1):
            label = labels[int(row[0])] if int(row[0]) < len(labels) else "text"
            boxes.append((label, float(row[1]), (x1, y1, x2, y2)))
    if rules.overlap_filter:
        boxes = _filter_overlap(boxes)
    boxes = [b for b in boxes if b[0] not in rules.abandon]
    return [
        Region(
            bbox=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
            category=rules.categories.get(label) or CATEGORY.get(label, "Text"),
            label=label,
            order=order,
            mode=rules.mode(label),
            score=round(score, 4),
        )
        for order, (label, score, b) in enumerate(boxes)
    ]


def _filter_overlap(
    boxes: list[tuple[str, float, tuple[int, int, int, int]]],
) -> list[tuple[str, float, tuple[int, int, int, int]]]:
    """The pipeline's filter_overlap_boxes (paddleocr_vl/uilts.py, rect mode): "reference" boxes left
    out, boxes under 4 px a side dropped, and of two boxes overlapping by more than 70% of the smaller
    the smaller dropped, unless exactly one of them is an "image"."""
    boxes = [b for b in boxes if b[0] != "reference"]
    dropped: set[int] = set()
    for i, (label_i, _, box_i) in enumerate(boxes):
        if box_i[2] - box_i[0] < 4 or box_i[3] - box_i[1] < 4:
            dropped.add(i)
        for j in range(i + 1, len(boxes)):
            if i in dropped or j in dropped:
                continue
            label_j, _, box_j = boxes[j]
            if _overlap_small(box_i, box_j) > 0.7:
                if (label_i == "image" or label_j == "image") and label_i != label_j:
                    continue
                area_i = (box_i[2] - box_i[0]) * (box_i[3] - box_i[1])
                area_j = (box_j[2] - box_j[0]) * (box_j[3] - box_j[1])
                dropped.add(j if area_i >= area_j else i)
    return [b for k, b in enumerate(boxes) if k not in dropped]


# ---------------------------------------------------------------------------- the stage


class LayoutDetector:
    """The layout stage: a PP-DocLayout checkpoint in transformers' layout, run on whole pages."""

    def __init__(self, spec: DetectorSpec, weights: Path) -> None:
        self.spec = spec
        self.weights = weights
        self._model: Any = None
        self._preprocessor: Mapping[str, Any] = spec.preprocessor
        self.labels: tuple[str, ...] = LABELS

    def load(self, device: str, dtype: Any) -> None:
        import transformers

        model_cls = getattr(transformers, self.spec.model_class, None)
        if model_cls is None:
            raise EngineError(self.spec.name, f"transformers {transformers.__version__} has no {self.spec.model_class}")
        self._model = model_cls.from_pretrained(self.weights, dtype=dtype, local_files_only=True).to(device).eval()
        own = self.weights / "preprocessor_config.json"
        if own.is_file():
            self._preprocessor = json.loads(own.read_text(encoding="utf-8"))
        id2label = getattr(self._model.config, "id2label", None) or {}
        if len(id2label) == len(LABELS):
            self.labels = tuple(str(id2label[i]) for i in range(len(LABELS)))

    def thresholds(self) -> float | tuple[float, ...]:
        own = getattr(self._model.config, "class_thresholds", None) if self._model is not None else None
        if isinstance(self.spec.thresholds, tuple) and own and len(own) == len(LABELS):
            return tuple(float(v) for v in own)
        return self.spec.thresholds

    def detect(self, images: Sequence[Image.Image]) -> list[list[Region]]:
        """Each page's regions in reading order, boxes in page pixels."""
        import torch

        if self._model is None:
            raise EngineError(self.spec.name, "detect() called before load()")
        pixels = preprocess(images, self._preprocessor).to(self._model.device, self._model.dtype)
        with torch.inference_mode():
            outputs = self._model(pixel_values=pixels)
        sizes = [im.size for im in images]
        raw = raw_detections(outputs.logits, outputs.pred_boxes, outputs.order_logits, sizes)
        thresholds = self.thresholds()
        return [
            postprocess(rows, size, self.labels, thresholds, self.spec.rules)
            for rows, size in zip(raw, sizes, strict=True)
        ]

    def close(self) -> None:
        self._model = None


# ---------------------------------------------------------------------------- the two-stage engine


class LayoutStageEngine(HFVLMEngine):
    """A VLM run as its authors run it behind a PP-DocLayout stage (PaddleOCR-VL, PaddleOCR-VL-1.5,
    GLM-OCR): layout and text run both stages (`read_elements`, the engine's element stage through
    twostage.read_regions), layout_only the detector alone, region the VLM's text prompt on the crop.

    The layout model's weights: a `layout/` (or `<detector name>/`) folder inside the VLM checkpoint
    directory holding a transformers checkpoint of it, else the detector's repository in the local
    Hugging Face cache (`polyocr fetch <engine>` fetches both: `companion_repos`)."""

    detector: ClassVar[DetectorSpec]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.tasks = frozenset(TaskKind)
        cls.companion_repos = (cls.detector.repo_id,)

    def __init__(self, model_path: str | None = None) -> None:
        super().__init__(model_path)
        self._layout: LayoutDetector | None = None

    def layout_weights(self, model_path: str | None) -> Path | None:
        """The layout model's checkpoint: a folder inside the VLM's directory, else the local cache."""
        weights = self._weights(model_path)
        if weights is not None:
            for name in ("layout", self.detector.name):
                if is_detector_dir(weights / name, self.detector):
                    return weights / name
        return vlm.cached_snapshot(self.detector.repo_id)

    def _no_layout(self, model_path: str | None) -> tuple[str, str]:
        where = f"{model_path}/layout, " if model_path else ""
        return (
            f"no {self.detector.name} weights ({self.detector.repo_id}) in {where}the local Hugging Face cache",
            f"polyocr fetch {self.name} (or hf download {self.detector.repo_id})",
        )

    def available(self, profile: Profile) -> Availability:
        verdict = super().available(profile)
        if not verdict.ok:
            return verdict
        layout = self.layout_weights(self.model_path)
        if layout is None:
            return Availability.no(*self._no_layout(self.model_path))
        return Availability.yes(f"{verdict.reason}; layout model at {layout}")

    def load(self, plan: EnginePlan) -> None:
        import torch

        model_path = plan.model_path or self.model_path
        layout = self.layout_weights(model_path)
        if layout is None:
            raise EngineUnavailable(self.name, *self._no_layout(model_path))
        super().load(plan)
        # The detector runs in float32 whatever the VLM's dtype: ~200 MB, and PaddleX runs it in fp32.
        self._layout = LayoutDetector(self.detector, layout)
        self._layout.load(plan.device, torch.float32)

    def close(self) -> None:
        super().close()
        if self._layout is not None:
            self._layout.close()
        self._layout = None

    def detect(self, pages: Sequence[Page]) -> list[list[Region]]:
        """The layout stage for some pages (8 a batch, the PaddleX pipeline's LayoutDetection batch_size)."""
        if self._layout is None:
            raise EngineError(self.name, "recognize() called before load()")
        regions: list[list[Region]] = []
        for start in range(0, len(pages), 8):
            regions.extend(self._layout.detect([page.image for page in pages[start : start + 8]]))
        return regions

    def read_elements(self, pages: Sequence[Page], regions: list[list[Region]], task: Task) -> list[PageResult]:
        """The element stage (twostage.read_regions with the engine's own prepare/finish)."""
        raise NotImplementedError

    def recognize(self, pages: Sequence[Page], task: Task) -> list[PageResult]:
        if task.kind == TaskKind.REGION:
            return super().recognize(pages, task)
        if self._model is None:
            raise EngineError(self.name, "recognize() called before load()")
        regions = self.detect(pages)
        if task.kind == TaskKind.LAYOUT_ONLY:
            return [
                layout_only(page, page_regions, self.name) for page, page_regions in zip(pages, regions, strict=True)
            ]
        return self.read_elements(pages, regions, task)
