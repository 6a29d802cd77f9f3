"""dots.ocr processor: resize arithmetic, token counts, the exact patch layout and prompt framing."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from polyocr.engines.dots.processor import (
    IMAGE_MEAN,
    IMAGE_STD,
    DotsProcessor,
    image_token_count,
    patchify,
    prepare_image,
    smart_resize,
)
from polyocr.engines.dots.prompts import PROMPTS, TASK_MODES, PromptMode, prompt_text
from polyocr.errors import EngineError
from polyocr.types import TaskKind
from tiny_dots import DOTS_TOKENS, PROCESSOR_TEMPLATE, TOKENIZER_TEMPLATE, build_tiny_dots
from tiny_tokenizer import train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(DOTS_TOKENS, eos_token="<|endoftext|>")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_dots(tmp_path_factory.mktemp("dots") / "dots.ocr")


# (width, height, limits) -> (resized width, resized height, image tokens), worked out by hand from the
# reference rule: round to multiples of 28; above max scale down by sqrt(area/max) and floor; below
# min scale up by sqrt(min/area) and ceil; sides never below 28.
RESIZE_TABLE = [
    ((1654, 2339, {}), (1652, 2352, 4956)),  # A4 at 200 DPI, the reference's PDF rendering
    ((2480, 3508, {}), (2492, 3500, 11125)),  # A4 at 300 DPI, still under the maximum
    ((4000, 6000, {}), (2716, 4088, 14162)),  # 24 MP photo: max clamp, floor
    ((640, 480, {}), (644, 476, 391)),
    ((20, 20, {}), (56, 56, 4)),  # min clamp, ceil
    ((28, 28, {}), (56, 56, 4)),
    ((10, 1900, {}), (28, 1904, 68)),  # 1:190, the narrow side held at one merge window
    ((3000, 30, {}), (2996, 28, 107)),  # 100:1 strip
    ((100, 100, {"min_pixels": 200704}), (448, 448, 256)),  # user-set minimum
    ((1654, 2339, {"max_pixels": 1003520}), (840, 1176, 1260)),  # user-set maximum (a small GPU)
]


@pytest.mark.parametrize(("case", "expected"), RESIZE_TABLE)
def test_resize_and_token_count(case, expected):
    width, height, limits = case
    resized_h, resized_w = smart_resize(height, width, **limits)
    assert (resized_w, resized_h, image_token_count(resized_h, resized_w)) == expected
    assert resized_h % 28 == 0 and resized_w % 28 == 0


def test_resize_agrees_with_transformers_where_both_apply():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_resize

    for (width, height, limits), _ in RESIZE_TABLE:
        if min(width, height) >= 28:
            hf = hf_resize(
                height,
                width,
                factor=28,
                min_pixels=limits.get("min_pixels", 3136),
                max_pixels=limits.get("max_pixels", 11289600),
            )
            assert smart_resize(height, width, **limits) == hf


def test_resize_refuses_extreme_aspect_and_bad_limits():
    with pytest.raises(ValueError, match="aspect ratio 201:1"):
        smart_resize(10, 2010)
    with pytest.raises(ValueError, match="min_pixels"):
        smart_resize(100, 100, min_pixels=10_000, max_pixels=5_000)


def test_patch_layout_is_merge_window_order():
    """Row k of the output is the patch the vision tower's merger expects at k, channel-major."""
    c, y, x = np.meshgrid(np.arange(3), np.arange(28), np.arange(56), indexing="ij")
    pixels = (c * 10_000 + y * 100 + x).astype(np.float32)  # every value names its (c, y, x)
    rows = patchify(pixels)
    assert rows.shape == (8, 588)
    # 2 x 4 patches: window (0, 0) holds patches (0,0) (0,1) (1,0) (1,1); window (0, 1) the next four.
    order = [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (0, 3), (1, 2), (1, 3)]
    for k, (py, px) in enumerate(order):
        expected = pixels[:, py * 14 : (py + 1) * 14, px * 14 : (px + 1) * 14].reshape(-1)
        np.testing.assert_array_equal(rows[k], expected)
    assert rows[4, 0] == 0 * 10_000 + 0 * 100 + 28  # first value of patch (0, 2): c 0, y 0, x 28


def test_pixels_match_qwen2vl_image_processor_configured_as_published():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    reference = Qwen2VLImageProcessorPil(
        patch_size=14,
        merge_size=2,
        temporal_patch_size=1,
        min_pixels=3136,
        max_pixels=11289600,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
    )
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (130, 190, 3), dtype=np.uint8))  # not a multiple of 28
    ours = prepare_image(image)
    theirs = reference(images=[image], return_tensors="np")
    assert ours.resized_size == (196, 140) and ours.grid_thw == (1, 10, 14)
    assert theirs["image_grid_thw"].tolist() == [[1, 10, 14]]
    np.testing.assert_allclose(ours.pixel_values, theirs["pixel_values"], atol=1e-5)
    assert ours.token_count == 35


def test_prepared_image_maps_points_both_ways():
    prepared = prepare_image(Image.new("RGB", (1654, 2339), "white"))
    assert prepared.resized_size == (1652, 2352)
    x, y = prepared.to_page(*prepared.to_model(1000.0, 2000.0))
    assert (round(x, 6), round(y, 6)) == (1000.0, 2000.0)
    assert prepared.to_page(1652, 2352) == (1654, 2339)


def test_prompt_ids_follow_the_trained_framing(checkpoint, tokenizer):
    processor = DotsProcessor.from_pretrained(checkpoint)
    ids = processor.prompt_ids(PROMPTS[PromptMode.OCR], 6)
    t = tokenizer.convert_tokens_to_ids
    text_ids = tokenizer.encode(PROMPTS[PromptMode.OCR], add_special_tokens=False)
    assert ids == [
        t("<|user|>"),
        t("<|img|>"),
        *[t("<|imgpad|>")] * 6,
        t("<|endofimg|>"),
        *text_ids,
        t("<|endofuser|>"),
        t("<|assistant|>"),
    ]
    assert processor.eos_token_ids == [t("<|endoftext|>"), t("<|endofassistant|>")]
    assert (processor.min_pixels, processor.max_pixels) == (3136, 11289600)
    assert DotsProcessor.from_pretrained(checkpoint, max_pixels=1003520).max_pixels == 1003520


def test_template_from_chat_template_json_when_the_tokenizer_has_none(tmp_path, tokenizer):
    """transformers' tokenizer does not read chat_template.json; the processor does."""
    root = shutil.copytree(build_tiny_dots(tmp_path / "a"), tmp_path / "b")
    (root / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((root / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (root / "tokenizer_config.json").write_text(json.dumps(config))
    processor = DotsProcessor.from_pretrained(root)
    assert processor.tokenizer.chat_template is None and processor.chat_template == PROCESSOR_TEMPLATE
    assert processor.prompt_ids("Hi", 2) == DotsProcessor.from_pretrained(tmp_path / "a").prompt_ids("Hi", 2)


def test_list_content_of_the_published_template_lacks_the_user_framing(tokenizer):
    """Why the processor renders string content: the list branch drops <|user|> and <|endofuser|>."""
    rendered = tokenizer.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]}],
        chat_template=PROCESSOR_TEMPLATE,
        tokenize=False,
        add_generation_prompt=True,
    )
    assert rendered == " <|img|><|imgpad|><|endofimg|>Hi<|assistant|>"


def test_a_template_with_other_framing_is_refused(tokenizer):
    chatml = "{% for m in messages %}<|im_start|>{{ m.content }}{% endfor %}"
    processor = DotsProcessor(tokenizer, chat_template=chatml, source="ckpt")
    with pytest.raises(EngineError, match="ckpt: its chat template renders"):
        processor.prompt_ids("x", 4)


def test_batch_is_left_padded_with_images_in_order(tokenizer):
    processor = DotsProcessor(tokenizer, chat_template=TOKENIZER_TEMPLATE)
    small = processor.prepare(Image.new("RGB", (56, 56), "white"))  # 4 x 4 patches, 4 tokens
    large = processor.prepare(Image.new("RGB", (112, 84), "black"))  # 6 x 8 patches, 12 tokens
    batch = processor.batch([small, large], [PROMPTS[PromptMode.OCR]] * 2)
    assert batch.input_ids.shape[0] == 2
    assert batch.prompt_lengths[1] - batch.prompt_lengths[0] == 8
    pad = batch.input_ids.shape[1] - batch.prompt_lengths[0]
    assert pad == 8
    assert batch.attention_mask[0].tolist() == [0] * pad + [1] * batch.prompt_lengths[0]
    assert batch.attention_mask[1].tolist() == [1] * batch.input_ids.shape[1]
    assert batch.input_ids[0, :pad].tolist() == [processor.pad_token_id] * pad
    assert batch.input_ids[0, pad:].tolist() == processor.prompt_ids(PROMPTS[PromptMode.OCR], 4)
    assert batch.image_grid_thw.tolist() == [[1, 4, 4], [1, 6, 8]]
    assert batch.pixel_values.shape == (16 + 48, 588)
    np.testing.assert_array_equal(batch.pixel_values[16:].numpy(), large.pixel_values)
    image_id = processor.image_token_id
    assert [int((row == image_id).sum()) for row in batch.input_ids] == [small.token_count, large.token_count]


# sha256 of each prompt text as it stands in rednote-hilab/dots.ocr dots_ocr/utils/prompts.py (be77dff).
PROMPT_SHA256 = {
    PromptMode.LAYOUT_ALL: "16ff71ac5d218f35e5b3db41240b6e70741498bc099db3fa922ce1ff972e3b2f",
    PromptMode.LAYOUT_ONLY: "d10f3720942d901f61cd1c313a6ba8305ec5e9674c56907ea92f82ad0d5f5fbf",
    PromptMode.OCR: "8ee4c4b75c200c7f8877e3344318a5bb2280f3878d42007b2c717b3c46a11865",
    PromptMode.GROUNDING_OCR: "b18d62ea1e6619773144ba448c1f149ff694f9a8b673472b7706ae67c0f110a9",
}


def test_prompt_texts_are_the_published_ones():
    for mode, digest in PROMPT_SHA256.items():
        assert hashlib.sha256(PROMPTS[mode].encode()).hexdigest() == digest, mode
    assert PROMPTS[PromptMode.LAYOUT_ALL].startswith("Please output the layout information from the PDF image")
    assert set(TASK_MODES) == set(TaskKind)


def test_grounding_prompt_appends_the_box():
    text = prompt_text(PromptMode.GROUNDING_OCR, (10, 20.7, 300, 400))
    assert text.endswith("Bounding Box:\n[10, 20, 300, 400]")
    with pytest.raises(ValueError, match="needs a box"):
        prompt_text(PromptMode.GROUNDING_OCR)
