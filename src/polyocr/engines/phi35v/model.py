"""Phi35VForCausalLM: transformers' Phi3 decoder fed by a CLIP ViT-L/14-336 tower, loaded strictly.

Written from the reference code of microsoft/Phi-3.5-vision-instruct (modeling_phi3_v.py,
image_embedding_phi3_v.py), with transformers' own pieces where they exist: the decoder is
Phi3ForCausalLM (published names `model.embed_tokens`, `model.layers.N.self_attn.qkv_proj`,
`...mlp.gate_up_proj`, `model.norm`, `lm_head`), the vision tower is CLIPVisionModel under the
published prefix `model.vision_embed_tokens.img_processor.`. What is specific to Phi-3.5-Vision is
here (Phi35VImageEmbedding, published names `model.vision_embed_tokens.{glb_GN, sub_GN,
img_projection.0, img_projection.2}`):

- each crop's CLIP features are taken from the second to last hidden state, class token dropped
  (get_img_features, layer_idx -2, type_feature "patch"), 24x24 patches -> 12x12 tokens of 4x1024 by
  merging 2x2 neighbours (reshape_hd_patches_2x2merge);
- the sub-crops are laid out as one (h_crop*12) x (w_crop*12) grid, each row closed by the learnt
  `sub_GN` separator; then one `glb_GN` separator; then the global 336 px view as a 12x12 grid with
  its row separators (hd_feature_transform, order "sub_glb"; add_image_newline);
- the 2-layer MLP `img_projection` (Linear, GELU, Linear) maps 4096 -> the decoder width.

The reference runs the tower on every crop slot, zero-padded ones included, and discards the padding
afterwards; only the real crops are run here (the same result for less work), and the tower stops at
the hidden state it uses instead of running its last layer for nothing.

Image positions: the reference marks them with negative ids; here with `config.image_token_id`
(`<|image|>`, see config.py), filled in order by masked_scatter. Pixel values reach the model at
prefill only; left-padded batches give the same tokens as pages one at a time.

Attention: the decoder and the tower take transformers' implementations by name ("sdpa" default,
"eager", "flash_attention_2"); nothing is forced (the seed system forced eager through config flags).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel, GenerationConfig, Phi3ForCausalLM

from polyocr.engines import vlm
from polyocr.engines.phi35v.config import Phi35VConfig

ENGINE = "phi35v"
DEFAULT_REPO = "microsoft/Phi-3.5-vision-instruct"
PREFIX = "model.vision_embed_tokens."
# The reference assigns the decoder's embedding to the image embedding as `wte`, so some saved copies
# of the checkpoint carry the embedding a second time under this name (vLLM's phi3v WeightsMapper maps
# it onto embed_tokens). It is accepted only in place of `model.embed_tokens.weight`.
WTE_ALIAS = "model.vision_embed_tokens.wte.weight"
EMBED = "model.embed_tokens.weight"
POSITION_IDS = PREFIX + "img_processor.vision_model.embeddings.position_ids"


def _sources(directory: Path, found: dict[str, tuple[Path, list[int]]]) -> dict[str, tuple[Path, str]]:
    """Model tensor name -> (file, name stored in the checkpoint): the published names themselves, the
    `wte` alias in place of a missing `model.embed_tokens.weight`, and without a saved CLIP
    `position_ids` buffer (a computed arange that older transformers releases kept in state dicts;
    refused if it holds anything else)."""
    sources = {name: (file, name) for name, (file, _) in found.items()}
    if WTE_ALIAS in sources and EMBED not in sources:
        sources[EMBED] = sources.pop(WTE_ALIAS)
    if POSITION_IDS in sources:
        file, _ = sources.pop(POSITION_IDS)
        with safe_open(file, framework="pt") as handle:
            ids = handle.get_tensor(POSITION_IDS)
        if not torch.equal(ids.flatten(), torch.arange(ids.numel(), dtype=ids.dtype)):
            raise vlm.CheckpointError(ENGINE, directory, f"{POSITION_IDS} is not 0..{ids.numel() - 1}")
    return sources


class CLIPHolder(nn.Module):
    """Holds transformers' CLIPVisionModel under the published name `img_processor.vision_model`: the
    reference's CLIPVisionModel (transformers 4.x) nested its tower as `vision_model`; 5.x flattened it."""

    def __init__(self, config: CLIPVisionConfig):
        super().__init__()
        self.vision_model = CLIPVisionModel(config)


class Phi35VImageEmbedding(nn.Module):
    """CLIP features of the crops, merged 2x2, laid out with separators, projected to the decoder width."""

    def __init__(self, config: Phi35VConfig):
        super().__init__()
        vision = config.vision_config
        assert isinstance(vision, CLIPVisionConfig)
        self.img_processor = CLIPHolder(vision)
        dim = vision.hidden_size * 4  # 2x2 neighbours merged into the channel dimension
        # Zeros in the reference's __init__; the checkpoint holds the trained values.
        self.glb_GN = nn.Parameter(torch.zeros(1, 1, dim))
        self.sub_GN = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.img_projection = nn.Sequential(
            nn.Linear(dim, config.hidden_size), nn.GELU(), nn.Linear(config.hidden_size, config.hidden_size)
        )
        self.crop_size = vision.image_size
        self.side = vision.image_size // vision.patch_size  # patches per crop side (24)
        layers = vision.num_hidden_layers
        index = config.vision_layer_idx
        # hidden_states[i] of CLIPVisionModel: 0 is the (pre-layer-normed) embedding, k the output of layer k.
        self.layers_used = index % (layers + 1)
        if not 0 < self.layers_used <= layers:
            raise ValueError(f"img_processor layer_idx {index} is outside the {layers}-layer tower")

    def crop_features(self, crops: torch.Tensor) -> torch.Tensor:
        """(crops, 3, 336, 336) -> (crops, 576, 1024): the used hidden state, class token dropped."""
        vision = self.img_processor.vision_model
        hidden = vision.embeddings(crops)
        hidden = vision.pre_layrnorm(hidden)
        for layer in vision.encoder.layers[: self.layers_used]:
            hidden = layer(hidden, None)
        return hidden[:, 1:]

    def merge_2x2(self, features: torch.Tensor, h_crop: int, w_crop: int) -> torch.Tensor:
        """(h_crop*w_crop, side*side, C) crops in raster order -> (h_crop*side/2, w_crop*side/2, 4C).

        Each token holds a 2x2 neighbourhood, channels ordered (row, column, C) as the reference's
        reshape_hd_patches_2x2merge; the crops are then placed side by side as one grid.
        """
        crops, _, channels = features.shape
        half = self.side // 2
        tokens = (
            features.reshape(crops, half, 2, half, 2, channels)
            .permute(0, 1, 3, 2, 4, 5)
            .reshape(h_crop, w_crop, half, half, 4 * channels)
        )
        return tokens.permute(0, 2, 1, 3, 4).reshape(h_crop * half, w_crop * half, 4 * channels)

    def with_row_separators(self, grid: torch.Tensor) -> torch.Tensor:
        """(rows, cols, D) -> (rows*(cols+1), D): `sub_GN` closes every row (add_image_newline)."""
        rows = grid.shape[0]
        newline = self.sub_GN.reshape(1, 1, -1).expand(rows, 1, -1).to(grid.dtype)
        return torch.cat([grid, newline], dim=1).reshape(-1, grid.shape[-1])

    def forward(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:
        """pixel_values (images, max_crops+1, 3, 336, 336), global view first; image_sizes (images, 2) as
        (height, width) of the HD-transformed page -> (image tokens of all images, hidden)."""
        dtype = self.img_projection[0].weight.dtype
        grids = [(int(h) // self.crop_size, int(w) // self.crop_size) for h, w in image_sizes.tolist()]
        used = torch.cat([pixel_values[i, : 1 + hc * wc] for i, (hc, wc) in enumerate(grids)])
        features = self.crop_features(used.to(dtype))
        pieces = []
        start = 0
        for hc, wc in grids:
            global_view = features[start : start + 1]
            sub = features[start + 1 : start + 1 + hc * wc]
            start += 1 + hc * wc
            pieces += [
                self.with_row_separators(self.merge_2x2(sub, hc, wc)),
                self.glb_GN.reshape(1, -1).to(features.dtype),
                self.with_row_separators(self.merge_2x2(global_view, 1, 1)),
            ]
        return self.img_projection(torch.cat(pieces))


class Phi35VForCausalLM(Phi3ForCausalLM):
    config_class = Phi35VConfig

    def __init__(self, config: Phi35VConfig):
        super().__init__(config)
        self.model.vision_embed_tokens = Phi35VImageEmbedding(config)

    @property
    def vision(self) -> Phi35VImageEmbedding:
        module = self.model.vision_embed_tokens
        assert isinstance(module, Phi35VImageEmbedding)
        return module

    def embed_with_images(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings with the image positions replaced, in order, by the image tokens."""
        embeds = self.model.embed_tokens(input_ids)
        if pixel_values is None:
            return embeds
        if image_sizes is None:
            raise ValueError("pixel_values were given without image_sizes")
        image_embeds = self.vision(pixel_values, image_sizes).to(embeds.dtype)
        return vlm.scatter_image_embeds(embeds, input_ids, image_embeds, self.config.image_token_id)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: Any = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        if inputs_embeds is None:
            assert input_ids is not None
            inputs_embeds = self.embed_with_images(input_ids, pixel_values, image_sizes)
        return super().forward(
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            labels=labels,
            use_cache=use_cache,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )

    def prepare_inputs_for_generation(self, *args: Any, is_first_iteration: bool = False, **kwargs: Any) -> dict:
        """As transformers', but the image inputs reach the model at prefill only."""
        inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration and kwargs.get("use_cache", True):
            inputs["pixel_values"] = None
            inputs["image_sizes"] = None
        return inputs

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: torch.dtype | str | None = None,
        attn_implementation: str = "sdpa",
        device: torch.device | str = "cpu",
        download: bool = False,
    ) -> Phi35VForCausalLM:
        """Load a published-layout checkpoint strictly; `dtype` defaults to the checkpoint's own.

        `attn_implementation` (transformers' name: "sdpa", "eager", "flash_attention_2") is used by the
        decoder and the CLIP tower alike. The model is built on the meta device and filled straight
        from the safetensors files on `device`: one copy of the weights, not two.
        """
        directory = vlm.resolve_checkpoint(ENGINE, path, download=download)
        config = Phi35VConfig.from_pretrained(directory)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        dtype = dtype or config.dtype or torch.float32
        device = torch.device(device)
        assert isinstance(config.vision_config, CLIPVisionConfig)
        config.vision_config._attn_implementation = attn_implementation
        with torch.device("meta"):
            model = cls._from_config(config, attn_implementation=attn_implementation, dtype=dtype)
        model.vision.img_processor.vision_model.config._attn_implementation = attn_implementation
        expected = {name: list(t.shape) for name, t in model.state_dict().items()}
        found = vlm.checkpoint_tensors(ENGINE, directory)
        sources = _sources(directory, found)
        problems = vlm.mismatches(expected, {name: found[stored][1] for name, (_, stored) in sources.items()})
        if problems:
            raise vlm.CheckpointError(ENGINE, directory, f"does not match the Phi-3.5-Vision architecture: {problems}")
        model.to_empty(device=device)
        targets = model.state_dict()
        with torch.no_grad():
            for file in sorted({file for file, _ in sources.values()}):
                with safe_open(file, framework="pt", device=str(device)) as handle:
                    for name, (where, stored) in sources.items():
                        if where == file:
                            targets[name].copy_(handle.get_tensor(stored))
        model.reset_buffers(device)
        if (directory / "generation_config.json").exists():
            model.generation_config = GenerationConfig.from_pretrained(directory)
        return model.eval()

    def reset_buffers(self, device: torch.device) -> None:
        """Rebuild the non-persistent buffers (rotary frequencies, CLIP position ids) that to_empty() left
        uninitialised: they are computed, not stored in the checkpoint."""
        from transformers.models.phi3.modeling_phi3 import Phi3RotaryEmbedding

        self.model.rotary_emb = Phi3RotaryEmbedding(self.config).to(device)
        embeddings = self.vision.img_processor.vision_model.embeddings
        embeddings.position_ids = torch.arange(embeddings.num_positions, device=device).expand((1, -1))
