"""Which engines to try, in which order: `--engine auto|name|a,b,c` turned into a chain.

"auto" reads the engine registry (engines/base.py): on a GPU the VLMs in the order of the published
scores (polyocr/published.py, `ranked()`; a licence restricting commercial use, or one not verified,
keeps a VLM out), then the classical engines by their recorded character error rate for the scripts
the task needs; within each kind, engines the user's own `polyocr bench` measured on pages in the
task's languages come first, best measured first (router/measured.py). An engine that cannot read
every one of those scripts, or lacks the task, never enters an auto chain.

A chain the user names is kept as given, except that an engine reading none of those scripts, or
lacking the task, is refused outright. The default task (layout, not named by the user) is not
lacking: an engine without layout is given the text task instead (`Task.for_engine`), and the
result's attempt records it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from polyocr.engines.base import (
    EngineEntry,
    create_engine,
    engine_class,
    engine_entry,
    engine_names,
    entries,
    ranked,
)
from polyocr.errors import EngineUnavailable
from polyocr.published import published
from polyocr.router.measured import Measured, prefer_measured
from polyocr.router.measured import load as load_measured
from polyocr.runtime.probe import Profile, get_profile
from polyocr.scripts import scripts_for
from polyocr.types import EngineKind, Task, TaskKind


def resolve_chain(spec: str | Sequence[str], task: Task, profile: Profile | None = None) -> list[str]:
    """Engine names to try, in order, from "auto", "name" or "a,b,c"."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else [s.strip() for s in spec]
    names = [n for n in names if n]
    if not names:
        raise EngineUnavailable("", "no engine given")
    if names == ["auto"]:
        return auto_chain(task, profile or get_profile())
    known = engine_names()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise EngineUnavailable(", ".join(unknown), f"no such engine (known: {', '.join(known)})")
    needed = scripts_for(task.languages)
    for name in names:
        cls = engine_class(name)
        readable = cls.scripts
        if needed and not needed & readable:
            raise EngineUnavailable(
                name,
                f"it reads no {'/'.join(sorted(needed))} text, which "
                f"{'+'.join(task.languages)} needs (it reads {', '.join(sorted(readable))})",
            )
        if task.for_engine(cls.tasks) is None:
            offered = ", ".join(t.value for t in TaskKind if t in cls.tasks)
            raise EngineUnavailable(
                name,
                f"it does not do the {task.kind.value} task (it does: {offered})",
                f"ask it for one of those with --task, or name an engine that does {task.kind.value} "
                "(`polyocr engines` lists each engine's tasks)",
            )
    return names


def reads(name: str, task: Task) -> bool:
    """The engine offers the task and reads every script the task's languages need."""
    needed = scripts_for(task.languages)
    cls = engine_class(name)
    return task.kind in cls.tasks and (needed is None or needed <= cls.scripts)


def _available(name: str, profile: Profile) -> bool:
    try:
        return create_engine(name).available(profile).ok
    except EngineUnavailable:
        return False


def auto_chain(task: Task, profile: Profile) -> list[str]:
    usable = [n for n in engine_names() if reads(n, task)]
    measured = load_measured()
    chain: list[str] = []
    if profile.usable_gpus():
        vlms = [e.name for e in ranked(EngineKind.VLM) if e.name in usable and _available(e.name, profile)]
        chain += prefer_measured(vlms, task.languages, measured)
    scripts = scripts_for(task.languages) or frozenset()

    def worst_cer(entry: EngineEntry) -> tuple[bool, float, int]:
        """Engines with a recorded rate for every script first, lowest worst rate first, then rank."""
        recorded = dict(entry.cer)
        rates = [recorded.get(script) for script in scripts]
        known_rates = [r for r in rates if r is not None]
        return (len(known_rates) < len(rates) or not rates, max(known_rates, default=0.0), entry.rank or 0)

    classical = [e for e in ranked(EngineKind.CLASSICAL) if e.name in usable and _available(e.name, profile)]
    chain += prefer_measured([e.name for e in sorted(classical, key=worst_cer)], task.languages, measured)
    if not chain:
        raise EngineUnavailable(
            "auto",
            f"no engine that reads {'+'.join(task.languages)} can run here",
            "run `polyocr engines` to see why each one cannot",
        )
    return chain


def ranking(languages: Sequence[str], measured: dict[str, Measured] | None = None) -> list[dict[str, Any]]:
    """What `polyocr engines --ranked` shows: each registered engine of the auto chain's two parts in
    auto's order for these languages (GPU part first), then the VLMs auto leaves out and why; each
    with its published scores and sources, size, licence, and the user's measurement if any."""
    measured = load_measured() if measured is None else measured
    rows: list[dict[str, Any]] = []
    for kind in (EngineKind.VLM, EngineKind.CLASSICAL):
        names = [e.name for e in ranked(kind)]
        order = prefer_measured(names, languages, measured)
        rows += [_ranking_row(name, kind, place, languages, measured) for place, name in enumerate(order, 1)]
    left_out = [e.name for e in entries() if e.kind == EngineKind.VLM and e.name not in {r["engine"] for r in rows}]
    rows += [_ranking_row(name, EngineKind.VLM, None, languages, measured) for name in left_out]
    return rows


def _ranking_row(
    name: str, kind: EngineKind, place: int | None, languages: Sequence[str], measured: dict[str, Measured]
) -> dict[str, Any]:
    row = published(name)
    mine = measured.get(name)
    figures = mine.for_languages(languages) if mine is not None else None
    if place is not None:
        why = ""
    elif row is None:
        why = "no row in polyocr's table of published scores: name it to use it"
    else:
        why = f"licence {row.licence.label}: name it to use it"
    return {
        "place": place,
        "engine": name,
        "kind": kind.value,
        "params_b": row.params_b if row is not None else None,
        "licence": row.licence.label if row is not None else "",
        "licence_source": row.licence.source if row is not None else "",
        "scores": [asdict(s) for s in row.scores] if row is not None else [],
        "evidence": engine_entry(name).evidence,  # a classical engine's recorded dev-set CER
        "measured": None
        if figures is None or mine is None
        else {
            "cer": round(figures[0], 4),
            "success_rate": round(figures[1], 4),
            "pages": figures[2],
            "created": mine.created,
            "command": mine.command,
        },
        "left_out": why,
    }
