"""Run one engine over dataset items and score every page against its ground truth.

`evaluate_items` is the core (an engine, items -> per-item records) and knows nothing of files or
printing, so the benchmark can reuse it for its own tables. An item that fails (unreadable input,
an engine error) is recorded with its error and scored as an empty hypothesis: failures count
against an engine instead of vanishing from its averages.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from polyocr.bench.manifest import Item, read_manifest, select
from polyocr.bench.metrics import ErrorCount, bag_of_words_errors, char_errors, total, word_errors
from polyocr.documents import load_pages
from polyocr.engines.base import Engine, create_engine
from polyocr.errors import EngineUnavailable, InputError
from polyocr.formats.text import blocks_to_text
from polyocr.runtime.probe import get_profile
from polyocr.types import EnginePlan, Task, TaskKind

GROUPINGS = ("language", "folder")


@dataclass
class ItemRecord:
    """What one engine did on one item: its text, edit counts and recognition time."""

    id: str
    folder: str
    language: str
    task_languages: list[str]
    pages: int
    seconds: float  # recognition only, not loading the file
    text: str
    chars: ErrorCount
    words: ErrorCount
    bag_of_words: ErrorCount
    error: str | None = None

    @property
    def cer(self) -> float:
        return self.chars.rate

    @property
    def wer(self) -> float:
        return self.words.rate

    @property
    def bow_wer(self) -> float:
        return self.bag_of_words.rate

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(cer=self.cer, wer=self.wer, bow_wer=self.bow_wer)
        return data


@dataclass
class GroupSummary:
    """Micro-averaged scores of a group of items (a language, a folder, or "all")."""

    key: str
    items: int
    failures: int
    pages: int
    chars: ErrorCount
    words: ErrorCount
    bag_of_words: ErrorCount
    seconds: float

    @property
    def seconds_per_page(self) -> float:
        return self.seconds / self.pages if self.pages else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "items": self.items,
            "failures": self.failures,
            "pages": self.pages,
            "cer": self.chars.rate,
            "wer": self.words.rate,
            "bow_wer": self.bag_of_words.rate,
            "chars": self.chars.total,
            "words": self.words.total,
            "seconds": self.seconds,
            "seconds_per_page": self.seconds_per_page,
        }


def evaluate_item(engine: Engine, item: Item, task: Task | None = None) -> ItemRecord:
    """Recognize every page of one item and score the joined text against its reference."""
    task = task or Task(kind=TaskKind.TEXT, languages=item.languages)
    reference = item.reference() or ""
    text, pages, seconds, error = "", 0, 0.0, None
    try:
        loaded = load_pages(item.image)
        start = time.perf_counter()
        results = engine.recognize(loaded, task)
        seconds = time.perf_counter() - start
        pages = len(loaded)
        text = "\n\n".join(r.text or blocks_to_text(r.blocks) for r in results)
    except InputError as exc:
        error = str(exc)
    except Exception as exc:  # an engine's failure on one item is a result, not the end of the run
        error = f"{engine.name}: {type(exc).__name__}: {exc}"
    return ItemRecord(
        id=item.id,
        folder=item.folder,
        language=item.language_code,
        task_languages=list(task.languages),
        pages=pages,
        seconds=seconds,
        text=text,
        chars=char_errors(reference, text),
        words=word_errors(reference, text),
        bag_of_words=bag_of_words_errors(reference, text),
        error=error,
    )


def evaluate_items(
    engine: Engine,
    items: Sequence[Item],
    *,
    task: Task | None = None,
    on_item: Callable[[ItemRecord], None] | None = None,
) -> list[ItemRecord]:
    """Per-item records for a loaded engine; each item is asked in its own languages unless `task`
    says otherwise."""
    records = []
    for item in items:
        record = evaluate_item(engine, item, task)
        records.append(record)
        if on_item is not None:
            on_item(record)
    return records


def summarize(records: Sequence[ItemRecord], by: str = "language") -> list[GroupSummary]:
    """One row per group in first-seen order, then an "all" row over every record."""
    if by not in GROUPINGS:
        raise ValueError(f"cannot group by {by!r}; choose one of {', '.join(GROUPINGS)}")
    groups: dict[str, list[ItemRecord]] = {}
    for record in records:
        groups.setdefault(getattr(record, by), []).append(record)
    rows = [_summary(key, members) for key, members in groups.items()]
    if len(groups) > 1:
        rows.append(_summary("all", list(records)))
    return rows


def _summary(key: str, records: Sequence[ItemRecord]) -> GroupSummary:
    return GroupSummary(
        key=key,
        items=len(records),
        failures=sum(1 for r in records if r.error),
        pages=sum(r.pages for r in records),
        chars=total(r.chars for r in records),
        words=total(r.words for r in records),
        bag_of_words=total(r.bag_of_words for r in records),
        seconds=sum(r.seconds for r in records),
    )


@dataclass
class EvalReport:
    engine: str
    dataset: str
    by: str
    filters: dict[str, Any]
    records: list[ItemRecord]
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def summary(self) -> list[GroupSummary]:
        return summarize(self.records, self.by)

    @property
    def failures(self) -> int:
        return sum(1 for r in self.records if r.error)

    def to_dict(self) -> dict[str, Any]:
        return {
            "engine": self.engine,
            "dataset": self.dataset,
            "created": self.created,
            "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
            "filters": self.filters,
            "summary": [row.to_dict() for row in self.summary],
            "items": [record.to_dict() for record in self.records],
        }

    def write_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def load_engine(name: str, plan: EnginePlan | None = None) -> Engine:
    """A loaded engine by name; EngineUnavailable with the engine's own reason when it cannot run."""
    engine = create_engine(name)
    availability = engine.available(get_profile())
    if not availability.ok:
        raise EngineUnavailable(name, availability.reason, availability.fix)
    engine.load(plan or EnginePlan())
    return engine


def run_eval(
    dataset: str | Path,
    engine_name: str,
    *,
    languages: Sequence[str] = (),
    folders: Sequence[str] = (),
    limit: int | None = None,
    by: str = "language",
    on_start: Callable[[int], None] | None = None,
    on_item: Callable[[ItemRecord], None] | None = None,
) -> EvalReport:
    """Evaluate a named engine on the items of a dataset that have ground truth.

    `on_start` hears how many items were selected, `on_item` each record as it is made.
    """
    if by not in GROUPINGS:
        raise ValueError(f"cannot group by {by!r}; choose one of {', '.join(GROUPINGS)}")
    data = read_manifest(dataset)
    items = select(data.items, languages=languages, folders=folders, limit=limit)
    if not items:
        raise InputError(data.manifest, "no item with ground truth matches the filters")
    if on_start is not None:
        on_start(len(items))
    engine = load_engine(engine_name)
    try:
        records = evaluate_items(engine, items, on_item=on_item)
    finally:
        engine.close()
    filters = {"languages": list(languages), "folders": list(folders), "limit": limit}
    return EvalReport(engine=engine_name, dataset=str(data.root), by=by, filters=filters, records=records)


def summary_table(report: EvalReport) -> Table:
    """The report's summary as a Rich table, one row per group."""
    table = Table(title=f"{report.engine} on {report.dataset}")
    table.add_column(report.by)
    for name in ("items", "failed", "CER", "WER", "bag WER", "s/page"):
        table.add_column(name, justify="right")
    for row in report.summary:
        table.add_row(
            row.key,
            str(row.items),
            str(row.failures),
            f"{row.chars.rate:.4f}",
            f"{row.words.rate:.4f}",
            f"{row.bag_of_words.rate:.4f}",
            f"{row.seconds_per_page:.2f}",
        )
    return table
