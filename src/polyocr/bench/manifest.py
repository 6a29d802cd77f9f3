"""Datasets described by a MANIFEST.tsv: one page (image or PDF) per row, with its ground truth.

The format is the one ../shared/data/eval uses: a tab-separated file with a header row and at least
the columns `image`, `gt` (path of a UTF-8 transcription; empty when there is none) and `language`.
Any other columns (kind, source, license, notes, ...) are kept on the item. Paths are relative to
the manifest's directory. The language column starts with a code and may add detail:
"eng", "rus (+ Church Slavonic samples)", "mul(deu,fra,ita)", "zho (traditional)".
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from polyocr.errors import InputError

MANIFEST_NAME = "MANIFEST.tsv"
REQUIRED_COLUMNS = ("image", "gt", "language")

_CODE = re.compile(r"[a-z]{2,3}(?:_[a-z]+)?")


@dataclass(frozen=True)
class Item:
    """One evaluation page: where it is, its ground truth and its language."""

    id: str  # the image path as the manifest gives it, unique within a dataset
    image: Path
    gt: Path | None
    language: str  # the manifest's language column, verbatim
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def folder(self) -> str:
        """The first directory of the item's path, which groups items by collection."""
        parts = Path(self.id).parts
        return parts[0] if len(parts) > 1 else ""

    @property
    def language_code(self) -> str:
        """The leading code of the language column ("rus (+ ...)" -> "rus", "mul(deu,fra)" -> "mul")."""
        match = _CODE.match(self.language.strip().lower())
        return match.group(0) if match else self.language.strip()

    @property
    def languages(self) -> tuple[str, ...]:
        """The languages to ask an engine for: those listed in parentheses, else the leading code."""
        detail = re.search(r"\(([^)]*)\)", self.language)
        if detail:
            codes = [code.strip().lower() for code in detail.group(1).split(",")]
            if codes and all(_CODE.fullmatch(code) for code in codes):
                return tuple(codes)
        return (self.language_code,)

    def reference(self) -> str | None:
        """The ground-truth text, or None when the item has none."""
        if self.gt is None:
            return None
        try:
            return self.gt.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(self.gt, f"ground truth of {self.id} cannot be read: {exc}") from exc


@dataclass(frozen=True)
class Dataset:
    root: Path
    manifest: Path
    items: tuple[Item, ...]


def manifest_path(path: str | Path) -> Path:
    """The manifest for a dataset directory or a manifest file."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise InputError(path, "no such manifest (expected a dataset directory holding MANIFEST.tsv)")
    return path


def read_manifest(path: str | Path) -> Dataset:
    """Read a dataset; a missing column or a missing image or ground-truth file is an InputError."""
    manifest = manifest_path(path)
    root = manifest.parent
    with manifest.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE))
    rows = [row for row in rows if row and any(cell.strip() for cell in row) and not row[0].startswith("#")]
    if not rows:
        raise InputError(manifest, "manifest is empty")
    header = [name.strip() for name in rows[0]]
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise InputError(manifest, f"manifest lacks column(s) {', '.join(missing)} (header: {header})")
    items: list[Item] = []
    seen: set[str] = set()
    for line_number, row in enumerate(rows[1:], start=2):
        values = dict(zip(header, [cell.strip() for cell in row], strict=False))
        image_name = values.get("image", "")
        where = f"{manifest} row {line_number}"
        if not image_name:
            raise InputError(where, "empty image path")
        if image_name in seen:
            raise InputError(where, f"{image_name} is listed twice")
        seen.add(image_name)
        image = root / image_name
        if not image.is_file():
            raise InputError(where, f"image {image} does not exist")
        gt_name = values.get("gt", "")
        gt = root / gt_name if gt_name else None
        if gt is not None and not gt.is_file():
            raise InputError(where, f"ground truth {gt} does not exist")
        extra = {key: value for key, value in values.items() if key not in REQUIRED_COLUMNS}
        items.append(Item(id=image_name, image=image, gt=gt, language=values.get("language", ""), extra=extra))
    return Dataset(root=root, manifest=manifest, items=tuple(items))


def select(
    items: Iterable[Item],
    *,
    languages: Sequence[str] = (),
    folders: Sequence[str] = (),
    with_gt: bool = True,
    limit: int | None = None,
) -> list[Item]:
    """Items in manifest order that match every filter given; `limit` applies last.

    A language filter matches an item's leading code or any language it lists ("deu" matches
    "mul(deu,fra)"); a folder filter matches the item's first directory.
    """
    wanted_languages = {code.lower() for code in languages}
    wanted_folders = {folder.strip("/") for folder in folders}
    chosen = []
    for item in items:
        if with_gt and item.gt is None:
            continue
        if wanted_languages and not wanted_languages & {item.language_code, *item.languages}:
            continue
        if wanted_folders and item.folder not in wanted_folders:
            continue
        chosen.append(item)
    return chosen if limit is None else chosen[: max(0, limit)]
