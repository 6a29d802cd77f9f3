"""The speed harness: statistics, memory sampling, and the VLM speed mode on a tiny dots model (CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from polyocr.bench.speed import CPU_NOTE, RSSPeak, Timing, percentile, run_speed, speed_markdown, time_call
from polyocr.cli import app


def test_percentile_and_timing_statistics() -> None:
    assert percentile([5.0], 90) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile([0.0, 10.0], 90) == pytest.approx(9.0)
    timing = Timing.of([4.0, 1.0, 3.0, 2.0, 100.0])
    assert timing.median_ms == 3.0 and timing.p90_ms == pytest.approx(61.6)


def test_time_call_warms_up_then_times_every_repeat() -> None:
    calls = []
    timing = time_call(lambda: calls.append(1), "cpu", warmup=2, repeats=4)
    assert len(calls) == 6 and len(timing.samples_ms) == 4 and timing.peak_bytes is None
    with pytest.raises(ValueError, match="repeats must be at least 1"):
        time_call(lambda: None, repeats=0)


def test_rss_peak_sees_an_allocation_inside_the_block() -> None:
    with RSSPeak(interval=0.005) as before:
        pass
    with RSSPeak(interval=0.005) as during:
        block = bytearray(64 * 2**20)
        block[::4096] = b"x" * len(block[::4096])  # touch every page so it is resident
    assert during.peak_bytes >= before.peak_bytes + 48 * 2**20
    del block


def test_tiny_dots_speed_on_cpu_per_attention(tmp_path: Path) -> None:
    results = run_speed(
        ["dots"], device="cpu", attentions=["sdpa", "no-such-kernel"], new_tokens=3, batches=(1, 2), repeats=1
    )
    sdpa, missing = results
    assert sdpa.dtype == "float32" and sdpa.vision_ms_per_page > 0
    assert set(sdpa.pages_per_s) == {1, 2} and all(v > 0 for v in sdpa.pages_per_s.values())
    assert sdpa.details["size"] == "tiny" and sdpa.details["prompt_tokens"] > sdpa.details["patches"] // 4
    assert sdpa.details["decoder_attention"] == "sdpa_packed_decode" and sdpa.note == CPU_NOTE
    assert missing.note.startswith("not run: ValueError:") and "no-such-kernel" in missing.note
    text = speed_markdown(results, "cmd")
    assert "not GPU numbers" in text and text.count("| dots |") == 2


def test_speed_refuses_engines_without_a_speed_model() -> None:
    with pytest.raises(ValueError, match=r"bench_hf_vlm_gpu\.py"):
        run_speed(["qwen2vl"], device="cpu")


def test_cli_speed_writes_its_report(tmp_path: Path) -> None:
    invocation = CliRunner().invoke(
        app,
        [
            "bench",
            "--speed",
            "--engines",
            "dots",
            "--device",
            "cpu",
            "--attention",
            "eager",
            "--new-tokens",
            "2",
            "--repeats",
            "1",
            "--out",
            str(tmp_path),
            "-q",
        ],
    )
    assert invocation.exit_code == 0, invocation.output
    assert "| dots | eager | float32 |" in invocation.stdout and "decoder_attention eager" in invocation.stdout
    data = json.loads((tmp_path / "speed.json").read_text(encoding="utf-8"))
    assert data["command"].startswith("polyocr bench --speed --engines dots")
    assert data["results"][0]["decode_ms_per_token"]
