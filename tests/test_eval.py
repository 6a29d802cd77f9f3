"""Dataset manifests, evaluation records and `polyocr eval` end to end on a two-page dataset."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from polyocr.bench.evaluate import evaluate_items, summarize
from polyocr.bench.manifest import read_manifest, select
from polyocr.cli import app
from polyocr.engines.base import create_engine
from polyocr.errors import InputError

HEADER = "image\tgt\tlanguage\tkind\tnotes\n"


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_reads_the_development_set(eval_dir):
    dataset = read_manifest(eval_dir)
    assert dataset.manifest == eval_dir / "MANIFEST.tsv" and dataset.root == eval_dir
    assert read_manifest(eval_dir / "MANIFEST.tsv") == dataset  # a directory or its manifest
    by_id = {item.id: item for item in dataset.items}
    euro = by_id["tesseract_test/eurotext.tif"]
    assert euro.image == eval_dir / "tesseract_test" / "eurotext.tif" and euro.image.is_file()
    assert euro.language_code == "mul" and euro.languages == ("deu", "fra", "ita", "spa", "por")
    assert euro.folder == "tesseract_test" and euro.extra["license"].startswith("Apache-2.0")
    slavonic = by_id["ru_borndigital_pdf/churchslavonic-ru_p002.png"]
    assert slavonic.language_code == "rus" and slavonic.languages == ("rus",)
    no_gt = by_id["dots_ocr_showcase_noGT/tradition_zh.png"]
    assert no_gt.gt is None and no_gt.reference() is None and no_gt.languages == ("zho",)
    assert by_id["old_books_eng/h015.png"].reference().startswith("HORTON ARMS.")


def test_select_filters_in_manifest_order(eval_dir):
    items = read_manifest(eval_dir).items
    with_gt = select(items)
    assert with_gt and all(item.gt is not None for item in with_gt)
    assert len(select(items, with_gt=False)) == len(items) > len(with_gt)
    russian = select(items, languages=["rus"])
    assert russian and {item.folder for item in russian} == {"ru_borndigital_pdf"}
    assert [i.id for i in select(items, languages=["deu"])] == ["tesseract_test/eurotext.tif"]
    first = select(items, folders=["old_books_eng/"], limit=2)
    assert [i.id for i in first] == [i.id for i in items if i.folder == "old_books_eng"][:2]
    assert select(items, languages=["eng"], folders=["ru_borndigital_pdf"]) == []


def test_manifest_rows_resolve_relative_to_the_manifest_and_skip_comments(tmp_path):
    _write(tmp_path / "pages" / "a.txt", "hello")
    Image.new("RGB", (8, 8), "white").save(tmp_path / "pages" / "a.png")
    manifest = _write(tmp_path / "MANIFEST.tsv", HEADER + "# a comment\n\npages/a.png\tpages/a.txt\teng\tpage\t\n")
    [item] = read_manifest(manifest).items
    assert item.image == tmp_path / "pages" / "a.png" and item.reference() == "hello"
    assert item.extra == {"kind": "page", "notes": ""}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("image\tlanguage\na.png\teng\n", r"lacks column\(s\) gt"),
        (HEADER + "missing.png\t\teng\t\t\n", "row 2: image .*missing.png does not exist"),
        (HEADER + "a.png\tnope.txt\teng\t\t\n", "ground truth .*nope.txt does not exist"),
        (HEADER + "a.png\t\teng\t\t\na.png\t\teng\t\t\n", "row 3: a.png is listed twice"),
        ("", "manifest is empty"),
    ],
)
def test_bad_manifests_name_the_problem(tmp_path, body, message):
    Image.new("RGB", (8, 8), "white").save(tmp_path / "a.png")
    _write(tmp_path / "MANIFEST.tsv", body)
    with pytest.raises(InputError, match=message):
        read_manifest(tmp_path)


def test_a_missing_manifest_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="no such manifest"):
        read_manifest(tmp_path)


def test_failures_are_recorded_and_scored_as_empty_output(tmp_path):
    Image.new("RGB", (64, 32), "white").save(tmp_path / "blank.png")
    _write(tmp_path / "ru.txt", "Привет")
    (tmp_path / "broken.png").write_bytes(b"")
    _write(tmp_path / "en.txt", "Hello there")
    _write(tmp_path / "MANIFEST.tsv", HEADER + "blank.png\tru.txt\trus\t\t\nbroken.png\ten.txt\teng\t\t\n")
    items = read_manifest(tmp_path).items
    engine = create_engine("rapidocr")  # not loaded: it refuses Russian before touching its models
    records = evaluate_items(engine, items)
    assert "Cyrillic" in records[0].error and records[0].cer == 1.0 and records[0].task_languages == ["rus"]
    assert "empty" in records[1].error and records[1].cer == 1.0 and records[1].pages == 0
    rows = summarize(records)
    assert [row.key for row in rows] == ["rus", "eng", "all"]
    assert rows[-1].failures == 2 and rows[-1].chars.total == len("Привет") + len("Hello there")


def test_eval_command_reports_a_clear_error(eval_dir):
    runner = CliRunner()
    result = runner.invoke(app, ["eval", "/nonexistent-dataset", "--engine", "tesseract"])
    assert result.exit_code == 2 and "no such manifest" in result.output
    result = runner.invoke(app, ["eval", str(eval_dir), "--engine", "no-such-engine", "--quiet"])
    assert result.exit_code == 2 and "no such engine" in result.output
    result = runner.invoke(app, ["eval", str(eval_dir), "--engine", "tesseract", "--lang", "xyz", "--quiet"])
    assert result.exit_code == 2 and "no item with ground truth matches" in result.output


@pytest.fixture
def two_page_dataset(tmp_path, eval_dir) -> Path:
    """One English page (the text of old_books h015, margins cropped) and one Russian page."""
    root = tmp_path / "devset"
    english = Image.open(eval_dir / "old_books_eng" / "h015.png").convert("RGB").crop((0, 800, 1396, 1600))
    (root / "en").mkdir(parents=True)
    english.save(root / "en" / "h015.png")
    shutil.copy(eval_dir / "old_books_eng" / "h015.gt.txt", root / "en" / "h015.gt.txt")
    (root / "ru").mkdir()
    for name in ("mpman-ru_p026.png", "mpman-ru_p026.gt.txt"):
        shutil.copy(eval_dir / "ru_borndigital_pdf" / name, root / "ru" / name)
    _write(
        root / "MANIFEST.tsv",
        HEADER + "en/h015.png\ten/h015.gt.txt\teng\tpage\tcropped\n"
        "ru/mpman-ru_p026.png\tru/mpman-ru_p026.gt.txt\trus\tpage\t\n",
    )
    return root


def test_eval_command_end_to_end(two_page_dataset, tmp_path):
    json_out = tmp_path / "report.json"
    env = {**os.environ, "COLUMNS": "120"}
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "polyocr",
            "eval",
            str(two_page_dataset),
            "--engine",
            "tesseract",
            "--json-out",
            str(json_out),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr
    table = completed.stdout
    for word in ("tesseract", "language", "CER", "WER", "s/page", "eng", "rus", "all"):
        assert word in table
    report = json.loads(json_out.read_text(encoding="utf-8"))
    assert report["engine"] == "tesseract" and report["dataset"] == str(two_page_dataset)
    items = {item["id"]: item for item in report["items"]}
    assert items["en/h015.png"]["cer"] < 0.06 and items["en/h015.png"]["task_languages"] == ["eng"]
    assert items["ru/mpman-ru_p026.png"]["cer"] < 0.15
    assert all(item["error"] is None and item["pages"] == 1 and item["seconds"] > 0 for item in items.values())
    summary = {row["key"]: row for row in report["summary"]}
    assert set(summary) == {"eng", "rus", "all"} and summary["all"]["items"] == 2
    english = items["en/h015.png"]["chars"]
    assert summary["eng"]["cer"] == pytest.approx(english["errors"] / english["total"])
    assert f"{summary['rus']['cer']:.4f}" in table  # the table prints the same numbers as the JSON


def test_eval_command_filters_by_language(two_page_dataset, tmp_path):
    json_out = tmp_path / "english.json"
    result = CliRunner().invoke(
        app,
        [
            "eval",
            str(two_page_dataset),
            "--engine",
            "tesseract",
            "--lang",
            "eng",
            "--by",
            "folder",
            "--json-out",
            str(json_out),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(json_out.read_text(encoding="utf-8"))
    assert [item["id"] for item in report["items"]] == ["en/h015.png"]
    assert [row["key"] for row in report["summary"]] == ["en"] and report["filters"]["languages"] == ["eng"]
