"""`polyocr doctor`: the findings and fixes for recorded machines, and the command on this one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from polyocr.doctor import Finding, build_report, machine_findings, render_report
from polyocr.engines.base import engine_class
from polyocr.runtime.attention import choose
from polyocr.runtime.probe import Profile
from polyocr.types import Availability

FIXTURES = Path(__file__).parent / "fixtures" / "profiles"


def profile(name: str) -> Profile:
    return Profile.load(FIXTURES / f"{name}.json")


def problems(name: str) -> list[tuple[str, str]]:
    return [(f.problem, f.fix) for f in machine_findings(profile(name))]


def test_healthy_machines_have_no_machine_findings():
    assert problems("cpu-only") == []
    assert problems("rtx5070ti-laptop-cu130") == []
    assert problems("a100-flashattn") == []


def test_gpu_without_kernels_gets_the_cuda_12_8_fix():
    [(problem, fix)] = problems("rtx5090-torch-without-sm120")
    assert problem.startswith("GPU 0 NVIDIA GeForce RTX 5090 (sm_120) cannot run torch 2.6.0+cu124's kernels")
    assert "sm_90" in problem and "no kernel image" in problem
    assert "CUDA 12.8 or newer" in fix and "whl/cu128" in fix


def test_broken_driver_gets_the_driver_fix():
    [(problem, fix)] = problems("cuda-driver-broken")
    assert "driver on your system is too old" in problem
    assert fix.startswith("update the NVIDIA driver to one that supports CUDA 13.0")


def test_flash_attn_whose_kernel_fails_is_explained():
    [(problem, fix)] = problems("rtx5070ti-laptop-flashattn-broken")
    assert problem.startswith("flash-attn 2.8.3 is installed but its kernel failed on sm_120")
    assert "polyocr uses SDPA instead" in problem
    assert "pip uninstall flash-attn" in fix


def test_gpu_mostly_in_use_and_no_fused_sdpa_are_findings():
    laptop = profile("rtx5070ti-laptop-cu130")
    laptop.gpus[0].free_memory = 2 << 30
    for path in ("sdpa_flash", "sdpa_efficient"):
        laptop.attention[path].ran = False
    found = [f.problem for f in machine_findings(laptop)]
    assert any("already in use by other processes" in p for p in found)
    assert any("none of SDPA's fused kernels" in p for p in found)


def test_torch_absent_is_a_finding_with_the_install_command():
    cpu = profile("cpu-only")
    cpu.torch = None
    [finding] = machine_findings(cpu)
    assert "torch is not installed" in finding.problem and "polyocr[vlm]" in finding.fix


@pytest.mark.parametrize("name", ["rtx5090-torch-without-sm120", "rtx5070ti-laptop-flashattn-broken"])
def test_report_renders_and_serialises(name):
    report = build_report(profile(name))
    data = json.loads(report.to_json())
    assert set(data) == {"profile", "engines", "findings"}
    assert {"tesseract", "rapidocr"} <= {e["name"] for e in data["engines"]}
    console = Console(record=True, width=200)
    render_report(report, console)
    text = " ".join(console.export_text().split())  # undo Rich's line wrapping
    assert "attention kernels on" in text and "engines" in text
    for finding in report.findings:
        assert " ".join(finding.problem.split()) in text and " ".join(finding.fix.split()) in text


def test_dots_row_shows_the_page_size_that_fits_or_why_nothing_does(monkeypatch):
    from polyocr.engines.dots.engine import DotsEngine

    # The recorded profiles list the weights in their own HF cache; the row's verdict is about memory.
    monkeypatch.setattr(DotsEngine, "available", lambda self, profile: Availability.yes("weights present"))
    laptop = {e.name: e for e in build_report(profile("rtx5070ti-laptop-cu130")).engines}["dots"]
    assert laptop.available and "8.29 MP pages (limited by free memory)" in laptop.reasons["page size"]
    t4 = {e.name: e for e in build_report(profile("t4-no-bf16")).engines}["dots"]
    assert not t4.available and "does not fit" in t4.reason and "float16" in t4.fix


def test_report_text_is_not_taken_for_rich_markup():
    report = build_report(profile("cpu-only"))
    report.findings.append(Finding("tesserocr is missing [sic]", "pip install 'polyocr[classic]'"))
    console = Console(record=True, width=200)
    render_report(report, console)
    text = console.export_text()
    assert "tesserocr is missing [sic]" in text and "pip install 'polyocr[classic]'" in text


def _fake_hub_cache(root: Path, repo_id: str) -> None:
    """A hub cache entry as huggingface_hub lays it out: refs/main names the snapshot."""
    repo = root / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / "0123abc"
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    (snapshot / "config.json").write_text("{}")
    (snapshot / "model.safetensors").write_bytes(b"")


def test_doctor_command_on_this_machine_decides_for_each_available_vlm(tmp_path):
    _fake_hub_cache(tmp_path, "Qwen/Qwen2-VL-2B-Instruct")
    _fake_hub_cache(tmp_path, "stepfun-ai/GOT-OCR-2.0-hf")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "polyocr", "doctor", "--json"], capture_output=True, text=True, env=env, check=True
    )
    data = json.loads(result.stdout)
    assert data["profile"]["hf_cache_models"] == ["Qwen/Qwen2-VL-2B-Instruct", "stepfun-ai/GOT-OCR-2.0-hf"]
    engines = {e["name"]: e for e in data["engines"]}
    qwen = engines["qwen2vl"]
    expected = choose("qwen2vl", Profile.from_dict(data["profile"]), supports=("flash_attention_2", "sdpa", "eager"))
    assert qwen["available"] and (qwen["device"], qwen["dtype"], qwen["attention"]) == (
        expected.device,
        expected.dtype,
        expected.attention,
    )
    assert set(qwen["reasons"]) == {"device", "dtype", "attention"}
    # GOT-OCR2's parts accept different implementations: each part is decided on its own.
    live = Profile.from_dict(data["profile"])
    parts = {
        part: choose("got", live, supports=s).attention for part, s in engine_class("got").supported_attention().items()
    }
    assert len(set(parts.values())) > 1
    assert engines["got"]["attention"] == ", ".join(f"{part or 'model'}: {name}" for part, name in parts.items())
    assert engines["tesseract"]["device"] == ("cpu" if engines["tesseract"]["available"] else "")
