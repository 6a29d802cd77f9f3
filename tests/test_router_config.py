"""Which chain a run gets: "auto" from the machine's profile and the engines' scripts, and the
user's say through --engine, polyocr.toml and POLYOCR_* variables."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from polyocr.config import load_config
from polyocr.engines import base
from polyocr.errors import ConfigFileError, EngineUnavailable
from polyocr.router import resolve_chain
from polyocr.runtime.probe import GPU, Profile, TorchInfo
from polyocr.scripts import CYRILLIC, HAN, LATIN
from polyocr.types import Task, TaskKind
from test_router_chain import Double

CPU = Profile(recorded="hand-written: CPU only", torch=TorchInfo(version="2.13.0"))
H100 = Profile(
    recorded="hand-written: one H100 whose kernels ran",
    torch=TorchInfo(version="2.11.0+cu130", cuda="13.0", cuda_available=True, device_count=1),
    gpus=[
        GPU(
            index=0,
            name="NVIDIA H100 80GB HBM3",
            sm="sm_90",
            total_memory=80 * 2**30,
            free_memory=79 * 2**30,
            bf16=True,
            in_arch_list=True,
            kernels_ok=True,
        )
    ],
)


class FakeDots(Double):
    name = "dots"


class FakeQwen(Double):
    name = "qwen2vl"


class FakePaddle(Double):
    name = "paddleocr-vl"


class FakeGot(Double):
    """Reads no Cyrillic, like GOT-OCR 2.0."""

    name = "got"
    scripts = frozenset({LATIN, HAN})


class FakeRapid(Double):
    """The real rapidocr's scripts, without its models (the chain only asks what it reads)."""

    name = "rapidocr"
    kind = "classical"
    scripts = frozenset({LATIN, HAN, "Kana"})


@pytest.fixture
def gpu_engines(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Registry entries of the VLMs replaced by doubles whose weights are 'present'."""
    for cls in (FakeDots, FakeQwen, FakePaddle, FakeGot, FakeRapid):
        # the real entry (kind, rank, recorded error rates) pointing at the double
        entry = dataclasses.replace(base.engine_entry(cls.name), target=f"{__name__}:{cls.__name__}")
        monkeypatch.setitem(base._REGISTRY, cls.name, entry)
    for name in ("qwen3vl", "deepseek-ocr"):
        monkeypatch.delitem(base._REGISTRY, name, raising=False)
    yield


def test_auto_on_a_cpu_machine() -> None:
    assert resolve_chain("auto", Task(languages=("eng", "rus")), CPU) == ["tesseract"]
    assert resolve_chain("auto", Task(languages=("rus",)), CPU) == ["tesseract"]
    # Latin only: rapidocr reads it but has the higher recorded CER, so it comes second
    assert resolve_chain("auto", Task(languages=("eng",)), CPU) == ["tesseract", "rapidocr"]
    assert resolve_chain("auto", Task(languages=("chi_sim",)), CPU) == ["tesseract", "rapidocr"]


def test_auto_on_a_gpu_machine(gpu_engines: None) -> None:
    # the published order (polyocr/published.py): OmniDocBench v1.5 paddleocr-vl 92.56 > dots 88.41,
    # then the engines with no score by size, GOT (0.58B) before Qwen2-VL (2.2B)
    assert resolve_chain("auto", Task(languages=("eng", "rus")), H100) == [
        "paddleocr-vl",
        "dots",
        "qwen2vl",
        "tesseract",
    ]
    # GOT reads no Cyrillic: only pages without Russian get it
    assert resolve_chain("auto", Task(languages=("eng",)), H100) == [
        "paddleocr-vl",
        "dots",
        "got",
        "qwen2vl",
        "tesseract",
        "rapidocr",
    ]
    # no usable GPU: no VLM, however many weights are present
    assert resolve_chain("auto", Task(languages=("eng",)), CPU) == ["tesseract", "rapidocr"]


def test_auto_keeps_to_the_task(gpu_engines: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(FakePaddle, "tasks", frozenset({TaskKind.TEXT}))
    assert "paddleocr-vl" not in resolve_chain("auto", Task(kind=TaskKind.LAYOUT_ONLY), H100)


def test_named_chains() -> None:
    task = Task(languages=("eng", "rus"))
    assert resolve_chain("rapidocr, tesseract", task) == ["rapidocr", "tesseract"]
    with pytest.raises(EngineUnavailable, match="reads no Cyrillic"):
        resolve_chain("tesseract,rapidocr", Task(languages=("rus",)))
    with pytest.raises(EngineUnavailable, match="no such engine"):
        resolve_chain("tesseract,nope", task)
    assert {CYRILLIC} <= base.engine_class("tesseract").scripts


def test_config_sources_in_order(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "polyocr").mkdir(parents=True)
    (home / "polyocr" / "polyocr.toml").write_text(
        '[router]\nengines = "qwen2vl,tesseract"\ntimeout = 60\n[engines.qwen2vl]\nbatch_size = 2\n'
    )
    work = tmp_path / "work"
    work.mkdir()
    (work / "polyocr.toml").write_text(
        '[router]\nengines = ["dots", "tesseract"]\n[engines.dots]\nmodel_path = "/models/dots"\nmax_pixels = 2000000\n'
    )
    env = {"XDG_CONFIG_HOME": str(home)}
    config = load_config(cwd=work, environ=env)
    assert config.engines == ["dots", "tesseract"]  # ./polyocr.toml over the user's file
    assert config.timeout == 60
    assert config.plan_overrides("dots") == {"model_path": "/models/dots", "max_pixels": 2000000}
    assert config.plan_overrides("qwen2vl") == {"batch_size": 2}
    env["POLYOCR_ENGINES"] = "tesseract"
    env["POLYOCR_TIMEOUT"] = "30"
    config = load_config(cwd=work, environ=env)
    assert (config.engines, config.timeout) == (["tesseract"], 30)
    config = load_config("rapidocr,tesseract", 5, cwd=work, environ=env)
    assert (config.engines, config.timeout) == (["rapidocr", "tesseract"], 5)
    assert load_config("auto", cwd=work, environ=env).engines == ["tesseract"]  # auto leaves the choice standing
    assert load_config(cwd=tmp_path, environ={"XDG_CONFIG_HOME": str(tmp_path / "none")}).engines == ["auto"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[router]\nengine = 'dots'\n", "unknown [router] key(s) engine"),
        ("[engines.dots]\nmax_pixel = 5\n", "[engines.dots] unknown key(s) max_pixel"),
        ("[router]\ntimeout = -1\n", "timeout must be positive"),
        ("[router]\nengines = [1, 2]\n", "engines must be a string or a list of strings"),
        ("[router\n", "cannot read"),
    ],
)
def test_bad_config_files_name_the_file_and_the_problem(tmp_path: Path, text: str, message: str) -> None:
    (tmp_path / "polyocr.toml").write_text(text)
    with pytest.raises(ConfigFileError, match=re.escape(message)) as info:
        load_config(cwd=tmp_path, environ={"XDG_CONFIG_HOME": str(tmp_path / "none")})
    assert str(tmp_path / "polyocr.toml") in str(info.value)


def test_polyocr_config_variable_must_name_a_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match="POLYOCR_CONFIG"):
        load_config(cwd=tmp_path, environ={"POLYOCR_CONFIG": str(tmp_path / "missing.toml")})
