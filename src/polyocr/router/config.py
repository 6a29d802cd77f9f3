"""The user's say in routing: a config file, environment variables and command-line options.

Later sources win: built-in defaults, then ~/.config/polyocr/polyocr.toml (or
$XDG_CONFIG_HOME/polyocr/polyocr.toml), then ./polyocr.toml, then the file named by $POLYOCR_CONFIG,
then environment variables, then what the caller passes (the CLI's options). The file looks like:

    [router]
    engines = ["dots", "tesseract"]   # or "auto"; a string "dots,tesseract" works too
    timeout = 300                     # seconds per page before the router gives up on an engine

    [engines.dots]
    model_path = "/models/dots.ocr"
    max_pixels = 4000000
    batch_size = 4

Environment: POLYOCR_ENGINES ("dots,tesseract"), POLYOCR_TIMEOUT (seconds), POLYOCR_CONFIG (a file).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from polyocr.errors import ConfigFileError
from polyocr.types import EnginePlan

CONFIG_NAME = "polyocr.toml"

# EnginePlan fields a config file may set for an engine (reasons are the router's, not the user's).
PLAN_FIELDS = frozenset(f.name for f in fields(EnginePlan)) - {"reasons"}


@dataclass
class RouterConfig:
    """Routing choices after every source has had its say."""

    engines: list[str] = field(default_factory=lambda: ["auto"])
    timeout: float | None = None
    plans: dict[str, dict[str, Any]] = field(default_factory=dict)  # engine -> EnginePlan fields
    origins: list[str] = field(default_factory=list)  # where the settings came from, for reports

    def plan_overrides(self, engine: str) -> dict[str, Any]:
        return dict(self.plans.get(engine, {}))


def config_paths(cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> list[Path]:
    """Config files in the order they apply (later overrides earlier); only existing ones."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    candidates = [Path(base) / "polyocr" / CONFIG_NAME, (cwd or Path.cwd()) / CONFIG_NAME]
    explicit = env.get("POLYOCR_CONFIG")
    if explicit:
        if not Path(explicit).is_file():
            raise ConfigFileError("POLYOCR_CONFIG", f"{explicit} is not a file")
        candidates.append(Path(explicit))
    seen: list[Path] = []
    for path in candidates:
        if path.is_file() and path.resolve() not in [p.resolve() for p in seen]:
            seen.append(path)
    return seen


def parse_engines(value: str | Sequence[str], origin: str) -> list[str]:
    """ "a,b,c", ["a", "b"] or "auto" as a list of names."""
    if isinstance(value, str):
        names = [part.strip() for part in value.split(",")]
    elif isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        names = [part.strip() for part in value]
    else:
        raise ConfigFileError(origin, f"engines must be a string or a list of strings, not {value!r}")
    names = [n for n in names if n]
    if not names:
        raise ConfigFileError(origin, "engines is empty")
    return names


def _timeout(value: Any, origin: str) -> float | None:
    if value in (None, "", 0, "0", "none"):
        return None
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        raise ConfigFileError(origin, f"timeout must be a number of seconds, not {value!r}") from None
    if seconds <= 0:
        raise ConfigFileError(origin, f"timeout must be positive, not {seconds}")
    return seconds


def _apply_file(config: RouterConfig, path: Path) -> None:
    origin = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigFileError(origin, f"cannot read: {exc}") from exc
    unknown = set(data) - {"router", "engines"}
    if unknown:
        raise ConfigFileError(origin, f"unknown section(s) {', '.join(sorted(unknown))} (known: router, engines)")
    router = data.get("router", {})
    unknown = set(router) - {"engines", "timeout"}
    if unknown:
        raise ConfigFileError(origin, f"unknown [router] key(s) {', '.join(sorted(unknown))} (known: engines, timeout)")
    if "engines" in router:
        config.engines = parse_engines(router["engines"], origin)
    if "timeout" in router:
        config.timeout = _timeout(router["timeout"], origin)
    for engine, settings in data.get("engines", {}).items():
        if not isinstance(settings, Mapping):
            raise ConfigFileError(origin, f"[engines.{engine}] must be a table")
        unknown = set(settings) - PLAN_FIELDS
        if unknown:
            raise ConfigFileError(
                origin,
                f"[engines.{engine}] unknown key(s) {', '.join(sorted(unknown))} "
                f"(known: {', '.join(sorted(PLAN_FIELDS))})",
            )
        config.plans.setdefault(engine, {}).update(settings)
    config.origins.append(origin)


def load_config(
    engines: str | Sequence[str] | None = None,
    timeout: float | None = None,
    *,
    cwd: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> RouterConfig:
    """The routing config for this run; `engines` and `timeout` are the caller's (CLI) overrides.

    `engines=None` or "auto" from the caller leaves the file/environment choice standing, so a
    config file's chain applies unless the user names engines on the command line.
    """
    env = os.environ if environ is None else environ
    config = RouterConfig()
    for path in config_paths(cwd, env):
        _apply_file(config, path)
    if env.get("POLYOCR_ENGINES"):
        config.engines = parse_engines(env["POLYOCR_ENGINES"], "POLYOCR_ENGINES")
        config.origins.append("POLYOCR_ENGINES")
    if env.get("POLYOCR_TIMEOUT"):
        config.timeout = _timeout(env["POLYOCR_TIMEOUT"], "POLYOCR_TIMEOUT")
        config.origins.append("POLYOCR_TIMEOUT")
    if engines is not None:
        names = parse_engines(engines, "--engine")
        if names != ["auto"]:
            config.engines = names
            config.origins.append("--engine")
    if timeout is not None:
        config.timeout = _timeout(timeout, "--timeout")
    return config
