"""DeepSeek-OCR v1 (deepseek-ai/DeepSeek-OCR) cannot run without its remote code: a user who has it
(named with --model, or in the Hugging Face cache) is told so, with the fix, instead of a load error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from polyocr.engines.base import create_engine
from polyocr.engines.hf.deepseek_ocr import REMOTE_V2_REPO, V1_FIX, V1_REPO
from polyocr.errors import EngineUnavailable
from polyocr.types import EnginePlan

# config.json keys of the published v1 checkpoint (remote code: DeepseekOCRForCausalLM in modeling_deepseekocr.py).
V1_CONFIG = {
    "architectures": ["DeepseekOCRForCausalLM"],
    "auto_map": {
        "AutoConfig": "modeling_deepseekocr.DeepseekOCRConfig",
        "AutoModel": "modeling_deepseekocr.DeepseekOCRForCausalLM",
    },
    "model_type": "deepseek_vl_v2",
}


def _checkpoint(path: Path, config: dict) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps(config))
    (path / "model-00001-of-000001.safetensors").write_bytes(b"")
    return path


def test_a_named_v1_checkpoint_is_refused_with_the_fix(tmp_path: Path) -> None:
    v1 = _checkpoint(tmp_path / "DeepSeek-OCR", V1_CONFIG)
    engine = create_engine("deepseek-ocr", model_path=str(v1))
    availability = engine.available(None)
    assert not availability.ok and "DeepSeek-OCR v1" in availability.reason and "remote code" in availability.reason
    assert availability.fix == V1_FIX and "DeepSeek-OCR-2" in V1_FIX
    with pytest.raises(EngineUnavailable, match="DeepSeek-OCR v1") as raised:
        engine.load(EnginePlan())
    assert raised.value.fix == V1_FIX


def test_v1_or_remote_code_v2_in_the_cache_is_explained(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    for repo_id, config, words in (
        (V1_REPO, V1_CONFIG, "DeepSeek-OCR v1"),
        (REMOTE_V2_REPO, {"model_type": "deepseek_vl_v2", "architectures": ["DeepseekOCR2ForCausalLM"]}, "remote-code"),
    ):
        cache = tmp_path / repo_id.replace("/", "_")
        repo = cache / ("models--" + repo_id.replace("/", "--"))
        (repo / "refs").mkdir(parents=True)
        (repo / "refs" / "main").write_text("abc")
        _checkpoint(repo / "snapshots" / "abc", config)
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
        availability = create_engine("deepseek-ocr").available(None)
        assert not availability.ok and words in availability.reason and availability.fix == V1_FIX
    shutil.rmtree(tmp_path)


def test_engines_lists_the_limit() -> None:
    from polyocr.engines.base import engine_class

    assert "DeepSeek-OCR v1" in engine_class("deepseek-ocr").notes
