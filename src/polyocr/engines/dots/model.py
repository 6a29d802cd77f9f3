"""DotsOCRForCausalLM: transformers' Qwen2 decoder fed by the dots.ocr vision tower, loaded strictly.

The decoder is transformers' own Qwen2ForCausalLM (published names `model.*`, `lm_head.*`); the
vision tower (`vision_tower.*`) replaces the `<|imgpad|>` embeddings, in order, with one vector per
2x2 patch window. Generation goes through transformers' GenerationMixin: pixel values are used at
prefill only, left-padded batches give the same tokens as pages one at a time.

The engine's own fast path on CUDA is decode.SlotDecoder (continuous batching on a static cache,
one compiled CUDA-graph step over this model's weights; benchmarks/dots-throughput-gpu.md). Through
generate() (measured in benchmarks/dots-gpu.md, H100, one full page): on a GPU pass
`cache_implementation="static"` to `generate`; transformers then compiles the one-token decoding
step itself (4.0-4.4 ms/token at batch 1, 4.3-4.6 ms per batch-8 step, against 20 ms with the
dynamic cache). The first generate per batch size pays the compilation (30-60 s); later calls reuse
the cache and the compiled step when prompt + new tokens fit the largest cache so far, so also pass
`max_cache_len` = static_cache_length(largest prompt, max_new_tokens) (rounded up to a multiple of
256: an unaligned length costs 15-33% per step) and keep the batch size fixed. The
decoder attention defaults to PACKED_DECODE (below), which is what makes batches pay off. On CPU
keep the dynamic cache (transformers compiles only on accelerators).

Loading is strict: the checkpoint must hold exactly the tensors this architecture has, with the
same shapes; anything missing, unexpected or mis-shaped is an error naming the tensors, instead of
the silent random initialisation that makes a wrong checkpoint emit plausible garbage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from transformers import AttentionInterface, AttentionMaskInterface, GenerationConfig, Qwen2ForCausalLM
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask
from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

from polyocr.engines import vlm
from polyocr.engines.dots.config import DotsOCRConfig, DotsVisionConfig
from polyocr.engines.dots.vision import DotsVisionTransformer

ENGINE = "dots"
DEFAULT_REPO = "rednote-hilab/dots.ocr"
# What the published config.json says. dots.mocr (rednote-hilab/dots.mocr, dots.ocr-1.5) publishes the
# same: its config.json (huggingface.co/rednote-hilab/dots.mocr/blob/main/config.json) has dots.ocr's
# model_type, architectures, auto_map and every dimension; so does the copy in contrapuntal/dots.mocr
# weights/DotsMOCR/config.json (tests/fixtures/models/dots.mocr). Anything else is refused, naming
# what the file says: a checkpoint of another architecture is not loaded into this one.
MODEL_TYPES = frozenset({"dots_ocr"})
ARCHITECTURES = frozenset({"DotsOCRForCausalLM"})


# The decoder's default attention: transformers' SDPA for prefill; for one-token decoding steps,
# the query heads packed onto their key/value head (12 query heads share 2 KV heads here) and two
# batched matmuls. transformers' SDPA path copies every cached key and value 6 times per step
# (repeat_kv) once a mask is present, which a static cache always has: at batch 8 with a
# 5,000-token page that copy is most of the step time; SDPA on the packed query instead runs on too
# few thread blocks at batch 1 (see benchmarks/dots-gpu.md). The matmuls read each cached key and
# value once and spread over the cache length. Registered under its own name so that other models
# keep transformers' SDPA.
PACKED_DECODE = "sdpa_packed_decode"


def sdpa_packed_decode(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    is_causal: bool | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    groups = getattr(module, "num_key_value_groups", 1)
    one_token = query.shape[2] == 1 and (attention_mask is None or attention_mask.shape[1] == 1)
    if not one_token or groups == 1 or dropout:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    batch, heads, _, dim = query.shape
    # Query head h uses KV head h // groups (repeat_kv's layout): [batch, kv_heads, groups, dim]; the
    # one-token mask [batch, 1, 1, keys] broadcasts over both.
    packed = query.reshape(batch, heads // groups, groups, dim)
    scores = torch.matmul(packed, key.transpose(2, 3)) * (scaling if scaling is not None else dim**-0.5)
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, float("-inf"))
        else:
            scores = scores + attention_mask
    probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(value.dtype)
    out = torch.matmul(probs, value)
    return out.reshape(batch, heads, 1, dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(PACKED_DECODE, sdpa_packed_decode)
AttentionMaskInterface.register(PACKED_DECODE, sdpa_mask)

# A static cache's length is the row length of the packed-decode products above (scores over every
# cache slot, then probabilities times values): engines/vlm.py rounds it (STATIC_CACHE_MULTIPLE).


class CheckpointError(vlm.CheckpointError):
    """A checkpoint directory whose tensors do not match the dots.ocr architecture."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(ENGINE, path, reason)


def resolve_checkpoint(path_or_repo_id: str | Path = DEFAULT_REPO, download: bool = False) -> Path:
    """A local checkpoint directory for a path or a hub repo id (local cache; the hub only if `download`)."""
    return vlm.resolve_checkpoint(ENGINE, path_or_repo_id, download=download)


def check_config(directory: Path) -> None:
    """Refuse a config.json whose model_type or architectures are not dots.ocr's published ones."""
    import json

    try:
        raw = json.loads((directory / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CheckpointError(directory, f"config.json unreadable ({exc})") from None
    raw = raw if isinstance(raw, dict) else {}
    model_type = raw.get("model_type")
    architectures = raw.get("architectures") or []
    if model_type not in MODEL_TYPES or (architectures and not ARCHITECTURES & set(architectures)):
        raise CheckpointError(
            directory,
            f"config.json says model_type {model_type!r}, architectures {architectures!r}; the dots engines "
            f"load {sorted(MODEL_TYPES)} / {sorted(ARCHITECTURES)} checkpoints only (rednote-hilab/dots.ocr, "
            "rednote-hilab/dots.mocr)",
        )


def checkpoint_tensors(directory: Path) -> dict[str, tuple[Path, list[int]]]:
    """Every tensor of a safetensors checkpoint (single file or sharded with an index): file and shape."""
    try:
        return vlm.checkpoint_tensors(ENGINE, directory)
    except vlm.CheckpointError as exc:
        raise CheckpointError(directory, exc.reason.removeprefix(f"checkpoint {directory}: ")) from None


class DotsOCRForCausalLM(Qwen2ForCausalLM):
    config_class = DotsOCRConfig

    def __init__(self, config: DotsOCRConfig):
        super().__init__(config)
        assert isinstance(config.vision_config, DotsVisionConfig)  # DotsOCRConfig converts it when built
        self.vision_tower = DotsVisionTransformer(config.vision_config)

    def set_vision_attention(self, name: str) -> None:
        """Switch the vision attention ("sdpa", "varlen", "flash_attention_2", "eager") after a probe run."""
        self.vision_tower.set_attention(name)

    @property
    def vision_attention(self) -> str:
        return self.vision_tower.attention

    def embed_with_images(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings with the `<|imgpad|>` positions replaced, in order, by the image tokens."""
        embeds = self.model.embed_tokens(input_ids)
        if pixel_values is None:
            return embeds
        if image_grid_thw is None:
            raise ValueError("pixel_values were given without image_grid_thw")
        image_embeds = self.vision_tower(pixel_values, image_grid_thw).to(embeds.dtype)
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
        image_grid_thw: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> Any:
        if inputs_embeds is None:
            inputs_embeds = self.embed_with_images(input_ids, pixel_values, image_grid_thw)
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
            inputs["image_grid_thw"] = None
        return inputs

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        *,
        dtype: torch.dtype | str | None = None,
        attn_implementation: str = PACKED_DECODE,
        vision_attention: str = "sdpa",
        device: torch.device | str = "cpu",
        download: bool = False,
    ) -> DotsOCRForCausalLM:
        """Load a published-layout checkpoint strictly; `dtype` defaults to the checkpoint's own.

        `attn_implementation` is the decoder's: PACKED_DECODE (default), or transformers' "sdpa",
        "eager", "flash_attention_2"; `vision_attention` is the vision tower's (see vision.py).

        The model is built on the meta device and its tensors are filled straight from the
        safetensors files on `device`, so loading needs one copy of the weights, not two.
        """
        directory = resolve_checkpoint(path, download=download)
        check_config(directory)
        config = DotsOCRConfig.from_pretrained(directory)
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        dtype = dtype or config.dtype or torch.float32
        device = torch.device(device)
        with torch.device("meta"):
            model = cls._from_config(config, attn_implementation=attn_implementation, dtype=dtype)
        expected = {name: list(t.shape) for name, t in model.state_dict().items()}
        found = checkpoint_tensors(directory)
        problems = vlm.mismatches(expected, {name: shape for name, (_file, shape) in found.items()})
        if problems:
            raise CheckpointError(directory, f"does not match the dots.ocr architecture: {problems}")
        model.to_empty(device=device)
        targets = model.state_dict()
        with torch.no_grad():
            for file in sorted({file for file, _ in found.values()}):
                with safe_open(file, framework="pt", device=str(device)) as handle:
                    for key in handle.keys():  # noqa: SIM118
                        targets[key].copy_(handle.get_tensor(key))
        model.model.rotary_emb = Qwen2RotaryEmbedding(model.config).to(device)
        if (directory / "generation_config.json").exists():
            model.generation_config = GenerationConfig.from_pretrained(directory)
        model.eval()
        model.vision_tower.set_attention(vision_attention)
        return model
