"""The dots.ocr configuration, read from the published config.json as it is.

The top level is a Qwen2 decoder config (so transformers' Qwen2 classes build the decoder from it);
`vision_config` holds the vision tower. The vision tower's sub-config is deliberately not registered
as a transformers sub-config: the published file says `attn_implementation: flash_attention_2` there,
and a registered sub-config would have transformers validate (and fail on) flash-attn. Vision
attention is polyocr's own choice, made at load time.
"""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig, Qwen2Config

# The published checkpoint's decoder (config.json of rednote-hilab/dots.ocr, specs/dots-ocr.md); the
# vision tower's published values are DotsVisionConfig's defaults. Used to build the model at full
# size without a checkpoint (benchmarks, `polyocr bench --speed`).
PUBLISHED_TEXT: dict[str, Any] = {
    "hidden_size": 1536,
    "intermediate_size": 8960,
    "num_hidden_layers": 28,
    "num_attention_heads": 12,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 131072,
    "rope_theta": 1000000,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
    "image_token_id": 151665,
    "video_token_id": 151656,
    "use_sliding_window": False,
    "sliding_window": 131072,
    "max_window_layers": 28,
    "attention_bias": True,
}


class DotsVisionConfig(PreTrainedConfig):
    """The vision tower: a 42-block ViT with 2-D rotary positions and a 2x2 patch merger."""

    model_type = "dots_vit"

    embed_dim: int = 1536
    hidden_size: int = 1536
    intermediate_size: int = 4224
    num_hidden_layers: int = 42
    num_attention_heads: int = 12
    num_channels: int = 3
    patch_size: int = 14
    spatial_merge_size: int = 2
    temporal_patch_size: int = 1
    rms_norm_eps: float = 1e-5
    use_bias: bool = False
    post_norm: bool = True
    is_causal: bool = False
    initializer_range: float = 0.02
    init_merger_std: float = 0.02

    def __post_init__(self, **kwargs: Any) -> None:
        kwargs.pop("attn_implementation", None)
        super().__post_init__(**kwargs)
        if self.embed_dim % self.num_attention_heads:
            raise ValueError(f"vision embed_dim {self.embed_dim} is not divisible by {self.num_attention_heads} heads")
        if self.temporal_patch_size != 1:
            raise ValueError(f"dots.ocr images use temporal_patch_size 1, got {self.temporal_patch_size}")


class DotsOCRConfig(Qwen2Config):
    """A Qwen2 decoder config plus the image token ids and the vision tower's config."""

    model_type = "dots_ocr"

    image_token_id: int = 151665
    video_token_id: int = 151656
    vision_config: dict | DotsVisionConfig | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        if not isinstance(self.vision_config, DotsVisionConfig):
            self.vision_config = DotsVisionConfig(**(self.vision_config or {}))
        super().__post_init__(**kwargs)
