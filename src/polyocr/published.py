"""What the authors and the benchmarks published about each engine's model: scores, size, licence.

This table is the evidence the auto chain's VLM order rests on (engines/base.py `ranked()` derives
the order from it with `published_order`), and what `polyocr engines` shows as each engine's licence
and `polyocr engines --ranked` as the order's sources. It is data, imports nothing of polyocr's, and
may name engines that are not registered (an engine a plug-in or a later merge brings): a row is used
only for an engine the registry has.

The rule (RULE below, written once):
1. an engine with an OmniDocBench v1.5 overall score comes first, the higher score first;
2. then an engine with only an olmOCR-bench overall score, the higher score first;
3. then the engines with neither, the smaller model first (faster, for the same lack of evidence);
ties by the smaller model. Scores of different benchmarks are never compared with each other.

Licences are the model card's. `commercial_use` is True when the licence lets a business use the
model, False when it restricts that (a non-commercial or research-only licence), None when polyocr
could not verify the card's licence: auto chooses neither of the last two; a user can still name the
engine. Every figure was read from its source with the date given; `note` says where a figure could
only be checked through a secondary source, or where the sources disagree.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

OMNIDOCBENCH = "OmniDocBench"
OLMOCR_BENCH = "olmOCR-bench"

RULE = (
    "OmniDocBench v1.5 overall (higher first), then olmOCR-bench overall (higher first) for engines "
    "without an OmniDocBench v1.5 overall score, then model size (smaller first) for engines with "
    "neither; ties by model size. A licence that restricts commercial use, or one polyocr could not "
    "verify, keeps an engine out of auto (name it to use it). Your own `polyocr bench` results, where "
    "they cover the task's languages, come before all of this."
)


@dataclass(frozen=True)
class Score:
    benchmark: str  # OMNIDOCBENCH, OLMOCR_BENCH, ...
    version: str  # the benchmark's version ("v1.5"); "" where it has none
    metric: str  # "overall", or the sub-score named
    value: float
    source: str  # URL or arXiv id of the publication the figure was read in
    date: str  # the source's publication date, ISO
    note: str = ""


@dataclass(frozen=True)
class Licence:
    spdx: str | None  # SPDX id, or LicenseRef-... for a custom licence; None: not verified
    commercial_use: bool | None  # True allowed, False restricted, None not verified
    source: str
    note: str = ""

    @property
    def label(self) -> str:
        name = self.spdx or "not verified"
        if self.commercial_use is False:
            return f"{name} (commercial use restricted)"
        if self.commercial_use is None:
            return f"{name} (commercial use not verified)"
        return name


@dataclass(frozen=True)
class Published:
    engine: str  # the polyocr engine name
    model: str  # the checkpoint the figures are for
    params_b: float | None  # parameters, billions (model card or paper)
    licence: Licence
    scores: tuple[Score, ...] = ()

    def score(self, benchmark: str, version: str = "", metric: str = "overall") -> Score | None:
        for s in self.scores:
            if s.benchmark == benchmark and s.metric == metric and (not version or s.version == version):
                return s
        return None

    @property
    def auto_allowed(self) -> bool:
        """The licence lets auto choose the engine (commercial use allowed and verified)."""
        return self.licence.commercial_use is True


_APACHE = "Apache-2.0"
_DOTS_AGREEMENT = (
    "the repository's dots.ocr/dots.mocr LICENSE AGREEMENT is MIT-based: §2.1 grants use 'including for "
    "commercial purposes'; §3.3 lists prohibited uses (github.com/rednote-hilab/dots.ocr, 2026-03-24)"
)

TABLE: tuple[Published, ...] = (
    Published(
        "glm-ocr", "zai-org/GLM-OCR", 0.9,
        Licence("MIT", True, "https://huggingface.co/zai-org/GLM-OCR (card: license: mit)"),
        (Score(OMNIDOCBENCH, "v1.5", "overall", 94.62, "https://huggingface.co/zai-org/GLM-OCR; arXiv:2603.10910",
               "2026-03-12", "card text read through copies (docs.z.ai, ollama.com/library/glm-ocr, "
               "docs.sglang.io); the report's Table 4 gives 94.62, its Table 3 rounds to 94.6"),),
    ),
    Published(
        "paddleocr-vl-1.5", "PaddlePaddle/PaddleOCR-VL-1.5", 0.9,
        Licence(_APACHE, True, "https://huggingface.co/PaddlePaddle/PaddleOCR-VL-1.5 (card: Apache 2.0)"),
        (Score(OMNIDOCBENCH, "v1.5", "overall", 94.5, "arXiv:2601.21957", "2026-01-29",
               "abstract: '94.5% on OmniDocBench v1.5'; the card says the same"),),
    ),
    Published(
        "paddleocr-vl", "PaddlePaddle/PaddleOCR-VL", 0.9,
        Licence(_APACHE, True, "PaddlePaddle/PaddleOCR-VL README front matter + LICENSE (../shared/models)"),
        (Score(OMNIDOCBENCH, "v1.5", "overall", 92.56, "arXiv:2510.14528", "2025-10-16",
               "not verified in the paper's text (its tables are images in the stored copies); "
               "leaderboards list 92.56 for PaddleOCR-VL-0.9B and 92.86 for PaddleOCR-VL (the figure "
               "DeepSeek-OCR 2's Table 1 quotes from the OmniDocBench repository); either keeps its place"),
         Score(OLMOCR_BENCH, "", "overall", 80.0, "https://github.com/rednote-hilab/dots.mocr (README 1.2)",
               "2026-03-20", "the dots.mocr authors' table, marked as their own evaluation")),
    ),
    Published(
        "deepseek-ocr", "deepseek-ai/DeepSeek-OCR-2", 3.0,
        Licence(_APACHE, True, "deepseek-ai/DeepSeek-OCR-2 card front matter (../shared/models/SOURCES.md)"),
        (Score(OMNIDOCBENCH, "v1.5", "overall", 91.09, "arXiv:2601.20552", "2026-01-27",
               "DeepSeek-OCR 2 (the checkpoint polyocr runs; v1's 86.46 is not this model's)"),),
    ),
    Published(
        "mineru", "opendatalab/MinerU2.5-2509-1.2B", 1.2,
        Licence(None, None, "https://huggingface.co/opendatalab/MinerU2.5-2509-1.2B",
                "the card's licence could not be read here; MinerU's code is AGPL-3.0 (its issues #1794, "
                "#1840), which says nothing certain about these weights"),
        (Score(OMNIDOCBENCH, "v1.5", "overall", 90.67, "arXiv:2509.22186", "2025-09-26",
               "read through summaries of the paper's table (neurohive.io, CodeSOTA), not the table itself"),
         Score(OLMOCR_BENCH, "", "overall", 75.2, "https://github.com/rednote-hilab/dots.mocr (README 1.2)",
               "2026-03-20", "'MinerU 2.5.4' (the toolkit), marked as the dots.mocr authors' own run")),
    ),
    Published(
        "dots", "rednote-hilab/dots.ocr", 3.0,
        Licence("MIT", True, "https://huggingface.co/rednote-hilab/dots.ocr (card: license: mit)", _DOTS_AGREEMENT),
        (Score(OMNIDOCBENCH, "v1.5", "overall", 88.41, "arXiv:2509.22186", "2025-09-26",
               "MinerU2.5's comparison table (from the OmniDocBench repository), read through summaries"),
         Score(OLMOCR_BENCH, "", "overall", 79.1, "https://github.com/rednote-hilab/dots.mocr (README 1.2)",
               "2026-03-20")),
    ),
    Published(
        "dots-mocr", "rednote-hilab/dots.mocr", 3.0,
        Licence("LicenseRef-dots-mocr", True, "https://huggingface.co/rednote-hilab/dots.mocr (card: other)",
                _DOTS_AGREEMENT),
        (Score(OLMOCR_BENCH, "", "overall", 83.9, "https://github.com/rednote-hilab/dots.mocr (README 1.2); "
               "arXiv:2603.13032", "2026-03-20"),
         Score(OMNIDOCBENCH, "v1.5", "text edit", 0.031, "https://github.com/rednote-hilab/dots.mocr (README 1.3)",
               "2026-03-20", "an edit distance (lower is better), not the overall score the rule reads")),
    ),
    Published(
        "lighton-ocr", "lightonai/LightOnOCR-2-1B", 1.0,
        Licence(_APACHE, True, "arXiv:2601.14251 abstract; huggingface.co/blog/lightonai/lightonocr-2"),
        (Score(OLMOCR_BENCH, "", "overall", 83.2, "arXiv:2601.14251", "2026-01-20",
               "the paper and blog say 'state of the art on OlmOCR-Bench'; the figure itself was read only "
               "in copies of the card (e.g. github.com/TheAwaken1/LightOnOCR-2-1B-Pinokio)"),),
    ),
    Published(
        "olmocr", "allenai/olmOCR-2-7B-1025", 8.3,
        Licence(_APACHE, True, "https://huggingface.co/allenai/olmOCR-2-7B-1025 (card: license: apache-2.0)",
                "the card also points to Ai2's Responsible Use Guidelines"),
        (Score(OLMOCR_BENCH, "", "overall", 82.3, "https://huggingface.co/allenai/olmOCR-2-7B-1025", "2025-10-22",
               "the BF16 checkpoint with the olmOCR pipeline v0.4.0, ±1.1; 82.4 is the FP8 checkpoint's"),),
    ),
    Published(
        "qwen3vl", "Qwen/Qwen3-VL-2B-Instruct", 2.1,
        Licence(_APACHE, True, "https://huggingface.co/Qwen/Qwen3-VL-2B-Instruct (card: apache-2.0)"),
    ),
    Published(
        "qwen2vl", "Qwen/Qwen2-VL-2B-Instruct", 2.2,
        Licence(_APACHE, True, "LICENSE in the hub snapshot (../shared/models/SOURCES.md)"),
    ),
    Published(
        "got", "stepfun-ai/GOT-OCR-2.0-hf", 0.58,
        Licence(_APACHE, True, "https://huggingface.co/stepfun-ai/GOT-OCR-2.0-hf (card: apache-2.0)"),
    ),
    Published(
        "phi35v", "microsoft/Phi-3.5-vision-instruct", 4.2,
        Licence("MIT", True, "https://huggingface.co/microsoft/Phi-3.5-vision-instruct (card: mit)"),
    ),
    Published(
        "tesseract", "tesseract-ocr + tessdata", None,
        Licence(_APACHE, True, "https://github.com/tesseract-ocr/tesseract (LICENSE); tessdata (LICENSE)"),
    ),
    Published(
        "rapidocr", "RapidOCR (PP-OCR ONNX models)", None,
        Licence(_APACHE, True, "https://github.com/RapidAI/RapidOCR (LICENSE); PaddleOCR models (Apache-2.0)"),
    ),
)  # fmt: skip

_BY_ENGINE: dict[str, Published] = {row.engine: row for row in TABLE}


def published(engine: str) -> Published | None:
    """The table's row for an engine; None for an engine it has no row for."""
    return _BY_ENGINE.get(engine)


def sort_key(row: Published) -> tuple[int, float, float, str]:
    """RULE as a sort key: the benchmark tier, the score (negated: higher first), the size, the name."""
    size = row.params_b if row.params_b is not None else float("inf")
    omni = row.score(OMNIDOCBENCH, "v1.5")
    if omni is not None:
        return (0, -omni.value, size, row.engine)
    olm = row.score(OLMOCR_BENCH)
    if olm is not None:
        return (1, -olm.value, size, row.engine)
    return (2, 0.0, size, row.engine)


def published_order(engines: Iterable[str]) -> list[str]:
    """The engines that have a row, in RULE's order; engines without a row are left out."""
    rows = [row for name in engines if (row := published(name)) is not None]
    return [row.engine for row in sorted(rows, key=sort_key)]


def evidence(engine: str) -> str:
    """One line on what the engine's place rests on, for `polyocr engines` and the docs."""
    row = published(engine)
    if row is None:
        return "no published score in polyocr's table"
    parts = [
        f"{s.benchmark}{' ' + s.version if s.version else ''} {s.metric} {s.value:g} ({s.source}, {s.date})"
        for s in row.scores
    ]
    size = f"{row.params_b:g}B parameters" if row.params_b is not None else ""
    return "; ".join(parts + ([size] if size else [])) or "no published score"
