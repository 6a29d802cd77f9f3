"""What a run's attempts add up to, per engine: how often it answered, and how often the router had
to fall back past it. Computed from the PageResults alone, so a stored JSON result gives the same
summary as the live run."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from polyocr.results import DocumentResult, Outcome, PageResult, PageStatus


@dataclass
class EngineStats:
    pages: int = 0  # pages offered to it
    answered: int = 0  # pages whose final result is its answer
    fell_back: int = 0  # pages it did not answer acceptably that went on down the chain
    outcomes: Counter[str] = field(default_factory=Counter)  # attempts by outcome
    seconds: float = 0.0

    @property
    def success_rate(self) -> float:
        return self.answered / self.pages if self.pages else 0.0


@dataclass
class RunSummary:
    pages: int = 0
    failed: int = 0  # failed on every engine
    partial: int = 0
    fell_back: int = 0  # pages answered by an engine other than the first one tried
    engines: dict[str, EngineStats] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for name, stats in self.engines.items():
            data["engines"][name]["outcomes"] = dict(stats.outcomes)
            data["engines"][name]["success_rate"] = round(stats.success_rate, 4)
            data["engines"][name]["seconds"] = round(stats.seconds, 3)
        return data

    def add(self, page: PageResult) -> None:
        """Count one finished page (the CLI adds pages as they finish, without keeping them)."""
        self.pages += 1
        self.failed += page.status == PageStatus.FAILED
        self.partial += page.status == PageStatus.PARTIAL
        tried = [a.engine for a in page.attempts if a.outcome != Outcome.UNAVAILABLE]
        if page.engine and tried and tried[0] != page.engine:
            self.fell_back += 1
        for name in dict.fromkeys(a.engine for a in page.attempts):
            stats = self.engines.setdefault(name, EngineStats())
            mine = [a for a in page.attempts if a.engine == name]
            if all(a.outcome == Outcome.UNAVAILABLE for a in mine):
                stats.outcomes[Outcome.UNAVAILABLE.value] += len(mine)
                continue
            stats.pages += 1
            stats.outcomes.update(a.outcome.value for a in mine)
            stats.seconds += sum(a.seconds for a in mine)
            if page.engine == name and page.status != PageStatus.FAILED:
                stats.answered += 1
            else:
                stats.fell_back += 1

    def line(self) -> str:
        """One line for a terminal: per engine, pages answered of pages tried, and fallbacks."""
        parts = []
        for name, stats in self.engines.items():
            text = f"{name} {stats.answered}/{stats.pages} ({stats.success_rate:.0%})"
            if stats.fell_back:
                text += f", fell back on {stats.fell_back}"
            parts.append(text)
        return "; ".join(parts) or "none"


def summarize(documents: Iterable[DocumentResult]) -> RunSummary:
    summary = RunSummary()
    for doc in documents:
        for page in doc.pages:
            summary.add(page)
    return summary
