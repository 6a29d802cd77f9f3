"""Retry and fallback with test-double engines standing for what polyocr cannot control: an engine
that runs out of memory, loops, answers nothing, hangs or crashes. The router, checks and policy
under test are the real ones; the doubles are registered in the engine registry for one test."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import ClassVar

import pytest
from PIL import Image, ImageDraw

from polyocr.config import RouterConfig
from polyocr.documents import Page
from polyocr.engines import base
from polyocr.engines.base import Engine
from polyocr.errors import EngineError
from polyocr.results import Block, Generation, Outcome, PageResult, PageStatus
from polyocr.router import Router, summarize
from polyocr.router.policy import LOOP_LADDER, OOM_PIXEL_FLOOR, is_oom, smaller_plan
from polyocr.runtime.probe import Profile, TorchInfo
from polyocr.scripts import LATIN
from polyocr.types import Availability, EngineKind, EnginePlan, Task, TaskKind

GOOD_TEXT = "The quick brown fox jumps over the lazy dog near the river bank."
LOOP_TEXT = "the table row " * 200
EVENTS: list[tuple[str, str]] = []  # (engine, "load"|"close"|"call"), in order
RELEASE = threading.Event()  # lets a hanging double finish when its test is over
PROFILE = Profile(recorded="hand-written: a CPU machine with torch", torch=TorchInfo(version="2.13.0"))


def page(number: int = 1, size: tuple[int, int] = (1600, 1000)) -> Page:
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for i in range(6):
        draw.text((40, 40 + 20 * i), "Some printed words on a line", fill="black")
    return Page(image, number, "doc.png")


class Double(Engine):
    """Answers GOOD_TEXT; subclasses fail in one way. Every load/close/call goes into EVENTS."""

    name: ClassVar[str] = "double"
    kind: ClassVar[EngineKind] = EngineKind.VLM
    scripts: ClassVar[frozenset[str]] = frozenset({LATIN, "Cyrillic"})

    def available(self, profile: Profile) -> Availability:
        return Availability.yes()

    def load(self, plan: EnginePlan) -> None:
        EVENTS.append((self.name, "load"))
        self.plan = plan

    def close(self) -> None:
        EVENTS.append((self.name, "close"))

    def recognize(self, pages: Sequence[Page], task: Task) -> list[PageResult]:
        EVENTS.append((self.name, "call"))
        return [self.answer(p) for p in pages]

    def answer(self, page: Page) -> PageResult:
        return PageResult(
            page=page.number,
            blocks=[Block(bbox=(0, 0, 10, 10), text=GOOD_TEXT)],
            generation=Generation(stop_reason="eos", generated_tokens=20),
        )


class Good(Double):
    name = "good"
    kind = "classical"


class Good2(Double):
    name = "good2"


class OutOfMemory(Double):
    """Runs out of memory unless pages are at most 400,000 pixels (or 1 MP for the host error)."""

    name = "oom"

    def answer(self, page: Page) -> PageResult:
        if (self.plan.max_pixels or 10**9) > OOM_PIXEL_FLOOR:
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return super().answer(page)


class AlwaysOutOfMemory(Double):
    name = "oom-always"

    def answer(self, page: Page) -> PageResult:
        raise MemoryError()


class OutOfMemoryInBatches(Double):
    """Runs out of memory on any batch of more than one page."""

    name = "oom-batch"

    def recognize(self, pages: Sequence[Page], task: Task) -> list[PageResult]:
        if len(pages) > 1:
            raise MemoryError()
        return super().recognize(pages, task)


class Looper(Double):
    """Loops to the token limit until it samples at a temperature of at least 0.7."""

    name = "looper"

    def answer(self, page: Page) -> PageResult:
        if self.plan.generation.get("temperature", 0) >= 0.7:
            return super().answer(page)
        return PageResult(
            page=page.number,
            blocks=[Block(bbox=(0, 0, 10, 10), text=LOOP_TEXT)],
            generation=Generation(stop_reason="max_tokens", generated_tokens=4096),
        )


class AlwaysLoops(Looper):
    name = "loops-always"

    def answer(self, page: Page) -> PageResult:
        return PageResult(
            page=page.number,
            status=PageStatus.PARTIAL,
            blocks=[Block(bbox=(0, 0, 10, 10), text="Recovered heading " + LOOP_TEXT)],
            generation=Generation(stop_reason="max_tokens", generated_tokens=4096),
        )


class Empty(Double):
    name = "empty"

    def answer(self, page: Page) -> PageResult:
        return PageResult(page=page.number, text="  \n ")


class Hangs(Double):
    name = "hangs"

    def recognize(self, pages: Sequence[Page], task: Task) -> list[PageResult]:
        EVENTS.append((self.name, "call"))
        RELEASE.wait(30)
        return []


class Crashes(Double):
    """Crashes on even pages."""

    name = "crashes"
    kind = "classical"

    def answer(self, page: Page) -> PageResult:
        if page.number % 2 == 0:
            raise EngineError(self.name, f"segfault-like failure on page {page.number}")
        return super().answer(page)


class Unavailable(Double):
    name = "absent"

    def available(self, profile: Profile) -> Availability:
        return Availability.no("no weights here", "download them")


class BrokenCheckpoint(Double):
    name = "broken"

    def load(self, plan: EnginePlan) -> None:
        EVENTS.append((self.name, "load"))
        raise RuntimeError("size mismatch for lm_head.weight")


DOUBLES = (
    Good,
    Good2,
    OutOfMemory,
    AlwaysOutOfMemory,
    OutOfMemoryInBatches,
    Looper,
    AlwaysLoops,
    Empty,
    Hangs,
    Crashes,
    Unavailable,
    BrokenCheckpoint,
)


@pytest.fixture(autouse=True)
def doubles(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for cls in DOUBLES:
        monkeypatch.setitem(
            base._REGISTRY, cls.name, base.EngineEntry(cls.name, f"{__name__}:{cls.__name__}", cls.kind)
        )
    EVENTS.clear()
    RELEASE.clear()
    yield
    RELEASE.set()


def run(chain: list[str], pages: list[Page], task: Task | None = None) -> list[PageResult]:
    with Router(chain, task or Task(kind=TaskKind.TEXT), profile=PROFILE) as router:
        return router.recognize_pages(pages)


def outcomes(result: PageResult) -> list[tuple[str, str]]:
    return [(a.engine, a.outcome.value) for a in result.attempts]


def test_out_of_memory_halves_the_page_until_it_fits() -> None:
    [result] = run(["oom"], [page(size=(2000, 2000))])
    assert result.status == PageStatus.OK and result.engine == "oom"
    assert outcomes(result) == [("oom", "oom"), ("oom", "oom"), ("oom", "ok")]
    assert [a.settings.get("max_pixels") for a in result.attempts] == [None, 2_000_000, 1_000_000]
    assert "CUDA out of memory" in result.attempts[0].error
    # each smaller page size is a reload: close, then load with the smaller plan
    assert EVENTS == [
        ("oom", "load"),
        ("oom", "call"),
        ("oom", "close"),
        ("oom", "load"),
        ("oom", "call"),
        ("oom", "close"),
        ("oom", "load"),
        ("oom", "call"),
        ("oom", "close"),
    ]


def test_out_of_memory_shrinks_the_batch_after_the_pixel_floor() -> None:
    plan = EnginePlan(max_pixels=OOM_PIXEL_FLOOR, batch_size=4)
    assert smaller_plan(plan, 4_000_000).batch_size == 2
    assert smaller_plan(EnginePlan(max_pixels=OOM_PIXEL_FLOOR), 4_000_000) is None
    assert smaller_plan(EnginePlan(), 3_000_000).max_pixels == 1_500_000


def test_out_of_memory_is_recognised_by_type_or_message() -> None:
    torch = pytest.importorskip("torch")
    assert is_oom(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_oom(MemoryError())
    assert is_oom(RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory"))
    assert not is_oom(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


def test_out_of_memory_at_the_pixel_floor_halves_the_batch_for_the_rest_of_the_run() -> None:
    config = RouterConfig(plans={"oom-batch": {"batch_size": 4}})
    with Router(["oom-batch"], Task(kind=TaskKind.TEXT), config=config, profile=PROFILE) as router:
        results = router.recognize_pages([page(n, size=(800, 600)) for n in range(1, 6)])
    assert all(r.engine == "oom-batch" for r in results)
    assert [a.settings["batch_size"] for a in results[0].attempts] == [4, 2, 1]
    assert [a.outcome for a in results[0].attempts] == [Outcome.OOM, Outcome.OOM, Outcome.OK]
    assert outcomes(results[4]) == [("oom-batch", "ok")]  # the fifth page went at the lowered batch size


def test_host_out_of_memory_everywhere_falls_back() -> None:
    [result] = run(["oom-always", "good"], [page(size=(1200, 1000))])
    assert result.engine == "good"
    # 1.2 MP, then the 1 MP floor, at batch size 1: nothing left to shrink
    assert outcomes(result) == [("oom-always", "oom"), ("oom-always", "oom"), ("good", "ok")]
    assert result.attempts[1].settings["max_pixels"] == OOM_PIXEL_FLOOR


def test_a_loop_is_retried_with_repetition_controls_then_temperature() -> None:
    results = run(["looper"], [page(1), page(2)])
    for result in results:
        assert result.engine == "looper" and result.status == PageStatus.OK
        assert [a.outcome for a in result.attempts] == [Outcome.REJECTED] * 3 + [Outcome.OK]
        assert "token_limit" in result.attempts[0].error and "repeated_tail" in result.attempts[0].error
        generations = [a.settings.get("generation", {}) for a in result.attempts]
        assert generations == [{}, *LOOP_LADDER]
        # the plan is runtime.attention's decision for this (CPU) profile
        assert {k: result.attempts[0].settings[k] for k in ("device", "dtype", "attention")} == {
            "device": "cpu",
            "dtype": "float32",
            "attention": "sdpa",
        }
    # the retries changed only per-call settings: no reload, and no reload between the pages
    assert EVENTS.count(("looper", "load")) == 1


def test_the_plan_is_restored_after_a_loop_retry() -> None:
    with Router(["looper"], Task(kind=TaskKind.TEXT), profile=PROFILE) as router:
        router.recognize_pages([page(1)])
        assert router.pool.engine("looper").plan.generation == {}


def test_endless_loop_falls_back_and_partial_answer_is_kept_when_nothing_does_better() -> None:
    [result] = run(["loops-always", "good"], [page()])
    assert result.engine == "good" and result.status == PageStatus.OK
    assert outcomes(result)[-1] == ("good", "ok") and len(result.attempts) == 1 + len(LOOP_LADDER) + 1
    [salvaged] = run(["loops-always", "empty"], [page()])
    assert salvaged.status == PageStatus.PARTIAL and salvaged.engine == "loops-always"
    assert salvaged.text.startswith("Recovered heading")
    assert any(e.startswith("empty: empty_output") for e in salvaged.errors)


def test_empty_output_falls_back() -> None:
    [result] = run(["empty", "good"], [page()])
    assert result.engine == "good"
    assert outcomes(result) == [("empty", "rejected"), ("good", "ok")]
    assert result.attempts[0].error.startswith("empty_output: no text")


def test_a_hanging_engine_times_out_and_is_abandoned() -> None:
    task = Task(kind=TaskKind.TEXT, timeout=0.2)
    results = run(["hangs", "good"], [page(1), page(2)], task)
    assert [r.engine for r in results] == ["good", "good"]
    assert outcomes(results[0]) == [("hangs", "timeout"), ("good", "ok")]
    assert "no answer within" in results[0].attempts[0].error
    assert outcomes(results[1]) == [("hangs", "unavailable"), ("good", "ok")]  # its next batch skips it
    assert EVENTS.count(("hangs", "call")) == 1
    assert ("hangs", "close") not in EVENTS  # close() could wait on the hung call


def test_abandoned_engine_is_skipped_by_later_pages() -> None:
    task = Task(kind=TaskKind.TEXT, timeout=0.2)
    with Router(["hangs", "good"], task, profile=PROFILE) as router:
        router.recognize_page(page(1))
        second = router.recognize_page(page(2))
    assert outcomes(second) == [("hangs", "unavailable"), ("good", "ok")]
    assert "abandoned" in second.attempts[0].error


def test_a_crash_on_one_page_loses_nothing_of_the_others() -> None:
    results = run(["crashes"], [page(1), page(2), page(3)])
    assert [r.status for r in results] == [PageStatus.OK, PageStatus.FAILED, PageStatus.OK]
    assert [r.page for r in results] == [1, 2, 3]
    failed = results[1]
    assert failed.errors == ["crashes: EngineError: engine 'crashes': segfault-like failure on page 2"]
    assert outcomes(failed) == [("crashes", "error")]


def test_a_page_failing_everywhere_carries_every_error() -> None:
    [result] = run(["absent", "empty", "crashes"], [page(2)])
    assert result.status == PageStatus.FAILED and result.engine is None
    assert outcomes(result) == [("absent", "unavailable"), ("empty", "rejected"), ("crashes", "error")]
    assert result.errors[0] == "absent: no weights here (fix: download them)"
    assert len(result.errors) == 3


def test_engines_load_once_and_only_one_large_model_at_a_time() -> None:
    pages = [page(n) for n in range(1, 4)]
    config = RouterConfig(plans={"empty": {"batch_size": 3}})
    with Router(["empty", "good2", "good"], Task(kind=TaskKind.TEXT), config=config, profile=PROFILE) as router:
        router.recognize_pages(pages)
        router.recognize_pages(pages)
    loads = [e for e in EVENTS if e[1] in ("load", "close")]
    # good2 needs the memory of empty (both are VLMs): empty is closed first, then reloaded for the
    # second window; the classical engine is never loaded (good2 answered everything)
    assert loads == [
        ("empty", "load"),
        ("empty", "close"),
        ("good2", "load"),
        ("good2", "close"),
        ("empty", "load"),
        ("empty", "close"),
        ("good2", "load"),
        ("good2", "close"),
    ]
    assert EVENTS.count(("empty", "call")) == 2  # one batch of three pages per window
    assert EVENTS.count(("good2", "call")) == 6  # its plan keeps the default batch size of 1


def test_an_engine_that_fails_to_load_is_skipped_for_the_run() -> None:
    with Router(["broken", "good"], Task(kind=TaskKind.TEXT), profile=PROFILE) as router:
        results = router.recognize_pages([page(1)]) + router.recognize_pages([page(2)])
    assert [outcomes(r) for r in results] == [[("broken", "unavailable"), ("good", "ok")]] * 2
    assert results[0].attempts[0].error == "failed to load: RuntimeError: size mismatch for lm_head.weight"
    assert EVENTS.count(("broken", "load")) == 1


def test_an_unavailable_engine_is_asked_once() -> None:
    with Router(["absent", "good"], Task(kind=TaskKind.TEXT), profile=PROFILE) as router:
        results = [router.recognize_page(page(n)) for n in (1, 2)]
    assert all(outcomes(r) == [("absent", "unavailable"), ("good", "ok")] for r in results)


def test_summary_counts_success_rates_and_fallbacks() -> None:
    from polyocr.results import DocumentResult

    results = run(["crashes", "empty", "good"], [page(n) for n in range(1, 5)])
    summary = summarize([DocumentResult(source="doc.png", pages=results)])
    assert (summary.pages, summary.failed, summary.fell_back) == (4, 0, 2)
    crashes, empty, good = (summary.engines[n] for n in ("crashes", "empty", "good"))
    assert (crashes.pages, crashes.answered, crashes.fell_back, crashes.success_rate) == (4, 2, 2, 0.5)
    assert (empty.pages, empty.answered, dict(empty.outcomes)) == (2, 0, {"rejected": 2})
    assert (good.pages, good.answered, good.success_rate) == (2, 2, 1.0)
    assert summary.line() == "crashes 2/4 (50%), fell back on 2; empty 0/2 (0%), fell back on 2; good 2/2 (100%)"
    assert summary.to_dict()["engines"]["crashes"]["outcomes"] == {"ok": 2, "error": 2}
