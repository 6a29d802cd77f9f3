"""Device, dtype and attention implementation for one engine, decided from what ran in the probe.

Engines never pick these themselves: a model hard-wired to flash-attn is exactly what fails on a GPU
whose installed wheel has no kernels for it. Every decision carries its reason in words, and a user
override that cannot run is refused here, before any model loads, with the reason and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from polyocr.errors import ConfigError
from polyocr.runtime.probe import GPU, Profile, run_deferred
from polyocr.types import ATTENTIONS, DTYPES, EnginePlan

_ATTENTION_ALIASES = {
    "fa2": "flash_attention_2",
    "flash_attn": "flash_attention_2",
    "flash-attn": "flash_attention_2",
    "flash_attention": "flash_attention_2",
    "varlen_attn": "varlen",
    "flex_attention": "flex",
}
_DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "half": "float16", "fp32": "float32", "float": "float32"}
_TRANSFORMERS_NAMES = {
    "flash_attention_2": "flash_attention_2",
    "sdpa": "sdpa",
    "flex": "flex_attention",
    "eager": "eager",
}
_SDPA_BACKENDS = {
    "sdpa_flash": "flash",
    "sdpa_cudnn": "cuDNN",
    "sdpa_efficient": "memory-efficient",
    "sdpa_math": "math",
}
# The probe's checks each implementation needs to have passed.
_PATHS = {
    "flash_attention_2": ("flash_attn_func", "flash_attn_varlen_func"),
    "sdpa": tuple(_SDPA_BACKENDS),
    "varlen": ("varlen_attn",),
    "flex": ("flex_attention",),
    "eager": ("eager",),
}
TORCH_CUDA_FIX = "install a CUDA build of torch that matches your driver (https://pytorch.org/get-started/locally/)"


@dataclass(frozen=True)
class Decision:
    """Where and how an engine runs; `reasons` says why, per setting, in words a user can act on."""

    device: str  # "cpu" or "cuda:N"
    dtype: str  # "bfloat16", "float16" or "float32"
    attention: str  # one of ATTENTIONS
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def transformers_attention(self) -> str:
        """The `attn_implementation` name transformers uses for this choice."""
        try:
            return _TRANSFORMERS_NAMES[self.attention]
        except KeyError:
            raise ValueError(
                f"attention {self.attention!r} is polyocr's own; transformers has no such implementation"
            ) from None

    def to_plan(self, **fields: Any) -> EnginePlan:
        """An EnginePlan with this decision's settings and reasons, plus the engine's own fields."""
        reasons = {**self.reasons, **fields.pop("reasons", {})}
        return EnginePlan(device=self.device, dtype=self.dtype, attention=self.attention, reasons=reasons, **fields)


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def kernel_fix(profile: Profile, gpu: GPU) -> str:
    """What to install so that torch's kernels run on this GPU."""
    if gpu.sm.startswith("sm_12") or gpu.sm.startswith("sm_10"):
        return (
            f"install a torch build with CUDA 12.8 or newer, which has {gpu.sm} kernels: "
            "pip install --upgrade torch --index-url https://download.pytorch.org/whl/cu128"
        )
    version = profile.torch.version if profile.torch else "torch"
    return f"install a torch build whose arch list includes {gpu.sm} (torch {version} has none for it)"


def cuda_fix(profile: Profile) -> str:
    """What to do when CUDA itself does not initialise."""
    error = (profile.torch.error or "") if profile.torch else ""
    if "too old" in error or "driver" in error.lower():
        build = profile.torch.cuda if profile.torch else None
        return (
            f"update the NVIDIA driver to one that supports CUDA {build} (check with nvidia-smi), "
            "or install a torch build for the CUDA version your driver supports"
        )
    return "check that `nvidia-smi` works and that this process can see the GPU (CUDA_VISIBLE_DEVICES)"


def _normalise(value: str, aliases: dict[str, str], known: tuple[str, ...], setting: str, engine: str) -> str:
    name = aliases.get(value.strip().lower(), value.strip().lower())
    if name not in known:
        raise ConfigError(engine, f"{setting} {value}", f"unknown value; choose one of {', '.join(known)}")
    return name


def _choose_device(engine: str, profile: Profile, device: str | None) -> tuple[str, GPU | None, str]:
    torch = profile.torch
    gpu_build = torch is not None and (torch.cuda is not None or torch.hip is not None)
    if device is None:
        usable = profile.usable_gpus()
        if usable:
            best = max(usable, key=lambda gpu: gpu.free_memory)
            return (
                f"cuda:{best.index}",
                best,
                f"{best.name} ({best.sm}, {_gib(best.free_memory)} free): torch's kernels ran on it",
            )
        return "cpu", None, _why_no_gpu(profile, gpu_build)
    wanted = device.strip().lower()
    if wanted == "cpu":
        return "cpu", None, "--device cpu"
    kind, _, number = wanted.partition(":")
    if kind not in ("cuda", "gpu") or (number and not number.isdigit()):
        raise ConfigError(engine, f"--device {device}", "polyocr runs on 'cpu', 'cuda' or 'cuda:N'")
    setting = f"--device {device}"
    if not gpu_build:
        version = torch.version if torch else "(not installed)"
        raise ConfigError(engine, setting, f"torch {version} is a CPU-only build", TORCH_CUDA_FIX)
    if torch is not None and torch.error:
        raise ConfigError(engine, setting, torch.error, cuda_fix(profile))
    if not profile.gpus:
        raise ConfigError(
            engine, setting, _why_no_gpu(profile, gpu_build), "run `polyocr doctor --full` to probe the GPU explicitly"
        )
    index = int(number) if number else max(profile.gpus, key=lambda gpu: gpu.free_memory).index
    gpu = profile.gpu(index)
    if gpu is None:
        raise ConfigError(engine, setting, f"there is no GPU {index} (found {len(profile.gpus)})")
    if not gpu.kernels_ok:
        raise ConfigError(
            engine, setting, f"{gpu.name} ({gpu.sm}) cannot run torch's kernels: {gpu.error}", kernel_fix(profile, gpu)
        )
    return f"cuda:{gpu.index}", gpu, f"{setting}: {gpu.name} ({gpu.sm}, {_gib(gpu.free_memory)} free)"


def _why_no_gpu(profile: Profile, gpu_build: bool) -> str:
    torch = profile.torch
    if torch is None:
        return "torch is not installed"
    if torch.error:
        return f"{torch.error}; using the CPU"
    broken = [gpu for gpu in profile.gpus if not gpu.kernels_ok]
    if broken:
        listed = "; ".join(
            f"{gpu.name} ({gpu.sm}) cannot run torch {torch.version}'s kernels: {gpu.error}" for gpu in broken
        )
        return f"{listed}; using the CPU"
    if not gpu_build and profile.gpu_node:
        return f"torch {torch.version} is a CPU-only build though a GPU is attached ({profile.gpu_node}); using the CPU"
    if gpu_build and not torch.imported:
        return f"the GPU was not probed ({profile.attention_note}); using the CPU"
    return "no GPU; using the CPU"


def _choose_dtype(engine: str, gpu: GPU | None, dtype: str | None, fp16_stable: bool) -> tuple[str, str]:
    if dtype is not None:
        name = _normalise(dtype, _DTYPE_ALIASES, DTYPES, "--dtype", engine)
        if gpu is not None and name == "bfloat16" and not gpu.bf16:
            raise ConfigError(
                engine,
                f"--dtype {dtype}",
                f"{gpu.name} ({gpu.sm}) has no bf16 arithmetic",
                "use --dtype float16 (if the model is stable in it) or --dtype float32",
            )
        if name == "float16" and not fp16_stable:
            return name, f"--dtype {dtype} (this model is not known to be stable in float16: watch for NaNs)"
        return name, f"--dtype {dtype}"
    if gpu is None:
        return "float32", "CPU: float32 (half precision on most CPUs is slower, not faster)"
    if gpu.bf16:
        return "bfloat16", f"{gpu.sm} has native bf16"
    if fp16_stable:
        return "float16", f"{gpu.sm} has no bf16 arithmetic; this model is stable in float16"
    return "float32", f"{gpu.sm} has no bf16 arithmetic and this model is not known to be stable in float16"


def _checked_here(profile: Profile, device: str, gpu: GPU | None) -> bool:
    """Whether the probe's attention checks ran on this device (or an identical GPU)."""
    if profile.attention_device == device:
        return True
    checked = profile.attention_device
    if gpu is None or not checked.startswith("cuda:"):
        return False
    other = profile.gpu(int(checked.partition(":")[2]))
    return other is not None and (other.name, other.sm) == (gpu.name, gpu.sm)


def _can_run(name: str, profile: Profile, device: str, gpu: GPU | None, dtype: str) -> tuple[bool, str]:
    """Whether an attention implementation runs on this device, and the sentence saying why."""
    run_deferred(profile, _PATHS[name])
    checks = profile.attention if _checked_here(profile, device, gpu) else {}
    where = gpu.sm if gpu else "the CPU"

    def failed(path: str) -> str:
        check = checks.get(path)
        if check and check.error:
            return check.error
        if path in profile.deferred:
            return "not checked (the fast probe defers it; `polyocr doctor` runs it)"
        return "not checked on this device"

    if name == "flash_attention_2":
        version = profile.packages.get("flash_attn")
        if version is None:
            return False, "flash-attn is not installed"
        if gpu is None:
            return False, f"flash-attn {version} runs on CUDA GPUs only"
        if dtype == "float32":
            return False, f"flash-attn {version} has no float32 kernels"
        paths = ("flash_attn_func", "flash_attn_varlen_func")
        broken = [path for path in paths if not (checks.get(path) and checks[path].ran)]
        if broken:
            return False, f"flash-attn {version} installed but its kernel failed on {where}: {failed(broken[0])}"
        return True, f"flash-attn {version} kernels ran on {where}"
    if name == "sdpa":
        ran = [label for path, label in _SDPA_BACKENDS.items() if checks.get(path) and checks[path].ran]
        if ran == ["math"]:
            return True, f"only SDPA's math backend ran on {where}: memory grows with the square of the tokens"
        if ran:
            note = "; in float32 it uses the memory-efficient or math one" if gpu and dtype == "float32" else ""
            return True, f"SDPA's {_join(ran)} backends ran on {where}{note}"
        if gpu is None and not checks:
            return True, (
                "SDPA's CPU backends ship with every torch >= 2.0 (not executed here: "
                f"{profile.attention_note or 'the checks ran on the GPU'})"
            )
        return False, f"no SDPA backend ran on {where}: {failed('sdpa_math')}"
    if name == "varlen":
        if dtype == "float32":
            return False, "varlen_attn has no float32 kernels"
        if checks.get("varlen_attn") and checks["varlen_attn"].ran:
            return True, f"torch's varlen_attn ran on {where}"
        return False, f"torch's varlen_attn did not run on {where}: {failed('varlen_attn')}"
    if name == "flex":
        if checks.get("flex_attention") and checks["flex_attention"].ran:
            return True, f"flex_attention ran on {where}"
        return False, f"flex_attention did not run on {where}: {failed('flex_attention')}"
    if (checks.get("eager") and checks["eager"].ran) or (not checks and (gpu is None or gpu.kernels_ok)):
        return True, f"eager attention (matrix products and softmax) runs on {where}"
    return False, f"eager attention did not run on {where}: {failed('eager')}"


def _attention_fix(name: str, gpu: GPU | None, profile: Profile) -> str:
    if name == "flash_attention_2" and gpu is not None and profile.packages.get("flash_attn"):
        version = profile.torch.version if profile.torch else "torch"
        return (
            f"use --attn sdpa, or install a flash-attn wheel built for {gpu.sm} and torch {version} "
            "(or uninstall flash-attn)"
        )
    return "leave --attn out and polyocr picks one that ran"


def choose(
    engine_name: str,
    profile: Profile,
    *,
    attn: str | None = None,
    dtype: str | None = None,
    device: str | None = None,
    supports: tuple[str, ...] = ATTENTIONS,
    fp16_stable: bool = False,
) -> Decision:
    """Decide device, dtype and attention implementation for `engine_name` on the profiled machine.

    Device: the usable GPU (its kernels ran) with the most free memory, else the CPU. Dtype: bf16
    where the GPU has it, else float16 if `fp16_stable` (the model is known not to overflow in it),
    else float32; float32 on the CPU. Attention: the first entry of `supports` (the implementations
    the engine has, in its order of preference; names from ATTENTIONS) whose kernels ran on this
    device in the probe; flash_attention_2 only where flash-attn's own kernels ran.

    `attn`, `dtype` and `device` are user overrides: honoured when they can run, otherwise a
    ConfigError saying why and what to do, raised before any model loads. Call once per sub-model
    when parts of a model support different implementations.
    """
    if profile.torch is None:
        raise ConfigError(engine_name, "torch", "torch is not installed", "pip install 'polyocr[vlm]'")
    unknown = [name for name in supports if name not in ATTENTIONS]
    if unknown:
        raise ValueError(f"engine {engine_name!r} lists unknown attention implementations {unknown}")
    device_name, gpu, device_reason = _choose_device(engine_name, profile, device)
    dtype_name, dtype_reason = _choose_dtype(engine_name, gpu, dtype, fp16_stable)
    reasons = {"device": device_reason, "dtype": dtype_reason}
    if attn is not None:
        name = _normalise(attn, _ATTENTION_ALIASES, ATTENTIONS, "--attn", engine_name)
        if name not in supports:
            raise ConfigError(
                engine_name, f"--attn {attn}", f"this engine implements {', '.join(supports)}, not {name}"
            )
        ok, why = _can_run(name, profile, device_name, gpu, dtype_name)
        if not ok:
            raise ConfigError(engine_name, f"--attn {attn}", why, _attention_fix(name, gpu, profile))
        return Decision(device_name, dtype_name, name, {**reasons, "attention": f"--attn {attn}: {why}"})
    passed: list[str] = []
    for name in supports:
        ok, why = _can_run(name, profile, device_name, gpu, dtype_name)
        if ok:
            reasons["attention"] = "; ".join([*passed, f"using {name} ({why})"])
            return Decision(device_name, dtype_name, name, reasons)
        passed.append(why)
    raise ConfigError(
        engine_name,
        "attention",
        "none of its implementations can run here: " + "; ".join(passed),
        "run `polyocr doctor` to see which attention kernels ran",
    )
