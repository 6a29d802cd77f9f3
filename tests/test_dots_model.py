"""dots.ocr model: strict loading by published names, vision attention equivalence, patch order, generation."""

from __future__ import annotations

import json
import math
import shutil
from itertools import pairwise
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from polyocr.engines.dots import model as model_module
from polyocr.engines.dots import vision
from polyocr.engines.dots.config import DotsOCRConfig
from polyocr.engines.dots.model import (
    PACKED_DECODE,
    CheckpointError,
    DotsOCRForCausalLM,
    resolve_checkpoint,
)
from polyocr.engines.dots.vision import (
    VISION_ATTENTION_IMPLEMENTATIONS,
    rotary_angles,
    rotary_position_ids,
    vision_attention_unavailable,
)
from polyocr.engines.vlm import static_cache_length
from polyocr.errors import EngineUnavailable, VisionAttentionUnavailable
from tiny_dots import build_tiny_dots

PATCH = 3 * 14 * 14
# Images of different sizes, packed image-major: (t, h, w) in patches.
GRIDS = [(1, 4, 4), (1, 6, 4), (1, 2, 8)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_dots(tmp_path_factory.mktemp("dots") / "tiny")


@pytest.fixture(scope="module")
def model(checkpoint: Path) -> DotsOCRForCausalLM:
    return DotsOCRForCausalLM.from_pretrained(checkpoint)


def _pixels(grids: list[tuple[int, int, int]], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    patches = sum(t * h * w for t, h, w in grids)
    return torch.randn(patches, PATCH, generator=gen), torch.tensor(grids)


def _dense_mask_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu: torch.Tensor) -> torch.Tensor:
    """The reference's eager path, in float64: one (patches x patches) block mask over the whole batch."""
    n = q.shape[0]
    mask = torch.full((n, n), -math.inf, dtype=torch.float64)
    for start, end in pairwise(cu.tolist()):
        mask[start:end, start:end] = 0
    qd, kd, vd = (t.double().transpose(0, 1) for t in (q, k, v))
    scores = qd @ kd.transpose(1, 2) / math.sqrt(q.shape[-1]) + mask
    return (torch.softmax(scores, -1) @ vd).transpose(0, 1).to(q.dtype)


def _runnable(model: DotsOCRForCausalLM, name: str) -> bool:
    """Select `name`; an implementation that cannot run here must say so, not fail later or silently."""
    try:
        model.set_vision_attention(name)
    except VisionAttentionUnavailable as exc:
        assert name in str(exc) and vision_attention_unavailable(name, "cpu", torch.float32) in str(exc)
        return False
    return True


def test_published_config_and_names_load_strictly(checkpoint: Path, model: DotsOCRForCausalLM) -> None:
    published = json.loads((checkpoint / "config.json").read_text())
    assert published["vision_config"]["attn_implementation"] == "flash_attention_2"  # ignored, not obeyed
    assert model.vision_attention == "sdpa"
    saved = load_file(checkpoint / "model.safetensors")
    loaded = model.state_dict()
    assert set(saved) == set(loaded)
    for name in (
        "vision_tower.patch_embed.patchifier.proj.bias",
        "vision_tower.patch_embed.patchifier.norm.weight",
        "vision_tower.blocks.1.attn.qkv.weight",
        "vision_tower.blocks.0.mlp.fc3.weight",
        "vision_tower.post_trunk_norm.weight",
        "vision_tower.merger.ln_q.bias",
        "vision_tower.merger.mlp.2.bias",
        "model.layers.1.self_attn.q_proj.bias",
        "model.norm.weight",
        "lm_head.weight",
    ):
        assert torch.equal(saved[name], loaded[name]), name
    assert not any(".bias" in n for n in saved if ".blocks." in n)  # use_bias false in the vision blocks
    assert model.generation_config.eos_token_id == [0, 7]


def test_loaded_model_matches_one_built_in_memory(checkpoint: Path, model: DotsOCRForCausalLM) -> None:
    """Catches buffers left uninitialised by meta-device loading (the decoder's rotary table)."""
    reference = DotsOCRForCausalLM(DotsOCRConfig.from_pretrained(checkpoint)).eval()
    reference.load_state_dict(load_file(checkpoint / "model.safetensors"))
    ids = torch.tensor([[4, 2, 1, 1, 1, 1, 3, 50, 60, 5, 6]])
    pixels, grid = _pixels([(1, 4, 4)])
    with torch.no_grad():
        got = model(input_ids=ids, pixel_values=pixels, image_grid_thw=grid).logits
        want = reference(input_ids=ids, pixel_values=pixels, image_grid_thw=grid).logits
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_sharded_checkpoint_loads_the_same_weights(tmp_path: Path, model: DotsOCRForCausalLM) -> None:
    sharded = build_tiny_dots(tmp_path / "sharded", shards=3)
    assert len(list(sharded.glob("model-*-of-00003.safetensors"))) == 3
    again = DotsOCRForCausalLM.from_pretrained(sharded)
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, again.state_dict()[name]), name


def _edited(checkpoint: Path, tmp_path: Path, edit) -> Path:
    target = tmp_path / "edited"
    shutil.copytree(checkpoint, target)
    state = load_file(target / "model.safetensors")
    edit(state)
    save_file(state, target / "model.safetensors")
    return target


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        (
            lambda s: s.__setitem__(
                "vision_tower.blocks.1.attn.qkv_proj.weight", s.pop("vision_tower.blocks.1.attn.qkv.weight")
            ),
            [
                "1 missing tensors: vision_tower.blocks.1.attn.qkv.weight",
                "1 unexpected tensors: vision_tower.blocks.1.attn.qkv_proj.weight",
            ],
        ),
        (lambda s: s.pop("lm_head.weight"), ["1 missing tensors: lm_head.weight"]),
        (
            lambda s: s.__setitem__("vision_tower.merger.mlp.0.bias", s["vision_tower.merger.mlp.0.bias"][:-1]),
            ["vision_tower.merger.mlp.0.bias (checkpoint [127], model [128])"],
        ),
    ],
    ids=["renamed", "missing", "mis-shaped"],
)
def test_strict_loading_names_the_offending_tensors(checkpoint: Path, tmp_path: Path, edit, named) -> None:
    broken = _edited(checkpoint, tmp_path, edit)
    with pytest.raises(CheckpointError) as info:
        DotsOCRForCausalLM.from_pretrained(broken)
    message = str(info.value)
    assert str(broken) in message and "'dots'" in message
    for fragment in named:
        assert fragment in message


def test_sharded_index_that_disagrees_with_its_shards_fails(tmp_path: Path) -> None:
    sharded = build_tiny_dots(tmp_path / "sharded", shards=2)
    index_path = sharded / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["lm_head.weight"] = "model-00002-of-00002.safetensors"
    index["weight_map"]["model.norm.weight"] = "model-00001-of-00002.safetensors"
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"index disagrees.*lm_head\.weight"):
        DotsOCRForCausalLM.from_pretrained(sharded)


def test_resolve_checkpoint_uses_only_local_files(checkpoint: Path, tmp_path: Path) -> None:
    assert resolve_checkpoint(checkpoint) == checkpoint
    with pytest.raises(EngineUnavailable, match="hf download nobody/no-such-model"):
        resolve_checkpoint("nobody/no-such-model")
    with pytest.raises(EngineUnavailable, match="not a checkpoint directory"):
        resolve_checkpoint(tmp_path / "missing" / "dir")


def test_rotary_ids_follow_the_2x2_merge_window_order() -> None:
    """The patch-order trap: raster order here still runs, but the merger would fuse the wrong patches."""
    ids = rotary_position_ids(torch.tensor([[1, 4, 6]]), merge=2)
    windows = [ids[i : i + 4].tolist() for i in range(0, 24, 4)]
    assert windows == [
        [[0, 0], [0, 1], [1, 0], [1, 1]],
        [[0, 2], [0, 3], [1, 2], [1, 3]],
        [[0, 4], [0, 5], [1, 4], [1, 5]],
        [[2, 0], [2, 1], [3, 0], [3, 1]],
        [[2, 2], [2, 3], [3, 2], [3, 3]],
        [[2, 4], [2, 5], [3, 4], [3, 5]],
    ]
    two = rotary_position_ids(torch.tensor([[1, 2, 2], [1, 2, 4]]), merge=2)
    assert two[:4].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1]] and two[4:8].tolist() == windows[0]
    angles = rotary_angles(torch.tensor([[1, 4, 6]]), head_dim=16, merge=2, device=torch.device("cpu"))
    inv_freq = 1.0 / 10000 ** (torch.arange(0, 8, 2) / 8)
    torch.testing.assert_close(angles[5], torch.cat([0 * inv_freq, 3 * inv_freq]))  # row 0, column 3


@pytest.mark.parametrize("name", VISION_ATTENTION_IMPLEMENTATIONS)
@pytest.mark.parametrize("grids", [GRIDS[:1], GRIDS], ids=["one-image", "three-sizes"])
def test_vision_attention_implementations_agree(
    model: DotsOCRForCausalLM, name: str, grids: list, monkeypatch: pytest.MonkeyPatch
) -> None:
    pixels, grid = _pixels(grids)
    ids = torch.tensor([[4, 2] + [1] * (pixels.shape[0] // 4) + [3, 50, 60, 5, 6]])
    monkeypatch.setattr(vision, "_ATTENTION", {**vision._ATTENTION, "reference": _dense_mask_attention})
    with torch.no_grad():
        model.vision_tower.attention = "reference"
        want_vision = model.vision_tower(pixels, grid)
        want_logits = model(input_ids=ids, pixel_values=pixels, image_grid_thw=grid).logits
        if not _runnable(model, name):
            pytest.skip(f"{name} cannot run on CPU float32: {vision_attention_unavailable(name, 'cpu', torch.float32)}")
        if name == "eager":  # force several query chunks per image
            monkeypatch.setattr(vision, "EAGER_SCORE_BUDGET", 2 * 16 * 3)
        got_vision = model.vision_tower(pixels, grid)
        got_logits = model(input_ids=ids, pixel_values=pixels, image_grid_thw=grid).logits
    model.vision_tower.attention = "sdpa"
    assert got_vision.shape == (pixels.shape[0] // 4, 32)
    torch.testing.assert_close(got_vision, want_vision, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_logits, want_logits, rtol=1e-5, atol=1e-5)


def test_varlen_reports_itself_unavailable_where_it_cannot_run(model: DotsOCRForCausalLM) -> None:
    reason = vision_attention_unavailable("varlen", "cpu", torch.float32)
    if not reason:
        pytest.skip("varlen_attn runs on this CPU build")
    with pytest.raises(VisionAttentionUnavailable, match="'varlen' cannot run on cpu"):
        model.set_vision_attention("varlen")
    assert model.vision_attention == "sdpa"
    with pytest.raises(ValueError, match="unknown vision attention 'flash'"):
        model.set_vision_attention("flash")


def test_images_in_a_batch_do_not_see_each_other(model: DotsOCRForCausalLM) -> None:
    pixels, grid = _pixels(GRIDS)
    with torch.no_grad():
        batch = model.vision_tower(pixels, grid)
        sizes = [t * h * w for t, h, w in GRIDS]
        alone = [model.vision_tower(p, grid[i : i + 1]) for i, p in enumerate(pixels.split(sizes))]
    torch.testing.assert_close(batch, torch.cat(alone), rtol=1e-5, atol=1e-6)


def _prompt(image_tokens: int, text: list[int]) -> list[int]:
    return [4, 2] + [1] * image_tokens + [3, *text, 5, 6]


GEN_GRIDS = [(1, 4, 4), (1, 6, 8), (1, 2, 4)]
GEN_PROMPTS = [_prompt(4, [50, 60, 70]), _prompt(12, [80]), _prompt(2, [90, 91, 92, 93, 94])]
GREEDY = {"max_new_tokens": 6, "min_new_tokens": 6, "do_sample": False, "pad_token_id": 0}


def _padded_batch() -> dict:
    width = max(map(len, GEN_PROMPTS))
    return {
        "input_ids": torch.tensor([[0] * (width - len(p)) + p for p in GEN_PROMPTS]),
        "attention_mask": torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in GEN_PROMPTS]),
        "pixel_values": torch.cat([_pixels([g], seed=i)[0] for i, g in enumerate(GEN_GRIDS)]),
        "image_grid_thw": torch.tensor(GEN_GRIDS),
    }


def test_left_padded_batch_generates_what_pages_one_at_a_time_do(model: DotsOCRForCausalLM) -> None:
    calls = []
    hook = model.vision_tower.register_forward_hook(lambda *_: calls.append(1))
    try:
        alone = [
            model.generate(
                input_ids=torch.tensor([p]),
                attention_mask=torch.ones(1, len(p), dtype=torch.long),
                pixel_values=_pixels([g], seed=i)[0],
                image_grid_thw=torch.tensor([g]),
                **GREEDY,
            )[0, len(p) :].tolist()
            for i, (p, g) in enumerate(zip(GEN_PROMPTS, GEN_GRIDS, strict=True))
        ]
        inputs = _padded_batch()
        batch = model.generate(**inputs, **GREEDY)[:, inputs["input_ids"].shape[1] :].tolist()
    finally:
        hook.remove()
    assert batch == alone
    assert len(calls) == 4  # the vision tower runs at prefill only: once per generate call


@pytest.mark.parametrize("cache", ["dynamic", "static"])
@pytest.mark.parametrize("attn", [PACKED_DECODE, "sdpa"])
def test_decoder_attention_implementations_agree(
    checkpoint: Path, attn: str, cache: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The packed one-token decoding attention (the default) and SDPA against eager, left-padded batch."""
    fallback_query_lengths = []
    sdpa = model_module.sdpa_attention_forward

    def spy(module, query, *args, **kwargs):
        fallback_query_lengths.append(query.shape[2])
        return sdpa(module, query, *args, **kwargs)

    monkeypatch.setattr(model_module, "sdpa_attention_forward", spy)
    settings = {**GREEDY, "output_scores": True, "return_dict_in_generate": True}
    if cache == "static":
        settings["cache_implementation"] = "static"
    runs = {}
    for name in ("eager", attn):
        model = DotsOCRForCausalLM.from_pretrained(checkpoint, attn_implementation=name)
        assert model.config._attn_implementation == name
        with torch.no_grad():
            runs[name] = model.generate(**_padded_batch(), **settings)
    assert torch.equal(runs[attn].sequences, runs["eager"].sequences)
    for got, want in zip(runs[attn].scores, runs["eager"].scores, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    if attn == PACKED_DECODE:  # prefill went to SDPA, every decoding step to the packed path
        assert fallback_query_lengths and 1 not in fallback_query_lengths


def test_rounded_static_cache_generates_the_same_tokens(checkpoint: Path) -> None:
    """The engine rounds the static cache length up (GPU alignment); the extra slots must stay masked."""
    model = DotsOCRForCausalLM.from_pretrained(checkpoint)
    inputs = _padded_batch()
    prompt, new = inputs["input_ids"].shape[1], GREEDY["max_new_tokens"]
    settings = {**GREEDY, "cache_implementation": "static", "output_scores": True, "return_dict_in_generate": True}
    runs = {}
    for multiple in (1, 64):
        length = static_cache_length(prompt, new, multiple)
        model.__dict__.pop("_previous_max_cache_length", None)  # else transformers keeps the larger cache
        with torch.no_grad():
            runs[multiple] = model.generate(**inputs, **settings, max_cache_len=length)
        assert runs[multiple].past_key_values.get_max_length() == length
    assert static_cache_length(prompt, new, 1) == prompt + new - 1  # transformers' own length
    assert static_cache_length(prompt, new, 64) % 64 == 0 and static_cache_length(prompt, new, 64) > prompt + new
    assert torch.equal(runs[64].sequences, runs[1].sequences)
    for got, want in zip(runs[64].scores, runs[1].scores, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_image_token_count_must_match_the_images(model: DotsOCRForCausalLM) -> None:
    pixels, grid = _pixels([(1, 4, 4)])
    with pytest.raises(ValueError, match="3 image tokens but the images give 4"):
        model(input_ids=torch.tensor([_prompt(3, [50])]), pixel_values=pixels, image_grid_thw=grid)


def test_pixels_follow_the_model_dtype(checkpoint: Path) -> None:
    """The reference casts pixels to bfloat16 whatever the model's dtype; here they follow the model.

    float64 stands in for "not bfloat16": CPU bfloat16 matmuls in torch 2.13 return NaNs at random when
    OMP_THREAD_LIMIT is below OMP_NUM_THREADS, which would make this test flaky for reasons not ours.
    """
    wide = DotsOCRForCausalLM.from_pretrained(checkpoint, dtype="float64", attn_implementation="eager")
    pixels, grid = _pixels([(1, 4, 4)])
    with torch.no_grad():
        logits = wide(input_ids=torch.tensor([_prompt(4, [50])]), pixel_values=pixels, image_grid_thw=grid).logits
    assert logits.dtype == torch.float64 and torch.isfinite(logits).all()
    assert wide.config._attn_implementation == "eager"
