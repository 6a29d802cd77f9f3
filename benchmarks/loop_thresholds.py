"""How much exact repetition real documents' text has, in Qwen2 tokens: what the loop stop's
thresholds (engines/vlm.py LOOP_*) must stay above.

For each text, every period p up to LOOP_MAX_PERIOD and every run of positions where a token equals
the one p before, the repetition spans run + p tokens, (run + p) / p repeats. The loop stop would
end generation inside such a run once the span reaches max(LOOP_MIN_SPAN, LOOP_MIN_REPEATS * p)
(LOOP_MARKUP_SPAN when the unit is markup only: table tags, dots, rules). The script prints, per
text, the repetition that came closest to firing, and whether any fired.

Texts: the HTML and Markdown tables of the dots.ocr README and blog, the PaddleOCR-VL and
DeepSeek-OCR-2 model cards (tests/fixtures/texts/), the evaluation set's transcriptions
(shared/data/eval), and constructed documents with legitimate repetition (a table of contents with
dotted leaders, empty form tables, a price list, a Markdown table of zeros) as the engines would
write them.

    PYTHONPATH=src python benchmarks/loop_thresholds.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from polyocr.engines import vlm

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def constructed() -> dict[str, str]:
    """Documents with legitimate repetition, as dots.ocr / DeepSeek-OCR-2 would write them."""
    toc = "\n".join(f"{i}. Chapter {i} {'.' * 40} {7 * i + 3}" for i in range(1, 41))
    empty_row = "<tr>" + "<td></td>" * 7 + "</tr>"
    empty_form = (
        "<table><tr><th>Date</th><th>In</th><th>Out</th><th>Break</th><th>Total</th><th>Rate</th><th>Sign</th></tr>"
    )
    timesheet = empty_form + empty_row * 31 + "</table>"
    zeros = "| Item | Q1 | Q2 | Q3 | Q4 |\n|---|---|---|---|---|\n" + "".join(
        f"| Line {i} | 0 | 0 | 0 | 0 |\n" for i in range(1, 41)
    )
    prices = "\n".join(f"Widget type {chr(65 + i % 26)}{i} ........ $1.00" for i in range(60))
    leaders = "\n".join(f"Section {i} {'. ' * 30} {i}" for i in range(1, 30))
    blank_lines = "Name: ____________________\n" * 12
    return {
        "constructed/toc-dotted-leaders": toc,
        "constructed/toc-spaced-leaders": leaders,
        "constructed/timesheet-31-empty-rows": timesheet,
        "constructed/markdown-zeros-table": zeros,
        "constructed/price-list": prices,
        "constructed/form-blank-lines": blank_lines,
    }


def texts() -> dict[str, str]:
    found = {
        f"fixtures/{p.name}": p.read_text()
        for p in sorted((ROOT / "tests/fixtures/texts").glob("*.md"))
        if p.name != "SOURCES.md"
    }
    eval_dir = SHARED / "data" / "eval"
    for path in sorted(eval_dir.rglob("*.txt")):
        found[f"eval/{path.relative_to(eval_dir)}"] = path.read_text()
    found.update(constructed())
    return found


def closest(ids: np.ndarray, decode) -> tuple[float, int, int, str, bool]:
    """The repetition closest to the loop stop's thresholds: (share of its threshold, period, span,
    unit, fired)."""
    best = (0.0, 0, 0, "", False)
    for period in range(1, min(vlm.LOOP_MAX_PERIOD, len(ids) - 1) + 1):
        same = np.concatenate([[False], ids[period:] == ids[:-period], [False]])
        edges = np.flatnonzero(np.diff(same.astype(np.int8)))
        for begin, end in zip(edges[::2], edges[1::2], strict=True):
            span = int(end - begin) + period
            unit = decode(ids[begin : begin + period].tolist())
            markup = vlm.is_markup(unit)
            needed = max(vlm.LOOP_MARKUP_SPAN if markup else vlm.LOOP_MIN_SPAN, vlm.LOOP_MIN_REPEATS * period)
            share = span / needed
            if share > best[0]:
                best = (share, period, span, unit, share >= 1.0)
    return best


def main() -> int:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ROOT / "tests/fixtures/models/qwen2-vl")
    print(
        f"thresholds: span >= {vlm.LOOP_MIN_SPAN} tokens (markup-only units: {vlm.LOOP_MARKUP_SPAN}), "
        f">= {vlm.LOOP_MIN_REPEATS} repeats, period <= {vlm.LOOP_MAX_PERIOD}"
    )
    print(f"{'text':48} {'tokens':>7} {'closest':>8} {'period':>6} {'span':>5}  unit")
    fired = 0
    for name, text in texts().items():
        ids = np.asarray(tokenizer(text)["input_ids"], dtype=np.int64)
        share, period, span, unit, hit = closest(ids, tokenizer.decode)
        fired += hit
        print(f"{name:48} {len(ids):7d} {share:8.0%} {period:6d} {span:5d}  {unit[:40]!r}{'  FIRES' if hit else ''}")
    print(f"{fired} text(s) would be stopped as loops")
    return 1 if fired else 0


if __name__ == "__main__":
    sys.exit(main())
