"""polyocr.config: one file with four sections, then the environment, then the caller."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from polyocr.config import ServerSettings, load, openai_config, server_settings
from polyocr.errors import ConfigFileError


def _write(work: Path, text: str) -> Path:
    work.mkdir(parents=True, exist_ok=True)
    (work / "polyocr.toml").write_text(text, encoding="utf-8")
    return work


def test_every_section_is_read_from_one_file(tmp_path: Path) -> None:
    work = _write(
        tmp_path / "w",
        '[router]\nengines = "tesseract"\n[engines.tesseract]\nbatch_size = 2\n'
        '[server]\nport = 8123\nworkers = 2\n[openai]\nurl = "http://127.0.0.1:9"\nconcurrency = 7\n',
    )
    config = load(cwd=work, environ={"XDG_CONFIG_HOME": str(tmp_path / "none")})
    assert config.router.engines == ["tesseract"]
    assert config.router.plan_overrides("tesseract") == {"batch_size": 2}
    assert (config.server.port, config.server.workers) == (8123, 2)
    assert (config.openai.url, config.openai.concurrency) == ("http://127.0.0.1:9", 7)


def test_environment_overrides_the_file_and_the_caller_overrides_both(tmp_path: Path) -> None:
    work = _write(tmp_path / "w", '[server]\nport = 8123\n[openai]\nmodel = "from-file"\ntimeout = 5\n')
    env = {"XDG_CONFIG_HOME": str(tmp_path / "none"), "POLYOCR_OPENAI_MODEL": "from-env", "POLYOCR_API_KEY": "k"}
    assert openai_config(cwd=work, environ=env).model == "from-env"
    assert openai_config(cwd=work, environ=env).timeout == 5.0
    settings = server_settings(cwd=work, environ=env, port=9000, workers=None)
    assert (settings.port, settings.workers, settings.api_key) == (9000, 1, "k")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nprot = 1\n", "unknown [server] key(s) prot"),
        ("[openai]\nconcurrency = 0\n", "below 1"),
        ("[openai]\ntimeout = 'soon'\n", "is not a number"),
        ("[server]\nworkers = 0\n", "workers must be at least 1"),
        ("[gui]\nx = 1\n", "unknown section(s) gui"),
    ],
)
def test_bad_settings_name_the_file_and_the_key(tmp_path: Path, text: str, message: str) -> None:
    work = _write(tmp_path / "w", text)
    with pytest.raises(ConfigFileError, match=re.escape(message)) as info:
        load(cwd=work, environ={"XDG_CONFIG_HOME": str(tmp_path / "none")})
    assert str(work / "polyocr.toml") in str(info.value)


def test_defaults_live_in_one_place() -> None:
    from polyocr import defaults
    from polyocr.types import Task

    assert ServerSettings().languages == defaults.LANGUAGES == Task().languages
    assert Task().max_new_tokens == defaults.MAX_NEW_TOKENS
