"""What a batch writes under its output folder, and how.

    DIR/batch.sqlite              the work list (worklist.py)
    DIR/pages/<stem>/00001.json   one PageResult per finished page, written the moment it finishes
    DIR/<stem>.txt|.md|.json      the document in each requested format, once its last page is done

Every file is written to a temporary name in the same folder and renamed over its final name, so a
reader (or a batch started again after a kill) sees either the whole file or none. A document's
outputs are streamed from its page files one page at a time, so a 3000-page document is never held
in memory whole; the bytes are exactly what `render()` gives for the DocumentResult (tested).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from polyocr.formats.render import PAGE_BREAK, suffix_for
from polyocr.results import SCHEMA_VERSION, PageResult, PageStatus

PAGES_DIR = "pages"


def page_path(out_dir: Path, stem: str, number: int) -> Path:
    return out_dir / PAGES_DIR / stem / f"{number:05d}.json"


def atomic_write(path: Path, text: str) -> None:
    """`path` holds `text` whole, or keeps what it held before: never a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_page(out_dir: Path, stem: str, result: PageResult) -> Path:
    path = page_path(out_dir, stem, result.page)
    atomic_write(path, result.model_dump_json(indent=2) + "\n")
    return path


def read_page(out_dir: Path, stem: str, number: int) -> PageResult:
    return PageResult.model_validate_json(page_path(out_dir, stem, number).read_bytes())


def write_document(out_dir: Path, stem: str, source: str, page_count: int, formats: Iterable[str]) -> None:
    """The document's output in each format, from its page files; each file appears atomically."""
    for fmt in formats:
        target = out_dir / f"{stem}{suffix_for(fmt)}"
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                pages = (read_page(out_dir, stem, n) for n in range(1, page_count + 1))
                if fmt == "json":
                    _stream_json(fh, source, pages)
                else:
                    _stream_text(fh, fmt, pages)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def _chunk(page: PageResult, fmt: str) -> str:
    """One page as `render()` writes it (formats/render.py)."""
    if page.status == PageStatus.FAILED:
        reason = "; ".join(page.errors) or "failed on every engine"
        body = f"[page {page.page} failed: {reason}]"
        return f"<!-- {body} -->" if fmt == "md" else body
    if fmt == "md":
        return page.markdown or page.text
    return page.text


def _stream_text(fh: IO[str], fmt: str, pages: Iterable[PageResult]) -> None:
    """render(doc, fmt) page by page: chunks joined by the separator, trailing whitespace cut, one
    newline at the end. Trailing whitespace is held back until something follows it."""
    separator = "\n\n---\n\n" if fmt == "md" else f"\n{PAGE_BREAK}"
    held = ""
    for index, page in enumerate(pages):
        text = held + (separator if index else "") + _chunk(page, fmt)
        body = text.rstrip()
        fh.write(body)
        held = text[len(body) :]
    fh.write("\n")


def _stream_json(fh: IO[str], source: str, pages: Iterable[PageResult]) -> None:
    """DocumentResult(...).to_json() with the pages written one at a time."""
    import json

    seconds = 0.0
    fh.write(
        f'{{\n  "schema_version": {json.dumps(SCHEMA_VERSION)},\n  "source": {json.dumps(source, ensure_ascii=False)},'
    )
    first = True
    for page in pages:
        seconds += sum(a.seconds for a in page.attempts)
        fh.write('\n  "pages": [\n' if first else ",\n")
        first = False
        fh.write("\n".join("    " + line for line in page.model_dump_json(indent=2).splitlines()))
    fh.write('\n  "pages": [],' if first else "\n  ],")
    fh.write(f'\n  "errors": [],\n  "seconds": {_json_float(seconds)}\n}}\n')


def _json_float(value: float) -> str:
    """A float as pydantic writes it."""
    from pydantic import TypeAdapter

    return TypeAdapter(float).dump_json(value).decode()


def document_seconds(pages: Iterable[PageResult]) -> float:
    return sum(a.seconds for page in pages for a in page.attempts)
