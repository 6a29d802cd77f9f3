"""Errors that name the input, the engine and the reason, so a user can act on them."""

from __future__ import annotations

from pathlib import Path


class PolyOCRError(Exception):
    """Base class for every error polyocr raises on purpose."""


class InputError(PolyOCRError):
    """An input that cannot be turned into pages; carries the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class EngineUnavailable(PolyOCRError):
    """An engine that cannot run here; `fix` says what would make it run."""

    def __init__(self, engine: str, reason: str, fix: str = ""):
        self.engine = engine
        self.reason = reason
        self.fix = fix
        message = f"engine {engine!r} cannot run: {reason}"
        super().__init__(f"{message} (fix: {fix})" if fix else message)


class EngineError(PolyOCRError):
    """An engine failed on a page; the router decides what happens next."""

    def __init__(self, engine: str, reason: str):
        self.engine = engine
        self.reason = reason
        super().__init__(f"engine {engine!r}: {reason}")


class ConfigError(PolyOCRError):
    """A setting (`--attn`, `--dtype`, `--device`, ...) that cannot run here, found before any model loads."""

    def __init__(self, engine: str, setting: str, reason: str, fix: str = ""):
        self.engine = engine
        self.setting = setting
        self.reason = reason
        self.fix = fix
        message = f"engine {engine!r}: {setting} cannot run here: {reason}"
        super().__init__(f"{message} (fix: {fix})" if fix else message)


class ConfigFileError(PolyOCRError):
    """A config file or variable that cannot be used; names where it came from and why."""

    def __init__(self, origin: str, reason: str):
        self.origin = origin
        self.reason = reason
        super().__init__(f"{origin}: {reason}")


class PageTimeout(PolyOCRError):
    """The engine did not answer within the page's time limit; its call was abandoned."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        super().__init__(f"no answer within {seconds:.1f} s")


class VisionAttentionUnavailable(PolyOCRError, RuntimeError):
    """A vision attention implementation that cannot run on this device and dtype, and why."""


class ChatRequestError(PolyOCRError, ValueError):
    """A chat request polyocr cannot answer; the message says what to send instead."""


class OptionError(PolyOCRError, ValueError):
    """An option whose value no run could use (--dpi 0, --max-pages 0, an unknown language); says the valid range."""


class JobStoreError(PolyOCRError):
    """The server's job store cannot be used (damaged, not a database, not a directory); names the file and the fix."""


class BatchError(PolyOCRError):
    """A batch that cannot start or go on: its output folder is in use, or holds a batch of other settings."""

    def __init__(self, out_dir: str | Path, reason: str):
        self.out_dir = str(out_dir)
        self.reason = reason
        super().__init__(f"{self.out_dir}: {reason}")
