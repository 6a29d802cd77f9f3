"""The Phi-3.5-Vision port against the reference: forward pass, HD transform arithmetic, strict loading.

The conformance test re-implements the reference forward pass plainly (torch only, no transformers
module), from modeling_phi3_v.py and image_embedding_phi3_v.py of microsoft/Phi-3.5-vision-instruct:
CLIP on every crop slot (zero padding included), hidden_states[-2] without the class token,
reshape_hd_patches_2x2merge, add_image_newline, [sub crops, glb_GN, global view], img_projection,
index_put into the token embeddings, then the Phi3 decoder with its LongRoPE (short factors below
original_max_position_embeddings, the sqrt(1 + log(s)/log(n)) scaling). It reads the tiny checkpoint's
tensors by their published names, so it also checks that each name plays the reference's role.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from polyocr.engines.phi35v.model import Phi35VForCausalLM  # noqa: E402
from polyocr.engines.phi35v.processor import (  # noqa: E402
    CROP,
    IMAGE_MEAN,
    IMAGE_STD,
    Phi35VProcessor,
    crop_grid,
    hd_size,
    image_token_count,
    prepare_image,
    resized_size,
)
from polyocr.engines.vlm import CheckpointError  # noqa: E402
from tiny_phi35v import build_tiny_phi35v  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_phi35v(tmp_path_factory.mktemp("phi35v") / "Phi-3.5-vision-instruct")


@pytest.fixture(scope="module")
def model(checkpoint: Path) -> Phi35VForCausalLM:
    return Phi35VForCausalLM.from_pretrained(checkpoint, dtype=torch.float32, attn_implementation="sdpa")


@pytest.fixture(scope="module")
def processor(checkpoint: Path, model: Phi35VForCausalLM) -> Phi35VProcessor:
    return Phi35VProcessor.from_pretrained(checkpoint, image_token_id=model.config.image_token_id)


def _page(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


# ---------------------------------------------------------------------------- the reference, plainly


def _layer_norm(x, w, b, eps=1e-5):
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, eps)


def _attention(q, k, v, heads, causal):
    b, n, d = q.shape
    q, k, v = (t.reshape(b, n, heads, d // heads).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // heads)
    if causal:
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
    return (torch.softmax(scores.float(), -1) @ v).transpose(1, 2).reshape(b, n, d)


def reference_clip_hidden_states(w, cfg, pixels):
    p = "model.vision_embed_tokens.img_processor.vision_model."
    patches = torch.nn.functional.conv2d(pixels, w[p + "embeddings.patch_embedding.weight"], stride=cfg["patch_size"])
    x = patches.flatten(2).transpose(1, 2)
    cls = w[p + "embeddings.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], 1) + w[p + "embeddings.position_embedding.weight"]
    x = _layer_norm(x, w[p + "pre_layrnorm.weight"], w[p + "pre_layrnorm.bias"])
    states = [x]
    for i in range(cfg["num_hidden_layers"]):
        q = f"{p}encoder.layers.{i}."
        h = _layer_norm(x, w[q + "layer_norm1.weight"], w[q + "layer_norm1.bias"])
        proj = [h @ w[f"{q}self_attn.{n}_proj.weight"].T + w[f"{q}self_attn.{n}_proj.bias"] for n in "qkv"]
        a = _attention(*proj, cfg["num_attention_heads"], causal=False)
        x = x + a @ w[q + "self_attn.out_proj.weight"].T + w[q + "self_attn.out_proj.bias"]
        h = _layer_norm(x, w[q + "layer_norm2.weight"], w[q + "layer_norm2.bias"])
        h = h @ w[q + "mlp.fc1.weight"].T + w[q + "mlp.fc1.bias"]
        h = h * torch.sigmoid(1.702 * h)  # quick_gelu
        x = x + h @ w[q + "mlp.fc2.weight"].T + w[q + "mlp.fc2.bias"]
        states.append(x)
    return states


def reference_merge(features, h_crop, w_crop):
    """reshape_hd_patches_2x2merge, step by step as the reference writes it."""
    n, length, c = features.shape
    side = int(length**0.5)
    images = n // (h_crop * w_crop)
    return (
        features.reshape(n, side, side, c)
        .reshape(n, side // 2, 2, side // 2, 2, c)
        .permute(0, 1, 3, 2, 4, 5)
        .reshape(n, -1, 4 * c)
        .reshape(images, h_crop, w_crop, side // 2, side // 2, -1)
        .permute(0, 1, 3, 2, 4, 5)
        .reshape(images, h_crop * side // 2, w_crop * side // 2, 4 * c)
    )


def reference_newline(hd, sub_gn):
    images, h, _, dim = hd.shape
    return torch.cat([hd, sub_gn.expand(images, h, -1, -1)], dim=2).reshape(images, -1, dim)


def reference_image_features(w, cfg, pixel_values, image_sizes):
    images, crops = pixel_values.shape[:2]
    states = reference_clip_hidden_states(w, cfg["vision_config"], pixel_values.flatten(0, 1))
    features = states[-2][:, 1:].reshape(images, crops, -1, cfg["vision_config"]["hidden_size"])
    p = "model.vision_embed_tokens."
    glb = reference_newline(reference_merge(features[:, 0], 1, 1), w[p + "sub_GN"])
    out = []
    for i, (h, wd) in enumerate(image_sizes.tolist()):
        hc, wc = h // 336, wd // 336
        sub = reference_newline(reference_merge(features[i, 1 : 1 + hc * wc], hc, wc), w[p + "sub_GN"])
        out += [sub.squeeze(0), w[p + "glb_GN"].squeeze(0), glb[i]]
    x = torch.cat(out)
    x = x @ w[p + "img_projection.0.weight"].T + w[p + "img_projection.0.bias"]
    x = torch.nn.functional.gelu(x)
    return x @ w[p + "img_projection.2.weight"].T + w[p + "img_projection.2.bias"]


def _rms(x, weight, eps):
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps))


def reference_logits(w, cfg, input_ids, pixel_values, image_sizes):
    embeds = w["model.embed_tokens.weight"][input_ids]
    positions = torch.nonzero(input_ids == cfg["image_token_id"], as_tuple=True)
    embeds = embeds.index_put(positions, reference_image_features(w, cfg, pixel_values, image_sizes))
    heads, hidden = cfg["num_attention_heads"], cfg["hidden_size"]
    head_dim = hidden // heads
    n = input_ids.shape[1]
    rope = cfg["rope_scaling"]
    factors = torch.tensor(rope["long_factor"] if n > cfg["original_max_position_embeddings"] else rope["short_factor"])
    inv_freq = 1.0 / (factors * cfg["rope_theta"] ** (torch.arange(0, head_dim, 2).float() / head_dim))
    scale = cfg["max_position_embeddings"] / cfg["original_max_position_embeddings"]
    scaling = math.sqrt(1 + math.log(scale) / math.log(cfg["original_max_position_embeddings"]))
    freqs = torch.arange(n).float()[:, None] * inv_freq
    cos, sin = (torch.cat([freqs, freqs], -1).cos() * scaling), (torch.cat([freqs, freqs], -1).sin() * scaling)

    def rotate(t):
        half = t.shape[-1] // 2
        return t * cos + torch.cat([-t[..., half:], t[..., :half]], -1) * sin

    x = embeds
    eps = cfg["rms_norm_eps"]
    for i in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = _rms(x, w[p + "input_layernorm.weight"], eps)
        qkv = h @ w[p + "self_attn.qkv_proj.weight"].T
        q, k, v = qkv.split(hidden, dim=-1)  # 32 KV heads = 32 query heads in Phi-3.5-V
        q, k, v = (t.reshape(1, n, heads, head_dim).transpose(1, 2) for t in (q, k, v))
        q, k = rotate(q), rotate(k)
        scores = q @ k.transpose(-1, -2) / math.sqrt(head_dim)
        scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool).triu(1), float("-inf"))
        a = (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(1, n, hidden)
        x = x + a @ w[p + "self_attn.o_proj.weight"].T
        h = _rms(x, w[p + "post_attention_layernorm.weight"], eps)
        gate, up = (h @ w[p + "mlp.gate_up_proj.weight"].T).chunk(2, dim=-1)
        x = x + (up * torch.nn.functional.silu(gate)) @ w[p + "mlp.down_proj.weight"].T
    return _rms(x, w["model.norm.weight"], eps) @ w["lm_head.weight"].T


@pytest.mark.parametrize("size", [(500, 300), (260, 700)])
def test_forward_matches_the_reference(
    checkpoint: Path, model: Phi35VForCausalLM, processor: Phi35VProcessor, size: tuple[int, int]
) -> None:
    weights = load_file(checkpoint / "model.safetensors")
    cfg = json.loads((checkpoint / "config.json").read_text())
    batch = processor.batch([processor.prepare(_page(size))], ["Read the text."])
    inputs = batch.model_inputs("cpu", torch.float32)
    with torch.inference_mode():
        ours = model(**inputs).logits
        theirs = reference_logits(weights, cfg, inputs["input_ids"], inputs["pixel_values"], inputs["image_sizes"])
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs, atol=2e-5, rtol=1e-5)


# ---------------------------------------------------------------------------- the HD transform


def reference_hd_size(width: int, height: int, hd_num: int) -> tuple[int, int]:
    """calc_hd_transform_size + calc_padded_size of image_processing_phi3_v.py, with numpy as there."""
    transposed = width < height
    if transposed:
        width, height = height, width
    ratio = width / height
    scale = 1
    while scale * np.ceil(scale / ratio) <= hd_num:
        scale += 1
    scale -= 1
    new_width = int(scale * 336)
    new_height = int(new_width / ratio)
    padded_height = int(np.ceil(new_height / 336) * 336)
    return (padded_height, new_width) if transposed else (new_width, padded_height)


def reference_tokens(width: int, height: int, hd_num: int) -> int:
    new_width, new_height = reference_hd_size(width, height, hd_num)
    return int((new_height // 336 * new_width // 336 + 1) * 144 + 1 + (new_height // 336 + 1) * 12)


PAGE_SIZES = [
    (336, 336),
    (100, 100),
    (1000, 40),
    (40, 1000),
    (1654, 2339),  # A4 portrait at 200 DPI
    (2339, 1654),
    (1275, 1650),  # US letter at 150 DPI
    (2550, 3300),
    (800, 600),
    (1920, 1080),
    (500, 300),
    (337, 1),
    (3000, 3000),
    (699, 700),
]


@pytest.mark.parametrize("num_crops", [1, 4, 16])
def test_crop_grid_and_token_count_follow_the_reference(num_crops: int) -> None:
    for width, height in PAGE_SIZES:
        if reference_hd_size(width, height, num_crops)[1 if width >= height else 0] == 0:
            with pytest.raises(ValueError, match="too elongated"):  # the reference resizes to zero rows
                hd_size(width, height, num_crops)
            continue
        assert hd_size(width, height, num_crops) == reference_hd_size(width, height, num_crops), (width, height)
        assert image_token_count(width, height, num_crops) == reference_tokens(width, height, num_crops)
        rows, cols = crop_grid(width, height, num_crops)
        assert 1 <= rows * cols <= num_crops


def test_known_grids() -> None:
    # A4 portrait at 200 DPI with the published num_crops 4: transposed, scale 2 -> 672 x int(672/1.414)=475,
    # padded to 672: 2x2 crops; (4+1)*144 + 1 + (2+1)*12 = 757 image tokens.
    assert hd_size(1654, 2339, 4) == (672, 672) and image_token_count(1654, 2339, 4) == 757
    # 1920x1080: scale 2 (3 * ceil(3/1.78) = 6 > 4), 672 x 378 padded to 672: 2x2 as well.
    assert crop_grid(1920, 1080, 4) == (2, 2)
    # 1000x300: scale 3 (3 * ceil(0.9) = 3), 1008 x 302 padded to 336: one row of 3 crops.
    assert crop_grid(1000, 300, 4) == (1, 3) and image_token_count(1000, 300, 4) == 4 * 144 + 1 + 24
    assert crop_grid(1654, 2339, 16) == (4, 3)
    assert image_token_count(336, 336, 4) == 757  # small pages are enlarged to the crop budget
    assert image_token_count(336, 336, 1) == 2 * 144 + 1 + 24  # one crop plus the global view


@pytest.mark.parametrize("size", [(500, 300), (260, 700), (2339, 1654)])
def test_pixel_layout_global_view_first_then_crops_in_raster_order(size: tuple[int, int]) -> None:
    image = _page(size, seed=1)
    prepared = prepare_image(image, 4)
    width, height = prepared.hd_size
    assert (width, height) == hd_size(*size, 4)
    rows, cols = prepared.grid
    pixels = prepared.pixel_values
    assert pixels.shape == (5, 3, CROP, CROP) and pixels.dtype == np.float32
    # The HD page, rebuilt from the crops in raster order, with white padding (normalised) above and below.
    page = np.zeros((3, height, width), np.float32)
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        page[:, r * CROP : (r + 1) * CROP, c * CROP : (c + 1) * CROP] = pixels[1 + k]
    white = (1 - np.asarray(IMAGE_MEAN, np.float32)) / np.asarray(IMAGE_STD, np.float32)
    long_side, short_side = max(size), min(size)
    _, resized_short = resized_size(long_side, short_side, 4)
    top = int((math.ceil(resized_short / CROP) * CROP - resized_short) / 2)
    if top:  # padding_336 pads the short side with white, half of it before the page
        first = page[:, 0, :] if size[0] >= size[1] else page[:, :, 0]
        np.testing.assert_allclose(first, np.broadcast_to(white[:, None], first.shape), rtol=1e-6)
    global_view = torch.nn.functional.interpolate(
        torch.from_numpy(page)[None], size=(CROP, CROP), mode="bicubic", align_corners=False
    )[0].numpy()
    np.testing.assert_allclose(pixels[0], global_view, atol=1e-5)
    assert not pixels[1 + rows * cols :].any()  # zero crops pad the stack to num_crops + 1


# ---------------------------------------------------------------------------- loading


def test_loads_by_published_names_with_attention_never_forced(checkpoint: Path, model: Phi35VForCausalLM) -> None:
    names = set(load_file(checkpoint / "model.safetensors"))
    assert "model.vision_embed_tokens.img_processor.vision_model.encoder.layers.0.self_attn.q_proj.weight" in names
    assert {"model.vision_embed_tokens.glb_GN", "model.vision_embed_tokens.sub_GN", "lm_head.weight"} <= names
    assert "model.layers.0.self_attn.qkv_proj.weight" in names and "model.layers.0.mlp.gate_up_proj.weight" in names
    # config.json says _attn_implementation eager (the seed system's flag); polyocr's choice wins.
    assert model.config._attn_implementation == "sdpa"
    assert model.vision.img_processor.vision_model.config._attn_implementation == "sdpa"
    eager = Phi35VForCausalLM.from_pretrained(checkpoint, attn_implementation="eager")
    assert eager.vision.img_processor.vision_model.config._attn_implementation == "eager"


def _copy(checkpoint: Path, target: Path, edit) -> Path:
    shutil.copytree(checkpoint, target)
    state = load_file(target / "model.safetensors")
    edit(state)
    save_file(state, target / "model.safetensors", metadata={"format": "pt"})
    return target


def test_strict_loading_names_what_is_wrong(checkpoint: Path, tmp_path: Path) -> None:
    missing = _copy(checkpoint, tmp_path / "missing", lambda s: s.pop("model.vision_embed_tokens.glb_GN"))
    with pytest.raises(CheckpointError, match=r"1 missing tensors: model\.vision_embed_tokens\.glb_GN"):
        Phi35VForCausalLM.from_pretrained(missing)
    extra = _copy(checkpoint, tmp_path / "extra", lambda s: s.update({"model.extra.weight": torch.zeros(2)}))
    with pytest.raises(CheckpointError, match=r"1 unexpected tensors: model\.extra\.weight"):
        Phi35VForCausalLM.from_pretrained(extra)
    name = "model.vision_embed_tokens.img_projection.0.weight"
    shaped = _copy(checkpoint, tmp_path / "shaped", lambda s: s.update({name: torch.zeros(3, 3)}))
    with pytest.raises(CheckpointError, match=r"mis-shaped tensors: model\.vision_embed_tokens\.img_projection\.0"):
        Phi35VForCausalLM.from_pretrained(shaped)


def test_the_wte_alias_and_shards_load(checkpoint: Path, model: Phi35VForCausalLM, tmp_path: Path) -> None:
    alias = _copy(
        checkpoint,
        tmp_path / "alias",
        lambda s: s.update({"model.vision_embed_tokens.wte.weight": s.pop("model.embed_tokens.weight")}),
    )
    loaded = Phi35VForCausalLM.from_pretrained(alias)
    assert torch.equal(loaded.model.embed_tokens.weight, model.model.embed_tokens.weight)
    buffer = "model.vision_embed_tokens.img_processor.vision_model.embeddings.position_ids"
    saved = _copy(checkpoint, tmp_path / "buffer", lambda s: s.update({buffer: torch.arange(577)[None]}))
    assert torch.equal(Phi35VForCausalLM.from_pretrained(saved).lm_head.weight, model.lm_head.weight)
    wrong = _copy(checkpoint, tmp_path / "wrong", lambda s: s.update({buffer: torch.zeros(1, 577, dtype=torch.long)}))
    with pytest.raises(CheckpointError, match=r"position_ids is not 0\.\.576"):
        Phi35VForCausalLM.from_pretrained(wrong)
    sharded = build_tiny_phi35v(tmp_path / "sharded", shards=3)
    assert len(list(sharded.glob("*.safetensors"))) == 3
    again = Phi35VForCausalLM.from_pretrained(sharded)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values(), strict=True))


def test_prompt_is_the_model_cards_with_the_image_between_chunks(processor: Phi35VProcessor) -> None:
    image = processor.prepare(_page((500, 300)))
    ids = processor.prompt_ids("Read.", image.token_count)
    tok = processor.tokenizer
    bos = tok.bos_token_id
    before, after = tok("<|user|>\n").input_ids, tok("\nRead.<|end|>\n<|assistant|>\n").input_ids
    # tokenizer_config.json says add_bos_token: each chunk starts with BOS, as the reference's
    # tokenizer(chunk) does with the Llama tokenizer.
    expected = [bos, *before] + [processor.image_token_id] * image.token_count + [bos, *after]
    assert ids == expected
    assert ids.count(processor.image_token_id) == image.token_count == 757
    assert tok.decode(ids, skip_special_tokens=False).count("<|end|>") == 1
    assert tok.convert_tokens_to_ids("<|end|>") in processor.eos_token_ids
