"""polyocr's one configuration: every setting, its default, and where a user may set it.

Later sources win: the defaults here (values shared across layers come from defaults.py), then
~/.config/polyocr/polyocr.toml (or $XDG_CONFIG_HOME/polyocr/polyocr.toml), then ./polyocr.toml,
then the file named by $POLYOCR_CONFIG, then environment variables, then what the caller passes
(the CLI's options, the Python API's arguments). The file has four sections:

    [router]
    engines = ["dots", "tesseract"]   # or "auto"; a string "dots,tesseract" works too
    timeout = 300                     # seconds per page before the router gives up on an engine

    [engines.dots]                    # any EnginePlan field, per engine
    model_path = "/models/dots.ocr"
    max_pixels = 4000000
    batch_size = 4

    [server]                          # any ServerSettings field (polyocr serve)
    port = 8080
    workers = 2

    [openai]                          # the `openai` engine's server
    url = "http://127.0.0.1:8001"
    model = "dots.ocr"

Environment: POLYOCR_CONFIG (a file), POLYOCR_ENGINES ("dots,tesseract"), POLYOCR_TIMEOUT (seconds),
POLYOCR_API_KEY (the server's key), POLYOCR_OPENAI_URL, _MODEL, _API_KEY, _CONCURRENCY, _TIMEOUT,
_RETRIES (the openai engine's).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from polyocr import defaults
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


def _read_file(path: Path) -> dict[str, Any]:
    origin = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigFileError(origin, f"cannot read: {exc}") from exc
    unknown = set(data) - set(SECTIONS)
    if unknown:
        raise ConfigFileError(origin, f"unknown section(s) {', '.join(sorted(unknown))} (known: {', '.join(SECTIONS)})")
    for section, value in data.items():
        if not isinstance(value, Mapping):
            raise ConfigFileError(origin, f"[{section}] must be a table")
    return data


def _known_keys(origin: str, section: str, table: Mapping[str, Any], known: frozenset[str] | set[str]) -> None:
    unknown = set(table) - set(known)
    if unknown:
        raise ConfigFileError(
            origin, f"unknown [{section}] key(s) {', '.join(sorted(unknown))} (known: {', '.join(sorted(known))})"
        )


def _apply_router(config: RouterConfig, data: Mapping[str, Any], origin: str) -> None:
    router = data.get("router", {})
    _known_keys(origin, "router", router, {"engines", "timeout"})
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


SECTIONS = ("router", "engines", "server", "openai")
MIB = 1024 * 1024


def default_job_dir() -> Path:
    """Where jobs live unless told otherwise: the user's cache, so a restart finds them again."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "polyocr" / "jobs"


@dataclass
class ServerSettings:
    """What a polyocr server allows: its bind address, engines, limits and job storage.

    The defaults are the safe ones: loopback only, no CORS, inputs small enough that one request
    cannot exhaust the machine. Every limit is a setting so a GPU box serving a trusted network can
    raise them.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    engine: str = "auto"  # the chain used when a request names none
    allowed_engines: tuple[str, ...] | None = None  # engines a request may name; None: every engine
    languages: tuple[str, ...] = defaults.LANGUAGES
    api_key: str | None = None  # bearer token required on /v1/* when set
    insecure_no_auth: bool = False  # allow binding beyond loopback without an API key
    cors_origins: tuple[str, ...] = ()
    max_request_bytes: int = 50 * MIB
    max_pages: int = 200
    max_pixels: int = 50_000_000  # per page
    dpi: float = defaults.DPI
    request_timeout: float = 300.0  # seconds for one synchronous /v1/ocr or chat request
    max_new_tokens: int = defaults.MAX_NEW_TOKENS  # the most tokens a VLM may generate for one page
    workers: int = 1  # pages recognised at once; each worker holds its own engine instances
    queue_size: int = 8  # synchronous requests allowed to wait for a worker before 429
    max_queued_jobs: int = 100
    job_dir: Path = field(default_factory=default_job_dir)
    job_ttl: float = 24 * 3600.0  # seconds a finished job and its files are kept
    job_max_starts: int = 3  # a job interrupted this many times is marked failed, not retried
    max_job_bytes: int = 2048 * MIB  # uploads and results kept in job_dir; beyond it new jobs get 507
    job_timeout: float | None = None  # seconds a job may run before it is stopped and failed; None: no limit
    shutdown_grace: float = 2.0  # seconds a stop waits for pages in hand before requeueing and exiting
    warm_up: bool = True  # load the default chain at start-up so /ready means ready

    def __post_init__(self) -> None:
        self.job_dir = Path(self.job_dir)
        self.languages = tuple(self.languages)
        for name in (
            "max_request_bytes",
            "max_pages",
            "max_pixels",
            "workers",
            "job_max_starts",
            "max_job_bytes",
            "max_new_tokens",
        ):
            if not getattr(self, name) >= 1:
                raise ValueError(f"server setting {name} must be at least 1, got {getattr(self, name)}")
        if not 1 <= self.port <= 65535:
            raise ValueError(f"server setting port must be from 1 to 65535, got {self.port}")
        if not 1 <= self.dpi <= 2400:
            raise ValueError(f"server setting dpi must be from 1 to 2400, got {self.dpi}")
        positive = [self.request_timeout, self.job_ttl] + ([self.job_timeout] if self.job_timeout is not None else [])
        if not self.queue_size >= 0 or not all(v > 0 and v != float("inf") for v in positive):
            raise ValueError(
                "server settings queue_size must be >= 0, request_timeout, job_ttl and job_timeout finite and > 0"
            )
        if not self.shutdown_grace >= 0:
            raise ValueError(f"server setting shutdown_grace must be >= 0, got {self.shutdown_grace}")

    @property
    def capacity(self) -> int:
        """Synchronous requests admitted at once (running plus waiting); one more gets 429."""
        return self.workers + self.queue_size

    @property
    def is_loopback(self) -> bool:
        """Whether every address the host resolves to is a loopback address (judged by address, not
        by name: "127.evil.example" is whatever DNS says it is, and unresolvable counts as not)."""
        return is_loopback_host(self.host)

    def check_exposure(self) -> None:
        """Refuse to listen beyond loopback without an API key unless insecure_no_auth says so."""
        if self.api_key or self.insecure_no_auth or self.is_loopback:
            return
        raise ValueError(
            f"--host {self.host} is reachable beyond this machine and no API key is set: give --api-key-file "
            "FILE (or POLYOCR_API_KEY / POLYOCR_API_KEY_FILE), or pass --insecure-no-auth to serve without one"
        )


def is_loopback_host(host: str) -> bool:
    import ipaddress
    import socket

    try:
        infos = socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        return False
    addresses = {str(info[4][0]) for info in infos}
    try:
        return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)
    except ValueError:
        return False


def read_key_file(path: str | Path, origin: str = "--api-key-file") -> str:
    """The API key held in a file (first line, stripped), so it need not appear in `ps`."""
    try:
        key = Path(path).read_text(encoding="utf-8").strip().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigFileError(origin, f"cannot read the API key file {path}: {reason}") from None
    if not key or not key[0].strip():
        raise ConfigFileError(origin, f"the API key file {path} is empty")
    return key[0].strip()


SERVER_FIELDS = frozenset(f.name for f in fields(ServerSettings))


@dataclass(frozen=True)
class OpenAIConfig:
    """The server behind the `openai` engine (vLLM, SGLang, another polyocr, any OpenAI-compatible one)."""

    url: str = ""
    model: str = ""  # the served model's name; empty: the server's only model
    api_key: str = ""
    concurrency: int = 4  # requests in flight at once
    timeout: float = 600.0  # seconds per request
    retries: int = 3  # retries of a failed request, with backoff


OPENAI_FIELDS = frozenset(f.name for f in fields(OpenAIConfig))
OPENAI_ENV = {name: f"POLYOCR_OPENAI_{name.upper()}" for name in OPENAI_FIELDS}
_OPENAI_MINIMUM = {"concurrency": 1, "timeout": 0.001, "retries": 0}


@dataclass
class Config:
    """Every section after all sources have had their say."""

    router: RouterConfig = field(default_factory=RouterConfig)
    server: ServerSettings = field(default_factory=ServerSettings)
    openai: OpenAIConfig = field(default_factory=OpenAIConfig)
    origins: list[str] = field(default_factory=list)


def _openai(values: Mapping[str, Any], origin: str, base: OpenAIConfig) -> OpenAIConfig:
    changes: dict[str, Any] = {}
    for name, raw in values.items():
        if name in _OPENAI_MINIMUM:
            try:
                value: Any = float(raw)
            except (TypeError, ValueError):
                raise ConfigFileError(origin, f"openai {name}={raw!r} is not a number") from None
            if value < _OPENAI_MINIMUM[name]:
                raise ConfigFileError(origin, f"openai {name}={raw!r} is below {_OPENAI_MINIMUM[name]:g}")
            changes[name] = value if name == "timeout" else int(value)
        else:
            changes[name] = str(raw).strip()
    return replace(base, **changes)


def _server(values: Mapping[str, Any], origin: str, base: ServerSettings) -> ServerSettings:
    try:
        return replace(base, **values)
    except (TypeError, ValueError) as exc:
        raise ConfigFileError(origin, f"[server]: {exc}") from exc


def load(*, cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Every section from the config files and the environment (not yet the caller's overrides)."""
    env = os.environ if environ is None else environ
    config = Config()
    for path in config_paths(cwd, env):
        origin = str(path)
        data = _read_file(path)
        _apply_router(config.router, data, origin)
        server = data.get("server", {})
        _known_keys(origin, "server", server, SERVER_FIELDS)
        config.server = _server(server, origin, config.server)
        openai = data.get("openai", {})
        _known_keys(origin, "openai", openai, OPENAI_FIELDS)
        config.openai = _openai(openai, origin, config.openai)
        config.router.origins.append(origin)
        config.origins.append(origin)
    if env.get("POLYOCR_ENGINES"):
        config.router.engines = parse_engines(env["POLYOCR_ENGINES"], "POLYOCR_ENGINES")
        config.router.origins.append("POLYOCR_ENGINES")
    if env.get("POLYOCR_TIMEOUT"):
        config.router.timeout = _timeout(env["POLYOCR_TIMEOUT"], "POLYOCR_TIMEOUT")
        config.router.origins.append("POLYOCR_TIMEOUT")
    if env.get(API_KEY_FILE_ENV):
        config.server = replace(config.server, api_key=read_key_file(env[API_KEY_FILE_ENV], API_KEY_FILE_ENV))
    if env.get(API_KEY_ENV):
        config.server = replace(config.server, api_key=env[API_KEY_ENV])
    openai_env = {name: env[var] for name, var in OPENAI_ENV.items() if env.get(var, "").strip()}
    for name, value in openai_env.items():
        config.openai = _openai({name: value}, OPENAI_ENV[name], config.openai)
    return config


API_KEY_ENV = "POLYOCR_API_KEY"
API_KEY_FILE_ENV = "POLYOCR_API_KEY_FILE"


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
    config = load(cwd=cwd, environ=environ).router
    if engines is not None:
        names = parse_engines(engines, "--engine")
        if names != ["auto"]:
            config.engines = names
            config.origins.append("--engine")
    if timeout is not None:
        config.timeout = _timeout(timeout, "--timeout")
    return config


def server_settings(
    *, cwd: Path | None = None, environ: Mapping[str, str] | None = None, **given: Any
) -> ServerSettings:
    """The server's settings: files and environment, then the caller's values (None: not given)."""
    base = load(cwd=cwd, environ=environ).server
    try:
        return replace(base, **{k: v for k, v in given.items() if v is not None})
    except TypeError as exc:
        raise ValueError(str(exc)) from exc


def openai_config(*, cwd: Path | None = None, environ: Mapping[str, str] | None = None) -> OpenAIConfig:
    """The `openai` engine's server, from the files' [openai] section and POLYOCR_OPENAI_*."""
    return load(cwd=cwd, environ=environ).openai
