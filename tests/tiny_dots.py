"""A tiny random-weight dots.ocr checkpoint in the published layout.

The real checkpoint cannot be downloaded here, so tests load this one the way the engine loads the
real one: config.json with the published keys (including the vision tower's `attn_implementation:
flash_attention_2`, which polyocr must ignore), safetensors with the published tensor names (one file
or index + shards), a tokenizer trained in the test session with the dots special tokens, the two
chat templates the checkpoint ships, preprocessor_config.json and generation_config.json. Widths and
depths are tiny; the structure (GQA decoder, 2-D rotary vision tower, 2x2 merger) is the real one.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from polyocr.engines.dots.config import DotsOCRConfig
from polyocr.engines.dots.model import DotsOCRForCausalLM
from tiny_tokenizer import train_tokenizer

DOTS_TOKENS = [
    "<|endoftext|>",
    "<|imgpad|>",
    "<|img|>",
    "<|endofimg|>",
    "<|user|>",
    "<|endofuser|>",
    "<|assistant|>",
    "<|endofassistant|>",
    "<|system|>",
    "<|endofsystem|>",
    "<|video_pad|>",
]
# The checkpoint's two templates: tokenizer_config.json's and chat_template.json's (list content too).
TOKENIZER_TEMPLATE = (
    "{%- for m in messages %}\n    {%- if m.role == 'system' %}\n        {{- '<|system|>' + m.content + "
    "'<|endofsystem|>\\n' }}\n    {%- elif m.role == 'user' %}\n        {{- '<|user|>' + m.content + "
    "'<|endofuser|>' }}\n    {%- elif m.role == 'assistant' %}\n        {{- '<|assistant|>' + m.content }}\n"
    "        {%- if not loop.last %}\n            {{- '<|endofassistant|>' }}\n        {%- endif %}\n"
    "    {%- endif %}\n{%- endfor %}\n{%- if messages[-1].role != 'assistant' %}\n    {{- '<|assistant|>' }}\n"
    "{%- endif %}"
)
PROCESSOR_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}{%- for m in messages %}"
    "{%- if m.role == 'system' %}{{- '<|system|>' + m.content + '<|endofsystem|>\n' }}{%- elif m.role == 'user' %}"
    "{% if m.content is string %}{{- '<|user|>' + m.content + '<|endofuser|>' }}{% else %} "
    "{% for content in m.content %}{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture {{ image_count.value }}: "
    "{% endif %}<|img|><|imgpad|><|endofimg|>{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video {{ video_count.value }}: "
    "{% endif %}<|img|><|video_pad|><|endofimg|>{% elif 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{%- endif %}{%- elif m.role == 'assistant' %}{{- '<|assistant|>' + m.content }}"
    "{%- if not loop.last %}{{- '<|endofassistant|>' }}{%- endif %}{%- endif %}{%- endfor %}"
    "{%- if messages[-1].role != 'assistant' %}{{- '<|assistant|>' }}{%- endif %}"
)

# The published config.json's keys with tiny sizes (decoder: 4 query heads on 2 KV heads).
TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}
VISION = {
    "embed_dim": 32,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_channels": 3,
    "patch_size": 14,
    "post_norm": True,
    "rms_norm_eps": 1e-05,
    "spatial_merge_size": 2,
    "temporal_patch_size": 1,
    "use_bias": False,
    "attn_implementation": "flash_attention_2",
    "init_merger_std": 0.02,
    "initializer_range": 0.02,
    "is_causal": False,
}


def published_config(
    token_ids: dict[str, int], vocab_size: int, text: dict | None = None, vision: dict | None = None
) -> dict:
    """config.json as the checkpoint lays it out, with these sizes (tiny by default) and this tokenizer's ids."""
    return {
        "architectures": ["DotsOCRForCausalLM"],
        "model_type": "dots_ocr",
        "auto_map": {
            "AutoConfig": "configuration_dots.DotsOCRConfig",
            "AutoModelForCausalLM": "modeling_dots_ocr.DotsOCRForCausalLM",
        },
        "attention_bias": True,
        "attention_dropout": 0.0,
        "hidden_act": "silu",
        "initializer_range": 0.02,
        "max_position_embeddings": 131072,
        "max_window_layers": 28,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000,
        "sliding_window": 131072,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.51.0",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": vocab_size,
        "image_token_id": token_ids["<|imgpad|>"],
        "video_token_id": token_ids["<|video_pad|>"],
        **(text or TEXT),
        "vision_config": dict(vision or VISION),
    }


def build_tiny_dots(
    path: Path,
    *,
    shards: int = 1,
    seed: int = 0,
    text: dict | None = None,
    vision: dict | None = None,
    vocab_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    eos_tokens: Sequence[str] = ("<|endoftext|>", "<|endofassistant|>"),
    preprocessor_extra: dict | None = None,
) -> Path:
    """Write the checkpoint directory; `shards` > 1 splits the weights with an index file, as large ones are.

    `eos_tokens` are generation_config.json's eos_token_id (dots.ocr's two by default) and
    `preprocessor_extra` keys added to preprocessor_config.json (build_tiny_dots_mocr uses both).
    `text`, `vision` (config keys as TEXT and VISION) and `vocab_size` (at least the tokenizer's) give
    other sizes: benchmarks/bench_dots_engine_gpu.py writes the published ones, building the weights
    on `device` in `dtype` so that 3 B random parameters take seconds, not minutes.
    """
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(DOTS_TOKENS, eos_token="<|endoftext|>", chat_template=TOKENIZER_TEMPLATE)
    tokenizer.save_pretrained(path)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in DOTS_TOKENS}
    config = published_config(ids, max(vocab_size or 0, len(tokenizer)), text, vision)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    (path / "chat_template.json").write_text(json.dumps({"chat_template": PROCESSOR_TEMPLATE}))
    (path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "image_processor_type": "Qwen2VLImageProcessor",
                "min_pixels": 3136,
                "max_pixels": 11289600,
                "patch_size": 14,
                "merge_size": 2,
                "temporal_patch_size": 1,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                **(preprocessor_extra or {}),
            }
        )
    )
    (path / "generation_config.json").write_text(
        json.dumps(
            {
                "bos_token_id": ids["<|endoftext|>"],
                "eos_token_id": [ids[t] for t in eos_tokens],
            }
        )
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = DotsOCRForCausalLM(DotsOCRConfig(**config)).to(dtype)
    state = {k: v.to("cpu").contiguous() for k, v in model.state_dict().items()}
    del model
    names = sorted(state)
    if shards == 1:
        save_file(state, path / "model.safetensors", metadata={"format": "pt"})
        return path
    weight_map = {}
    for i in range(shards):
        file = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        part = {k: state[k] for k in names[i::shards]}
        save_file(part, path / file, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, file))
    (path / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    return path


# dots.mocr's published files (tests/fixtures/models/dots.mocr, SOURCES.md): config.json is dots.ocr's,
# the preprocessor the 432-byte revision with the processor's auto_map, generation eos adds <|assistant|>.
MOCR_EOS_TOKENS = ("<|endoftext|>", "<|assistant|>", "<|endofassistant|>")
MOCR_PREPROCESSOR_EXTRA = {
    "auto_map": {"AutoProcessor": "configuration_dots.DotsVLProcessor"},
    "processor_class": "DotsVLProcessor",
}


def build_tiny_dots_mocr(path: Path, **kwargs) -> Path:
    """A tiny random-weight dots.mocr checkpoint: dots.ocr's layout, dots.mocr's generation and preprocessor files."""
    return build_tiny_dots(path, eos_tokens=MOCR_EOS_TOKENS, preprocessor_extra=MOCR_PREPROCESSOR_EXTRA, **kwargs)
