"""The user's own `polyocr bench` results, which order the auto chain before the published scores.

`polyocr bench` (over datasets, not `--speed`) records each engine's rows here after its report:
per language, the character error rate, the pages and the success rate, with the run's date,
command and datasets. A later run replaces an engine's record; engines it did not run keep theirs.
The file is `$POLYOCR_BENCH_RESULTS`, else `$XDG_CACHE_HOME/polyocr/bench-results.json` (default
~/.cache); `POLYOCR_BENCH_RESULTS=off` turns recording and reading off.

How auto uses it (`prefer_measured`), within each kind of engine: the engines measured on the
user's pages in the task's languages come first, lowest measured CER first (pages-weighted over the
task's languages that have rows; a language with no row does not count); then the unmeasured ones
in the published order; engines that were measured and answered no page usably come last. Only the
order changes: an engine auto leaves out (a restrictive licence, a script it cannot read) stays out.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from polyocr.formats.atomic import write_atomic

log = logging.getLogger(__name__)

SCHEMA = 1
OFF = "off"


def results_path() -> Path | None:
    """Where the results live; None when turned off."""
    given = os.environ.get("POLYOCR_BENCH_RESULTS")
    if given is not None:
        return None if given.strip().lower() in (OFF, "") else Path(given).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "polyocr" / "bench-results.json"


@dataclass(frozen=True)
class Measured:
    """One engine's measured rows: language -> (cer, pages, success rate), and where they came from."""

    engine: str
    rows: Mapping[str, tuple[float, int, float]]
    created: str = ""
    command: str = ""
    datasets: tuple[str, ...] = ()

    def for_languages(self, languages: Sequence[str]) -> tuple[float, float, int] | None:
        """(CER, success rate, pages) over the rows of these languages, pages-weighted; None if none."""
        rows = [self.rows[lang] for lang in dict.fromkeys(languages) if lang in self.rows and self.rows[lang][1] > 0]
        pages = sum(r[1] for r in rows)
        if not pages:
            return None
        cer = sum(r[0] * r[1] for r in rows) / pages
        success = sum(r[2] * r[1] for r in rows) / pages
        return cer, success, pages


def load(path: Path | None = None) -> dict[str, Measured]:
    """Every engine's record; {} when there is no file or it is turned off. A file that cannot be read
    is reported once in the log and ignored (the published order applies)."""
    path = path if path is not None else results_path()
    if path is None or not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        engines = data["engines"] if data.get("schema") == SCHEMA else {}
        return {
            name: Measured(
                name,
                {lang: (float(r["cer"]), int(r["pages"]), float(r["success_rate"])) for lang, r in rec["rows"].items()},
                str(rec.get("created", "")),
                str(rec.get("command", "")),
                tuple(rec.get("datasets", ())),
            )
            for name, rec in engines.items()
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("ignoring the bench results in %s (%s); delete the file or run `polyocr bench` again", path, exc)
        return {}


def record(
    runs: Iterable[tuple[str, Sequence[Mapping[str, Any]]]],
    *,
    created: str,
    command: str,
    datasets: Sequence[str],
    path: Path | None = None,
) -> Path | None:
    """Record (engine, rows) pairs of a bench run; rows are bench Row dicts (language, cer, pages,
    success_rate, refused). Chains ("auto", "a,b") and rows refused or without pages are not engine
    measurements and are skipped. Returns the file written, or None when nothing was recorded."""
    path = path if path is not None else results_path()
    if path is None:
        return None
    fresh: dict[str, Any] = {}
    for engine, rows in runs:
        if engine == "auto" or "," in engine:
            continue
        kept = {
            str(r["language"]): {"cer": r["cer"], "pages": r["pages"], "success_rate": r["success_rate"]}
            for r in rows
            if r["language"] != "all" and not r.get("refused") and r["pages"] > 0
        }
        if kept:
            fresh[engine] = {"created": created, "command": command, "datasets": list(datasets), "rows": kept}
    if not fresh:
        return None
    current: dict[str, Any] = {}
    if path.is_file():
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            current = old.get("engines", {}) if old.get("schema") == SCHEMA else {}
        except (OSError, ValueError, AttributeError):
            current = {}
    current.update(fresh)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps({"schema": SCHEMA, "engines": current}, indent=2, ensure_ascii=False) + "\n")
    return path


def prefer_measured(names: Sequence[str], languages: Sequence[str], measured: Mapping[str, Measured]) -> list[str]:
    """`names` (in the published order) reordered by the user's measurements for these languages."""
    scored: list[tuple[float, int, str]] = []
    failed: list[str] = []
    rest: list[str] = []
    for position, name in enumerate(names):
        record_ = measured.get(name)
        figures = record_.for_languages(languages) if record_ is not None else None
        if figures is None:
            rest.append(name)
        elif figures[1] <= 0.0:
            failed.append(name)
        else:
            scored.append((figures[0], position, name))
    return [name for _, _, name in sorted(scored)] + rest + failed
