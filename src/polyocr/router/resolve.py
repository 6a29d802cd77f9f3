"""Which engines to try, in which order: `--engine auto|name|a,b,c` turned into a chain.

"auto" reads one table, the engine registry (engines/base.py ENTRIES): on a GPU the VLMs by their
rank, then the classical engines by their recorded character error rate for the scripts the task
needs. An engine that cannot read every one of those scripts, or lacks the task, never enters an
auto chain; a chain the user names is kept as given, except that an engine reading none of those
scripts is refused outright.
"""

from __future__ import annotations

from collections.abc import Sequence

from polyocr.engines.base import EngineEntry, create_engine, engine_class, engine_names, ranked
from polyocr.errors import EngineUnavailable
from polyocr.runtime.probe import Profile, get_profile
from polyocr.scripts import scripts_for
from polyocr.types import EngineKind, Task


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
        readable = engine_class(name).scripts
        if needed and not needed & readable:
            raise EngineUnavailable(
                name,
                f"it reads no {'/'.join(sorted(needed))} text, which "
                f"{'+'.join(task.languages)} needs (it reads {', '.join(sorted(readable))})",
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
    chain: list[str] = []
    if profile.usable_gpus():
        chain += [e.name for e in ranked(EngineKind.VLM) if e.name in usable and _available(e.name, profile)]
    scripts = scripts_for(task.languages) or frozenset()

    def worst_cer(entry: EngineEntry) -> tuple[bool, float, int]:
        """Engines with a recorded rate for every script first, lowest worst rate first, then rank."""
        recorded = dict(entry.cer)
        rates = [recorded.get(script) for script in scripts]
        known_rates = [r for r in rates if r is not None]
        return (len(known_rates) < len(rates) or not rates, max(known_rates, default=0.0), entry.rank or 0)

    classical = [e for e in ranked(EngineKind.CLASSICAL) if e.name in usable and _available(e.name, profile)]
    chain += [e.name for e in sorted(classical, key=worst_cer)]
    if not chain:
        raise EngineUnavailable(
            "auto",
            f"no engine that reads {'+'.join(task.languages)} can run here",
            "run `polyocr engines` to see why each one cannot",
        )
    return chain
