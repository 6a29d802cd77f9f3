"""The benchmark runner and its reports, with two real engines on a small dataset."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from polyocr.bench.report import markdown, write_report
from polyocr.bench.runner import AUTO, BenchResult, run_bench
from polyocr.cli import app
from polyocr.errors import EngineUnavailable

ENGLISH = "tesseract_test/phototest.tif"
RUSSIAN = "ru_borndigital_pdf/mpman-ru_p024.png"


@pytest.fixture(scope="module")
def small_set(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """Two development-set pages (a small English one; a Russian one downscaled), as a dataset."""
    eval_dir = request.getfixturevalue("eval_dir")
    root = tmp_path_factory.mktemp("small_set")
    with (eval_dir / "MANIFEST.tsv").open(encoding="utf-8", newline="") as fh:
        rows = {row["image"]: row for row in csv.DictReader(fh, delimiter="\t")}
    with (root / "MANIFEST.tsv").open("w", encoding="utf-8") as fh:
        fh.write("image\tgt\tlanguage\n")
        for name in (ENGLISH, RUSSIAN):
            row = rows[name]
            image = Image.open(eval_dir / name).convert("RGB")
            if image.width > 1000:
                image = image.resize((image.width * 2 // 3, image.height * 2 // 3))
            (root / Path(name).parent).mkdir(exist_ok=True)
            image.save(root / name)
            shutil.copy(eval_dir / row["gt"], root / row["gt"])
            fh.write(f"{name}\t{row['gt']}\t{row['language']}\n")
    return root


@pytest.fixture(scope="module")
def result(small_set: Path) -> BenchResult:
    return run_bench([small_set], ["tesseract", "rapidocr"])


def _rows(result: BenchResult) -> dict[tuple[str, str], object]:
    return {(row.engine, row.language): row for row in result.rows()}


def test_two_real_engines_per_language(result: BenchResult) -> None:
    rows = _rows(result)
    assert set(rows) == {(e, lang) for e in ("tesseract", "rapidocr") for lang in ("eng", "rus", "all")}
    tesseract_eng, tesseract_rus = rows["tesseract", "eng"], rows["tesseract", "rus"]
    assert tesseract_eng.cer < 0.1 and tesseract_rus.cer < 0.35
    assert tesseract_eng.bow_wer <= tesseract_eng.wer + 1e-9
    assert tesseract_eng.first_try_rate == tesseract_eng.success_rate == 1.0
    assert tesseract_eng.median_s > 0 and tesseract_eng.pages_per_s > 0
    assert rows["tesseract", "all"].pages == 2
    assert rows["rapidocr", "eng"].cer < 0.1
    for run in result.runs:
        assert run.available and run.peak_rss_bytes > 50 * 2**20 and run.peak_vram_bytes is None
        assert run.chains["eng"] == [run.spec] and run.load_seconds > 0


def test_an_engine_that_reads_no_cyrillic_fails_russian_pages_on_record(result: BenchResult) -> None:
    rows = _rows(result)
    russian = rows["rapidocr", "rus"]
    assert russian.refused and russian.success_rate == 0.0 and russian.cer == 1.0
    assert russian.median_s == 0.0  # a refusal is not a speed
    assert rows["rapidocr", "all"].items == 1 and rows["rapidocr", "all"].cer == rows["rapidocr", "eng"].cer
    assert not rows["tesseract", "rus"].refused
    [item] = [i for run in result.runs if run.spec == "rapidocr" for i in run.items if i.record.language == "rus"]
    assert item.errors and "rapidocr" in item.errors[0]


def test_report_files(result: BenchResult, tmp_path: Path) -> None:
    paths = write_report(result, tmp_path)
    data = json.loads(paths["json"].read_text(encoding="utf-8"))
    assert [run["engine"] for run in data["runs"]] == ["tesseract", "rapidocr"]
    assert data["runs"][0]["items"][0]["page_seconds"]
    assert data["machine"]["cpus"] and len(data["machine"]["load_average"]) == 3
    assert 0.0 <= data["machine"]["other_cpu_share"] <= 1.0
    assert all(0.0 <= run["other_cpu_share"] <= 1.0 for run in data["runs"])
    assert "of the CPUs meanwhile" in paths["markdown"].read_text(encoding="utf-8")
    text = paths["markdown"].read_text(encoding="utf-8")
    assert text == markdown(result)
    table = [line for line in text.splitlines() if line.startswith("| tesseract | eng |")]
    assert len(table) == 1 and len(table[0].split("|")) == 16
    assert "| rapidocr | rus | 1 | 1 | refused |" in text
    for key in ("scatter", "languages"):
        with Image.open(paths[key]) as image:
            image.verify()
            assert image.format == "PNG"


def test_unknown_and_unavailable_engines(small_set: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(EngineUnavailable, match="no such engine"):
        run_bench([small_set], ["nosuch"])
    monkeypatch.setenv("TESSDATA_PREFIX", "/nonexistent")
    monkeypatch.setattr("polyocr.engines.tesseract.tessdata_dirs", lambda: [Path("/nonexistent")])
    [run] = run_bench([small_set], ["tesseract"], isolate=False).runs
    assert not run.available and "tessdata" in run.reason and not run.items


def test_languages_sharing_a_chain_share_its_loaded_engines(small_set: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import polyocr.router.pool as pool_module

    created = []
    real = pool_module.create_engine
    monkeypatch.setattr(
        pool_module, "create_engine", lambda name, model_path=None: created.append(name) or real(name, model_path)
    )
    [run] = run_bench([small_set], ["tesseract"], isolate=False).runs
    assert run.chains == {"eng": ["tesseract"], "rus": ["tesseract"]}
    assert created == ["tesseract"]  # one instance for both languages: its memory is counted once


def test_cli_bench_synthetic_auto_chain(tmp_path: Path) -> None:
    out = tmp_path / "report"
    invocation = CliRunner().invoke(
        app,
        [
            "bench",
            "--synth",
            str(tmp_path / "synth"),
            "--count",
            "2",
            "--dpi",
            "100",
            "--engines",
            AUTO,
            "--out",
            str(out),
            "--quiet",
        ],
    )
    assert invocation.exit_code == 0, invocation.output
    assert "| auto | eng |" in invocation.stdout and "| auto | rus |" in invocation.stdout
    assert (tmp_path / "synth" / "MANIFEST.tsv").is_file()
    data = json.loads((out / "bench.json").read_text(encoding="utf-8"))
    assert data["command"].startswith("polyocr bench --engines auto --synth")
    rows = {row["language"]: row for row in data["runs"][0]["rows"]}
    assert rows["eng"]["cer"] < 0.2 and rows["all"]["success_rate"] == 1.0
    assert {p.name for p in out.iterdir()} == {"bench.md", "bench.json", "quality_vs_speed.png", "per_language.png"}


def test_cli_bench_needs_a_dataset_with_ground_truth(tmp_path: Path, small_set: Path) -> None:
    invocation = CliRunner().invoke(app, ["bench", "--out", str(tmp_path)])
    assert invocation.exit_code == 2
    invocation = CliRunner().invoke(app, ["bench", str(small_set), "--limit", "0", "--out", str(tmp_path)])
    assert invocation.exit_code == 2 and "no item with ground truth to score (--limit 0)" in invocation.output
