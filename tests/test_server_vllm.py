"""`polyocr vllm-command`: the command line chosen from a machine profile, and --run."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from polyocr.cli import app
from polyocr.runtime.probe import GPU, Profile
from polyocr.server.vllm import GIB, build_command, model_family, run_and_wait
from test_server_support import free_port


def _gpu(index: int = 0, total: float = 80, free: float = 79, name: str = "NVIDIA H100 80GB HBM3") -> GPU:
    return GPU(
        index=index,
        name=name,
        sm="sm_90",
        total_memory=int(total * GIB),
        free_memory=int(free * GIB),
        bf16=True,
        in_arch_list=True,
        kernels_ok=True,
    )


def _profile(*gpus: GPU, vllm: str | None = "0.11.2", gpu_node: str | None = "/dev/nvidia0") -> Profile:
    return Profile(gpus=list(gpus), packages={"vllm": vllm}, gpu_node=gpu_node if gpus else None)


def _value(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_dots_on_a_large_card_uses_vllm_native_code() -> None:
    command = build_command("rednote-hilab/dots.ocr", _profile(_gpu()))
    argv = command.argv
    assert argv[:3] == ["vllm", "serve", "rednote-hilab/dots.ocr"]
    assert _value(argv, "--served-model-name") == "dots.ocr" == command.served_name
    assert _value(argv, "--chat-template-content-format") == "string"
    assert _value(argv, "--gpu-memory-utilization") == "0.90" and _value(argv, "--host") == "127.0.0.1"
    assert "--trust-remote-code" not in argv and "--enforce-eager" not in argv
    assert any("native" in note and "0.11.0" in note and "24645" in note for note in command.notes)
    assert not command.warnings and command.url == "http://127.0.0.1:8001"


@pytest.mark.parametrize(
    ("card", "model", "share", "warns"),
    [
        (_gpu(total=12, free=11.8, name="RTX 3060"), "rednote-hilab/dots.ocr", "0.95", False),
        (_gpu(total=80, free=40), "Qwen/Qwen2-VL-2B-Instruct", "0.45", False),
        (_gpu(total=8, free=7.9, name="RTX 4060"), "Qwen/Qwen2.5-VL-7B-Instruct", "0.95", True),
    ],
)
def test_memory_share_follows_the_card(card: GPU, model: str, share: str, warns: bool) -> None:
    command = build_command(model, _profile(card))
    assert _value(command.argv, "--gpu-memory-utilization") == share
    assert any("do not fit" in w for w in command.warnings) == warns
    # dots.ocr's template wants a string prompt; Qwen-VL templates take content lists as vLLM sends them
    assert ("--chat-template-content-format" in command.argv) == (model_family(model) == "dots")


def test_enforce_eager_only_where_cuda_graphs_fail() -> None:
    assert "--enforce-eager" in build_command("rednote-hilab/dots.ocr", _profile(_gpu(), gpu_node="/dev/dxg")).argv
    assert "--enforce-eager" not in build_command("rednote-hilab/dots.ocr", _profile(_gpu())).argv


def test_second_gpu_and_cpu_only_and_old_or_missing_vllm() -> None:
    two = build_command("Qwen/Qwen3-VL-2B-Instruct", _profile(_gpu(0), _gpu(1)), gpu_index=1)
    assert two.argv[:3] == ["env", "CUDA_VISIBLE_DEVICES=1", "vllm"]
    cpu = build_command("rednote-hilab/dots.ocr", _profile())
    assert "--gpu-memory-utilization" not in cpu.argv and any("no usable GPU" in w for w in cpu.warnings)
    old = build_command("rednote-hilab/dots.ocr", _profile(_gpu(), vllm="0.10.1"))
    assert any("predates native dots.ocr" in w for w in old.warnings)
    missing = build_command("rednote-hilab/dots.ocr", _profile(_gpu(), vllm=None))
    assert any("not installed" in w and "pip install" in w for w in missing.warnings)


def test_family_from_a_local_checkpoint_or_the_name(tmp_path: Path) -> None:
    checkpoint = tmp_path / "DotsOCR"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "dots_ocr"}))
    assert model_family(str(checkpoint)) == "dots"
    assert model_family("Qwen/Qwen2.5-VL-3B-Instruct") == "qwen-vl"
    with pytest.raises(ValueError, match=r"not dots\.ocr or a Qwen-VL"):
        model_family("meta-llama/Llama-3.1-8B")


def test_cli_prints_the_command_alone_on_stdout() -> None:
    result = CliRunner().invoke(app, ["vllm-command", "rednote-hilab/dots.ocr", "--port", "8123"])
    assert result.exit_code == 0, result.output
    first = result.stdout.strip().splitlines()[0]
    assert first.startswith("vllm serve rednote-hilab/dots.ocr") and "--port 8123" in first
    bad = CliRunner().invoke(app, ["vllm-command", "gpt2"])
    assert bad.exit_code == 2


def test_run_without_vllm_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    said: list[str] = []
    assert run_and_wait(build_command("rednote-hilab/dots.ocr", _profile()), wait_seconds=5, say=said.append) == 127
    assert "not installed" in said[0] and "pip install 'vllm>=0.11'" in said[0]


_FAKE_VLLM = """#!{python}
# A stand-in for the vllm executable: answers /health for a moment, then exits.
import http.server, sys, threading, time
port = int(sys.argv[sys.argv.index("--port") + 1])
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/health" else 404); self.end_headers()
    def log_message(self, *a): pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", port), H)
threading.Thread(target=server.serve_forever, daemon=True).start()
time.sleep(1)
"""


def test_run_starts_vllm_and_waits_for_health(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fake = tmp_path / "vllm"
    fake.write_text(_FAKE_VLLM.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    said: list[str] = []
    command = build_command("rednote-hilab/dots.ocr", _profile(), port=free_port())
    assert run_and_wait(command, wait_seconds=30, say=said.append, poll_seconds=0.2) == 0
    assert any("vLLM is up at" in line for line in said)


def test_dots_mocr_is_dots_and_dots_vlm_is_not(tmp_path: Path) -> None:
    assert model_family("rednote-hilab/dots.mocr") == "dots"
    checkpoint = tmp_path / "DotsMOCR"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps({"model_type": "dots_ocr"}))  # dots.mocr's config.json
    assert model_family(str(checkpoint)) == "dots"
    with pytest.raises(ValueError, match=r"not dots\.ocr"):
        model_family("dots-studio/dots.vlm1.inst")
