"""The auto chain's order from published evidence, licences, the user's own bench results, and the
router asking each engine only for tasks it has (issue 19 items 3 and 4, issue 12's Qwen2-VL)."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from polyocr import published as pub
from polyocr.cli import app
from polyocr.documents import Page
from polyocr.engines import base
from polyocr.engines.base import ENTRIES, engine_class, entries, ranked
from polyocr.errors import EngineUnavailable
from polyocr.results import PageResult
from polyocr.router import Router, resolve_chain
from polyocr.router import measured as m
from polyocr.router.resolve import ranking
from polyocr.types import EngineKind, Task, TaskKind
from test_router_chain import EVENTS, PROFILE, Double, page
from test_router_config import CPU, H100

ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

# RULE applied by hand to the table's VLMs: OmniDocBench v1.5 overall first (glm-ocr 94.62,
# paddleocr-vl-1.5 94.5, paddleocr-vl 92.56, deepseek-ocr 91.09, mineru 90.67, dots 88.41), then
# olmOCR-bench (dots-mocr 83.9, lighton-ocr 83.2, olmocr 82.3), then size (got 0.58B, qwen3vl 2.1B,
# qwen2vl 2.2B, phi35v 4.2B).
PUBLISHED_ORDER = [
    "glm-ocr", "paddleocr-vl-1.5", "paddleocr-vl", "deepseek-ocr", "mineru", "dots",
    "dots-mocr", "lighton-ocr", "olmocr", "got", "qwen3vl", "qwen2vl", "phi35v",
]  # fmt: skip


# ------------------------------------------------------------------------------ the table


def test_every_registered_vlm_has_a_row_in_the_table() -> None:
    """Checks the registry against the table, so an engine merged without its published evidence fails
    here (rows for engines not registered yet are allowed: they arrive with their engines)."""
    missing = [e.name for e in entries() if e.kind == EngineKind.VLM and pub.published(e.name) is None]
    assert not missing, f"add a row to polyocr/published.py TABLE for {missing}"


def test_every_row_names_its_sources() -> None:
    for row in pub.TABLE:
        assert row.licence.source, row.engine
        assert (row.licence.spdx is None) == (row.licence.commercial_use is None), row.engine
        for score in row.scores:
            assert score.source and ISO_DATE.match(score.date), (row.engine, score)
            assert score.version or score.benchmark != pub.OMNIDOCBENCH, (row.engine, score)
    vlms = [row for row in pub.TABLE if row.engine not in ("tesseract", "rapidocr")]
    assert all(row.params_b for row in vlms)
    assert len({row.engine for row in pub.TABLE}) == len(pub.TABLE)


def test_published_order_follows_the_rule() -> None:
    assert pub.published_order(reversed(PUBLISHED_ORDER)) == PUBLISHED_ORDER
    # names the table lacks are left out, whatever they are
    assert pub.published_order(["not-an-engine", "dots", "glm-ocr"]) == ["glm-ocr", "dots"]


def test_the_rule_never_compares_two_benchmarks() -> None:
    free = pub.Licence("MIT", True, "test")
    low_omni = pub.Published(
        "a", "a", 7.0, free, (pub.Score(pub.OMNIDOCBENCH, "v1.5", "overall", 50.0, "x", "2026-01-01"),)
    )
    high_olm = pub.Published(
        "b", "b", 0.5, free, (pub.Score(pub.OLMOCR_BENCH, "", "overall", 99.0, "x", "2026-01-01"),)
    )
    old_omni = pub.Published(
        "c", "c", 0.1, free, (pub.Score(pub.OMNIDOCBENCH, "v1.0", "overall", 99.0, "x", "2025-01-01"),)
    )
    tiny = pub.Published("d", "d", 0.1, free)
    big = pub.Published("e", "e", 9.0, free)
    ordered = sorted([big, tiny, old_omni, high_olm, low_omni], key=pub.sort_key)
    # an OmniDocBench v1.0 score is not a v1.5 one: "c" ranks among the engines with no score, by size
    assert [row.engine for row in ordered] == ["a", "b", "c", "d", "e"]  # c and d: same size, then name
    assert pub.sort_key(old_omni)[0] == 2 and pub.sort_key(high_olm)[0] == 1


def test_ranked_derives_the_vlm_order_from_the_table() -> None:
    assert all(e.rank is None for e in ENTRIES if e.kind == EngineKind.VLM), "VLM ranks are derived, not typed"
    registered = [e.name for e in entries() if e.kind == EngineKind.VLM]
    expected = [n for n in PUBLISHED_ORDER if n in registered and pub.published(n).auto_allowed]  # type: ignore[union-attr]
    vlms = ranked(EngineKind.VLM)
    assert [e.name for e in vlms] == expected
    assert [e.rank for e in vlms] == list(range(len(expected)))
    # the classical engines keep their typed order (tie-break after their recorded CER)
    assert [e.name for e in ranked(EngineKind.CLASSICAL)] == ["tesseract", "rapidocr"]


# ------------------------------------------------------------------------------ licences


class Restricted(Double):
    name = "nc-vlm"


@pytest.fixture
def restricted(monkeypatch: pytest.MonkeyPatch) -> pub.Published:
    """A registered VLM with the best published score there is, under a non-commercial licence."""
    monkeypatch.setitem(base._REGISTRY, "nc-vlm", base.EngineEntry("nc-vlm", f"{__name__}:Restricted", EngineKind.VLM))
    row = pub.Published(
        "nc-vlm",
        "someone/NC-VLM",
        0.5,
        pub.Licence("CC-BY-NC-4.0", False, "test"),
        (pub.Score(pub.OMNIDOCBENCH, "v1.5", "overall", 99.9, "test", "2026-01-01"),),
    )
    monkeypatch.setitem(pub._BY_ENGINE, "nc-vlm", row)
    return row


def test_a_licence_restricting_commercial_use_keeps_an_engine_out_of_auto(
    restricted: pub.Published, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert "nc-vlm" not in [e.name for e in ranked(EngineKind.VLM)]
    assert "nc-vlm" not in resolve_chain("auto", Task(languages=("eng",)), H100)
    # named, it runs
    assert resolve_chain("nc-vlm", Task(languages=("eng",))) == ["nc-vlm"]
    rows = {row["engine"]: row for row in ranking(["eng"], measured={})}
    assert rows["nc-vlm"]["place"] is None and "commercial use restricted" in rows["nc-vlm"]["left_out"]
    # the same row under a free licence leads auto: the licence alone kept it out
    free = pub.Published(restricted.engine, restricted.model, 0.5, pub.Licence("MIT", True, "test"), restricted.scores)
    monkeypatch.setitem(pub._BY_ENGINE, "nc-vlm", free)
    assert resolve_chain("auto", Task(languages=("eng",)), H100)[0] == "nc-vlm"


def test_an_unverified_licence_keeps_an_engine_out_of_auto(
    restricted: pub.Published, monkeypatch: pytest.MonkeyPatch
) -> None:
    unknown = pub.Published("nc-vlm", "x", 0.5, pub.Licence(None, None, "test"), restricted.scores)
    monkeypatch.setitem(pub._BY_ENGINE, "nc-vlm", unknown)
    assert "nc-vlm" not in resolve_chain("auto", Task(languages=("eng",)), H100)
    assert unknown.licence.label == "not verified (commercial use not verified)"


def test_polyocr_engines_shows_licence_and_tasks() -> None:
    result = CliRunner().invoke(app, ["engines", "--json"])
    assert result.exit_code == 0, result.output
    statuses = {s["name"]: s for s in json.loads(result.stdout)}
    assert statuses["dots"]["licence"] == "MIT" and statuses["dots"]["commercial_use"] is True
    assert statuses["qwen2vl"]["tasks"] == ["text", "region"]
    assert statuses["tesseract"]["tasks"] == ["text", "layout", "layout_only", "region"]
    assert statuses["got"]["licence"] == "Apache-2.0" and "layout" not in statuses["got"]["tasks"]


def test_polyocr_engines_ranked_shows_the_order_and_its_sources() -> None:
    result = CliRunner().invoke(app, ["engines", "--ranked", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["rule"] == pub.RULE
    vlms = [row for row in data["engines"] if row["kind"] == "vlm" and row["place"] is not None]
    assert [row["engine"] for row in vlms] == [e.name for e in ranked(EngineKind.VLM)]
    dots = next(row for row in data["engines"] if row["engine"] == "dots")
    assert {"benchmark": pub.OMNIDOCBENCH, "value": 88.41, "source": "arXiv:2509.22186"}.items() <= dots["scores"][
        0
    ].items()
    table = CliRunner().invoke(app, ["engines", "--ranked"], env={"COLUMNS": "250"})
    assert table.exit_code == 0 and "arXiv:2510.14528" in table.stdout and "OmniDocBench v1.5" in table.stdout


# ------------------------------------------------------------------------------ the user's bench results


def _rows(**cer: float) -> list[dict[str, object]]:
    return [
        {"language": lang, "cer": value, "pages": 4, "success_rate": 1.0, "refused": False}
        for lang, value in cer.items()
    ]


def test_recorded_results_reorder_auto(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bench-results.json"
    monkeypatch.setenv("POLYOCR_BENCH_RESULTS", str(path))
    task = Task(languages=("eng",))
    assert resolve_chain("auto", task, CPU) == ["tesseract", "rapidocr"]  # recorded dev-set CER
    m.record(
        [("tesseract", _rows(eng=0.09)), ("rapidocr", _rows(eng=0.02)), ("auto", _rows(eng=0.0))],
        created="2026-12-01T00:00:00+00:00",
        command="polyocr bench mine --engines tesseract,rapidocr,auto",
        datasets=["mine"],
    )
    assert resolve_chain("auto", task, CPU) == ["rapidocr", "tesseract"]  # the user's pages say otherwise
    data = json.loads(path.read_text(encoding="utf-8"))
    assert set(data["engines"]) == {"tesseract", "rapidocr"}  # a chain is not an engine's measurement
    # no row for the task's languages: the published/recorded order stands
    assert resolve_chain("auto", Task(languages=("chi_sim",)), CPU) == ["tesseract", "rapidocr"]
    monkeypatch.setenv("POLYOCR_BENCH_RESULTS", "off")
    assert resolve_chain("auto", task, CPU) == ["tesseract", "rapidocr"]


def test_measured_order_weighs_languages_and_puts_failures_last(tmp_path: Path) -> None:
    path = tmp_path / "r.json"
    m.record(
        [
            ("a", _rows(eng=0.30, rus=0.10)),
            ("b", _rows(eng=0.05, rus=0.40)),
            ("c", [{"language": "eng", "cer": 1.0, "pages": 4, "success_rate": 0.0, "refused": False}]),
            ("d", [{"language": "rus", "cer": 1.0, "pages": 3, "success_rate": 0.0, "refused": True}]),
        ],
        created="t",
        command="c",
        datasets=["x"],
        path=path,
    )
    measured = m.load(path)
    assert "d" not in measured  # refused rows are the spec's design, not a measurement
    names = ["c", "x", "a", "b"]  # the published order
    assert m.prefer_measured(names, ["eng"], measured) == ["b", "a", "x", "c"]
    assert m.prefer_measured(names, ["rus"], measured) == ["a", "b", "c", "x"]
    assert m.prefer_measured(names, ["eng", "rus"], measured) == ["a", "b", "x", "c"]  # 0.20 < 0.225
    # a later run replaces an engine's record and keeps the others'
    m.record([("b", _rows(eng=0.5))], created="t2", command="c2", datasets=["y"], path=path)
    again = m.load(path)
    assert again["b"].rows == {"eng": (0.5, 4, 1.0)} and again["a"].rows["rus"] == (0.10, 4, 1.0)


def test_a_damaged_results_file_is_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "r.json"
    path.write_text("{not json", encoding="utf-8")
    assert m.load(path) == {}
    assert "ignoring the bench results" in caplog.text


def test_cli_bench_records_the_engines_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "bench-results.json"
    monkeypatch.setenv("POLYOCR_BENCH_RESULTS", str(path))
    args = ["bench", "--synth", str(tmp_path / "synth"), "--count", "1", "--dpi", "100"]
    invocation = CliRunner().invoke(app, [*args, "--engines", "tesseract", "--out", str(tmp_path / "o"), "--quiet"])
    assert invocation.exit_code == 0, invocation.output
    recorded = m.load(path)
    assert set(recorded) == {"tesseract"} and recorded["tesseract"].rows
    assert recorded["tesseract"].command.startswith("polyocr bench --engines tesseract")
    shown = CliRunner().invoke(app, ["engines", "--ranked", "--json", "--lang", "eng"])
    tesseract = next(row for row in json.loads(shown.stdout)["engines"] if row["engine"] == "tesseract")
    assert tesseract["measured"]["pages"] >= 1


# ------------------------------------------------------------------------------ tasks


class TextOnly(Double):
    """A box-less engine (like GOT-OCR 2.0): text and regions only. Records the tasks it is given."""

    name = "text-only"
    tasks: ClassVar[frozenset[TaskKind]] = frozenset({TaskKind.TEXT, TaskKind.REGION})
    given: ClassVar[list[Task]] = []

    def recognize(self, pages: Sequence[Page], task: Task) -> list[PageResult]:
        TextOnly.given.append(task)
        return super().recognize(pages, task)


@pytest.fixture
def text_only(monkeypatch: pytest.MonkeyPatch) -> None:
    entry = base.EngineEntry("text-only", f"{__name__}:TextOnly", EngineKind.VLM)
    monkeypatch.setitem(base._REGISTRY, "text-only", entry)
    TextOnly.given.clear()
    EVENTS.clear()


def test_default_layout_task_degrades_for_a_named_engine_without_layout(text_only: None) -> None:
    task = Task(languages=("eng",))  # the default: layout, not named by the user
    assert resolve_chain("text-only", task) == ["text-only"]
    with Router(["text-only"], task, profile=PROFILE) as router:
        [result] = router.recognize_pages([page()])
    [given] = TextOnly.given
    assert given.kind == TaskKind.TEXT and given.degraded_from == TaskKind.LAYOUT
    [attempt] = result.attempts
    assert (
        attempt.outcome.value == "ok"
        and attempt.settings["task"] == "text (asked layout; text-only has no layout mode)"
    )


def test_a_named_engine_is_refused_a_task_it_lacks(text_only: None) -> None:
    for task in (Task(kind=TaskKind.LAYOUT, explicit=True), Task(kind=TaskKind.LAYOUT_ONLY)):
        with pytest.raises(EngineUnavailable, match=f"does not do the {task.kind.value} task") as caught:
            resolve_chain("text-only", task)
        assert "text, region" in caught.value.reason and "--task" in caught.value.fix


def test_the_router_never_asks_an_engine_for_a_task_it_lacks(text_only: None) -> None:
    """A server router serves many tasks with one chain: a call's task the engine lacks is not sent."""
    with Router(["text-only", "tesseract"], Task(kind=TaskKind.TEXT), profile=PROFILE) as router:
        [result] = router.recognize_pages([page()], task=Task(kind=TaskKind.LAYOUT_ONLY, languages=("eng",)))
    assert TextOnly.given == [] and ("text-only", "call") not in EVENTS
    assert (result.attempts[0].engine, result.attempts[0].outcome.value) == ("text-only", "unavailable")
    assert "does not do layout_only" in (result.attempts[0].error or "")
    assert [a.engine for a in result.attempts][1:] == ["tesseract"]  # passed on to the next engine


def test_auto_skips_engines_without_the_task(text_only: None, monkeypatch: pytest.MonkeyPatch) -> None:
    row = pub.Published(
        "text-only",
        "x",
        0.1,
        pub.Licence("MIT", True, "t"),
        (pub.Score(pub.OMNIDOCBENCH, "v1.5", "overall", 99.0, "t", "2026-01-01"),),
    )
    monkeypatch.setitem(pub._BY_ENGINE, "text-only", row)
    assert resolve_chain("auto", Task(languages=("eng",), kind=TaskKind.TEXT), H100)[0] == "text-only"
    assert "text-only" not in resolve_chain("auto", Task(languages=("eng",)), H100)  # layout: not offered


def test_hf_engines_answer_a_degraded_layout_task_with_their_richest_text() -> None:
    degraded = Task(kind=TaskKind.TEXT, degraded_from=TaskKind.LAYOUT)
    got = engine_class("got")()
    assert got._mode(degraded) == "markdown"  # "OCR with format", GOT's whole-page recipe
    assert got._mode(Task(kind=TaskKind.TEXT)) == "text"
    assert engine_class("qwen2vl")()._mode(degraded) == "text"


def test_qwen2vl_offers_plain_text_and_no_invented_layout() -> None:
    cls = engine_class("qwen2vl")
    assert cls.tasks == frozenset({TaskKind.TEXT, TaskKind.REGION})
    spec = cls.spec  # type: ignore[attr-defined]
    assert set(spec.prompts) == {"text"} and spec.parse_layout is None
    assert not any("box" in prompt for prompt in spec.prompts.values())
    with pytest.raises(EngineUnavailable, match="does not do the layout task"):
        resolve_chain("qwen2vl", Task(kind=TaskKind.LAYOUT, explicit=True))


def test_cli_named_engine_for_a_task_it_lacks_exits_with_the_reason(tmp_path: Path) -> None:
    image = tmp_path / "page.png"
    page().image.save(image)
    refused = CliRunner().invoke(app, ["ocr", str(image), "--engine", "qwen2vl", "--task", "layout", "--quiet"])
    assert refused.exit_code == 2
    assert "qwen2vl" in refused.output and "does not do the layout task" in refused.output


def test_cli_default_task_on_a_text_only_engine_records_the_degrade(tmp_path: Path) -> None:
    sys.path.insert(0, str(Path(__file__).parent))
    from tiny_hf import build_qwen2vl

    checkpoint = build_qwen2vl(tmp_path / "qwen2vl")
    image = tmp_path / "page.png"
    picture = Image.new("RGB", (320, 240), "white")
    ImageDraw.Draw(picture).text((20, 20), "Hello world", fill="black")
    picture.save(image)
    args = ["ocr", str(image), "--engine", "qwen2vl", "--model", str(checkpoint), "--max-new-tokens", "3"]
    result = CliRunner().invoke(app, [*args, "--format", "json", "--quiet"])
    document = json.loads(result.stdout)
    attempts = [a for a in document["pages"][0]["attempts"] if a["engine"] == "qwen2vl"]  # retries included
    assert attempts and all(
        a["settings"]["task"] == "text (asked layout; qwen2vl has no layout mode)" for a in attempts
    )
