"""Issue 16, the CLI and the Python API: nothing lost silently, bad input refused clearly.

One test (or parametrized family) per class of failure found when polyocr was attacked as a user
would: each failed on the code before the fix. Real Tesseract, real files, the CLI as a subprocess.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

import polyocr
from hostile import animated, pdf_with_oversized_page, png_mentioning_pdf, truncated_tiff
from polyocr.cli import app
from polyocr.documents import expand_inputs, open_source
from polyocr.documents.loader import image_source
from polyocr.errors import InputError, OptionError
from polyocr.results import DocumentResult, PageStatus
from test_server_support import text_png

pytest.importorskip("tesserocr")
ROOT = os.geteuid() == 0 if hasattr(os, "geteuid") else False


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "polyocr", *args], capture_output=True, text=True, timeout=300, env=os.environ
    )


def _no_traceback(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text, text


# 1. One bad page fails that page only; the rest are read; counts and exit code say so.


def test_a_page_over_the_pixel_limit_fails_alone(tmp_path: Path) -> None:
    path = tmp_path / "three.pdf"
    path.write_bytes(pdf_with_oversized_page(pages=3, big=2))
    pages = list(open_source(path).pages())
    assert [p.number for p in pages] == [1, 2, 3]
    assert [p.error is None for p in pages] == [True, False, True]
    assert "40000x40000" in pages[1].error and "over the limit" in pages[1].error

    run = cli("ocr", str(path), "--engine", "tesseract", "--lang", "eng", "--format", "json")
    assert run.returncode == 1, run.stderr
    assert '"pages": 3' in run.stderr and '"failed_pages": 1' in run.stderr and "three.pdf page 2" in run.stderr
    doc = DocumentResult.from_json(run.stdout)
    assert [p.status for p in doc.pages] == [PageStatus.OK, PageStatus.FAILED, PageStatus.OK]
    assert "Page 3" in doc.pages[2].text and "over the limit" in doc.pages[1].errors[0]
    text = cli("ocr", str(path), "--engine", "tesseract", "--lang", "eng")
    assert text.returncode == 1 and "3 page(s), 1 failed page(s)" in text.stderr


# 2. Multi-frame images are read frame by frame; GIF is a supported input.


@pytest.mark.parametrize("fmt", ["GIF", "WEBP"])
def test_animated_images_are_read_frame_by_frame(fmt: str) -> None:
    doc = polyocr.ocr(animated(fmt, 3), "tesseract", languages="eng")
    assert doc.ok and [p.page for p in doc.pages] == [1, 2, 3]
    for page in doc.pages:
        assert f"Frame {page.page}" in page.text


# 3. Everything skipped is named; what looked like input but cannot be read makes the exit non-zero.


def test_unreadable_directory_entries_are_named_and_fail_the_run(tmp_path: Path, monkeypatch) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "good.png").write_bytes(text_png())
    (docs / "gone.png").symlink_to(docs / "deleted.png")  # dangling
    (docs / "loop.pdf").symlink_to(docs / "loop.pdf")  # a link to itself
    (docs / "sub" / "inner.png").write_bytes(text_png())
    locked = docs / "locked"
    locked.mkdir()
    real_scandir = os.scandir

    def scandir(path):  # the OS refusing a folder; as root chmod cannot make one unreadable
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    files, _notes = expand_inputs([docs])
    assert {f.name for f in files} == {"good.png", "gone.png", "loop.pdf", "inner.png", "locked"}
    result = CliRunner().invoke(app, ["ocr", str(docs), "--engine", "tesseract", "--lang", "eng", "--quiet"])
    assert result.exit_code == 1, result.output
    assert "gone.png: dangling symbolic link" in result.output
    assert "locked: directory cannot be read" in result.output
    assert "loop.pdf" in result.output
    assert result.output.count("quick brown fox") == 2  # both good files were still read


@pytest.mark.skipif(ROOT, reason="root reads every file whatever its mode")
def test_unreadable_subfolder_for_real(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "locked").mkdir(parents=True)
    (docs / "good.png").write_bytes(text_png())
    (docs / "locked").chmod(0)
    try:
        run = cli("ocr", str(docs), "--engine", "tesseract", "--lang", "eng", "--quiet")
    finally:
        (docs / "locked").chmod(0o755)
    assert run.returncode == 1 and "locked: directory cannot be read" in run.stderr


# 5. Output errors are per-input errors with a clear message; the batch goes on.


def test_output_problems_are_clear_and_per_input(tmp_path: Path) -> None:
    first, second = tmp_path / "first.png", tmp_path / "second.png"
    first.write_bytes(text_png())
    second.write_bytes(text_png())
    taken = tmp_path / "taken"
    taken.write_text("a file, not a directory")
    run = cli("ocr", str(first), "--engine", "tesseract", "--lang", "eng", "--out", str(taken))
    assert run.returncode == 2 and "exists and is not a directory" in run.stderr
    _no_traceback(run.stderr)

    out = tmp_path / "out"
    (out / "first.txt").mkdir(parents=True)  # something in the way of the first output
    run = cli("ocr", str(first), str(second), "--engine", "tesseract", "--lang", "eng", "--out", str(out))
    assert run.returncode == 1, run.stderr
    assert "first.png: result not written" in run.stderr and "1 output(s) not written" in run.stderr
    assert "quick brown fox" in (out / "second.txt").read_text(encoding="utf-8")
    _no_traceback(run.stderr)


# 9. No global library state changed at import; pixel limits per call, for PIL images too.


def test_import_leaves_pillow_alone_and_pil_images_obey_max_pixels() -> None:
    code = (
        "import PIL.Image as I; before = I.MAX_IMAGE_PIXELS; "
        "import polyocr, polyocr.documents.loader, polyocr.server.app, polyocr.cli; "
        "assert I.MAX_IMAGE_PIXELS == before, I.MAX_IMAGE_PIXELS; print('same')"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "same" in run.stdout, run.stderr
    doc = polyocr.ocr(Image.new("RGB", (200, 100), "white"), "tesseract", max_pixels=10_000)
    assert not doc.ok and "over the limit of 10,000" in doc.errors[0]
    # an image Pillow alone would call a bomb is refused with polyocr's own message and limit
    buffer = io.BytesIO()
    Image.new("1", (20_000, 10_000)).save(buffer, "PNG")
    with pytest.raises(InputError, match="over the limit of 150,000,000"):
        image_source(buffer.getvalue(), "huge.png")


# 10. bytes and binary file objects are inputs; a string language is one language.


@pytest.mark.parametrize("wrap", [bytes, bytearray, io.BytesIO], ids=["bytes", "bytearray", "BytesIO"])
def test_api_takes_bytes_and_binary_files(wrap) -> None:
    doc = polyocr.ocr(wrap(text_png()), "tesseract", languages="eng")
    assert doc.ok and "quick brown fox" in doc.pages[0].text


def test_api_string_language_is_one_language() -> None:
    from polyocr.api import RunOptions

    assert RunOptions(languages="eng").language_tuple() == ("eng",)
    assert RunOptions(languages="eng+rus").language_tuple() == ("eng", "rus")


# 11. Input problems are per input: an unreadable file does not refuse the run.


def test_an_unreadable_file_does_not_refuse_the_run(tmp_path: Path, monkeypatch) -> None:
    good, locked = tmp_path / "good.png", tmp_path / "locked.png"
    good.write_bytes(text_png())
    locked.write_bytes(b"\x89PNG\r\n\x1a\n cut short")
    real_access = os.access
    # the OS's answer for a file the user may not read (root may read anything, so it is faked here)
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == locked else real_access(p, mode, **kw))
    result = CliRunner().invoke(app, ["ocr", str(locked), str(good), "--engine", "tesseract", "--lang", "eng"])
    assert result.exit_code == 1, result.output
    assert "quick brown fox" in result.output and "locked.png" in result.output


@pytest.mark.skipif(ROOT, reason="root reads every file whatever its mode")
def test_an_unreadable_file_for_real(tmp_path: Path) -> None:
    good, locked = tmp_path / "good.png", tmp_path / "locked.png"
    good.write_bytes(text_png())
    locked.write_bytes(text_png())
    locked.chmod(0)
    run = cli("ocr", str(locked), str(good), "--engine", "tesseract", "--lang", "eng")
    assert run.returncode == 1 and "quick brown fox" in run.stdout and "locked.png: cannot be read" in run.stderr


# 12 and 13. Nonsense options are refused up front with the valid range, never with a traceback.


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--dpi", "nan"], "dpi must be from 1 to 2400"),
        (["--dpi", "0"], "dpi must be from 1 to 2400"),
        (["--dpi", "-5"], "dpi must be from 1 to 2400"),
        (["--max-pixels", "-1"], "max_pixels must be at least 1"),
        (["--max-pages", "0"], "max_pages must be at least 1"),
        (["--timeout", "0"], "timeout must be a positive"),
        (["--lang", "xxx"], "unknown language 'xxx'"),
    ],
)
def test_nonsense_options_are_refused_up_front(tmp_path: Path, args: list[str], needle: str) -> None:
    page = tmp_path / "page.png"
    page.write_bytes(text_png())
    result = CliRunner().invoke(app, ["ocr", str(page), "--engine", "tesseract", *args])
    assert result.exit_code == 2 and needle in result.output, result.output
    assert "page(s)" not in result.output  # refused before any page
    with pytest.raises(OptionError, match=needle.split(" ")[0]):
        option = {"--dpi": "dpi", "--max-pixels": "max_pixels", "--max-pages": "max_pages", "--timeout": "timeout"}
        name = option.get(args[0], "languages")
        value: object = args[1] if name == "languages" else float(args[1])
        polyocr.ocr(text_png(), "tesseract", **{name: value})


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--port", "70000"], "port must be from 1 to 65535"),
        (["--port", "0"], "port must be from 1 to 65535"),
    ],
)
def test_nonsense_serve_options_are_refused(tmp_path: Path, args: list[str], needle: str) -> None:
    # a subprocess with a time limit: a server that accepted the option would otherwise listen for ever
    try:
        run = subprocess.run(
            [sys.executable, "-m", "polyocr", "serve", "--job-dir", str(tmp_path), *args],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"serve {' '.join(args)} was accepted and listened")
    assert run.returncode == 2 and needle in run.stderr, run.stderr
    _no_traceback(run.stderr)


def test_content_is_sniffed_by_magic_numbers_at_offset_zero() -> None:
    with pytest.raises(InputError, match="corrupt or truncated TIFF"):
        image_source(truncated_tiff(), "scan.tif")
    source = image_source(png_mentioning_pdf(), "scan.png")
    assert source.kind == "image" and next(source.pages()).size == (640, 200)


# 14. -f json to stdout has one shape whatever failed.


def test_json_to_stdout_has_one_shape(tmp_path: Path) -> None:
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(text_png())
    bad.write_bytes(b"not an image")
    base = ["ocr", "--engine", "tesseract", "--lang", "eng", "-f", "json", "--quiet"]
    single_bad = cli(*base, str(bad))
    assert single_bad.returncode == 1
    assert DocumentResult.from_json(single_bad.stdout).errors  # an object, with the error, as for a good file
    assert DocumentResult.from_json(cli(*base, str(good)).stdout).pages
    both = cli(*base, str(good), str(bad))
    listed = json.loads(both.stdout)
    assert isinstance(listed, list) and [bool(d["pages"]) for d in listed] == [True, False]
    only_good_of_two = json.loads(cli(*base, str(good), str(good)).stdout)
    assert isinstance(only_good_of_two, list) and len(only_good_of_two) == 2
