"""Tiny random-weight checkpoints of the transformers VLMs, saved in the published layout.

Each builder writes config, safetensors weights, a tokenizer trained here (tests/tiny_tokenizer.py)
with the model's own special tokens, the image processor and the processor into a directory, so the
engine loads it exactly as it would load the real checkpoint from the Hugging Face cache. Sizes are
the smallest the model code accepts; the image arithmetic (patch sizes, tile sizes, token counts) is
the real one.
"""

from __future__ import annotations

import copy
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import transformers

from tiny_tokenizer import train_tokenizer

QWEN_TOKENS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
QWEN_CHAT = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for c in m.content %}"
    "{% if c.type == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c.type == 'text' %}{{ c.text }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
PADDLE_TOKENS = [
    "</s>",
    "<s>",
    "<unk>",
    "<|begin_of_sentence|>",
    "<|end_of_sentence|>",
    "<|IMAGE_PLACEHOLDER|>",
    "<|video_pad|>",
    "<|IMAGE_START|>",
    "<|IMAGE_END|>",
]
PADDLE_CHAT = (
    "<|begin_of_sentence|>{% for m in messages %}{% if m.role == 'user' %}User: "
    "{% for c in m.content %}{% if c.type == 'image' %}<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>"
    "{% endif %}{% endfor %}{% for c in m.content %}{% if c.type == 'text' %}{{ c.text }}{% endif %}"
    "{% endfor %}\n{% endif %}{% endfor %}{% if add_generation_prompt %}Assistant: {% endif %}"
)
GOT_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<imgpad>"]
DEEPSEEK_TOKENS = [
    "<｜end▁of▁sentence｜>",
    "<｜begin▁of▁sentence｜>",
    "<image>",
    "<|grounding|>",
    "<|ref|>",
    "<|/ref|>",
    "<|det|>",
    "<|/det|>",
]

# A tiny language model: enough layers and heads to exercise caches, GQA and masks.
TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
}


def _save(model_cls: type, config: object, processor: object, path: Path) -> Path:
    torch.manual_seed(0)
    model = model_cls._from_config(copy.deepcopy(config), dtype=torch.float32)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path


def _ids(tokenizer: object, *tokens: str) -> list[int]:
    return [tokenizer.convert_tokens_to_ids(t) for t in tokens]


def build_qwen2vl(path: Path) -> Path:
    from polyocr.engines.hf.spec import image_only_processor

    tok = train_tokenizer(QWEN_TOKENS, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=QWEN_CHAT)
    image, video, start, end = _ids(tok, "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    config = transformers.Qwen2VLConfig(
        text_config={
            **TEXT,
            "vocab_size": len(tok),
            "bos_token_id": None,
            "eos_token_id": tok.eos_token_id,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 1, 1]},
        },
        vision_config={"depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 4, "mlp_ratio": 2},
        image_token_id=image,
        video_token_id=video,
        vision_start_token_id=start,
        vision_end_token_id=end,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    images = transformers.Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64)
    processor = image_only_processor(transformers.Qwen2VLProcessor)(
        image_processor=images, tokenizer=tok, chat_template=QWEN_CHAT
    )
    return _save(transformers.Qwen2VLForConditionalGeneration, config, processor, path)


def build_qwen3vl(path: Path) -> Path:
    from polyocr.engines.hf.spec import image_only_processor

    tok = train_tokenizer(QWEN_TOKENS, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=QWEN_CHAT)
    image, video, start, end = _ids(tok, "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    config = transformers.Qwen3VLConfig(
        text_config={
            **TEXT,
            "vocab_size": len(tok),
            "head_dim": 8,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 5e6,
                "mrope_section": [2, 1, 1],
                "mrope_interleaved": True,
            },
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 4,
            "out_hidden_size": 32,
            "deepstack_visual_indexes": [0],
            "num_position_embeddings": 64,
        },
        image_token_id=image,
        video_token_id=video,
        vision_start_token_id=start,
        vision_end_token_id=end,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    images = transformers.Qwen2VLImageProcessorPil(
        patch_size=16, image_mean=[0.5] * 3, image_std=[0.5] * 3, min_pixels=32 * 32 * 4, max_pixels=32 * 32 * 64
    )
    processor = image_only_processor(transformers.Qwen3VLProcessor)(
        image_processor=images, tokenizer=tok, chat_template=QWEN_CHAT
    )
    return _save(transformers.Qwen3VLForConditionalGeneration, config, processor, path)


def build_paddleocr_vl(path: Path) -> Path:
    tok = train_tokenizer(PADDLE_TOKENS, eos_token="</s>", pad_token="<unk>", chat_template=PADDLE_CHAT)
    tok = _with_named_tokens(tok, image_token="<|IMAGE_PLACEHOLDER|>")
    image, video, start, end = _ids(tok, "<|IMAGE_PLACEHOLDER|>", "<|video_pad|>", "<|IMAGE_START|>", "<|IMAGE_END|>")
    config = transformers.PaddleOCRVLConfig(
        text_config={
            **TEXT,
            "vocab_size": len(tok),
            "head_dim": 8,
            "rope_parameters": {"rope_type": "default", "rope_theta": 5e5, "mrope_section": [2, 1, 1]},
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
            "bos_token_id": tok.convert_tokens_to_ids("<s>"),
        },
        vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4},
        image_token_id=image,
        video_token_id=video,
        vision_start_token_id=start,
        vision_end_token_id=end,
    )
    images = transformers.PaddleOCRVLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64)
    processor = transformers.PaddleOCRVLProcessor(image_processor=images, tokenizer=tok, chat_template=PADDLE_CHAT)
    _save(transformers.PaddleOCRVLForConditionalGeneration, config, processor, path)
    # The layout stage the engine runs first, in the checkpoint's layout/ folder (tests/tiny_layout.py).
    from tiny_layout import build_pp_doclayout_v2

    build_pp_doclayout_v2(path / "layout")
    return path


def build_paddleocr_vl15(path: Path) -> Path:
    """PaddleOCR-VL-1.5: the same architecture (model_type paddleocr_vl), with PP-DocLayoutV3."""
    from tiny_layout import build_pp_doclayout_v3

    build_paddleocr_vl(path)
    shutil.rmtree(path / "layout")
    build_pp_doclayout_v3(path / "layout")
    return path


def build_got(path: Path) -> Path:
    tok = train_tokenizer(GOT_TOKENS, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    config = transformers.GotOcr2Config(
        text_config={**TEXT, "vocab_size": len(tok), "eos_token_id": tok.eos_token_id},
        vision_config={
            "hidden_size": 16,
            "output_channels": 16,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "mlp_dim": 32,
            "global_attn_indexes": [1],
        },
        image_token_index=tok.convert_tokens_to_ids("<imgpad>"),
        image_seq_length=256,
    )
    images = transformers.GotOcr2ImageProcessorPil(size={"height": 1024, "width": 1024})
    processor = transformers.GotOcr2Processor(image_processor=images, tokenizer=tok)
    return _save(transformers.GotOcr2ForConditionalGeneration, config, processor, path)


def build_deepseek_ocr(path: Path) -> Path:
    tok = train_tokenizer(DEEPSEEK_TOKENS, eos_token="<｜end▁of▁sentence｜>")
    config = transformers.DeepseekOcr2Config(
        text_config={
            **TEXT,
            "vocab_size": len(tok),
            "num_key_value_heads": 4,
            "mlp_layer_types": ["dense", "sparse"],
            "n_routed_experts": 4,
            "num_experts_per_tok": 2,
            "n_shared_experts": 1,
            "moe_intermediate_size": 16,
            "eos_token_id": tok.eos_token_id,
            "bos_token_id": tok.convert_tokens_to_ids("<｜begin▁of▁sentence｜>"),
        },
        vision_config={
            "sam_config": {
                "hidden_size": 16,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "global_attn_indexes": [1],
                "output_channels": 16,
                "downsample_channels": [16, 32],
            },
            "encoder_config": {
                "hidden_size": 32,
                "num_hidden_layers": 1,
                "num_attention_heads": 4,
                "num_key_value_heads": 2,
                "intermediate_size": 64,
                "vocab_size": 1,
            },
        },
        image_token_id=tok.convert_tokens_to_ids("<image>"),
    )
    images = transformers.DeepseekOcr2ImageProcessorPil()
    processor = transformers.DeepseekOcr2Processor(image_processor=images, tokenizer=tok)
    return _save(transformers.DeepseekOcr2ForConditionalGeneration, config, processor, path)


def _with_named_tokens(tokenizer: object, **named: str) -> transformers.PreTrainedTokenizerFast:
    """Reload with named special tokens (`tokenizer.image_token`), as PaddleOCR-VL's checkpoint has them."""
    with tempfile.TemporaryDirectory() as scratch:
        tokenizer.save_pretrained(scratch)
        return transformers.AutoTokenizer.from_pretrained(scratch, extra_special_tokens=named)


# GLM-OCR's special tokens (ids in the published checkpoint: [gMASK] 59248, <sop> 59250, <|user|>
# 59253, <|assistant|> 59254, <|begin_of_image|> 59256, <|end_of_image|> 59257, <|image|> 59280,
# <|endoftext|> 59246; config.json and transformers' GlmOcrConfig defaults).
GLM_TOKENS = [
    "<|endoftext|>",
    "[gMASK]",
    "<sop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|image|>",
    "<|video|>",
]
# Not the published template (no public copy of zai-org/GLM-OCR's chat_template.jinja was found): the
# GLM-V conversation shape, [gMASK]<sop><|user|>\n<image block><text><|assistant|>\n.
GLM_CHAT = (
    "[gMASK]<sop>{% for m in messages %}<|{{ m.role }}|>\n{% if m.content is string %}{{ m.content }}"
    "{% else %}{% for c in m.content %}{% if c.type == 'image' %}<|begin_of_image|><|image|><|end_of_image|>"
    "{% elif c.type == 'text' %}{{ c.text }}{% endif %}{% endfor %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# LightOnOCR-2: Qwen3's tokens; the processor's image, break and end tokens are <|image_pad|>,
# <|vision_pad|>, <|vision_end|> (transformers tests/models/lighton_ocr/test_processing_lighton_ocr.py).
LIGHTON_TOKENS = [*QWEN_TOKENS, "<|vision_pad|>"]
LIGHTON_CHAT = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for c in m.content %}"
    "{% if c.type == 'image' %}<|image_pad|>{% elif c.type == 'text' %}{{ c.text }}{% endif %}{% endfor %}"
    "{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def build_glm_ocr(path: Path) -> Path:
    from polyocr.engines.hf.spec import image_only_processor

    tok = train_tokenizer(GLM_TOKENS, eos_token="<|endoftext|>", pad_token="<|endoftext|>", chat_template=GLM_CHAT)
    eos = _ids(tok, "<|endoftext|>", "<|user|>")  # the published eos list: <|endoftext|>, <|user|>
    image, video, start, end, vstart, vend = _ids(
        tok,
        "<|image|>",
        "<|video|>",
        "<|begin_of_image|>",
        "<|end_of_image|>",
        "<|begin_of_video|>",
        "<|end_of_video|>",
    )
    config = transformers.GlmOcrConfig(
        text_config={
            **TEXT,
            "vocab_size": len(tok),
            "head_dim": 8,
            "eos_token_id": eos,
            "pad_token_id": tok.pad_token_id,
            # published: mrope_section [16, 24, 24] of head_dim 128, partial_rotary_factor 1.0
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 10000,
                "mrope_section": [2, 1, 1],
                "partial_rotary_factor": 1.0,
            },
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "num_heads": 4,
            "intermediate_size": 64,
            "out_hidden_size": 32,  # the text hidden size, as published (1536 = 1536)
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
        image_token_id=image,
        video_token_id=video,
        image_start_token_id=start,
        image_end_token_id=end,
        video_start_token_id=vstart,
        video_end_token_id=vend,
    )
    # The published image arithmetic (patch 14, merge 2, 2 temporal frames), tiny pixel bounds (wide
    # enough that test_hf_vlm's two crops, resized by the SDK's smart_resize first, differ in tokens).
    images = transformers.Glm46VImageProcessorPil(
        size={"shortest_edge": 2 * 28 * 28 * 4, "longest_edge": 2 * 28 * 28 * 128},
        patch_size=14,
        temporal_patch_size=2,
        merge_size=2,
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    processor = image_only_processor(transformers.Glm46VProcessor)(
        image_processor=images, tokenizer=tok, chat_template=GLM_CHAT
    )
    _save(transformers.GlmOcrForConditionalGeneration, config, processor, path)
    transformers.GenerationConfig(eos_token_id=eos, pad_token_id=tok.pad_token_id, do_sample=False).save_pretrained(
        path
    )
    # The SDK's layout stage, PP-DocLayoutV3, in the checkpoint's layout/ folder (tests/tiny_layout.py).
    from tiny_layout import build_pp_doclayout_v3

    build_pp_doclayout_v3(path / "layout")
    return path


def build_lighton_ocr(path: Path) -> Path:
    import json

    tok = train_tokenizer(LIGHTON_TOKENS, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=LIGHTON_CHAT)
    tok = _with_named_tokens(
        tok, image_token="<|image_pad|>", image_break_token="<|vision_pad|>", image_end_token="<|vision_end|>"
    )
    config = transformers.LightOnOcrConfig(
        text_config={
            **TEXT,
            "model_type": "qwen3",
            "vocab_size": len(tok),
            "head_dim": 8,
            "tie_word_embeddings": True,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1000000},
        },
        vision_config={
            "model_type": "pixtral",
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "head_dim": 8,
            "image_size": 224,  # the RoPE table's extent: the processor's longest edge
            "patch_size": 14,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000},
        },
        spatial_merge_size=2,
        image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    images = transformers.PixtralImageProcessorPil(
        size={"longest_edge": 224},
        patch_size={"height": 14, "width": 14},
        image_mean=[0.48145466, 0.4578275, 0.40821073],
        image_std=[0.26862954, 0.26130258, 0.27577711],
    )
    processor = transformers.LightOnOcrProcessor(
        image_processor=images, tokenizer=tok, patch_size=14, spatial_merge_size=2, chat_template=LIGHTON_CHAT
    )
    _save(transformers.LightOnOcrForConditionalGeneration, config, processor, path)
    # The published config.json names the architecture "LightOnOCRForConditionalGeneration" under
    # model_type "mistral3" (lightonai/LightOnOCR-2-1B config.json); write the tiny one the same way.
    saved = json.loads((path / "config.json").read_text())
    saved.update(model_type="mistral3", architectures=["LightOnOCRForConditionalGeneration"])
    (path / "config.json").write_text(json.dumps(saved, indent=2))
    return path


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "qwen2vl": build_qwen2vl,
    "qwen3vl": build_qwen3vl,
    "got": build_got,
    "deepseek-ocr": build_deepseek_ocr,
    "paddleocr-vl": build_paddleocr_vl,
    "glm-ocr": build_glm_ocr,
    "lighton-ocr": build_lighton_ocr,
    "paddleocr-vl-1.5": build_paddleocr_vl15,
}


# Qwen2.5-VL-7B-Instruct's published chat template (olmOCR-2 is run with its processor); byte-equal to
# Qwen2-VL-2B-Instruct's (tests/fixtures/models/SOURCES.md), so it is read from that fixture.
QWEN25_CHAT = __import__("json").loads(
    (Path(__file__).resolve().parent / "fixtures" / "models" / "qwen2-vl" / "chat_template.json").read_text()
)["chat_template"]


def build_olmocr(path: Path) -> Path:
    """olmOCR-2's structure: Qwen2.5-VL (windowed vision attention with full-attention blocks, RMSNorm
    vision blocks, gated MLP merger), tiny."""
    from polyocr.engines.hf.spec import image_only_processor

    tok = train_tokenizer(QWEN_TOKENS, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=QWEN25_CHAT)
    image, video, start, end = _ids(tok, "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    config = transformers.Qwen2_5_VLConfig(
        text_config={
            **TEXT,
            "vocab_size": len(tok),
            "bos_token_id": None,
            "eos_token_id": tok.eos_token_id,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 1, 1]},
        },
        vision_config={
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 4,
            "out_hidden_size": 32,
            "window_size": 112,
            "fullatt_block_indexes": [1],
        },
        image_token_id=image,
        video_token_id=video,
        vision_start_token_id=start,
        vision_end_token_id=end,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    images = transformers.Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64)
    processor = image_only_processor(transformers.Qwen2_5_VLProcessor)(
        image_processor=images, tokenizer=tok, chat_template=QWEN25_CHAT
    )
    return _save(transformers.Qwen2_5_VLForConditionalGeneration, config, processor, path)


BUILDERS["olmocr"] = build_olmocr


# MinerU2.5's layout and table tags (mineru-vl-utils mineru_client.py _layout_re and ANGLE_MAPPING,
# post_process/otsl2html.py); its published tokenizer files were not found in a public copy, so the
# tiny tokenizer makes them special tokens beside Qwen2-VL's.
MINERU_TOKENS = [
    *QWEN_TOKENS,
    "<|ref_start|>",
    "<|ref_end|>",
    "<|rotate_up|>",
    "<|rotate_right|>",
    "<|rotate_down|>",
    "<|rotate_left|>",
    "<fcel>",
    "<ecel>",
    "<lcel>",
    "<ucel>",
    "<xcel>",
    "<nl>",
]


def build_mineru(path: Path) -> Path:
    """MinerU2.5's structure: Qwen2-VL (NaViT vision tower, 2x2 patch merger, Qwen2 decoder), tiny, with
    the published chat template (Qwen2-VL's)."""
    from polyocr.engines.hf.spec import image_only_processor

    tok = train_tokenizer(MINERU_TOKENS, eos_token="<|im_end|>", pad_token="<|endoftext|>", chat_template=QWEN25_CHAT)
    image, video, start, end = _ids(tok, "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    config = transformers.Qwen2VLConfig(
        text_config={
            **TEXT,
            "vocab_size": len(tok),
            "bos_token_id": None,
            "eos_token_id": tok.eos_token_id,
            "max_position_embeddings": 4096,
            "rope_parameters": {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 1, 1]},
        },
        vision_config={"depth": 2, "embed_dim": 32, "hidden_size": 32, "num_heads": 4, "mlp_ratio": 2},
        image_token_id=image,
        video_token_id=video,
        vision_start_token_id=start,
        vision_end_token_id=end,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    images = transformers.Qwen2VLImageProcessorPil(min_pixels=28 * 28 * 4, max_pixels=28 * 28 * 64)
    processor = image_only_processor(transformers.Qwen2VLProcessor)(
        image_processor=images, tokenizer=tok, chat_template=QWEN25_CHAT
    )
    return _save(transformers.Qwen2VLForConditionalGeneration, config, processor, path)


BUILDERS["mineru"] = build_mineru
