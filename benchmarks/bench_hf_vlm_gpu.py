"""Decode speed and peak memory of the transformers VLM engines at full size, with random weights.

No model hub is reachable where this runs, so each model is built from its published config
(dimensions written below, from the checkpoints' config.json) with random bf16 weights, and fed a
synthetic batch-1 prompt of about 1,000 tokens of which most are image tokens, shaped exactly as
each model's processor would shape a page. Random weights do not change the arithmetic: time per
generated token and memory are those of the real model at that prompt length. Generation is
forced to the full length (min_new_tokens), greedy, with transformers' default dynamic cache.

    PYTHONPATH=src python3 benchmarks/bench_hf_vlm_gpu.py --out benchmarks/hf-vlm-gpu.md

It imports only torch and transformers (no polyocr modules), so it runs on a bare GPU machine.
`--layers N` caps every layer count, for a quick check of the code path on a CPU.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import platform
import time
from collections.abc import Callable
from typing import Any

PROMPT_TOKENS = 1000
NEW_TOKENS = 128
TEXT_ID = 1000  # an ordinary token id, valid in every vocabulary below

# The attention each sub-model runs when the plan asks for sdpa: the engines' own choice
# (polyocr.engines.hf.*, VLMSpec.implementation("sdpa"); tests/test_hf_vlm.py checks they agree).
ATTENTION = {
    "qwen2vl": {"": "sdpa", "vision_config": "sdpa", "text_config": "sdpa"},
    "qwen3vl": {"": "sdpa", "vision_config": "sdpa", "text_config": "sdpa"},
    "got": {"": "eager", "vision_config": "eager", "text_config": "sdpa"},
    "deepseek-ocr": {"": "sdpa", "vision_config": "sdpa", "text_config": "sdpa"},
    "paddleocr-vl": {"": "sdpa", "vision_config": "sdpa", "text_config": "sdpa"},
    "glm-ocr": {"": "sdpa", "vision_config": "sdpa", "text_config": "sdpa"},
    "lighton-ocr": {"": "sdpa", "vision_config": "sdpa", "text_config": "sdpa"},
    "olmocr": {"": "sdpa", "vision_config": "sdpa", "text_config": "sdpa"},
    "mineru": {"": "sdpa", "vision_config": "sdpa", "text_config": "sdpa"},
}
ATTENTION["paddleocr-vl-1.5"] = ATTENTION["paddleocr-vl"]

# Published dimensions (config.json of each checkpoint).
CONFIGS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "qwen2vl": (
        "Qwen/Qwen2-VL-2B-Instruct",
        "Qwen2VL",
        {
            "text_config": {
                "vocab_size": 151936,
                "hidden_size": 1536,
                "intermediate_size": 8960,
                "num_hidden_layers": 28,
                "num_attention_heads": 12,
                "num_key_value_heads": 2,
                "max_position_embeddings": 32768,
                "tie_word_embeddings": True,
                "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
            },
            "vision_config": {
                "depth": 32,
                "embed_dim": 1280,
                "hidden_size": 1536,
                "num_heads": 16,
                "mlp_ratio": 4,
                "patch_size": 14,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
            },
            "image_token_id": 151655,
            "video_token_id": 151656,
            "vision_start_token_id": 151652,
            "vision_end_token_id": 151653,
            "tie_word_embeddings": True,
        },
    ),
    "qwen3vl": (
        "Qwen/Qwen3-VL-2B-Instruct",
        "Qwen3VL",
        {
            "text_config": {
                "vocab_size": 151936,
                "hidden_size": 2048,
                "intermediate_size": 6144,
                "num_hidden_layers": 28,
                "num_attention_heads": 16,
                "num_key_value_heads": 8,
                "head_dim": 128,
                "max_position_embeddings": 262144,
                "tie_word_embeddings": True,
                "rope_parameters": {
                    "rope_type": "default",
                    "rope_theta": 5e6,
                    "mrope_section": [24, 20, 20],
                    "mrope_interleaved": True,
                },
            },
            "vision_config": {
                "depth": 24,
                "hidden_size": 1024,
                "intermediate_size": 4096,
                "num_heads": 16,
                "out_hidden_size": 2048,
                "patch_size": 16,
                "spatial_merge_size": 2,
                "temporal_patch_size": 2,
                "deepstack_visual_indexes": [5, 11, 17],
                "num_position_embeddings": 2304,
            },
            "image_token_id": 151655,
            "video_token_id": 151656,
            "vision_start_token_id": 151652,
            "vision_end_token_id": 151653,
            "tie_word_embeddings": True,
        },
    ),
    "got": (
        "stepfun-ai/GOT-OCR-2.0-hf",
        "GotOcr2",
        {
            "text_config": {
                "vocab_size": 151860,
                "hidden_size": 1024,
                "intermediate_size": 2816,
                "num_hidden_layers": 24,
                "num_attention_heads": 16,
                "num_key_value_heads": 16,
                "max_position_embeddings": 32768,
                "rope_parameters": {"rope_type": "default", "rope_theta": 1e6},
            },
            "vision_config": {
                "hidden_size": 768,
                "output_channels": 256,
                "num_hidden_layers": 12,
                "num_attention_heads": 12,
                "image_size": 1024,
                "patch_size": 16,
                "mlp_dim": 3072,
                "window_size": 14,
                "global_attn_indexes": [2, 5, 8, 11],
            },
            "image_token_index": 151859,
            "image_seq_length": 256,
            "tie_word_embeddings": True,
        },
    ),
    "deepseek-ocr": (
        "deepseek-community/DeepSeek-OCR-2",
        "DeepseekOcr2",
        {
            "text_config": {
                "vocab_size": 129280,
                "hidden_size": 1280,
                "intermediate_size": 6848,
                "moe_intermediate_size": 896,
                "num_hidden_layers": 12,
                "num_attention_heads": 10,
                "num_key_value_heads": 10,
                "n_routed_experts": 64,
                "n_shared_experts": 2,
                "num_experts_per_tok": 6,
                "n_group": 1,
                "topk_group": 1,
                "topk_method": "greedy",
                "max_position_embeddings": 8192,
                "mlp_layer_types": ["dense"] + ["sparse"] * 11,
            },
            "vision_config": {
                "sam_config": {
                    "hidden_size": 768,
                    "num_hidden_layers": 12,
                    "num_attention_heads": 12,
                    "global_attn_indexes": [2, 5, 8, 11],
                    "downsample_channels": [512, 896],
                },
                "encoder_config": {
                    "hidden_size": 896,
                    "num_hidden_layers": 24,
                    "num_attention_heads": 14,
                    "num_key_value_heads": 2,
                    "intermediate_size": 4864,
                    "rms_norm_eps": 1e-6,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 1e6},
                    "vocab_size": 1,
                },
            },
            "image_token_id": 128815,
        },
    ),
    "paddleocr-vl": (
        "PaddlePaddle/PaddleOCR-VL",
        "PaddleOCRVL",
        {
            "text_config": {
                "vocab_size": 103424,
                "hidden_size": 1024,
                "intermediate_size": 3072,
                "num_hidden_layers": 18,
                "num_attention_heads": 16,
                "num_key_value_heads": 2,
                "head_dim": 128,
                "max_position_embeddings": 131072,
                "tie_word_embeddings": True,
                "rope_parameters": {"rope_type": "default", "rope_theta": 5e5, "mrope_section": [16, 24, 24]},
            },
            "vision_config": {
                "hidden_size": 1152,
                "intermediate_size": 4304,
                "num_hidden_layers": 27,
                "num_attention_heads": 16,
                "image_size": 384,
                "patch_size": 14,
                "spatial_merge_size": 2,
            },
            "image_token_id": 100295,
            "video_token_id": 100296,
            "vision_start_token_id": 101305,
            "vision_end_token_id": 101306,
            "tie_word_embeddings": True,
        },
    ),
}


# GLM-OCR config.json: huggingface.co/zai-org/GLM-OCR/resolve/main/config.json as printed in a public
# session log (find_string id 53934462539, transformers_version 5.0.1dev0); the same values in the
# MLX ports' tests (ids 54557644260, 25404424513) and an FP8 re-upload's config (id 56610622797).
GLM_OCR = {
    "text_config": {
        "vocab_size": 59392,
        "hidden_size": 1536,
        "intermediate_size": 4608,
        "num_hidden_layers": 16,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "attention_bias": False,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5,
        "pad_token_id": 59246,
        "eos_token_id": [59246, 59253],
        "tie_word_embeddings": False,
        "rope_parameters": {
            "rope_type": "default",
            "mrope_section": [16, 24, 24],
            "partial_rotary_factor": 1.0,
            "rope_theta": 10000,
        },
    },
    "vision_config": {
        "hidden_size": 1024,
        "depth": 24,
        "num_heads": 16,
        "attention_bias": True,
        "intermediate_size": 4096,
        "image_size": 336,
        "patch_size": 14,
        "out_hidden_size": 1536,
        "rms_norm_eps": 1e-5,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
    },
    "image_start_token_id": 59256,
    "image_end_token_id": 59257,
    "video_start_token_id": 59258,
    "video_end_token_id": 59259,
    "image_token_id": 59280,
    "video_token_id": 59281,
}

# LightOnOCR-2-1B: the hub card tags it mistral3 (LightOnOCRForConditionalGeneration) like
# LightOnOCR-1B-1025, whose config.json is copied in nikolay-grudanov/Team_5_AI_Tutor@ab9ec7b:
# models/LightOnOCR-1B-1025/config.json (Pixtral 24 x 1024, Qwen3 28 x 1024, GQA 16/8, head_dim 128,
# vocab 151936, tied embeddings); the LightOnOCR-2-1B GGUF card (huggingface.co/cstr/lightonocr-GGUF)
# gives the same sizes, 1006 M parameters. Its 2-1B config.json itself was not found.
LIGHTON_OCR = {
    "text_config": {
        "model_type": "qwen3",
        "vocab_size": 151936,
        "hidden_size": 1024,
        "intermediate_size": 3072,
        "num_hidden_layers": 28,
        "num_attention_heads": 16,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "max_position_embeddings": 8192,
        "rms_norm_eps": 1e-6,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1000000},
        "tie_word_embeddings": True,
    },
    "vision_config": {
        "model_type": "pixtral",
        "hidden_size": 1024,
        "intermediate_size": 4096,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "head_dim": 64,
        "image_size": 1540,
        "patch_size": 14,
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000},
    },
    "spatial_merge_size": 2,
    "image_token_id": 151655,
    "tie_word_embeddings": True,
}

# olmOCR-2-7B-1025: Qwen2.5-VL-7B; nikolay-grudanov/Team_5_AI_Tutor@ab9ec7b:
# models/olmOCR-2-7B-1025-FP8/config.json (the FP8 release of the same weights; its quantization block
# dropped here).
OLMOCR = {
    "text_config": {
        "vocab_size": 152064,
        "hidden_size": 3584,
        "intermediate_size": 18944,
        "num_hidden_layers": 28,
        "num_attention_heads": 28,
        "num_key_value_heads": 4,
        "max_position_embeddings": 128000,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
    },
    "vision_config": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "out_hidden_size": 3584,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
        "tokens_per_second": 2,
    },
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "tie_word_embeddings": False,
}

# MinerU2.5-2509-1.2B: Qwen2VLForConditionalGeneration (its card's transformers example). Its
# config.json was not found in any public copy; the paper (arXiv 2509.22186, section 2) gives the
# parts: the NaViT vision encoder of Qwen2-VL (675 M: depth 32, width 1280, 16 heads, merged 2x2)
# and a Qwen2-Instruct 0.5 B decoder (Qwen2-0.5B-Instruct's published sizes: 896 wide, 24 layers,
# 14 heads, 2 KV heads, MLP 4864, vocab 151936, tied). Sum 1.17 B = the card's 1.2 B. A MinerU
# adapter's test (vllm_musa, tests of vllm_musa/models/mineru_qwen2_vl.py; find_string id
# 70628317581) gives the same: text 896 x 24 layers, 14 heads, 2 KV, head_dim 64, mrope_section
# [8, 12, 12]; vision embed_dim 1280, depth 32, 16 heads.
MINERU = {
    "text_config": {
        "vocab_size": 151936,
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "max_position_embeddings": 32768,
        "tie_word_embeddings": True,
        "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [8, 12, 12]},
    },
    "vision_config": {
        **CONFIGS["qwen2vl"][2]["vision_config"],
        "hidden_size": 896,  # the merger projects into the decoder's width
    },
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "tie_word_embeddings": True,
}


CONFIGS["glm-ocr"] = ("zai-org/GLM-OCR", "GlmOcr", GLM_OCR)
CONFIGS["lighton-ocr"] = ("lightonai/LightOnOCR-2-1B", "LightOnOcr", LIGHTON_OCR)
CONFIGS["olmocr"] = ("allenai/olmOCR-2-7B-1025", "Qwen2_5_VL", OLMOCR)
CONFIGS["mineru"] = ("opendatalab/MinerU2.5-2509-1.2B", "Qwen2VL", MINERU)
# PaddleOCR-VL-1.5: the same architecture (model_type paddleocr_vl, the 1.5 model card); its config.json is
# not among ../shared/models, so the dimensions are assumed equal to PaddleOCR-VL's.
CONFIGS["paddleocr-vl-1.5"] = ("PaddlePaddle/PaddleOCR-VL-1.5", *CONFIGS["paddleocr-vl"][1:])
LAYER_KEYS = ("num_hidden_layers", "depth")
DEFAULT_COMMAND = "PYTHONPATH=src python3 benchmarks/bench_hf_vlm_gpu.py --out benchmarks/hf-vlm-gpu.md"


def _cap_layers(config: dict[str, Any], layers: int) -> dict[str, Any]:
    """Every layer count at most `layers`, with the index lists that name layers kept in range."""
    out = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out[key] = _cap_layers(value, layers)
        elif key in LAYER_KEYS:
            out[key] = min(value, layers)
        elif key in ("global_attn_indexes", "deepstack_visual_indexes", "fullatt_block_indexes"):
            out[key] = [i for i in value if i < layers] or [0]
        elif key == "mlp_layer_types":
            out[key] = value[:layers]
        else:
            out[key] = value
    return out


def _ids(torch: Any, parts: list[tuple[int, int]]) -> Any:
    return torch.tensor([[token for token, count in parts for _ in range(count)]])


def _qwen_like(torch: Any, cfg: dict[str, Any], grid: int, pixel_shape: Callable[[int], tuple[int, ...]]) -> dict:
    """A Qwen-style page: grid x grid patches, merged 2x2 into image tokens between start/end tokens."""
    image_tokens = grid * grid // 4
    text = PROMPT_TOKENS - image_tokens - 2
    input_ids = _ids(
        torch,
        [
            (TEXT_ID, 4),
            (cfg["vision_start_token_id"], 1),
            (cfg["image_token_id"], image_tokens),
            (cfg["vision_end_token_id"], 1),
            (TEXT_ID, text - 4),
        ],
    )
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "mm_token_type_ids": (input_ids == cfg["image_token_id"]).long(),
        "pixel_values": torch.randn(pixel_shape(grid * grid)),
        "image_grid_thw": torch.tensor([[1, grid, grid]]),
    }


def _inputs(torch: Any, name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    """A batch-1 prompt of ~PROMPT_TOKENS tokens shaped as the model's processor shapes a page."""
    if name == "olmocr":  # 60x60 patches of 14 px, two frames per patch (temporal 2): 900 image tokens
        return _qwen_like(torch, cfg, 60, lambda n: (n, 3 * 2 * 14 * 14))
    if name == "mineru":  # 60x60 patches of 14 px as for the others (its layout pass, 1036 px, has 1369)
        return _qwen_like(torch, cfg, 60, lambda n: (n, 3 * 2 * 14 * 14))
    if name == "qwen2vl":  # 60x60 patches of 14 px (840 px square): 900 image tokens
        return _qwen_like(torch, cfg, 60, lambda n: (n, 3 * 2 * 14 * 14))
    if name == "qwen3vl":  # 60x60 patches of 16 px (960 px square): 900 image tokens
        return _qwen_like(torch, cfg, 60, lambda n: (n, 3 * 2 * 16 * 16))
    if name in ("paddleocr-vl", "paddleocr-vl-1.5"):  # 60x60 patches of 14 px, one frame: 900 image tokens
        return _qwen_like(torch, cfg, 60, lambda n: (n, 3, 14, 14))
    if name == "glm-ocr":  # 60x60 patches of 14 px, two temporal frames: 900 image tokens
        marks = {"vision_start_token_id": cfg["image_start_token_id"], "vision_end_token_id": cfg["image_end_token_id"]}
        return _qwen_like(torch, {**cfg, **marks}, 60, lambda n: (n, 3 * 2 * 14 * 14))
    if name == "lighton-ocr":  # an 840 px square page: 30x30 merged patches of 28 px, 900 image tokens
        image_tokens = 900
        input_ids = _ids(
            torch, [(TEXT_ID, 4), (cfg["image_token_id"], image_tokens), (TEXT_ID, PROMPT_TOKENS - 4 - image_tokens)]
        )
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values": torch.randn(1, 3, 840, 840),
            "image_sizes": torch.tensor([[840, 840]]),
        }
    if name == "got":  # crop mode: 2 patches + thumbnail of 1024 px, 256 tokens each
        views = 3
        input_ids = _ids(
            torch, [(TEXT_ID, 20), (cfg["image_token_index"], 256 * views), (TEXT_ID, PROMPT_TOKENS - 20 - 256 * views)]
        )
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values": torch.randn(views, 3, 1024, 1024),
        }
    if name == "deepseek-ocr":  # 1024 px global view (256) + 4 tiles of 768 px (144 each) + separator
        tiles = 4
        image_tokens = 256 + 144 * tiles + 1
        input_ids = _ids(torch, [(cfg["image_token_id"], image_tokens), (TEXT_ID, PROMPT_TOKENS - image_tokens)])
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values": torch.randn(1, 3, 1024, 1024),
            "pixel_values_local": torch.randn(tiles, 3, 768, 768),
            "num_local_patches": torch.tensor([tiles]),
        }
    raise ValueError(name)


def measure(
    name: str, device: str, layers: int | None, cache: str = "dynamic", profile_steps: int = 0
) -> dict[str, Any]:
    """One row: prefill and per-token time under `cache`; with profile_steps, also a profile of that
    many decode steps (row["profile"], text)."""
    import torch
    import transformers

    repo, prefix, published = CONFIGS[name]
    row: dict[str, Any] = {"engine": name, "checkpoint": repo, "cache": cache, "attention": ATTENTION[name]}
    model_cls = getattr(transformers, f"{prefix}ForConditionalGeneration", None)
    if model_cls is None:
        row["error"] = f"transformers {transformers.__version__} has no {prefix}ForConditionalGeneration"
        return row
    config_dict = _cap_layers(published, layers) if layers else copy.deepcopy(published)
    config = getattr(transformers, f"{prefix}Config")(**config_dict)
    torch.manual_seed(0)
    with torch.device(device):
        model = model_cls._from_config(config, dtype=torch.bfloat16, attn_implementation=dict(ATTENTION[name]))
    model.eval()
    row["parameters_b"] = round(sum(p.numel() for p in model.parameters()) / 1e9, 3)
    batch = {
        k: (v.to(device, torch.bfloat16) if v.is_floating_point() else v.to(device))
        for k, v in _inputs(torch, name, config_dict).items()
    }
    row["prompt_tokens"] = int(batch["input_ids"].shape[1])
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)

    settings: dict[str, Any] = {"do_sample": False, "pad_token_id": 0}
    if cache == "static":  # transformers compiles the decoding step itself for a static cache
        settings["cache_implementation"] = "static"

    def generate(new_tokens: int) -> float:
        sync()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, **settings)
        sync()
        assert out.shape[1] == row["prompt_tokens"] + new_tokens, out.shape
        return time.perf_counter() - start

    # Warm-up: kernels, allocator; for a static cache the compiled step and its cache at full length,
    # which the shorter runs below reuse.
    for _ in range(2 if cache == "static" else 1):
        generate(NEW_TOKENS + 1 if cache == "static" else 4)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        row["weights_gib"] = round(torch.cuda.memory_allocated() / 2**30, 2)
    first = min(generate(1) for _ in range(2))
    full = min(generate(NEW_TOKENS + 1) for _ in range(2))
    row["prefill_ms"] = round(first * 1000, 1)
    row["ms_per_token"] = round((full - first) / NEW_TOKENS * 1000, 2)
    if device.startswith("cuda"):
        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    if profile_steps:
        row["profile"] = _profile(torch, lambda: generate(profile_steps + 1), device)
    model = None  # free this model's memory (and its compiled step) before the next one is built
    if cache == "static":
        torch._dynamo.reset()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return row


def _profile(torch: Any, run: Callable[[], float], device: str) -> str:
    """Where one generate call's time goes: top operators by host and device time, and the Python
    functions that take the host's time (cProfile), as text."""
    import cProfile
    import io
    import pstats

    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        wall = run()
    averages = prof.key_averages()
    # Kernel events only: an operator's "self CUDA" time repeats its kernels' time.
    device_us = sum(e.device_time_total for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)
    parts = [
        f"wall {wall * 1000:.1f} ms under the profiler; device busy {device_us / 1000:.1f} ms",
        averages.table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=60),
    ]
    if device.startswith("cuda"):
        parts.append(averages.table(sort_by="self_cuda_time_total", row_limit=12, max_name_column_width=60))
    python = cProfile.Profile()
    python.enable()
    run()
    python.disable()
    stream = io.StringIO()
    pstats.Stats(python, stream=stream).sort_stats("tottime").print_stats(30)
    parts.append(stream.getvalue())
    return "\n\n".join(parts)


def _machine(device: str) -> str:
    import torch
    import transformers

    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or "CPU"
    cuda = f", CUDA {torch.version.cuda}" if device.startswith("cuda") else ""
    return f"{gpu}; torch {torch.__version__}{cuda}; transformers {transformers.__version__}; {platform.platform()}"


def report(rows: list[dict[str, Any]], command: str, machine: str, layers: int | None) -> str:
    lines = [
        "# Transformers VLM engines: decode speed and memory at full size (random bf16 weights)",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine}",
        f"- Date: {datetime.date.today().isoformat()}",
        f"- Batch 1, prompt of ~{PROMPT_TOKENS} tokens (most of them image tokens, shaped as each processor "
        f"shapes a page), {NEW_TOKENS} generated tokens forced with min_new_tokens, greedy, attention as the "
        "engine chooses for `sdpa` (GOT-OCR2's vision encoder has only eager). Cache: transformers' default "
        'dynamic cache (what the engines use), or `cache_implementation="static"`, for which transformers '
        "compiles the decoding step itself (two full-length warm-up calls first).",
        f"- ms/token = (time to generate {NEW_TOKENS + 1} tokens - time to generate 1) / {NEW_TOKENS}, each the "
        "faster of two calls; prefill = time to generate 1 token (vision encoder + prompt). Peak = "
        "torch.cuda.max_memory_allocated over the timed calls.",
        "- Weights are random: the numbers are the arithmetic of the published architectures, not of their answers.",
    ]
    if layers:
        lines.append(f"- Layer counts capped at {layers} (`--layers`): a code-path check, not a measurement.")
    lines += [
        "",
        "| engine | checkpoint | cache | params (B) | prompt tokens | prefill ms | ms/token | weights GiB | "
        "peak GiB | attention |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(
                f"| {r['engine']} | {r['checkpoint']} | {r['cache']} | - | - | - | - | - | - | "
                f"not run: {r['error'].replace('|', '/')} |"
            )
            continue
        attention = ", ".join(f"{k or 'model'}={v}" for k, v in r["attention"].items())
        lines.append(
            f"| {r['engine']} | {r['checkpoint']} | {r['cache']} | {r['parameters_b']} | "
            f"{r['prompt_tokens']} | {r['prefill_ms']} | {r['ms_per_token']} | {r.get('weights_gib', '-')} | "
            f"{r.get('peak_gib', '-')} | {attention} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, help="Markdown report to write (a .json beside it too)")
    parser.add_argument("--models", default=",".join(CONFIGS), help="comma-separated engine names")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--layers", type=int, default=None, help="cap layer counts (code-path check only)")
    parser.add_argument("--caches", default="dynamic", help="comma-separated: dynamic, static")
    parser.add_argument(
        "--profile-steps",
        type=int,
        default=0,
        help="also profile this many decode steps per dynamic-cache row (written beside --out)",
    )
    parser.add_argument("--command", default=None, help="the command line to record in the report")
    args = parser.parse_args()
    rows, profiles = [], []
    for name in args.models.split(","):
        for cache in args.caches.split(","):
            try:
                row = measure(name, args.device, args.layers, cache, args.profile_steps if cache == "dynamic" else 0)
            except Exception as exc:  # one model failing must not lose the others' numbers
                row = {
                    "engine": name,
                    "checkpoint": CONFIGS[name][0],
                    "cache": cache,
                    "error": f"{type(exc).__name__}: {exc}"[:300],
                }
            if "profile" in row:
                profiles.append(f"## {name}, {cache} cache, {args.profile_steps} decode steps\n\n{row.pop('profile')}")
            print(json.dumps(row), flush=True)
            rows.append(row)
            _write(args, rows, profiles)  # after every row: a run cut short keeps what it measured
    print(report(rows, args.command or DEFAULT_COMMAND, _machine(args.device), args.layers))


def _write(args: argparse.Namespace, rows: list[dict[str, Any]], profiles: list[str]) -> None:
    stem = args.out.rsplit(".", 1)[0]
    with open(args.out, "w") as fh:
        fh.write(report(rows, args.command or DEFAULT_COMMAND, _machine(args.device), args.layers))
    with open(stem + ".json", "w") as fh:
        json.dump(rows, fh, indent=2)
    if profiles:
        with open(stem + "-profile.txt", "w") as fh:
            fh.write("\n\n".join(profiles))


if __name__ == "__main__":
    main()
