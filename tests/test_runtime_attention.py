"""Device, dtype and attention decisions on profiles recorded from (or written for) real machines."""

from __future__ import annotations

from pathlib import Path

import pytest

from polyocr.errors import ConfigError
from polyocr.runtime.attention import choose
from polyocr.runtime.probe import Profile, probe

FIXTURES = Path(__file__).parent / "fixtures" / "profiles"


def profile(name: str) -> Profile:
    return Profile.load(FIXTURES / f"{name}.json")


def test_laptop_blackwell_without_flash_attn_uses_sdpa_on_the_gpu():
    decision = choose("dots", profile("rtx5070ti-laptop-cu130"))
    assert (decision.device, decision.dtype, decision.attention) == ("cuda:0", "bfloat16", "sdpa")
    assert "flash-attn is not installed" in decision.reasons["attention"]
    assert "SDPA's flash, memory-efficient and math backends ran on sm_120" in decision.reasons["attention"]
    assert decision.transformers_attention == "sdpa"


def test_flash_attn_whose_kernel_fails_is_passed_over_with_the_reason():
    decision = choose("dots", profile("rtx5070ti-laptop-flashattn-broken"))
    assert decision.attention == "sdpa"
    assert decision.reasons["attention"].startswith(
        "flash-attn 2.8.3 installed but its kernel failed on sm_120: RuntimeError: CUDA error: no kernel image"
    )


def test_overriding_with_a_flash_attn_that_fails_is_refused_with_the_fix():
    with pytest.raises(ConfigError) as caught:
        choose("dots", profile("rtx5070ti-laptop-flashattn-broken"), attn="flash_attention_2")
    error = caught.value
    assert error.engine == "dots" and error.setting == "--attn flash_attention_2"
    assert "no kernel image" in error.reason
    assert "--attn sdpa" in error.fix and "sm_120" in error.fix


def test_gpu_the_torch_build_has_no_kernels_for_falls_back_to_cpu():
    decision = choose("dots", profile("rtx5090-torch-without-sm120"))
    assert (decision.device, decision.dtype, decision.attention) == ("cpu", "float32", "sdpa")
    assert "RTX 5090 (sm_120) cannot run torch 2.6.0+cu124's kernels" in decision.reasons["device"]


def test_asking_for_that_gpu_names_the_fix():
    with pytest.raises(ConfigError) as caught:
        choose("dots", profile("rtx5090-torch-without-sm120"), device="cuda")
    assert "no kernel image" in caught.value.reason
    assert "CUDA 12.8" in caught.value.fix and "cu128" in caught.value.fix


def test_a100_with_working_flash_attn_uses_it_unless_the_engine_lacks_it():
    a100 = profile("a100-flashattn")
    decision = choose("dots", a100)
    assert (decision.device, decision.dtype, decision.attention) == ("cuda:0", "bfloat16", "flash_attention_2")
    assert "flash-attn 2.7.4.post1 kernels ran on sm_80" in decision.reasons["attention"]
    assert choose("got_ocr2", a100, supports=("sdpa", "eager")).attention == "sdpa"


def test_flash_attn_has_no_float32_kernels():
    decision = choose("dots", profile("a100-flashattn"), dtype="fp32")
    assert decision.dtype == "float32" and decision.attention == "sdpa"
    assert "no float32 kernels" in decision.reasons["attention"]


def test_varlen_is_chosen_only_where_it_ran():
    with pytest.raises(ConfigError, match=r"No module named 'torch\.nn\.attention\.varlen'"):
        choose("dots", profile("a100-flashattn"), attn="varlen")
    decision = choose("dots", profile("rtx5070ti-laptop-cu130"), supports=("varlen", "sdpa", "eager"))
    assert decision.attention == "varlen"


def test_engine_that_lacks_the_requested_attention_says_what_it_has():
    with pytest.raises(ConfigError, match="implements sdpa, eager, not flex"):
        choose("got_ocr2", profile("rtx5070ti-laptop-cu130"), attn="flex_attention", supports=("sdpa", "eager"))


def test_gpu_without_bf16_uses_fp16_only_for_models_stable_in_it():
    t4 = profile("t4-no-bf16")
    assert choose("qwen2vl", t4).dtype == "float32"
    decision = choose("qwen2vl", t4, fp16_stable=True)
    assert decision.dtype == "float16"
    assert "SDPA's memory-efficient and math backends ran on sm_75" in decision.reasons["attention"]
    with pytest.raises(ConfigError, match="has no bf16 arithmetic"):
        choose("qwen2vl", t4, dtype="bf16")
    assert "watch for NaNs" in choose("qwen2vl", t4, dtype="fp16").reasons["dtype"]


def test_cpu_only_machine():
    cpu = profile("cpu-only")
    decision = choose("dots", cpu)
    assert (decision.device, decision.dtype, decision.attention) == ("cpu", "float32", "sdpa")
    with pytest.raises(ConfigError, match="CPU-only build") as caught:
        choose("dots", cpu, device="cuda")
    assert "pytorch.org" in caught.value.fix
    with pytest.raises(ConfigError, match="flash-attn is not installed"):
        choose("dots", cpu, attn="fa2")
    assert choose("dots", cpu, dtype="bf16").dtype == "bfloat16"


def test_broken_driver_falls_back_to_cpu_and_refuses_cuda_with_the_fix():
    broken = profile("cuda-driver-broken")
    decision = choose("dots", broken)
    assert decision.device == "cpu"
    assert "driver on your system is too old" in decision.reasons["device"]
    with pytest.raises(ConfigError) as caught:
        choose("dots", broken, device="cuda:0")
    assert "update the NVIDIA driver" in caught.value.fix


def test_cpu_decision_from_the_fast_probe_says_the_checks_did_not_run():
    decision = choose("dots", probe(kernels=False))
    assert (decision.device, decision.attention) == ("cpu", "sdpa")
    assert "not executed here" in decision.reasons["attention"]


def test_unknown_override_values_are_refused():
    cpu = profile("cpu-only")
    with pytest.raises(ConfigError, match="choose one of bfloat16, float16, float32"):
        choose("dots", cpu, dtype="int8")
    with pytest.raises(ConfigError, match="'cpu', 'cuda' or 'cuda:N'"):
        choose("dots", cpu, device="tpu")
    with pytest.raises(ConfigError, match="there is no GPU 3"):
        choose("dots", profile("rtx5070ti-laptop-cu130"), device="cuda:3")


def test_torch_absent_is_a_config_error():
    cpu = profile("cpu-only")
    cpu.torch = None
    with pytest.raises(ConfigError, match="torch is not installed"):
        choose("dots", cpu)


def test_decision_becomes_an_engine_plan_with_its_reasons():
    decision = choose("dots", profile("rtx5070ti-laptop-cu130"))
    plan = decision.to_plan(max_pixels=4_000_000, reasons={"max_pixels": "fits 10.7 GiB"})
    assert (plan.device, plan.dtype, plan.attention, plan.max_pixels) == ("cuda:0", "bfloat16", "sdpa", 4_000_000)
    assert set(plan.reasons) == {"device", "dtype", "attention", "max_pixels"}


def test_h100_recorded_on_the_lent_machine():
    h100 = profile("h100")
    decision = choose("dots", h100)
    assert (decision.device, decision.dtype, decision.attention) == ("cuda:0", "bfloat16", "sdpa")
    assert "flash, cuDNN, memory-efficient and math backends ran on sm_90" in decision.reasons["attention"]
    assert choose("dots", h100, supports=("varlen", "sdpa", "eager")).attention == "varlen"
    with pytest.raises(ConfigError, match="varlen_attn has no float32 kernels"):
        choose("dots", h100, attn="varlen", dtype="float32")


def test_deferred_checks_run_when_an_engine_asks_on_the_live_machine():
    import torch  # noqa: F401  (imported, so the default probe runs the CPU checks)

    live = probe()
    assert live.deferred == ["varlen_attn", "flex_attention"]
    assert "flex_attention" not in live.attention
    decision = choose("dots", live, supports=("flex", "sdpa"))
    assert decision.attention == "flex" and "flex_attention ran on the CPU" in decision.reasons["attention"]
    assert live.deferred == ["varlen_attn"] and live.attention["flex_attention"].ran


def test_deferred_checks_of_a_recorded_machine_stay_unchecked():
    laptop = profile("rtx5070ti-laptop-cu130")
    del laptop.attention["varlen_attn"]
    laptop.deferred = ["varlen_attn"]
    with pytest.raises(ConfigError, match="the fast probe defers it"):
        choose("dots", laptop, attn="varlen")
    assert laptop.deferred == ["varlen_attn"]
