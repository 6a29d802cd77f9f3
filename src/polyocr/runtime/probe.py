"""The runtime profile: what this machine has, found by running things rather than reading names."""

from __future__ import annotations

import functools
import platform
import sys
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Profile:
    os: str = ""
    python: str = ""
    packages: dict[str, str | None] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return None


def probe() -> Profile:
    return Profile(
        os=f"{platform.system()} {platform.release()}",
        python=sys.version.split()[0],
        packages={name: _version(name) for name in ("torch", "transformers", "tesserocr", "rapidocr")},
    )


@functools.cache
def get_profile() -> Profile:
    """The profile of this process, probed once."""
    return probe()
