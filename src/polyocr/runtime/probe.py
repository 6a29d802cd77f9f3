"""The runtime profile: what this machine has, found by running things rather than reading names.

A GPU's name says nothing about whether the installed torch has kernels for it, and an installed
flash-attn says nothing about whether its kernel runs on this device. So the probe launches a tiny
kernel on every GPU and runs every attention path on a tiny input, comparing it with a float64
reference; whatever fails is recorded as a finding with its error text, never raised.

Importing torch costs seconds, so on a machine with no GPU to probe (a CPU-only torch build, or no
GPU device node) the probe reads torch's version file instead of importing it and leaves the
attention checks out unless asked (`probe(kernels=True)`, `polyocr doctor --full`), or unless torch
is already imported, when the CPU checks cost milliseconds. The varlen and flex checks import
torch._dynamo (seconds), so they are deferred until an engine that can use them asks.

The whole profile is plain data: it round-trips through JSON, so profiles recorded on other
machines drive the same decisions in tests.
"""

from __future__ import annotations

import ast
import functools
import glob
import importlib.util
import json
import math
import os
import platform
import sys
import time
import warnings
import weakref
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# The attention paths the probe runs, by the names Profile.attention uses.
ATTENTION_PATHS = (
    "flash_attn_func",
    "flash_attn_varlen_func",
    "sdpa_flash",
    "sdpa_efficient",
    "sdpa_cudnn",
    "sdpa_math",
    "varlen_attn",
    "flex_attention",
    "eager",
)

PACKAGES = (
    "torch",
    "torchvision",
    "transformers",
    "accelerate",
    "safetensors",
    "tokenizers",
    "huggingface_hub",
    "flash_attn",
    "triton",
    "vllm",
    "tesserocr",
    "rapidocr",
    "onnxruntime",
    "onnxruntime-gpu",
    "pypdfium2",
)

# Device nodes that show a GPU is attached, looked at before paying for `import torch`.
_GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/dxg", "/dev/kfd", "/proc/driver/nvidia/version")

# Paths whose first use imports torch._dynamo (seconds): the fast probe leaves them until an engine
# that can use them asks (see run_deferred), or `probe(kernels=True)`.
DEFERRED = ("varlen_attn", "flex_attention")

# Profiles probed in this process: only these can have their deferred checks run later.
_LIVE: weakref.WeakValueDictionary[int, Profile] = weakref.WeakValueDictionary()

# Largest acceptable ‖out − ref‖ / ‖ref‖ for the check's dtype; a path that runs but misses this
# computes something else, which is worse than not running.
_TOLERANCE = {"float32": 1e-3, "float16": 1e-2, "bfloat16": 3e-2}


@dataclass
class TorchInfo:
    version: str
    cuda: str | None = None  # CUDA version the build targets; None for CPU and ROCm builds
    hip: str | None = None  # ROCm/HIP version for ROCm builds
    imported: bool = False  # False: read from torch/version.py only, to keep the probe fast
    arch_list: list[str] = field(default_factory=list)  # kernel images in the build: sm_90, compute_90
    cuda_available: bool = False
    device_count: int = 0
    cudnn: int | None = None
    error: str | None = None  # why torch or CUDA could not be initialised


@dataclass
class GPU:
    index: int
    name: str
    sm: str  # "sm_90" (NVIDIA) or the gfx arch "gfx942" (AMD)
    total_memory: int
    free_memory: int
    bf16: bool  # native bf16 arithmetic
    in_arch_list: bool  # the torch build ships a kernel image or PTX this device can run
    kernels_ok: bool  # a kernel and a small matrix product actually ran on it
    error: str | None = None


@dataclass
class AttentionCheck:
    ran: bool  # executed and matched the float64 reference within the dtype's tolerance
    rel_error: float | None = None
    error: str | None = None
    dtype: str | None = None
    seconds: float | None = None  # wall time of the check, first call included


@dataclass
class Profile:
    recorded: str = ""  # where this profile came from: a probe on a named machine, or hand-written
    os: str = ""
    machine: str = ""
    python: str = ""
    cpu_count: int = 0
    ram_total: int = 0
    ram_available: int = 0
    torch: TorchInfo | None = None
    gpu_node: str | None = None  # a GPU device node seen on the system, e.g. /dev/nvidia0
    gpus: list[GPU] = field(default_factory=list)
    attention_device: str = ""  # where the attention checks ran: "cuda:0", "cpu", "" for nowhere
    attention_note: str = ""  # why they did not run, when they did not
    attention: dict[str, AttentionCheck] = field(default_factory=dict)
    deferred: list[str] = field(default_factory=list)  # attention paths left unchecked, see DEFERRED
    packages: dict[str, str | None] = field(default_factory=dict)
    tessdata_path: str | None = None
    tessdata_languages: list[str] = field(default_factory=list)
    hf_cache: str = ""
    hf_cache_models: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # probe steps that failed unexpectedly
    probe_seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per probe step

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        """A profile from `to_dict()` output, e.g. one recorded on another machine."""
        data = dict(data)
        torch = data.pop("torch", None)
        gpus = data.pop("gpus", [])
        attention = data.pop("attention", {})
        return cls(
            **data,
            torch=TorchInfo(**torch) if torch else None,
            gpus=[GPU(**gpu) for gpu in gpus],
            attention={name: AttentionCheck(**check) for name, check in attention.items()},
        )

    @classmethod
    def load(cls, path: str | Path) -> Profile:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def usable_gpus(self) -> list[GPU]:
        return [gpu for gpu in self.gpus if gpu.kernels_ok]

    def gpu(self, index: int) -> GPU | None:
        return next((gpu for gpu in self.gpus if gpu.index == index), None)


def _first_line(exc: BaseException, limit: int = 300) -> str:
    """The exception's type and first line, cut to `limit` characters so reports stay readable."""
    text = str(exc).strip().splitlines()
    line = f"{type(exc).__name__}: {text[0] if text else ''}".strip()
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _version(distribution: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def _torch_build() -> TorchInfo | None:
    """Torch's version and CUDA/ROCm build from torch/version.py, without importing torch."""
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return None
    values: dict[str, Any] = {}
    path = Path(next(iter(spec.submodule_search_locations))) / "version.py"
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, SyntaxError) as exc:
        return TorchInfo(version=_version("torch") or "unknown", error=f"cannot read {path}: {exc}")
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) else getattr(node, "target", None)
        value = getattr(node, "value", None)
        if isinstance(target, ast.Name) and isinstance(value, ast.Constant):
            values[target.id] = value.value
    return TorchInfo(
        version=str(values.get("__version__", _version("torch"))), cuda=values.get("cuda"), hip=values.get("hip")
    )


def _gpu_node() -> str | None:
    for path in (*_GPU_NODES, *sorted(glob.glob("/dev/nvidia[0-9]*"))):
        if os.path.exists(path):
            return path
    return None


def arch_supported(sm: str, arch_list: list[str]) -> bool:
    """Whether a build with these kernel images can run on a device of compute capability `sm`.

    A cubin for sm_XY runs on sm_XZ with Z >= Y (same major); PTX for compute_XY is compiled by the
    driver for any later device. Arch-specific targets (sm_90a) run only on their own device.
    """
    if sm in arch_list:
        return True
    if not sm.startswith("sm_") or not sm[3:].isdigit():
        return any(arch.split(":")[0] == sm for arch in arch_list)  # ROCm gfx names
    major, minor = divmod(int(sm[3:]), 10)
    for arch in arch_list:
        kind, _, number = arch.partition("_")
        if not number.isdigit():
            continue
        build_major, build_minor = divmod(int(number), 10)
        if kind == "sm" and build_major == major and build_minor <= minor:
            return True
        if kind == "compute" and (build_major, build_minor) <= (major, minor):
            return True
    return False


def _import_torch(info: TorchInfo) -> Any:
    try:
        import torch
    except Exception as exc:  # a broken install (missing libcudart, ABI mismatch) is a finding
        info.error = f"import torch failed: {_first_line(exc)}"
        return None
    info.imported = True
    info.version = torch.__version__
    info.cuda = torch.version.cuda
    info.hip = getattr(torch.version, "hip", None)
    return torch


def _probe_cuda(torch: Any, info: TorchInfo) -> list[GPU]:
    """Initialise CUDA and launch a tiny kernel and a matrix product on every device."""
    if info.cuda is None and info.hip is None:
        return []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            torch.cuda.init()
            info.cuda_available = torch.cuda.is_available()
            info.device_count = torch.cuda.device_count()
        except Exception as exc:
            info.error = f"CUDA initialisation failed: {_first_line(exc)}"
            for warning in caught:
                info.error += f"; {str(warning.message).strip().splitlines()[0]}"
            return []
    info.arch_list = list(torch.cuda.get_arch_list())
    info.cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return [_probe_gpu(torch, index, info.arch_list, hip=info.hip is not None) for index in range(info.device_count)]


def _probe_gpu(torch: Any, index: int, arch_list: list[str], hip: bool) -> GPU:
    props = torch.cuda.get_device_properties(index)
    sm = props.gcnArchName.split(":")[0] if hip else f"sm_{props.major}{props.minor}"
    bf16 = bool(torch.cuda.is_bf16_supported()) if hip else props.major >= 8
    gpu = GPU(
        index=index,
        name=props.name,
        sm=sm,
        total_memory=int(props.total_memory),
        free_memory=0,
        bf16=bf16,
        in_arch_list=arch_supported(sm, arch_list),
        kernels_ok=False,
    )
    try:
        device = torch.device("cuda", index)
        values = torch.arange(1024, device=device, dtype=torch.float32)
        if (values * 2).sum().item() != 1024 * 1023:
            raise RuntimeError("an elementwise kernel returned a wrong sum")
        half = torch.bfloat16 if bf16 else torch.float16
        a = torch.randn(64, 64, device=device, dtype=half)
        product = (a @ a.T).float().cpu()
        reference = a.float().cpu() @ a.float().cpu().T
        if not torch.allclose(product, reference, rtol=5e-2, atol=5e-1):
            raise RuntimeError("a matrix product returned a wrong result")
        free, total = torch.cuda.mem_get_info(index)
        gpu.free_memory, gpu.total_memory = int(free), int(total)
        gpu.kernels_ok = True
    except Exception as exc:
        gpu.error = _first_line(exc)
    return gpu


def _reference(q: Any, k: Any, v: Any) -> Any:
    """Attention in float64 on the CPU, layout (batch, heads, tokens, head_dim)."""
    q, k, v = (t.detach().cpu().double() for t in (q, k, v))
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    return scores.softmax(-1) @ v


def _relative_error(out: Any, ref: Any) -> float:
    out = out.detach().cpu().double()
    return float((out - ref).norm() / ref.norm())


@dataclass
class _AttentionInputs:
    """A tiny attention problem with its float64 answers: dense (1, 2, 96, 64), and the same tokens
    packed as two sequences of 64 and 32 for the variable-length paths."""

    q: Any
    k: Any
    v: Any
    ref: Any
    packed: list[Any]
    cu: Any
    ref_packed: Any
    longest: int

    @classmethod
    def make(cls, torch: Any, device: str, dtype: Any) -> _AttentionInputs:
        generator = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, 2, 96, 64, generator=generator).to(device, dtype) for _ in range(3))
        lengths = (64, 32)
        spans = ((0, lengths[0]), (lengths[0], sum(lengths)))
        ref_packed = torch.cat(
            [_reference(q[..., a:b, :], k[..., a:b, :], v[..., a:b, :])[0].transpose(0, 1) for a, b in spans]
        )
        return cls(
            q=q,
            k=k,
            v=v,
            ref=_reference(q, k, v),
            packed=[t[0].transpose(0, 1).contiguous() for t in (q, k, v)],  # (tokens, heads, head_dim)
            cu=torch.tensor([0, 64, 96], dtype=torch.int32, device=device),
            ref_packed=ref_packed,
            longest=max(lengths),
        )


def _attention_runners(x: _AttentionInputs, dtype: Any) -> dict[str, Callable[[], tuple[Any, Any]]]:
    """Each attention path as a call returning (its output, the reference it must match)."""
    import torch.nn.functional as F

    def sdpa(backend_name: str) -> tuple[Any, Any]:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(getattr(SDPBackend, backend_name)):
            return F.scaled_dot_product_attention(x.q, x.k, x.v), x.ref

    def flash_attn_func() -> tuple[Any, Any]:
        from flash_attn import flash_attn_func as fn

        out = fn(*(t.transpose(1, 2) for t in (x.q, x.k, x.v)))
        return out.transpose(1, 2), x.ref

    def flash_attn_varlen_func() -> tuple[Any, Any]:
        from flash_attn import flash_attn_varlen_func as fn

        return fn(*x.packed, x.cu, x.cu, x.longest, x.longest), x.ref_packed

    def varlen_attn() -> tuple[Any, Any]:
        from torch.nn.attention.varlen import varlen_attn as fn

        return fn(*x.packed, x.cu, x.cu, x.longest, x.longest), x.ref_packed

    def flex_attention() -> tuple[Any, Any]:
        from torch.nn.attention.flex_attention import flex_attention as fn

        return fn(x.q, x.k, x.v), x.ref

    def eager() -> tuple[Any, Any]:
        scores = (x.q @ x.k.transpose(-1, -2)) / math.sqrt(x.q.shape[-1])
        return scores.float().softmax(-1).to(dtype) @ x.v, x.ref

    return {
        "flash_attn_func": flash_attn_func,
        "flash_attn_varlen_func": flash_attn_varlen_func,
        "sdpa_flash": lambda: sdpa("FLASH_ATTENTION"),
        "sdpa_efficient": lambda: sdpa("EFFICIENT_ATTENTION"),
        "sdpa_cudnn": lambda: sdpa("CUDNN_ATTENTION"),
        "sdpa_math": lambda: sdpa("MATH"),
        "varlen_attn": varlen_attn,
        "flex_attention": flex_attention,
        "eager": eager,
    }


def _run_attention_check(
    torch: Any, device: str, dtype_name: str, runner: Callable[[], tuple[Any, Any]]
) -> AttentionCheck:
    """One path run and compared with its reference; a failure keeps its first line and the
    kernel-selection warnings that explain it."""
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out, expected = runner()
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)
            error = _relative_error(out, expected)
        except Exception as exc:
            reasons = [str(w.message).strip().splitlines()[0] for w in caught if "kernel" in str(w.message)]
            text = _first_line(exc) + "".join(f"; {r}" for r in reasons[:3])
            seconds = round(time.perf_counter() - start, 3)
            return AttentionCheck(ran=False, error=text, dtype=dtype_name, seconds=seconds)
    ok = math.isfinite(error) and error <= _TOLERANCE[dtype_name]
    wrong = None if ok else f"wrong result: relative error {error:.3g} > {_TOLERANCE[dtype_name]:g}"
    seconds = round(time.perf_counter() - start, 3)
    return AttentionCheck(ran=ok, rel_error=error, error=wrong, dtype=dtype_name, seconds=seconds)


def _attention_checks(torch: Any, device: str, dtype_name: str, paths: Iterable[str]) -> dict[str, AttentionCheck]:
    """Run these attention paths on a tiny input and compare each with a float64 reference."""
    dtype = getattr(torch, dtype_name)
    runners = _attention_runners(_AttentionInputs.make(torch, device, dtype), dtype)
    skipped: dict[str, str] = {}
    if _version("flash_attn") is None:
        skipped["flash_attn_func"] = skipped["flash_attn_varlen_func"] = "flash-attn is not installed"
    elif not device.startswith("cuda"):
        skipped["flash_attn_func"] = skipped["flash_attn_varlen_func"] = "flash-attn runs on CUDA GPUs only"
    checks: dict[str, AttentionCheck] = {}
    for name in paths:
        if name in skipped:
            checks[name] = AttentionCheck(ran=False, error=skipped[name], dtype=dtype_name)
        else:
            checks[name] = _run_attention_check(torch, device, dtype_name, runners[name])
    return checks


def _ram() -> tuple[int, int]:
    try:
        fields = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        return int(fields["MemTotal"].split()[0]) * 1024, int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        pass
    try:
        import psutil

        memory = psutil.virtual_memory()
        return int(memory.total), int(memory.available)
    except ImportError:
        return 0, 0


def _cpu_count() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def tessdata_dirs() -> list[Path]:
    """Where Tesseract's language files may be, most specific first."""
    candidates = []
    prefix = os.environ.get("TESSDATA_PREFIX")
    if prefix:
        candidates += [Path(prefix), Path(prefix) / "tessdata"]
    candidates += [Path(p) for p in sorted(glob.glob("/usr/share/tesseract-ocr/*/tessdata"), reverse=True)]
    candidates += [
        Path(p)
        for p in (
            "/usr/share/tessdata",
            "/usr/local/share/tessdata",
            "/opt/homebrew/share/tessdata",
            "/opt/local/share/tessdata",
        )
    ]
    return candidates


def _tessdata() -> tuple[str | None, list[str]]:
    for directory in tessdata_dirs():
        languages = sorted(p.stem for p in directory.glob("*.traineddata"))
        if languages:
            return str(directory), languages
    return None, []


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, resolved the way huggingface_hub resolves it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache).expanduser() / "huggingface" / "hub"


def _hf_cache_models(cache: Path) -> list[str]:
    """Repo ids whose weights (safetensors or bin files) are in the cache; no network."""
    models = []
    for repo in sorted(cache.glob("models--*")):
        snapshots = repo / "snapshots"
        if any(snapshots.glob("*/**/*.safetensors")) or any(snapshots.glob("*/**/*.bin")):
            models.append(repo.name.removeprefix("models--").replace("--", "/", 1))
    return models


def probe(*, kernels: bool | None = None) -> Profile:
    """Probe this machine. Never raises: every failure is recorded in the profile.

    kernels: True imports torch and runs the kernel and attention checks wherever torch is
    installed; False never imports torch; None (the default) does so when a GPU build of torch meets
    a GPU device node, and runs the cheap CPU checks when torch is already imported.
    """
    start = time.perf_counter()
    profile = Profile(
        recorded=f"probe on {platform.node() or 'this machine'}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        os=f"{platform.system()} {platform.release()}",
        machine=platform.machine(),
        python=sys.version.split()[0],
        cpu_count=_cpu_count(),
        packages={name.replace("-", "_"): _version(name) for name in PACKAGES},
    )
    steps = (_probe_host, _probe_ocr_data, functools.partial(_probe_torch, kernels=kernels))
    for step in steps:
        try:
            step(profile)
        except Exception as exc:  # a probe bug must not take polyocr down; report it instead
            name = getattr(getattr(step, "func", step), "__name__", repr(step))
            profile.errors.append(f"{name}: {_first_line(exc)}")
    profile.probe_seconds = round(time.perf_counter() - start, 3)
    return profile


def _probe_host(profile: Profile) -> None:
    profile.ram_total, profile.ram_available = _ram()
    profile.gpu_node = _gpu_node()


def _probe_ocr_data(profile: Profile) -> None:
    profile.tessdata_path, profile.tessdata_languages = _tessdata()
    cache = hf_cache_dir()
    profile.hf_cache = str(cache)
    profile.hf_cache_models = _hf_cache_models(cache)


def _probe_torch(profile: Profile, *, kernels: bool | None) -> None:
    info = _torch_build()
    profile.torch = info
    if info is None:
        profile.attention_note = "torch is not installed"
        return
    gpu_build = info.cuda is not None or info.hip is not None
    forced = kernels is True
    if kernels is None:
        kernels = "torch" in sys.modules or (gpu_build and profile.gpu_node is not None)
    if not kernels:
        if gpu_build and profile.gpu_node is None:
            profile.attention_note = "not run: no GPU device node (/dev/nvidia*, /dev/dxg, /dev/kfd) was found"
        elif gpu_build:
            profile.attention_note = "not run: the probe was asked not to import torch"
        else:
            profile.attention_note = (
                "not run: torch is a CPU build and was not imported, to keep the probe "
                "fast (`polyocr doctor --full` runs the CPU checks)"
            )
        return
    start = time.perf_counter()
    torch = _import_torch(info)
    profile.timings["import_torch"] = round(time.perf_counter() - start, 3)
    if torch is None:
        profile.attention_note = "not run: torch failed to import"
        return
    start = time.perf_counter()
    profile.gpus = _probe_cuda(torch, info)
    profile.timings["cuda_and_gpu_kernels"] = round(time.perf_counter() - start, 3)
    target = next(iter(profile.usable_gpus()), None)
    if target is not None:
        profile.attention_device = f"cuda:{target.index}"
        dtype = "bfloat16" if target.bf16 else "float16"
    else:
        profile.attention_device, dtype = "cpu", "float32"
    profile.deferred = [] if forced else list(DEFERRED)
    paths = [path for path in ATTENTION_PATHS if path not in profile.deferred]
    start = time.perf_counter()
    profile.attention = _attention_checks(torch, profile.attention_device, dtype, paths)
    profile.timings["attention_checks"] = round(time.perf_counter() - start, 3)
    _LIVE[id(profile)] = profile


def run_deferred(profile: Profile, paths: Iterable[str] | None = None) -> None:
    """Run attention checks the fast probe deferred (all, or those in `paths`), when they are needed.

    Only a profile probed in this process can be completed, since the checks must run on the machine
    it describes; a recorded profile keeps its deferred paths unchecked.
    """
    wanted = [path for path in (profile.deferred if paths is None else paths) if path in profile.deferred]
    if not wanted or _LIVE.get(id(profile)) is not profile:
        return
    import torch

    dtype = next(iter(profile.attention.values())).dtype or "float32"
    start = time.perf_counter()
    profile.attention.update(_attention_checks(torch, profile.attention_device, dtype, wanted))
    profile.timings["deferred_checks"] = round(time.perf_counter() - start, 3)
    profile.deferred = [path for path in profile.deferred if path not in wanted]


@functools.cache
def get_profile() -> Profile:
    """The profile of this process, probed once; never raises."""
    return probe()
