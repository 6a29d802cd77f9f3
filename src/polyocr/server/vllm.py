"""The `vllm serve` command line that suits this machine, for dots.ocr or a Qwen-VL, and running it.

The choices, each with its reason in the notes printed beside the command:
- dots.ocr is implemented natively by vLLM since 0.11.0 (vllm/model_executor/models/dots_ocr.py with
  its own config class, added by vllm-project/vllm#24645), so no --trust-remote-code is passed.
  dots.ocr's chat template wants the prompt as a string, and its clients put the image marker in
  the text themselves: --chat-template-content-format string.
- --gpu-memory-utilization is the share of the card vLLM may take: vLLM's 0.90 on cards of 16 GiB or
  more, 0.95 on smaller ones (the weights leave little room for the KV cache otherwise), and less when
  other processes already hold memory (vLLM refuses to start if that share is not free).
- --max-model-len 32768 covers the largest page dots.ocr's processor makes (11.3 MP = 14,400 image
  tokens) plus 16,384 new tokens, without reserving KV cache for a 128k context.
- --enforce-eager only where CUDA graph capture is known to fail: GPUs reached through WSL2's
  /dev/dxg (cudaErrorStreamCaptureUnsupported, e.g. vllm-project/vllm#37242).
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from polyocr.engines.openai_server import DOTS_OCR_NAME
from polyocr.runtime.probe import GPU, Profile

log = logging.getLogger(__name__)

GIB = 1024**3
MIN_VLLM_FOR_DOTS = (0, 11, 0)
INSTALL_HINT = (
    "pip install 'vllm>=0.11' (in its own virtualenv: vLLM pins its own CUDA build of torch), "
    "or use the image vllm/vllm-openai"
)
_QWEN_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe")
_PARAMS = re.compile(r"(\d+(?:\.\d+)?)\s*b\b", re.IGNORECASE)
DOTS_PARAMETERS = 3.04e9


@dataclass
class VllmCommand:
    argv: list[str]
    served_name: str
    url: str
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def line(self) -> str:
        return shlex.join(self.argv)


def model_family(model: str) -> str:
    """ "dots" or "qwen-vl", from a local checkpoint's config.json or else the model's name."""
    config = Path(model) / "config.json"
    if config.is_file():
        try:
            model_type = str(json.loads(config.read_text(encoding="utf-8")).get("model_type", ""))
        except (OSError, ValueError):
            model_type = ""
        if DOTS_OCR_NAME.search(model_type):
            return "dots"
        if model_type in _QWEN_TYPES:
            return "qwen-vl"
    name = model.lower().rstrip("/").rsplit("/", 1)[-1]
    if DOTS_OCR_NAME.search(name):
        return "dots"
    if "qwen" in name and "vl" in name:
        return "qwen-vl"
    raise ValueError(
        f"{model}: not dots.ocr or a Qwen-VL (Qwen2-VL, Qwen2.5-VL, Qwen3-VL); polyocr prints vLLM "
        "commands for those only"
    )


def _weights_bytes(model: str, family: str) -> float | None:
    if family == "dots":
        return DOTS_PARAMETERS * 2
    match = _PARAMS.search(model.rsplit("/", 1)[-1])
    return float(match.group(1)) * 1e9 * 2 if match else None


def _memory_share(gpu: GPU) -> tuple[float, str]:
    total, free = gpu.total_memory, gpu.free_memory
    if total and free < 0.9 * total:
        share = max(0.1, round(free / total - 0.05, 2))
        return share, (
            f"{(total - free) / GIB:.1f} GiB of the {total / GIB:.0f} GiB card is already in use, so "
            f"vLLM gets {share:.2f} of it"
        )
    if total < 16 * GIB:
        return 0.95, f"a {total / GIB:.0f} GiB card: 0.95 leaves room for the KV cache beside the weights"
    return 0.90, f"a {total / GIB:.0f} GiB card: vLLM's default share 0.90"


def vllm_version(profile: Profile) -> str | None:
    return profile.packages.get("vllm")


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version)[:3])


def build_command(
    model: str,
    profile: Profile,
    *,
    host: str = "127.0.0.1",
    port: int = 8001,
    served_name: str | None = None,
    gpu_index: int = 0,
) -> VllmCommand:
    """The command and its reasons; ValueError for a model polyocr does not know how to serve."""
    family = model_family(model)
    served = served_name or model.rstrip("/").rsplit("/", 1)[-1]
    argv = ["vllm", "serve", model, "--served-model-name", served, "--host", host, "--port", str(port)]
    url = f"http://{host}:{port}"
    command = VllmCommand(argv, served, url)
    if family == "dots":
        argv += ["--chat-template-content-format", "string"]
        command.notes.append(
            "dots.ocr runs on vLLM's own native implementation (vLLM >= 0.11.0: "
            "vllm/model_executor/models/dots_ocr.py, vllm-project/vllm#24645), so no "
            "--trust-remote-code; --chat-template-content-format string because dots.ocr's "
            "template takes the prompt as a string with the image marker inside it"
        )
    argv += ["--max-model-len", "32768"]
    command.notes.append("--max-model-len 32768: the largest page (14,400 image tokens) plus 16,384 new tokens")
    gpus = profile.usable_gpus()
    gpu = next((g for g in gpus if g.index == gpu_index), gpus[0] if gpus else None)
    if gpu is None:
        command.warnings.append(
            "no usable GPU in this machine's profile (`polyocr doctor`): vLLM's CUDA build "
            "will not start here; run this command on the GPU machine"
        )
    else:
        share, why = _memory_share(gpu)
        argv += ["--gpu-memory-utilization", f"{share:.2f}"]
        command.notes.append(f"GPU {gpu.index} {gpu.name} ({gpu.sm}): {why}")
        weights = _weights_bytes(model, family)
        if weights is not None and weights + 2 * GIB > share * gpu.total_memory:
            command.warnings.append(
                f"the weights (~{weights / GIB:.1f} GiB in bf16) plus working memory do not fit "
                f"in {share * gpu.total_memory / GIB:.1f} GiB of GPU {gpu.index}"
            )
        if len(gpus) > 1:
            argv[:0] = [f"CUDA_VISIBLE_DEVICES={gpu.index}"]
            argv.insert(0, "env")
    if profile.gpu_node == "/dev/dxg":
        argv.append("--enforce-eager")
        command.notes.append(
            "--enforce-eager: the GPU is reached through WSL2, where CUDA graph capture is known "
            "to fail (cudaErrorStreamCaptureUnsupported); drop it on WSL 2.7.0 or newer"
        )
    installed = vllm_version(profile)
    if installed is None:
        command.warnings.append(f"vllm is not installed here: {INSTALL_HINT}")
    elif family == "dots" and _version_tuple(installed) < MIN_VLLM_FOR_DOTS:
        command.warnings.append(f"vllm {installed} predates native dots.ocr support (0.11.0): {INSTALL_HINT}")
    command.notes.append(
        f"then point polyocr at it: export POLYOCR_OPENAI_URL={url} POLYOCR_OPENAI_MODEL={served}; "
        "polyocr ocr --engine openai PAGE"
    )
    return command


def run_and_wait(
    command: VllmCommand,
    *,
    wait_seconds: float,
    say: Callable[[str], None] = log.warning,
    poll_seconds: float = 2.0,
) -> int:
    """Start vLLM, wait for its /health, then stay in the foreground until it exits; its exit code.

    `say` reports progress to the user (the CLI passes its own stderr printer)."""
    import httpx

    if shutil.which("vllm") is None:
        say(f"vllm is not installed (no `vllm` on PATH): {INSTALL_HINT}")
        return 127
    process = subprocess.Popen(command.argv)
    deadline = time.monotonic() + wait_seconds
    try:
        while process.poll() is None:
            try:
                if httpx.get(f"{command.url}/health", timeout=2.0).status_code == 200:
                    say(f"vLLM is up at {command.url} (model {command.served_name}); Ctrl-C stops it")
                    return process.wait()
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                say(f"vLLM did not answer {command.url}/health within {wait_seconds:g} s; stopping it")
                process.terminate()
                process.wait(30)
                return 1
            time.sleep(poll_seconds)
        say(f"vLLM exited with code {process.returncode} before it was ready (see its log above)")
        return process.returncode or 1
    except KeyboardInterrupt:
        process.terminate()
        return process.wait(30)
