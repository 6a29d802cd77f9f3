"""A tiny random-weight Phi-3.5-Vision checkpoint in the published layout.

The real checkpoint cannot be downloaded here, so tests load this one the way the engine loads the
real one: config.json with the published keys (auto_map to the remote code, img_processor,
embd_layer, longrope rope_scaling, the eager-attention flag the seed system forced, which polyocr
must ignore), safetensors with the published tensor names, a tokenizer trained in the session with
the chat-format tokens, and the published preprocessor_config.json. Widths and depths are tiny; the
structure (Phi3 decoder with fused qkv and gate_up projections, CLIP tower at 336 px with 14 px
patches, 2x2 merge, learnt separators, 2-layer projection) and the image arithmetic are the real ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from polyocr.engines.phi35v.config import Phi35VConfig
from polyocr.engines.phi35v.model import Phi35VForCausalLM
from tiny_tokenizer import train_tokenizer

PHI_TOKENS = ["<|endoftext|>", "<s>", "</s>", "<unk>", "<|user|>", "<|end|>", "<|assistant|>", "<|image|>"]
TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
}
# One more layer than the feature layer needs: the reference reads the second to last hidden state.
VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "image_size": 336,
    "patch_size": 14,
}


def published_config(
    ids: dict[str, int], vocab_size: int, text: dict | None = None, vision: dict | None = None
) -> dict:
    """config.json as the checkpoint lays it out (Phi-3-vision's published keys), with these sizes."""
    text = dict(text or TEXT)
    vision = dict(vision or VISION)
    half = text["hidden_size"] // text["num_attention_heads"] // 2
    return {
        "_name_or_path": "Phi-3.5-vision-instruct",
        "architectures": ["Phi3VForCausalLM"],
        "attention_dropout": 0.0,
        "auto_map": {
            "AutoConfig": "configuration_phi3_v.Phi3VConfig",
            "AutoModelForCausalLM": "modeling_phi3_v.Phi3VForCausalLM",
        },
        "bos_token_id": ids["<s>"],
        "embd_layer": {
            "embedding_cls": "image",
            "hd_transform_order": "sub_glb",
            "projection_cls": "mlp",
            "use_hd_transform": True,
            "with_learnable_separator": True,
        },
        "embd_pdrop": 0.0,
        "eos_token_id": ids["</s>"],
        "hidden_act": "silu",
        "img_processor": {
            "image_dim_out": vision["hidden_size"],
            "model_name": "openai/clip-vit-large-patch14-336",
            "name": "clip_vision_model",
            "num_img_tokens": 144,
        },
        "initializer_range": 0.02,
        "max_position_embeddings": 131072,
        "model_type": "phi3_v",
        "original_max_position_embeddings": 4096,
        "pad_token_id": ids["<|endoftext|>"],
        "resid_pdrop": 0.0,
        "rms_norm_eps": 1e-05,
        "rope_scaling": {
            "long_factor": [1.0 + 0.5 * i for i in range(half)],
            "short_factor": [1.0 + 0.1 * i for i in range(half)],
            "type": "longrope",
        },
        "rope_theta": 10000.0,
        "sliding_window": 262144,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "transformers_version": "4.38.1",
        "use_cache": True,
        "_attn_implementation": "eager",  # what the seed system forced; polyocr ignores it
        "vocab_size": vocab_size,
        "image_token_id": ids["<|image|>"],
        "vision_config": vision,
        **text,
    }


def build_tiny_phi35v(
    path: Path,
    *,
    seed: int = 0,
    text: dict | None = None,
    vision: dict | None = None,
    vocab_size: int | None = None,
    dtype: torch.dtype = torch.float32,
    device: str = "cpu",
    shards: int = 1,
) -> Path:
    """Write the checkpoint directory. `text`, `vision` and `vocab_size` give other sizes
    (benchmarks/bench_phi35v_gpu.py writes the published ones, building on `device` in `dtype`)."""
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(PHI_TOKENS, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tokenizer.bos_token = "<s>"
    tokenizer.unk_token = "<unk>"
    tokenizer.save_pretrained(path)
    settings = json.loads((path / "tokenizer_config.json").read_text())
    settings.update({"add_bos_token": True, "add_eos_token": False})  # Llama-style: BOS on every encode
    (path / "tokenizer_config.json").write_text(json.dumps(settings, indent=2))
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in PHI_TOKENS}
    config = published_config(ids, max(vocab_size or 0, len(tokenizer)), text, vision)
    (path / "config.json").write_text(json.dumps(config, indent=2))
    (path / "preprocessor_config.json").write_text(
        json.dumps(
            {
                "auto_map": {"AutoImageProcessor": "image_processing_phi3_v.Phi3VImageProcessor"},
                "do_convert_rgb": True,
                "image_mean": [0.48145466, 0.4578275, 0.40821073],
                "image_processor_type": "Phi3VImageProcessor",
                "image_std": [0.26862954, 0.26130258, 0.27577711],
                "num_crops": 4,
                "num_img_tokens": 144,
                "processor_class": "Phi3VProcessor",
            }
        )
    )
    (path / "generation_config.json").write_text(
        json.dumps({"bos_token_id": ids["<s>"], "eos_token_id": [ids["</s>"], ids["<|end|>"]]})
    )
    torch.manual_seed(seed)
    with torch.device(device):
        model = Phi35VForCausalLM(Phi35VConfig(**config)).to(dtype)
        with torch.no_grad():  # the reference initialises the separators to zero; make them count here
            model.vision.glb_GN.normal_()
            model.vision.sub_GN.normal_()
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
