"""The dots.ocr vision tower, with attention implementations that never build a page-sized mask.

The reference code runs its vision attention through flash-attn, or else through an eager path that
builds one dense (patches x patches) mask and score matrix for the whole batch: about 44 GiB for one
200-DPI page, which is what "empty output without flash-attn" was. Every implementation here
attends within each image only (images are packed image-major, `cu_seqlens` marks the boundaries):

- "sdpa": torch's scaled_dot_product_attention per image with no mask, so it can pick its flash,
  memory-efficient or cuDNN kernel;
- "varlen": torch.nn.attention.varlen.varlen_attn over the packed images (CUDA, half precision);
- "flash_attention_2": flash_attn_varlen_func, when the flash-attn package is installed and runs;
- "eager": plain matmul + float32 softmax per image, in query chunks, so peak memory grows
  linearly with the number of patches.

Patches arrive in 2x2 merge-window order (what Qwen2-VL's image processor emits); the rotary row and
column ids are generated in the same order, and the merger fuses groups of 4 consecutive patches.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from functools import cache
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.qwen2.modeling_qwen2 import Qwen2RMSNorm

from polyocr.engines.dots.config import DotsVisionConfig
from polyocr.errors import VisionAttentionUnavailable

VISION_ATTENTION_IMPLEMENTATIONS = ("sdpa", "varlen", "flash_attention_2", "eager")

# Eager attention materialises (heads x chunk x patches) float32 scores; this caps their element
# count (64 Mi elements = 256 MiB), whatever the image size.
EAGER_SCORE_BUDGET = 64 * 1024 * 1024

ROTARY_THETA = 10000.0


# torch's SDPA backends by the names used in plan settings and benchmarks ("sdpa" picks among them).
SDPA_BACKENDS = ("cudnn", "flash", "efficient", "math")


def sdpa_backends(names: Sequence[str]) -> list:
    """torch.nn.attention.SDPBackend values for names of SDPA_BACKENDS, in priority order."""
    from torch.nn.attention import SDPBackend

    table = {
        "cudnn": SDPBackend.CUDNN_ATTENTION,
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "math": SDPBackend.MATH,
    }
    unknown = [n for n in names if n not in table]
    if unknown:
        raise ValueError(f"unknown SDPA backend(s) {', '.join(unknown)} (known: {', '.join(SDPA_BACKENDS)})")
    return [table[n] for n in names]


def _segments(cu_seqlens: torch.Tensor) -> list[tuple[int, int]]:
    return list(pairwise(cu_seqlens.tolist()))


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    segments = _segments(cu_seqlens)
    if len(segments) == 1:  # one image: no copy into a packed output
        qi, ki, vi = (t.transpose(0, 1).unsqueeze(0) for t in (q, k, v))
        return F.scaled_dot_product_attention(qi, ki, vi).squeeze(0).transpose(0, 1)
    out = torch.empty_like(q)
    for start, end in segments:
        qi, ki, vi = (t[start:end].transpose(0, 1).unsqueeze(0) for t in (q, k, v))
        out[start:end] = F.scaled_dot_product_attention(qi, ki, vi).squeeze(0).transpose(0, 1)
    return out


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    heads, head_dim = q.shape[1], q.shape[2]
    scale = 1.0 / math.sqrt(head_dim)
    out = torch.empty_like(q)
    for start, end in _segments(cu_seqlens):
        length = end - start
        ki = k[start:end].transpose(0, 1)
        vi = v[start:end].transpose(0, 1)
        chunk = max(1, EAGER_SCORE_BUDGET // (heads * length))
        for q_start in range(start, end, chunk):
            q_end = min(q_start + chunk, end)
            qi = q[q_start:q_end].transpose(0, 1)
            scores = torch.matmul(qi, ki.transpose(1, 2)) * scale
            probs = torch.softmax(scores, dim=-1, dtype=torch.float32).to(v.dtype)
            out[q_start:q_end] = torch.matmul(probs, vi).transpose(0, 1)
    return out


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    from torch.nn.attention.varlen import varlen_attn

    max_len = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
    return varlen_attn(q, k, v, cu_seqlens, cu_seqlens, max_len, max_len)


def flash_attention_2(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor) -> torch.Tensor:
    from flash_attn import flash_attn_varlen_func

    max_len = int((cu_seqlens[1:] - cu_seqlens[:-1]).max())
    return flash_attn_varlen_func(q, k, v, cu_seqlens, cu_seqlens, max_len, max_len, causal=False)


AttentionFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Rotary = tuple[torch.Tensor, torch.Tensor]  # (cos, sin), each [patches, 1, head_dim/2], float32

_ATTENTION: dict[str, AttentionFn] = {
    "sdpa": sdpa_attention,
    "varlen": varlen_attention,
    "flash_attention_2": flash_attention_2,
    "eager": eager_attention,
}


@cache
def _probe(name: str, device: torch.device, dtype: torch.dtype) -> str:
    """Run the implementation once on two tiny packed images; '' when it ran, else the reason."""
    try:
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(12, 2, 64, generator=gen).to(device, dtype) for _ in range(3))
        cu = torch.tensor([0, 5, 12], dtype=torch.int32, device=device)
        out = _ATTENTION[name](q, k, v, cu)
        ref = sdpa_attention(q.float(), k.float(), v.float(), cu)
        error = ((out.float() - ref).norm() / ref.norm()).item()
    except Exception as exc:  # any failure (import, missing kernel, bad dtype) means "cannot run here"
        first_line = str(exc).split("\n", 1)[0]
        return f"{type(exc).__name__}: {first_line[:200]}"
    if not error < 2e-2:
        return f"ran but disagreed with SDPA (relative error {error:.2e})"
    return ""


def vision_attention_unavailable(name: str, device: torch.device | str, dtype: torch.dtype) -> str:
    """Why `name` cannot run on this device and dtype ('' when it can), found by running it."""
    if name not in _ATTENTION:
        return f"unknown vision attention {name!r} (known: {', '.join(VISION_ATTENTION_IMPLEMENTATIONS)})"
    return _probe(name, torch.device(device), dtype)


def rotary_position_ids(grid_thw: torch.Tensor, merge: int) -> torch.Tensor:
    """(row, column) of every patch, image-major, each image in 2x2 merge-window order: [patches, 2]."""
    ids = []
    for t, h, w in grid_thw.tolist():
        rows = torch.arange(h).unsqueeze(1).expand(h, w)
        cols = torch.arange(w).unsqueeze(0).expand(h, w)
        window = [x.reshape(h // merge, merge, w // merge, merge).permute(0, 2, 1, 3).flatten() for x in (rows, cols)]
        ids.append(torch.stack(window, dim=-1).repeat(t, 1))
    return torch.cat(ids)


def rotary_angles(grid_thw: torch.Tensor, head_dim: int, merge: int, device: torch.device) -> torch.Tensor:
    """Per-patch rotary angles [patches, head_dim/2] in float32: 1/4 of head_dim from rows, 1/4 from columns."""
    dim = head_dim // 2
    inv_freq = 1.0 / (ROTARY_THETA ** (torch.arange(0, dim, 2, dtype=torch.float32, device=device) / dim))
    pos = rotary_position_ids(grid_thw, merge).to(device)
    return (pos.unsqueeze(-1).float() * inv_freq).flatten(1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate [patches, heads, head_dim] by angles whose cos/sin are [patches, 1, head_dim/2], float32.

    The same arithmetic as the reference's x*cos + rotate_half(x)*sin over duplicated angles, in
    float32, written per half so that no full-width float32 copy of x is made (it is memory-bound).
    """
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    out = torch.empty_like(x)
    out[..., :half] = x1 * cos - x2 * sin
    out[..., half:] = x2 * cos + x1 * sin
    return out


class DotsVisionAttention(nn.Module):
    def __init__(self, config: DotsVisionConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.embed_dim // config.num_attention_heads
        self.qkv = nn.Linear(config.embed_dim, 3 * config.embed_dim, bias=config.use_bias)
        self.proj = nn.Linear(config.embed_dim, config.embed_dim, bias=config.use_bias)

    def forward(
        self, x: torch.Tensor, cu_seqlens: torch.Tensor, rotary: Rotary, attention: AttentionFn
    ) -> torch.Tensor:
        q, k, v = self.qkv(x).reshape(x.shape[0], 3, self.num_heads, self.head_dim).unbind(1)
        q, k = apply_rotary(q, *rotary), apply_rotary(k, *rotary)
        return self.proj(attention(q, k, v, cu_seqlens).reshape(x.shape[0], -1))


class DotsSwiGLU(nn.Module):
    def __init__(self, config: DotsVisionConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.embed_dim, config.intermediate_size, bias=config.use_bias)
        self.fc2 = nn.Linear(config.intermediate_size, config.embed_dim, bias=config.use_bias)
        self.fc3 = nn.Linear(config.embed_dim, config.intermediate_size, bias=config.use_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.silu(self.fc1(x)) * self.fc3(x))


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Qwen2RMSNorm's arithmetic, as a function of tensors."""
    h = x.to(torch.float32)
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return weight * h.to(x.dtype)


def block_qkv(
    x: torch.Tensor,
    norm: torch.Tensor,
    eps: float,
    qkv: torch.Tensor,
    qkv_bias: torch.Tensor | None,
    cos: torch.Tensor,
    sin: torch.Tensor,
    heads: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A block's norm, qkv projection and rotary: what DotsVisionBlock does before attention."""
    q, k, v = F.linear(_rms_norm(x, norm, eps), qkv, qkv_bias).reshape(x.shape[0], 3, heads, -1).unbind(1)
    return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v


def block_out(
    x: torch.Tensor,
    attended: torch.Tensor,
    proj: torch.Tensor,
    proj_bias: torch.Tensor | None,
    norm: torch.Tensor,
    eps: float,
    fc1: torch.Tensor,
    fc1_bias: torch.Tensor | None,
    fc2: torch.Tensor,
    fc2_bias: torch.Tensor | None,
    fc3: torch.Tensor,
    fc3_bias: torch.Tensor | None,
) -> torch.Tensor:
    """A block's output projection, residual, norm and SwiGLU: what DotsVisionBlock does after attention."""
    x = x + F.linear(attended.reshape(x.shape[0], -1), proj, proj_bias)
    h = _rms_norm(x, norm, eps)
    return x + F.linear(F.silu(F.linear(h, fc1, fc1_bias)) * F.linear(h, fc3, fc3_bias), fc2, fc2_bias)


# The functions a block runs when the tower is "fused": plain here, torch.compile'd ones on CUDA
# (set_fused). They take the weights as arguments, so one compiled graph serves all 42 blocks, and
# are compiled with a dynamic patch count, so pages of other sizes do not recompile.
_FUSED: dict[str, Callable] = {"qkv": block_qkv, "out": block_out}


class DotsVisionBlock(nn.Module):
    def __init__(self, config: DotsVisionConfig):
        super().__init__()
        self.norm1 = Qwen2RMSNorm(config.embed_dim, eps=config.rms_norm_eps)
        self.attn = DotsVisionAttention(config)
        self.norm2 = Qwen2RMSNorm(config.embed_dim, eps=config.rms_norm_eps)
        self.mlp = DotsSwiGLU(config)

    def forward(
        self,
        x: torch.Tensor,
        cu_seqlens: torch.Tensor,
        rotary: Rotary,
        attention: AttentionFn,
        fused: dict[str, Callable] | None = None,
    ) -> torch.Tensor:
        if fused is None:
            x = x + self.attn(self.norm1(x), cu_seqlens, rotary, attention)
            return x + self.mlp(self.norm2(x))
        attn, mlp = self.attn, self.mlp
        q, k, v = fused["qkv"](
            x, self.norm1.weight, self.norm1.variance_epsilon, attn.qkv.weight, attn.qkv.bias, *rotary, attn.num_heads
        )
        return fused["out"](
            x,
            attention(q, k, v, cu_seqlens),
            attn.proj.weight,
            attn.proj.bias,
            self.norm2.weight,
            self.norm2.variance_epsilon,
            mlp.fc1.weight,
            mlp.fc1.bias,
            mlp.fc2.weight,
            mlp.fc2.bias,
            mlp.fc3.weight,
            mlp.fc3.bias,
        )


class DotsPatchEmbed(nn.Module):
    def __init__(self, config: DotsVisionConfig):
        super().__init__()
        self.num_channels = config.num_channels
        self.patch_size = config.patch_size
        self.proj = nn.Conv2d(
            config.num_channels, config.embed_dim, kernel_size=config.patch_size, stride=config.patch_size
        )
        self.norm = Qwen2RMSNorm(config.embed_dim, eps=config.rms_norm_eps)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        patches = pixel_values.view(-1, self.num_channels, self.patch_size, self.patch_size)
        return self.norm(self.proj(patches).flatten(1))


class DotsPatchifier(nn.Module):
    """Holds the patch embedding under the published name `patch_embed.patchifier`."""

    def __init__(self, config: DotsVisionConfig):
        super().__init__()
        self.patchifier = DotsPatchEmbed(config)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.patchifier(pixel_values)


class DotsPatchMerger(nn.Module):
    """LayerNorm per patch, then each group of 4 consecutive (one 2x2 window) patches -> one token."""

    def __init__(self, config: DotsVisionConfig):
        super().__init__()
        self.group = config.embed_dim * config.spatial_merge_size**2
        self.ln_q = nn.LayerNorm(config.embed_dim, eps=1e-6)
        self.mlp = nn.Sequential(
            nn.Linear(self.group, self.group), nn.GELU(), nn.Linear(self.group, config.hidden_size)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.ln_q(x).view(-1, self.group))


class DotsVisionTransformer(nn.Module):
    """pixel_values [patches, 3*14*14] + grid_thw [images, 3] -> [patches/4, hidden_size]."""

    def __init__(self, config: DotsVisionConfig, attention: str = "sdpa"):
        super().__init__()
        self.config = config
        self.patch_embed = DotsPatchifier(config)
        self.blocks = nn.ModuleList(DotsVisionBlock(config) for _ in range(config.num_hidden_layers))
        self.post_trunk_norm = (
            Qwen2RMSNorm(config.embed_dim, eps=config.rms_norm_eps) if config.post_norm else nn.Identity()
        )
        self.merger = DotsPatchMerger(config)
        self.attention = attention
        # With "sdpa": torch's backends to use, in priority order (None: torch's own choice).
        self.sdpa_backends: tuple[str, ...] | None = None
        self.fused: dict[str, Callable] | None = None

    def set_fused(self, on: bool, compile: bool | None = None) -> None:
        """Run each block as two functions of tensors around the attention; with `compile` (default: on
        CUDA) through torch.compile, which fuses the norms, rotary, SiLU and residuals."""
        if not on:
            self.fused = None
            return
        if compile is None:
            compile = self.merger.ln_q.weight.device.type == "cuda"
        if not compile:
            self.fused = dict(_FUSED)
            return
        self.fused = {name: torch.compile(fn, dynamic=True) for name, fn in _FUSED.items()}

    def set_sdpa_backends(self, names: Sequence[str] | None) -> None:
        if names:
            sdpa_backends(names)  # validates the names
        self.sdpa_backends = tuple(names) if names else None

    def set_attention(self, name: str) -> None:
        """Switch the attention implementation, refusing one that does not run on this device and dtype."""
        param = self.merger.ln_q.weight
        reason = vision_attention_unavailable(name, param.device, param.dtype)
        if name not in _ATTENTION:
            raise ValueError(reason)
        if reason:
            raise VisionAttentionUnavailable(
                f"vision attention {name!r} cannot run on {param.device} with {param.dtype}: {reason}"
            )
        self.attention = name

    def forward(self, pixel_values: torch.Tensor, grid_thw: torch.Tensor) -> torch.Tensor:
        dtype = self.patch_embed.patchifier.proj.weight.dtype
        x = self.patch_embed(pixel_values.to(dtype))
        sizes = grid_thw[:, 1] * grid_thw[:, 2]
        cu_seqlens = F.pad(torch.repeat_interleave(sizes, grid_thw[:, 0]).cumsum(0, dtype=torch.int32), (1, 0)).to(
            x.device
        )
        if int(cu_seqlens[-1]) != x.shape[0]:
            raise ValueError(f"grid_thw {grid_thw.tolist()} covers {int(cu_seqlens[-1])} patches, got {x.shape[0]}")
        head_dim = self.config.embed_dim // self.config.num_attention_heads
        angles = rotary_angles(grid_thw, head_dim, self.config.spatial_merge_size, x.device)
        rotary = (angles.cos().unsqueeze(1), angles.sin().unsqueeze(1))  # once, shared by all blocks
        attention = _ATTENTION[self.attention]
        backends = self.sdpa_backends if self.attention == "sdpa" else None
        from torch.nn.attention import sdpa_kernel

        with sdpa_kernel(sdpa_backends(backends), set_priority=True) if backends else nullcontext():
            for block in self.blocks:
                x = block(x, cu_seqlens, rotary, attention, self.fused)
        return self.merger(self.post_trunk_norm(x))
