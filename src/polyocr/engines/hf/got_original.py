"""The original GOT-OCR 2.0 checkpoint (ucaslcl/GOT-OCR2_0, remote-code layout) in transformers' own
GotOcr2ForConditionalGeneration, with no remote code.

The original checkpoint is a Qwen2 decoder (`model.*`, `lm_head`) whose model also holds the SAM
ViT-B vision tower (`model.vision_tower_high.*`, with the two down-sampling convolutions `net_2`,
`net_3`) and the projection `model.mm_projector_vary`; it ships `qwen.tiktoken` and a remote-code
tokenizer (tokenization_qwen.py). transformers converted it once into stepfun-ai/GOT-OCR-2.0-hf; its
conversion script (transformers/models/got_ocr2/convert_got_ocr2_weights_to_hf.py,
ORIGINAL_TO_CONVERTED_KEY_MAPPING, write_tokenizer) defines the name mapping and the tokenizer used
here. polyocr applies the same mapping at load time (to transformers 5's module names: the decoder
under `model.language_model.`, the projector under `model.multi_modal_projector.`), strictly: every
original tensor must map onto one tensor of the native model with the same shape, and every tensor
of the native model must be filled.

- Configuration: the decoder's from the original config.json (Qwen2 keys); the vision tower is
  hard-coded in the original code (build_GOT_vit_b: 768 wide, 12 layers, 12 heads, global attention at
  2, 5, 8, 11, 14-patch windows, 1024 px, 256 neck channels), so its config is read off the tensor
  shapes, which give exactly those values for the published checkpoint.
- Tokenizer: qwen.tiktoken converted with transformers' TikTokenConverter, special tokens
  `<|endoftext|>`, `<|im_start|>`, `<|im_end|>`, `<|extra_0..204|>`, `<ref>` ... `<imgpad>` after the
  ranks (ids 151643..151859, as im_start_token 151857 / im_end_token 151858 / im_patch_token 151859
  in the original config). The split pattern is the original tokenizer's (tokenization_qwen.py
  PAT_STR: numbers as single digits); the conversion script writes `\\p{N}{1,3}` instead, which would
  tokenize prompts with numbers differently from training.
- Image processor: 1024x1024, CLIP mean/std (the conversion script's write_image_processor; the
  original's BlipImageEvalProcessor(image_size=1024)).
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

from polyocr.engines import vlm

ENGINE = "got"
ORIGINAL_REPO = "ucaslcl/GOT-OCR2_0"
TIKTOKEN = "qwen.tiktoken"
VISION = "model.vision_tower_high."

# ORIGINAL_TO_CONVERTED_KEY_MAPPING of the conversion script, with transformers 5's prefixes.
KEY_MAPPING: tuple[tuple[str, str], ...] = (
    (r"^model\.vision_tower_high\.pos_embed$", "model.vision_tower.pos_embed"),
    (r"^model\.vision_tower_high\.patch_embed\.proj\.", "model.vision_tower.patch_embed.projection."),
    (r"^model\.vision_tower_high\.blocks\.(\d+)\.norm(\d)\.", r"model.vision_tower.layers.\1.layer_norm\2."),
    (r"^model\.vision_tower_high\.blocks\.(\d+)\.(attn|mlp)\.", r"model.vision_tower.layers.\1.\2."),
    (r"^model\.vision_tower_high\.neck\.0\.", "model.vision_tower.neck.conv1."),
    (r"^model\.vision_tower_high\.neck\.1\.", "model.vision_tower.neck.layer_norm1."),
    (r"^model\.vision_tower_high\.neck\.2\.", "model.vision_tower.neck.conv2."),
    (r"^model\.vision_tower_high\.neck\.3\.", "model.vision_tower.neck.layer_norm2."),
    (r"^model\.vision_tower_high\.net_2\.", "model.multi_modal_projector.conv_upsampler1."),
    (r"^model\.vision_tower_high\.net_3\.", "model.multi_modal_projector.conv_upsampler2."),
    (r"^model\.mm_projector_vary\.", "model.multi_modal_projector.multimodal_projector."),
    (r"^model\.(embed_tokens|layers|norm)\b", r"model.language_model.\1"),
    (r"^lm_head\.", "lm_head."),
)
_COMPILED = tuple((re.compile(pattern), replacement) for pattern, replacement in KEY_MAPPING)

# tokenization_qwen.py of the original checkpoint (Qwen-VL's): PAT_STR and SPECIAL_TOKENS in order.
PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL_TOKENS = (
    ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    + [f"<|extra_{i}|>" for i in range(205)]
    + ["<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>", "<img>", "</img>", "<imgpad>"]
)
CONTEXT_LENGTH = 8000  # the conversion script's model_max_length
IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]


def hf_name(original: str) -> str | None:
    """The native model's name for an original tensor name; None when no rule maps it."""
    for pattern, replacement in _COMPILED:
        if pattern.search(original):
            return pattern.sub(replacement, original, count=1)
    return None


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / "config.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def is_original(directory: Path) -> bool:
    """An original-layout GOT checkpoint: the remote-code config (model_type GOT) with qwen.tiktoken."""
    config = _read_config(directory)
    archs = config.get("architectures") or []
    return (config.get("model_type") == "GOT" or "GOTQwenForCausalLM" in archs) and (directory / TIKTOKEN).is_file()


def vision_config(shapes: dict[str, list[int]]) -> dict[str, Any]:
    """The SAM tower's GotOcr2VisionConfig values, read off the original tensor shapes."""
    try:
        hidden, channels, patch, _ = shapes[VISION + "patch_embed.proj.weight"]
        grid = shapes[VISION + "pos_embed"][1]
        output_channels = shapes[VISION + "neck.0.weight"][0]
    except (KeyError, ValueError) as exc:
        raise ValueError(f"no SAM vision tower under {VISION} ({exc})") from exc
    layers = sorted(
        {int(m.group(1)) for name in shapes if (m := re.match(re.escape(VISION) + r"blocks\.(\d+)\.", name))}
    )
    if layers != list(range(len(layers))) or not layers:
        raise ValueError(f"vision blocks are not numbered 0..n-1: {layers}")
    heads, windows, global_layers = set(), set(), []
    for i in layers:
        rows, head_dim = shapes[f"{VISION}blocks.{i}.attn.rel_pos_h"]
        heads.add(hidden // head_dim)
        if rows == 2 * grid - 1:
            global_layers.append(i)
        else:
            windows.add((rows + 1) // 2)
    if len(heads) != 1 or len(windows) > 1:
        raise ValueError(f"inconsistent vision heads {sorted(heads)} or windows {sorted(windows)}")
    return {
        "hidden_size": hidden,
        "num_channels": channels,
        "patch_size": patch,
        "image_size": grid * patch,
        "num_hidden_layers": len(layers),
        "num_attention_heads": heads.pop(),
        "mlp_dim": shapes[f"{VISION}blocks.0.mlp.lin1.weight"][0],
        "output_channels": output_channels,
        "global_attn_indexes": global_layers,
        "window_size": windows.pop() if windows else 14,
        "qkv_bias": f"{VISION}blocks.0.attn.qkv.bias" in shapes,
        "use_abs_pos": True,
        "use_rel_pos": True,
    }


_TEXT_KEYS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "hidden_act",
    "sliding_window",
    "max_window_layers",
    "use_sliding_window",
    "attention_dropout",
    "bos_token_id",
    "eos_token_id",
)


def got_config(directory: Path, shapes: dict[str, list[int]]) -> Any:
    """GotOcr2Config for an original checkpoint: its decoder config, the tower read off the shapes."""
    import transformers

    original = _read_config(directory)
    text = {k: original[k] for k in _TEXT_KEYS if k in original}
    tied = "lm_head.weight" not in shapes and bool(original.get("tie_word_embeddings", True))
    text["tie_word_embeddings"] = tied
    config = transformers.GotOcr2Config(
        text_config=text,
        vision_config=vision_config(shapes),
        image_token_index=int(original.get("im_patch_token", 151859)),
        image_seq_length=int(original.get("image_token_len", 256)),
        tie_word_embeddings=tied,
    )
    config.architectures = ["GotOcr2ForConditionalGeneration"]
    return config


def load_model(directory: Path, *, dtype: Any, attention: dict[str, str], device: str = "cpu") -> Any:
    """GotOcr2ForConditionalGeneration filled from an original-layout checkpoint, strictly by the mapping."""
    import torch
    import transformers
    from safetensors import safe_open
    from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

    found = vlm.checkpoint_tensors(ENGINE, directory)
    shapes = {name: shape for name, (_, shape) in found.items()}
    unmapped = sorted(name for name in found if hf_name(name) is None)
    if unmapped:
        raise vlm.CheckpointError(
            ENGINE, directory, "not the GOT-OCR2_0 layout; " + vlm.listing("unmapped tensors", unmapped)
        )
    try:
        config = got_config(directory, shapes)
    except ValueError as exc:
        raise vlm.CheckpointError(ENGINE, directory, str(exc)) from exc
    with torch.device("meta"):
        model = transformers.GotOcr2ForConditionalGeneration._from_config(
            config, attn_implementation=dict(attention), dtype=dtype
        )
    expected = {name: list(t.shape) for name, t in model.state_dict().items()}
    if config.tie_word_embeddings:
        expected.pop("lm_head.weight", None)
    renamed = {str(hf_name(name)): shape for name, shape in shapes.items()}
    problems = vlm.mismatches(expected, renamed)
    if problems:
        raise vlm.CheckpointError(ENGINE, directory, f"does not match GotOcr2ForConditionalGeneration: {problems}")
    model.to_empty(device=device)
    targets = model.state_dict()
    with torch.no_grad():
        for file in sorted({file for file, _ in found.values()}):
            with safe_open(file, framework="pt", device=str(device)) as handle:
                for key in handle.keys():  # noqa: SIM118 (safe_open handles are not iterable)
                    targets[str(hf_name(key))].copy_(handle.get_tensor(key))
    if config.tie_word_embeddings:
        model.lm_head.weight = model.model.language_model.embed_tokens.weight
    language = model.model.language_model
    language.rotary_emb = Qwen2RotaryEmbedding(config.text_config).to(device)
    if (directory / "generation_config.json").exists():
        model.generation_config = transformers.GenerationConfig.from_pretrained(directory)
    return model.eval()


def read_tiktoken(path: Path) -> dict[bytes, int]:
    """A tiktoken BPE file: one `base64(token) rank` per line (tokenization_qwen.py's _load_tiktoken_bpe)."""
    ranks = {}
    for line in path.read_bytes().splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def convert_tokenizer(directory: Path) -> Any:
    """qwen.tiktoken as a PreTrainedTokenizerFast, converted as the conversion script's write_tokenizer
    does (transformers' TikTokenConverter; the special tokens after the ranks; pad, bos and eos
    `<|endoftext|>`), reading the file without the tiktoken package."""
    from tokenizers import AddedToken
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = read_tiktoken(directory / TIKTOKEN)
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise vlm.CheckpointError(ENGINE, directory, f"{TIKTOKEN}: ranks are not 0..{len(ranks) - 1}")

    class Converter(TikTokenConverter):
        @staticmethod
        def load_tiktoken_bpe(tiktoken_url: str) -> dict[bytes, int]:
            return ranks

    converted = Converter(str(directory / TIKTOKEN), pattern=PATTERN, extra_special_tokens=SPECIAL_TOKENS).converted()
    end = AddedToken("<|endoftext|>", lstrip=False, rstrip=False, normalized=False, single_word=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=converted,
        model_input_names=["input_ids", "attention_mask"],
        model_max_length=CONTEXT_LENGTH,
        pad_token=end,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        # The script says True; transformers 5 ignores it for BPE tokenizers (it would strip spaces before
        # punctuation) and warns, so it is False here, which is what runs either way.
        clean_up_tokenization_spaces=False,
    )
    first = tokenizer.convert_tokens_to_ids(SPECIAL_TOKENS[0])
    if first != len(ranks):
        raise vlm.CheckpointError(
            ENGINE, directory, f"special tokens start at {first}, not after the {len(ranks)} ranks"
        )
    return tokenizer


def load_processor(directory: Path) -> Any:
    """GotOcr2Processor for an original checkpoint: the converted tokenizer and a 1024 px image processor."""
    import transformers

    images_cls = getattr(transformers, "GotOcr2ImageProcessorPil", None) or transformers.GotOcr2ImageProcessor
    images = images_cls(
        do_resize=True,
        size={"height": 1024, "width": 1024},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=IMAGE_MEAN,
        image_std=IMAGE_STD,
    )
    return transformers.GotOcr2Processor(image_processor=images, tokenizer=convert_tokenizer(directory))
