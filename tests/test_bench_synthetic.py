"""The synthetic page generator: manifest format, determinism, and the knobs it records."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
from PIL import Image

from polyocr.bench.synthetic import MANIFEST_COLUMNS, PageSpec, find_fonts, generate, render_page

SMALL = {"dpi": 100, "page_inches": (4.0, 3.0)}


def _rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_manifest_has_the_development_sets_columns(tmp_path: Path, eval_dir: Path) -> None:
    manifest = generate(tmp_path, 4, seed=1, **SMALL)
    header = manifest.read_text(encoding="utf-8").splitlines()[0].split("\t")
    dev_header = (eval_dir / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()[0].split("\t")
    assert header == dev_header == list(MANIFEST_COLUMNS)
    rows = _rows(manifest)
    assert [r["language"] for r in rows] == ["eng", "rus", "eng", "rus"]
    for row in rows:
        image = Image.open(tmp_path / row["image"])
        assert image.size == (400, 300)
        text = (tmp_path / row["gt"]).read_text(encoding="utf-8")
        assert text.strip()
        assert "dpi=100" in row["notes"] and "font=" in row["notes"]
        if row["language"] == "rus":
            assert any("а" <= ch <= "я" for ch in text.lower())


def test_same_seed_same_bytes_other_seed_other_pages(tmp_path: Path) -> None:
    first = generate(tmp_path / "a", 3, seed=7, **SMALL)
    again = generate(tmp_path / "b", 3, seed=7, **SMALL)
    other = generate(tmp_path / "c", 3, seed=8, **SMALL)
    assert first.read_bytes() == again.read_bytes()
    for row in _rows(first):
        for column in ("image", "gt"):
            assert (tmp_path / "a" / row[column]).read_bytes() == (tmp_path / "b" / row[column]).read_bytes()
    texts = {(tmp_path / "a" / r["gt"]).read_text(encoding="utf-8") for r in _rows(first)}
    other_texts = {(tmp_path / "c" / r["gt"]).read_text(encoding="utf-8") for r in _rows(other)}
    assert texts.isdisjoint(other_texts)


def test_two_columns_and_table_transcription_order() -> None:
    regular = str(find_fonts()[0][0])
    spec = PageSpec(
        language="eng",
        font=regular,
        font_pt=10,
        columns=2,
        table=True,
        rotation=0.0,
        shading=0.0,
        blur=0.0,
        noise=0.0,
        jpeg_quality=None,
        dpi=100,
    )
    page = render_page(spec, random.Random(0), page_inches=(6.0, 5.0))
    lines = page.text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("Item Quantity Price"))
    assert header == 2  # title, blank, then the table before any column text
    assert page.image.size == (600, 500) and page.image.mode == "RGB"


def test_degradations_change_pixels_not_text() -> None:
    regular = str(find_fonts()[0][0])
    clean = PageSpec(
        language="rus",
        font=regular,
        font_pt=12,
        columns=1,
        table=False,
        rotation=0.0,
        shading=0.0,
        blur=0.0,
        noise=0.0,
        jpeg_quality=None,
        dpi=100,
    )
    hard = PageSpec(
        language="rus",
        font=regular,
        font_pt=12,
        columns=1,
        table=False,
        rotation=2.0,
        shading=0.8,
        blur=1.0,
        noise=20.0,
        jpeg_quality=None,
        dpi=100,
    )
    a = render_page(clean, random.Random(5), page_inches=(4.0, 3.0))
    b = render_page(hard, random.Random(5), page_inches=(4.0, 3.0))
    assert a.text == b.text
    assert a.image.tobytes() != b.image.tobytes()


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no built-in corpus for deu"):
        generate(tmp_path, 1, languages=("deu",))
    with pytest.raises(ValueError, match="count must be at least 1"):
        generate(tmp_path, 0)
    with pytest.raises(FileNotFoundError, match="fonts-dejavu-core"):
        find_fonts([tmp_path])
