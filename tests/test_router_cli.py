"""A real chain on this CPU machine, from the command line: a tiny random-weight dots.ocr produces
junk, the checks reject it (after the loop retries), Tesseract produces the text, and the record
and the summary say so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import SAMPLE_PDF
from polyocr.cli import app
from polyocr.documents import load_pages
from polyocr.results import DocumentResult, PageStatus
from polyocr.router.policy import LOOP_LADDER
from tiny_dots import build_tiny_dots


@pytest.fixture(scope="module")
def tiny_dots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_dots(tmp_path_factory.mktemp("dots") / "checkpoint")


@pytest.fixture(scope="module")
def heading(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("page") / "heading.png"
    load_pages(SAMPLE_PDF)[0].image.crop((0, 0, 1280, 330)).save(path)
    return path


def summary_from(stderr: str) -> dict:
    """The JSON summary --format json writes last on stderr (after any library warnings)."""
    return json.loads(stderr[stderr.rindex('{\n  "summary"') :])["summary"]


def test_junk_from_dots_falls_back_to_tesseract(tiny_dots: Path, heading: Path, tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "polyocr",
            "ocr",
            str(heading),
            "--engine",
            "dots,tesseract",
            "--model",
            str(tiny_dots),
            "--max-new-tokens",
            "24",
            "--lang",
            "eng",
            "--format",
            "json",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    [page] = DocumentResult.from_json((tmp_path / "heading.json").read_text(encoding="utf-8")).pages
    assert page.engine == "tesseract" and page.status == PageStatus.OK
    assert "Reading Machines" in page.text
    dots = [a for a in page.attempts if a.engine == "dots"]
    assert all(a.outcome == "rejected" for a in dots)
    # Greedy junk runs to the token limit and is no layout JSON, so the loop ladder starts; the sampled
    # retries are random (unseeded), so the ladder goes on only while an answer still looks like a loop.
    assert "token_limit" in dots[0].error and "layout_unparsed" in dots[0].error
    assert dots[0].settings == {"device": "cpu", "dtype": "float32", "attention": "sdpa", "batch_size": 1}
    assert 2 <= len(dots) <= 1 + len(LOOP_LADDER)
    assert [a.settings["generation"] for a in dots[1:]] == list(LOOP_LADDER[: len(dots) - 1])
    assert [a.outcome for a in page.attempts[len(dots) :]] == ["ok"]
    summary = summary_from(run.stderr)
    assert summary["fell_back"] == 1 and summary["failed"] == 0
    assert summary["engines"]["dots"] | {"seconds": 0} == {
        "pages": 1,
        "answered": 0,
        "fell_back": 1,
        "outcomes": {"rejected": len(dots)},
        "seconds": 0,
        "success_rate": 0.0,
    }
    assert summary["engines"]["tesseract"]["success_rate"] == 1.0


def test_exit_code_is_nonzero_only_when_a_page_failed_everywhere(tiny_dots: Path, heading: Path) -> None:
    runner = CliRunner()
    alone = runner.invoke(
        app,
        ["ocr", str(heading), "--engine", "dots", "--model", str(tiny_dots), "--max-new-tokens", "8", "--lang", "eng"],
    )
    assert alone.exit_code == 1
    assert "page failed" in alone.stderr and "token_limit" in alone.stderr
    assert "0/1 (0%)" in alone.stderr and "1 failed page(s)" in alone.stderr
    rescued = runner.invoke(
        app,
        [
            "ocr",
            str(heading),
            "--engine",
            "dots,tesseract",
            "--model",
            str(tiny_dots),
            "--max-new-tokens",
            "8",
            "--lang",
            "eng",
        ],
    )
    assert rescued.exit_code == 0, rescued.stderr
    assert "1 fallback(s)" in rescued.stderr and "tesseract 1/1 (100%)" in rescued.stderr


def test_an_override_that_cannot_run_is_a_usage_error_before_any_page(tiny_dots: Path, heading: Path) -> None:
    # flash-attn is not installed here (and there is no GPU): the choice is refused up front, exit 2,
    # with the reason and no page processed.
    result = CliRunner().invoke(
        app,
        [
            "ocr",
            str(heading),
            "--engine",
            "dots",
            "--model",
            str(tiny_dots),
            "--attn",
            "flash_attention_2",
            "--lang",
            "eng",
        ],
    )
    assert result.exit_code == 2, result.stderr
    assert "flash" in result.stderr and "page(s)" not in result.stderr
    bad_device = CliRunner().invoke(
        app, ["ocr", str(heading), "--engine", "dots", "--model", str(tiny_dots), "--device", "cuda", "--lang", "eng"]
    )
    assert bad_device.exit_code == 2 and "cuda" in bad_device.stderr


def test_a_chain_with_no_usable_engine_stops_before_any_page(heading: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["ocr", str(heading), "--engine", "dots", "--model", str(tmp_path / "absent"), "--lang", "eng"]
    )
    assert result.exit_code == 2
    assert "no engine of the chain can run here" in result.stderr and "absent" in result.stderr
