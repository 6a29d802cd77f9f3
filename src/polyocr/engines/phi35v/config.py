"""The Phi-3.5-Vision configuration, read from the published config.json as it is.

The top level is a Phi3 decoder config (so transformers' Phi3 classes build the decoder from it,
including its `longrope` rotary scaling); `img_processor` and `embd_layer` describe the image
embedding the way the reference does (configuration_phi3_v.py / image_embedding_phi3_v.py of
microsoft/Phi-3.5-vision-instruct): `img_processor` names the CLIP tower
(`openai/clip-vit-large-patch14-336`), its output width (`image_dim_out` 1024) and the tokens per
336 px crop after the 2x2 merge (`num_img_tokens` 144); `embd_layer` asks for the HD transform with
learnable separators, the `sub_glb` order and an MLP projection.

The published config has no `vision_config`: the reference hard-codes the CLIP ViT-L/14-336 config
(CLIP_VIT_LARGE_PATCH14_336_CONFIG in image_embedding_phi3_v.py), copied below. polyocr also reads an
optional `vision_config` key so that tests and benchmarks can build the same structure at other
sizes; a published checkpoint never needs it.

Remote-code keys (`auto_map`, `_attn_implementation` flags the seed system forced to eager) are
ignored: attention is polyocr's choice, made at load time.
"""

from __future__ import annotations

from typing import Any, ClassVar

from transformers import CLIPVisionConfig, Phi3Config

# CLIP_VIT_LARGE_PATCH14_336_CONFIG of image_embedding_phi3_v.py (microsoft/Phi-3.5-vision-instruct).
CLIP_VIT_L_14_336: dict[str, Any] = {
    "attention_dropout": 0.0,
    "dropout": 0.0,
    "hidden_act": "quick_gelu",
    "hidden_size": 1024,
    "image_size": 336,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 4096,
    "layer_norm_eps": 1e-05,
    "num_attention_heads": 16,
    "num_channels": 3,
    "num_hidden_layers": 24,
    "patch_size": 14,
    "projection_dim": 768,
}

# The published decoder (config.json of microsoft/Phi-3.5-vision-instruct, as listed in
# shared/models/SOURCES.md: hidden 3072, 32 layers, 32 heads, eos 2, pad 32000; vocab 32064 and
# intermediate 8192 from the same config's copies), to build the model at full size without a
# checkpoint (benchmarks). The longrope factors are left out: they change no shape or speed.
PUBLISHED_TEXT: dict[str, Any] = {
    "hidden_size": 3072,
    "intermediate_size": 8192,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "vocab_size": 32064,
    "max_position_embeddings": 131072,
    "original_max_position_embeddings": 4096,
    "rms_norm_eps": 1e-05,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 32000,
    "tie_word_embeddings": False,
    "img_processor": {
        "image_dim_out": 1024,
        "model_name": "openai/clip-vit-large-patch14-336",
        "name": "clip_vision_model",
        "num_img_tokens": 144,
    },
    "embd_layer": {
        "embedding_cls": "image",
        "hd_transform_order": "sub_glb",
        "projection_cls": "mlp",
        "use_hd_transform": True,
        "with_learnable_separator": True,
    },
}

# `<|image|>` in the published tokenizer: the reference's processor marks image positions with
# negative ids (-1 for <|image_1|>) and its embedding clamps them; polyocr marks them with this real
# token id instead, as vLLM's phi3v.py does (`_IMAGE_TOKEN_ID = 32044`, "cannot find ... from hf
# config"). The processor checks that the checkpoint's tokenizer has `<|image|>` at this id.
IMAGE_TOKEN_ID = 32044


class Phi35VConfig(Phi3Config):
    """A Phi3 decoder config plus the image embedding's settings and the CLIP tower's config."""

    model_type = "phi3_v"
    sub_configs: ClassVar[dict[str, type]] = {"vision_config": CLIPVisionConfig}

    img_processor: dict | None = None
    embd_layer: dict | None = None
    image_token_id: int = IMAGE_TOKEN_ID
    vision_config: dict | CLIPVisionConfig | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        kwargs.pop("attn_implementation", None)
        kwargs.pop("_attn_implementation", None)
        self.img_processor = dict(self.img_processor or PUBLISHED_TEXT["img_processor"])
        self.embd_layer = dict(self.embd_layer or PUBLISHED_TEXT["embd_layer"])
        if not isinstance(self.vision_config, CLIPVisionConfig):
            self.vision_config = CLIPVisionConfig(**{**CLIP_VIT_L_14_336, **(self.vision_config or {})})
        super().__post_init__(**kwargs)
        self._check()

    def _check(self) -> None:
        """Refuse what the reference does not implement either (it raises NotImplementedError or asserts)."""
        processor, layer = self.img_processor or {}, self.embd_layer or {}
        assert isinstance(self.vision_config, CLIPVisionConfig)
        if processor.get("name", "clip_vision_model") != "clip_vision_model":
            raise ValueError(f"img_processor {processor.get('name')!r} is not the CLIP tower Phi-3.5-Vision uses")
        if processor.get("type_feature", "patch") != "patch":
            raise ValueError(f"img_processor type_feature {processor.get('type_feature')!r} is not implemented")
        if int(processor.get("image_dim_out", self.vision_config.hidden_size)) != self.vision_config.hidden_size:
            raise ValueError(
                f"img_processor image_dim_out {processor.get('image_dim_out')} differs from the CLIP width "
                f"{self.vision_config.hidden_size}"
            )
        side = self.vision_config.image_size // self.vision_config.patch_size
        if side % 2 or (side // 2) ** 2 != self.num_img_tokens:
            raise ValueError(
                f"num_img_tokens {self.num_img_tokens} does not match a {side}x{side} patch grid merged 2x2"
            )
        wanted = {"use_hd_transform": True, "with_learnable_separator": True, "hd_transform_order": "sub_glb"}
        for key, value in wanted.items():
            if layer.get(key, value) != value:
                raise ValueError(f"embd_layer {key}={layer.get(key)!r} is not the published layout ({value!r})")
        if layer.get("projection_cls", "mlp") != "mlp":
            raise ValueError(f"embd_layer projection_cls {layer.get('projection_cls')!r} is not implemented")

    @property
    def num_img_tokens(self) -> int:
        return int((self.img_processor or {}).get("num_img_tokens", 144))

    @property
    def vision_layer_idx(self) -> int:
        """Which CLIP hidden state feeds the projection: -2 (the second to last) in the reference."""
        return int((self.img_processor or {}).get("layer_idx", -2))
