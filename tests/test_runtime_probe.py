"""The probe on this machine, and the ways a machine can be broken that the probe must survive."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

import pytest

from polyocr.runtime import probe as probe_module
from polyocr.runtime.probe import ATTENTION_PATHS, GPU, Profile, TorchInfo, arch_supported, get_profile, probe

FIXTURES = Path(__file__).parent / "fixtures" / "profiles"


def _gpu_machine(profile: Profile) -> bool:
    torch = profile.torch
    return bool(torch and (torch.cuda or torch.hip) and profile.gpu_node)


def test_default_probe_imports_torch_only_where_there_is_a_gpu_to_probe():
    code = (
        "import sys, json; from polyocr.runtime.probe import probe; p = probe(); "
        "print(json.dumps({'torch_imported': 'torch' in sys.modules, 'profile': p.to_dict()}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    data = json.loads(result.stdout)
    profile = Profile.from_dict(data["profile"])
    assert profile.torch is not None and profile.torch.version.split("+")[0] == version("torch").split("+")[0]
    assert data["torch_imported"] is _gpu_machine(profile)
    assert profile.errors == []
    if not _gpu_machine(profile):
        assert profile.attention == {} and profile.gpus == []
        assert "polyocr doctor --full" in profile.attention_note or "no GPU device node" in profile.attention_note


def test_full_probe_runs_every_attention_path_against_float64():
    profile = probe(kernels=True)
    assert profile.torch is not None and profile.torch.imported
    assert set(profile.attention) == set(ATTENTION_PATHS)
    for path in ("sdpa_math", "eager", "flex_attention"):
        check = profile.attention[path]
        assert check.ran and check.rel_error is not None, (path, check)
    if profile.attention_device == "cpu":
        assert all(profile.attention[p].rel_error < 1e-5 for p in ("sdpa_math", "eager", "flex_attention"))
        # Paths that cannot run on a CPU are findings with their reason, not crashes.
        assert not profile.attention["varlen_attn"].ran and profile.attention["varlen_attn"].error
    if profile.packages["flash_attn"] is None:
        assert profile.attention["flash_attn_func"].error == "flash-attn is not installed"


def test_gpus_are_probed_by_running_kernels():
    profile = probe()
    if not _gpu_machine(profile):
        pytest.skip("no GPU build of torch with a GPU attached on this machine")
    assert profile.gpus, profile.torch
    for gpu in profile.gpus:
        assert gpu.total_memory > 0 and gpu.sm
        assert gpu.kernels_ok == (gpu.error is None)
    if profile.usable_gpus():
        assert profile.attention_device.startswith("cuda:")
        assert profile.attention["sdpa_math"].ran


def test_profile_facts_of_this_machine():
    profile = probe(kernels=False)
    assert profile.cpu_count >= 1 and profile.ram_total >= profile.ram_available > 0
    assert profile.packages["transformers"] == version("transformers")
    tessdata = Path("/usr/share/tesseract-ocr/5/tessdata")
    if (tessdata / "rus.traineddata").exists():
        assert {"eng", "rus"} <= set(profile.tessdata_languages)


def test_get_profile_is_probed_once_per_process():
    assert get_profile() is get_profile()


def test_hf_cache_lists_only_repos_with_weights(tmp_path, monkeypatch):
    complete = tmp_path / "models--rednote-hilab--dots.ocr" / "snapshots" / "abc123"
    complete.mkdir(parents=True)
    (complete / "config.json").write_text("{}")
    (complete / "model-00001-of-00002.safetensors").write_bytes(b"")
    partial = tmp_path / "models--Qwen--Qwen2-VL-2B-Instruct" / "snapshots" / "def456"
    partial.mkdir(parents=True)
    (partial / "config.json").write_text("{}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    profile = probe(kernels=False)
    assert profile.hf_cache == str(tmp_path)
    assert profile.hf_cache_models == ["rednote-hilab/dots.ocr"]


def test_tessdata_prefix_is_honoured(tmp_path, monkeypatch):
    (tmp_path / "deu.traineddata").write_bytes(b"")
    (tmp_path / "ukr.traineddata").write_bytes(b"")
    monkeypatch.setenv("TESSDATA_PREFIX", str(tmp_path))
    profile = probe(kernels=False)
    assert profile.tessdata_path == str(tmp_path)
    assert profile.tessdata_languages == ["deu", "ukr"]


def test_a_failing_probe_step_is_recorded_not_raised(monkeypatch):
    def broken() -> None:
        raise RuntimeError("tessdata scan exploded")

    monkeypatch.setattr(probe_module, "_tessdata", broken)
    profile = probe(kernels=False)
    assert profile.errors == ["_probe_ocr_data: RuntimeError: tessdata scan exploded"]
    assert profile.torch is not None  # the other steps still ran


def test_torch_absent_is_a_finding(monkeypatch):
    real_find_spec = probe_module.importlib.util.find_spec
    monkeypatch.setattr(
        probe_module.importlib.util, "find_spec", lambda name: None if name == "torch" else real_find_spec(name)
    )
    profile = probe(kernels=True)
    assert profile.torch is None and profile.attention == {}
    assert profile.attention_note == "torch is not installed"


@pytest.mark.parametrize(
    ("sm", "arch_list", "expected"),
    [
        ("sm_90", ["sm_80", "sm_90"], True),
        ("sm_86", ["sm_80"], True),  # a cubin runs on later minors of its major
        ("sm_120", ["sm_50", "sm_80", "sm_90"], False),  # the RTX 50xx with a cu124 build
        ("sm_120", ["sm_90", "compute_90"], True),  # PTX is compiled by the driver for later GPUs
        ("sm_80", ["sm_90", "compute_90"], False),
        ("sm_90", ["sm_90a"], False),
        ("gfx942", ["gfx90a", "gfx942"], True),
    ],
)
def test_arch_supported(sm, arch_list, expected):
    assert arch_supported(sm, arch_list) is expected


def _fake_torch(*, init_error: str | None = None, kernel_error: str | None = None) -> SimpleNamespace:
    """A stand-in for a CUDA torch on hardware this machine lacks: a driver that fails or an sm_120 GPU."""

    def init() -> None:
        if init_error:
            raise RuntimeError(init_error)

    def arange(*args, **kwargs):
        raise RuntimeError(kernel_error)

    cuda = SimpleNamespace(
        init=init,
        is_available=lambda: True,
        device_count=lambda: 1,
        get_arch_list=lambda: ["sm_50", "sm_80", "sm_90"],
        get_device_properties=lambda i: SimpleNamespace(
            name="NVIDIA GeForce RTX 5090", major=12, minor=0, total_memory=32 << 30
        ),
    )
    backends = SimpleNamespace(cudnn=SimpleNamespace(is_available=lambda: True, version=lambda: 90100))
    return SimpleNamespace(cuda=cuda, backends=backends, device=lambda *a: a, arange=arange, float32="float32")


def test_failed_cuda_initialisation_is_a_finding():
    info = TorchInfo(version="2.9.0+cu130", cuda="13.0", imported=True)
    message = "The NVIDIA driver on your system is too old (found version 12020)."
    gpus = probe_module._probe_cuda(_fake_torch(init_error=message), info)
    assert gpus == []
    assert info.error == f"CUDA initialisation failed: RuntimeError: {message}"


def test_gpu_without_kernels_in_the_build_is_reported_unusable():
    info = TorchInfo(version="2.6.0+cu124", cuda="12.4", imported=True)
    message = "CUDA error: no kernel image is available for execution on the device"
    [gpu] = probe_module._probe_cuda(_fake_torch(kernel_error=message), info)
    assert gpu == GPU(
        index=0,
        name="NVIDIA GeForce RTX 5090",
        sm="sm_120",
        total_memory=32 << 30,
        free_memory=0,
        bf16=True,
        in_arch_list=False,
        kernels_ok=False,
        error=f"RuntimeError: {message}",
    )


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*.json")), ids=lambda p: p.stem)
def test_recorded_profiles_round_trip_and_say_where_they_came_from(path):
    profile = Profile.load(path)
    assert profile.recorded
    assert Profile.from_dict(json.loads(profile.to_json())) == profile
    assert set(profile.attention) <= set(ATTENTION_PATHS)


def test_gpu_build_without_a_gpu_device_node_is_not_imported(monkeypatch):
    monkeypatch.setattr(probe_module, "_torch_build", lambda: TorchInfo(version="2.9.0+cu130", cuda="13.0"))
    monkeypatch.setattr(probe_module, "_gpu_node", lambda: None)
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # as in a fresh process
    profile = probe()
    assert profile.torch is not None and not profile.torch.imported and profile.gpus == []
    assert profile.attention_note.startswith("not run: no GPU device node")
