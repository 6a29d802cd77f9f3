"""benchmarks/bench_phi35v_gpu.py runs its whole path at tiny sizes on the CPU (the figures need a GPU)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("torch")


def test_the_phi35v_benchmark_runs_at_tiny_sizes(tmp_path: Path) -> None:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_phi35v_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_phi35v_gpu", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out = tmp_path / "phi35v.md"
    report = bench.main(["--tiny", "--repeats", "1", "--new-tokens", "3", "--out", str(out)])
    assert [(row["batch"], row["cache"]) for row in report["rows"]] == [(1, "dynamic"), (8, "dynamic")]
    assert report["image_tokens"] == 757  # a 500x300 page at num_crops 4 is enlarged to 2x2 crops
    assert all(row["prompt_tokens"] > 757 and row["ms_per_step"] is not None for row in report["rows"])
    assert json.loads(out.with_suffix(".json").read_text())["rows"] == report["rows"]
    text = out.read_text()
    assert "Command: `PYTHONPATH=src:tests python3 benchmarks/bench_phi35v_gpu.py --tiny`" in text
    assert "| 8 | dynamic |" in text
    # The full-size dimensions are the published ones.
    assert bench.FULL_TEXT == {
        "hidden_size": 3072,
        "intermediate_size": 8192,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
    }
    assert bench.FULL_VISION["hidden_size"] == 1024 and bench.FULL_VISION["num_hidden_layers"] == 24
