"""A tiny GOT-OCR 2.0 checkpoint in the original remote-code layout (ucaslcl/GOT-OCR2_0), and the
same weights in transformers' layout (stepfun-ai/GOT-OCR-2.0-hf), for the name-mapping round trip.

The original layout is written here from the native model's tensors by this file's own reverse
mapping (not polyocr's), so a wrong rule in polyocr's mapping shows as a loading error or different
logits. The tokenizer is a tiktoken BPE file (`qwen.tiktoken`: base64 token, rank per line) trained
here on a small corpus, with the original's special tokens after the ranks.
"""

from __future__ import annotations

import base64
import copy
import itertools
import json
import re
from collections import Counter
from pathlib import Path

import regex
import torch
import transformers
from safetensors.torch import save_file

from polyocr.engines.hf import got_original
from tiny_tokenizer import CORPUS

TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "rms_norm_eps": 1e-06,
    "rope_theta": 1000000.0,
    "max_position_embeddings": 32768,
}
VISION = {
    "hidden_size": 16,
    "output_channels": 16,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "mlp_dim": 32,
    "global_attn_indexes": [1],
}

# Native name -> original name: the inverse of the conversion script's ORIGINAL_TO_CONVERTED_KEY_MAPPING.
REVERSE = (
    (r"^model\.vision_tower\.pos_embed$", "model.vision_tower_high.pos_embed"),
    (r"^model\.vision_tower\.patch_embed\.projection\.", "model.vision_tower_high.patch_embed.proj."),
    (r"^model\.vision_tower\.layers\.(\d+)\.layer_norm(\d)\.", r"model.vision_tower_high.blocks.\1.norm\2."),
    (r"^model\.vision_tower\.layers\.(\d+)\.", r"model.vision_tower_high.blocks.\1."),
    (r"^model\.vision_tower\.neck\.conv1\.", "model.vision_tower_high.neck.0."),
    (r"^model\.vision_tower\.neck\.layer_norm1\.", "model.vision_tower_high.neck.1."),
    (r"^model\.vision_tower\.neck\.conv2\.", "model.vision_tower_high.neck.2."),
    (r"^model\.vision_tower\.neck\.layer_norm2\.", "model.vision_tower_high.neck.3."),
    (r"^model\.multi_modal_projector\.conv_upsampler1\.", "model.vision_tower_high.net_2."),
    (r"^model\.multi_modal_projector\.conv_upsampler2\.", "model.vision_tower_high.net_3."),
    (r"^model\.multi_modal_projector\.multimodal_projector\.", "model.mm_projector_vary."),
    (r"^model\.language_model\.", "model."),
)


def original_name(name: str) -> str:
    for pattern, replacement in REVERSE:
        if re.search(pattern, name):
            return re.sub(pattern, replacement, name, count=1)
    assert name == "lm_head.weight", name
    return name


def train_ranks(merges: int = 120) -> dict[bytes, int]:
    """tiktoken ranks: the 256 bytes, then `merges` byte-pair merges learnt on the corpus pieces."""
    ranks = {bytes([b]): b for b in range(256)}
    words = Counter(
        tuple(bytes([b]) for b in piece.encode())
        for text in CORPUS
        for piece in regex.findall(got_original.PATTERN, text)
    )
    for _ in range(merges):
        pairs: Counter = Counter()
        for word, count in words.items():
            for a, b in itertools.pairwise(word):
                pairs[a, b] += count
        if not pairs:
            break
        (a, b), _ = pairs.most_common(1)[0]
        ranks[a + b] = len(ranks)
        merged: Counter = Counter()
        for word, count in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == (a, b):
                    out.append(a + b)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += count
        words = merged
    return ranks


def write_tiktoken(ranks: dict[bytes, int], path: Path) -> None:
    lines = [f"{base64.b64encode(token).decode()} {rank}" for token, rank in sorted(ranks.items(), key=lambda x: x[1])]
    path.write_text("\n".join(lines) + "\n")


def build_pair(root: Path, *, tied: bool = True, seed: int = 0) -> tuple[Path, Path]:
    """(original-layout dir, hf-layout dir) holding the same random weights."""
    original, native = root / "original", root / "hf"
    original.mkdir(parents=True, exist_ok=True)
    ranks = train_ranks()
    write_tiktoken(ranks, original / got_original.TIKTOKEN)
    ids = {token: len(ranks) + i for i, token in enumerate(got_original.SPECIAL_TOKENS)}
    vocab = len(ranks) + len(got_original.SPECIAL_TOKENS)
    end = ids["<|endoftext|>"]
    config = transformers.GotOcr2Config(
        text_config={
            **TEXT,
            "vocab_size": vocab,
            "eos_token_id": end,
            "bos_token_id": end,
            "tie_word_embeddings": tied,
        },
        vision_config=VISION,
        image_token_index=ids["<imgpad>"],
        image_seq_length=256,
        tie_word_embeddings=tied,
    )
    torch.manual_seed(seed)
    model = transformers.GotOcr2ForConditionalGeneration._from_config(copy.deepcopy(config), dtype=torch.float32)
    model.save_pretrained(native)
    processor = got_original.load_processor(original)  # the converted tokenizer, saved in the hf layout
    processor.save_pretrained(native)
    state = {
        original_name(k): v.contiguous() for k, v in model.state_dict().items() if not (tied and k == "lm_head.weight")
    }
    save_file(state, original / "model.safetensors", metadata={"format": "pt"})
    (original / "config.json").write_text(
        json.dumps(
            {
                "_name_or_path": "ucaslcl/GOT-OCR2_0",
                "architectures": ["GOTQwenForCausalLM"],
                "auto_map": {"AutoConfig": "modeling_GOT.GOTConfig", "AutoModel": "modeling_GOT.GOTQwenForCausalLM"},
                "model_type": "GOT",
                "attention_dropout": 0.0,
                "bos_token_id": end,
                "eos_token_id": end,
                "freeze_vision_tower": False,
                "hidden_act": "silu",
                "im_end_token": ids["</img>"],
                "im_patch_token": ids["<imgpad>"],
                "im_start_token": ids["<img>"],
                "image_token_len": 256,
                "max_window_layers": 21,
                "sliding_window": 32768,
                "tie_word_embeddings": tied,
                "torch_dtype": "float32",
                "transformers_version": "4.37.2",
                "use_cache": True,
                "use_im_start_end": True,
                "use_sliding_window": False,
                "vocab_size": vocab,
                **TEXT,
            },
            indent=2,
        )
    )
    (original / "tokenizer_config.json").write_text(
        json.dumps({"auto_map": {"AutoTokenizer": ["tokenization_qwen.QWenTokenizer", None]}, "model_max_length": 8000})
    )
    return original, native
