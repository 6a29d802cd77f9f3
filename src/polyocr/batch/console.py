"""`polyocr batch` on a terminal: a Rich progress bar and the final report (stderr)."""

from __future__ import annotations

import json
import time

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from polyocr.batch.driver import BatchProgress, BatchReport
from polyocr.batch.worker import PageTask
from polyocr.results import PageResult, PageStatus


class RichProgress(BatchProgress):
    """Pages done / total across every input, pages/s of this run, ETA, and failures so far."""

    def __init__(self, console: Console, quiet: bool = False):
        self.console = console
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("[red]{task.fields[failed]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=quiet,
        )
        self.bar: TaskID | None = None
        self.failed = 0
        self.done_now = 0
        self.start_time = time.perf_counter()

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def _failed_text(self) -> str:
        return f"{self.failed} failed" if self.failed else ""

    def start(self, total: int, done: int, failed: int) -> None:
        self.failed = failed
        self.start_time = time.perf_counter()
        if done and not self.quiet:
            self.console.print(f"[dim]resuming: {done} of {total} page(s) already done[/dim]")
        self.bar = self.progress.add_task("pages", total=total, completed=done, rate="", failed=self._failed_text())

    def page(self, task: PageTask, result: PageResult) -> None:
        self.done_now += 1
        if result.status == PageStatus.FAILED:
            self.failed += 1
            if not self.quiet:
                self.console.print(
                    f"[red]page failed:[/red] {escape(task.source)} page {task.number}: "
                    + escape("; ".join(result.errors))
                )
        if self.bar is not None:
            rate = self.done_now / max(1e-9, time.perf_counter() - self.start_time)
            self.progress.update(
                self.bar, advance=1, rate=f"{rate:.2f} pages/s", failed=self._failed_text(),
                description=f"pages [{result.engine or '-'}]",
            )  # fmt: skip

    def note(self, message: str) -> None:
        if not self.quiet:
            self.console.print(f"[yellow]note:[/yellow] {escape(message)}")


def print_report(console: Console, report: BatchReport, as_json: bool = False) -> None:
    if as_json:
        console.print_json(json.dumps(report.to_dict()))
        return
    for path, error in report.unreadable:
        console.print(f"[red]error:[/red] {escape(error or path)}")
    console.print(
        f"{report.inputs} input(s), {report.pages} page(s): {report.done_now} done now, {report.done_before} before; "
        f"{report.failed} failed, {report.partial} partial, {report.summary.fell_back} fallback(s), "
        f"{len(report.unreadable)} unreadable input(s); "
        f"{report.pages_per_second:.2f} pages/s over {report.seconds:.1f} s "
        f"({escape(report.mode)}); engines: {escape(report.summary.line())}",
        soft_wrap=True,
    )
    if report.worker_crashes:
        console.print(f"{report.worker_crashes} worker process(es) died; their pages were retried once")
    for reason, count in report.failures.most_common(10):
        console.print(f"  [red]{count}[/red] page(s): {escape(reason)}", soft_wrap=True)
