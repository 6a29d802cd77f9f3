"""Golden tests from the published checkpoints' own files (tests/fixtures/models/, SOURCES.md there):
each engine's tokens, prompts, end tokens, budgets and parsers as the models' authors have them.

Each expected value cites where the authors state it. Tokenizers are rebuilt from the published
vocabularies; no weights are needed (the engines' processors are loaded from the files alone).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from polyocr import defaults  # noqa: E402
from polyocr.engines.base import create_engine  # noqa: E402
from polyocr.engines.dots.processor import DotsProcessor, image_token_count, smart_resize  # noqa: E402
from polyocr.engines.dots.prompts import PROMPTS, PromptMode  # noqa: E402
from polyocr.engines.hf import deepseek_ocr, got  # noqa: E402
from polyocr.engines.hf.deepseek_ocr import parse_deepseek_grounding, windowed_no_repeat_ngram  # noqa: E402
from polyocr.engines.hf.spec import image_only_processor  # noqa: E402
from polyocr.types import EnginePlan, Task, TaskKind  # noqa: E402

MODELS = Path(__file__).resolve().parent / "fixtures" / "models"
QWEN2 = MODELS / "qwen2-vl"
DOTS = MODELS / "dots.ocr"
DEEPSEEK = MODELS / "deepseek-ocr-2"


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


# ---------------------------------------------------------------------------- dots.ocr


@pytest.fixture(scope="module")
def dots_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dots.ocr tokenizer rebuilt from the published files: Qwen2's vocab.json and merges.txt (the
    same sizes as dots.ocr's, SOURCES.md) plus dots.ocr's tokenizer_config.json with its added tokens,
    saved with a tokenizer.json as the checkpoint ships one."""
    root = tmp_path_factory.mktemp("dots-published")
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(QWEN2 / name, root)
    for name in ("tokenizer_config.json", "special_tokens_map.json", "chat_template.json"):
        shutil.copy(DOTS / name, root)
    tokenizer = transformers.AutoTokenizer.from_pretrained(root)
    tokenizer.save_pretrained(root)
    for name in ("preprocessor_config.json", "generation_config.json", "config.json"):
        shutil.copy(DOTS / name, root)
    return root


def test_dots_tokenizer_from_the_published_files(dots_dir: Path) -> None:
    processor = DotsProcessor.from_pretrained(dots_dir)
    ids = {t: processor.tokenizer.convert_tokens_to_ids(t) for t in processor.token_ids}
    # The ids of the published tokenizer_config.json (added_tokens_decoder) and config.json
    # (image_token_id 151665), as SOURCES.md records them.
    assert ids == {
        "<|imgpad|>": 151665,
        "<|img|>": 151666,
        "<|endofimg|>": 151667,
        "<|user|>": 151670,
        "<|endofuser|>": 151671,
        "<|assistant|>": 151672,
        "<|endoftext|>": 151643,
        "<|endofassistant|>": 151673,
    }
    assert processor.image_token_id == _json(DOTS / "config.json")["image_token_id"] == 151665
    # generation_config.json: eos_token_id [151643, 151673]; the engine reads it from the file.
    assert processor.eos_token_ids == _json(DOTS / "generation_config.json")["eos_token_id"] == [151643, 151673]
    assert processor.pad_token_id == 151680  # [PAD], the tokenizer's pad_token


def _qwen2_tokens(height: int, width: int, min_pixels: int, max_pixels: int, factor: int = 28) -> int:
    """Image tokens of Qwen2-VL's smart_resize (qwen_vl_utils, transformers' Qwen2VLImageProcessor):
    sides rounded to multiples of patch x merge, scaled into [min_pixels, max_pixels]; one token per
    merge x merge patches (temporal patch 1 for dots.ocr)."""
    h, w = round(height / factor) * factor, round(width / factor) * factor
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = math.floor(height / beta / factor) * factor, math.floor(width / beta / factor) * factor
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return (h // 14) * (w // 14) // 4


@pytest.fixture(scope="module")
def dots_processor(dots_dir: Path) -> DotsProcessor:
    return DotsProcessor.from_pretrained(dots_dir)


@pytest.mark.parametrize("size", [(1654, 2339), (2480, 3508), (800, 600), (40, 30), (5000, 7000)])
@pytest.mark.parametrize("mode", list(PromptMode))
def test_dots_prompt_ids_for_every_mode(dots_processor: DotsProcessor, size: tuple[int, int], mode: PromptMode) -> None:
    """<|user|><|img|> + N x <|imgpad|> + <|endofimg|> + prompt + <|endofuser|><|assistant|> (the
    reference's vLLM path, dots_ocr/model/inference.py), N from the published preprocessor."""
    processor = dots_processor
    pre = _json(DOTS / "preprocessor_config.json")
    assert (pre["min_pixels"], pre["max_pixels"], pre["patch_size"], pre["merge_size"], pre["temporal_patch_size"]) == (
        3136,
        11_289_600,
        14,
        2,
        1,
    )
    width, height = size
    # The engine's resize under the limits it read from the file (prepare_image's arithmetic).
    resized_h, resized_w = smart_resize(height, width, min_pixels=processor.min_pixels, max_pixels=processor.max_pixels)
    tokens = image_token_count(resized_h, resized_w)
    expected_n = _qwen2_tokens(height, width, pre["min_pixels"], pre["max_pixels"])
    assert tokens == expected_n
    prompt = PROMPTS[mode] if mode != PromptMode.GROUNDING_OCR else PROMPTS[mode] + "[10, 20, 300, 400]"
    tok = processor.tokenizer
    expected = (
        [151670, 151666]
        + [151665] * expected_n
        + [151667]
        + tok.encode(prompt, add_special_tokens=False)
        + [151671, 151672]
    )
    assert processor.prompt_ids(prompt, tokens) == expected


def test_dots_default_budget_fits_its_context() -> None:
    """generation_config.json max_length 32768: the largest page's prompt (11,289,600 pixels = 14,400
    image tokens, plus the prompt text) and the default max_new_tokens fit."""
    max_length = _json(DOTS / "generation_config.json")["max_length"]
    assert max_length >= 11_289_600 // (28 * 28) + 400 + defaults.MAX_NEW_TOKENS


# ---------------------------------------------------------------------------- Qwen2-VL


class _Tokenizer:
    """The checkpoint's tokenizer where only its pad id matters (GOT's files are not published here)."""

    pad_token_id = 0


class _Files:
    tokenizer = _Tokenizer()


class _NoModel:
    """Where inputs() puts its tensors: the CPU (no weights are loaded for these tests)."""

    device = torch.device("cpu")
    dtype = torch.float32


def _qwen2_engine() -> object:
    """The qwen2vl engine with its processor built from the published files (no weights)."""
    engine = create_engine("qwen2vl")
    engine.plan = EnginePlan()
    engine._model = _NoModel()
    engine._processor = image_only_processor(transformers.Qwen2VLProcessor).from_pretrained(QWEN2)
    engine._processor.tokenizer.padding_side = "left"
    return engine


def _reference_qwen2(prompt: str, image: Image.Image, max_pixels: int) -> list[int]:
    """What the Qwen2-VL model card does: the chat template over one image and the text, then the
    processor with a max_pixels budget (transformers' own classes, from the published files)."""
    images = transformers.Qwen2VLImageProcessorPil.from_pretrained(QWEN2, max_pixels=max_pixels)
    tokenizer = transformers.AutoTokenizer.from_pretrained(QWEN2)
    template = _json(QWEN2 / "chat_template.json")["chat_template"]
    processor = image_only_processor(transformers.Qwen2VLProcessor)(
        image_processor=images, tokenizer=tokenizer, chat_template=template
    )
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return processor(images=[image], text=[text], return_tensors="pt")["input_ids"][0].tolist()


# page size -> image tokens under polyocr's cap (2048 x 28 x 28 pixels): smart_resize's arithmetic.
QWEN2_TOKENS = {(1654, 2339): 2014, (800, 600): 609, (2480, 3508): 2014, (300, 200): 77, (1700, 2200): 1989}


@pytest.mark.parametrize("size", list(QWEN2_TOKENS))
def test_qwen2vl_prompt_ids_equal_transformers_processor(size: tuple[int, int]) -> None:
    engine = _qwen2_engine()
    image = Image.new("RGB", size, "white")
    ours = engine.inputs([image], "text")["input_ids"][0].tolist()
    cap = 2048 * 28 * 28
    assert ours == _reference_qwen2(engine.spec.prompts["text"], image, cap)
    image_token = _json(QWEN2 / "config.json")["image_token_id"]
    assert ours.count(image_token) == QWEN2_TOKENS[size] == _qwen2_tokens(size[1], size[0], 56 * 56, cap)
    text = engine._processor.tokenizer.decode(ours)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert text.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_qwen2vl_end_tokens_from_the_published_files() -> None:
    engine = _qwen2_engine()
    tokenizer = engine._processor.tokenizer
    # config.json eos_token_id 151645 (<|im_end|>); tokenizer pad <|endoftext|> 151643.
    assert tokenizer.convert_tokens_to_ids(list(engine.spec.stop_tokens)) == [151645, 151643]
    assert _json(QWEN2 / "config.json")["eos_token_id"] == 151645
    assert tokenizer.pad_token_id == 151643
    # config.json max_position_embeddings 32768: the largest capped page plus the default budget fit.
    assert _json(QWEN2 / "config.json")["max_position_embeddings"] >= 2048 + 100 + defaults.MAX_NEW_TOKENS


# ---------------------------------------------------------------------------- GOT-OCR 2.0


def test_got_prompt_is_the_authors_string() -> None:
    """GOT/demo/run_ocr_2.0.py: "<img>" + pads + "</img>" + "\\n" + "OCR: " in the mpt conversation.
    transformers' GotOcr2Processor writes " OCR: " (a leading space from its empty box slot)."""
    assert got.GOT_TEMPLATE.format(prompt="OCR") == (
        "<|im_start|>system\nYou should follow the instructions carefully and explain your answers in detail."
        "<|im_end|><|im_start|>user\n<img><imgpad></img>\nOCR: <|im_end|><|im_start|>assistant\n"
    )
    assert got.GOT.prompts == {"text": "OCR", "markdown": "OCR with format"}
    assert got.GOT.cropped_prompt == "OCR with format upon the patch reference"


def test_got_views_whole_pages_in_one_and_crops_odd_shapes() -> None:
    for size in ((2480, 3508), (1654, 2339), (2550, 3300), (2550, 4200), (1400, 1000)):
        assert got._got_pixels([size], None, None, {})["crop_to_patches"] is False, size
    for size in ((1000, 2400), (3000, 1000)):
        assert got._got_pixels([size], None, None, {})["crop_to_patches"] is True, size


def test_got_decodes_as_its_authors() -> None:
    engine = create_engine("got")
    engine.plan, engine._processor = EnginePlan(), _Files()
    settings = engine.generation_settings(Task(kind=TaskKind.TEXT, max_new_tokens=16384), prompt_tokens=300)
    assert settings["no_repeat_ngram_size"] == 20 and settings["do_sample"] is False
    assert settings["max_new_tokens"] == 4096
    engine.plan = EnginePlan(generation={"no_repeat_ngram_size": 0})  # a plan still overrides
    assert engine.generation_settings(Task(), prompt_tokens=300)["no_repeat_ngram_size"] == 0


# ---------------------------------------------------------------------------- DeepSeek-OCR-2


def test_deepseek_budget_is_its_context_less_the_prompt() -> None:
    """run_dpsk_ocr2_image.py: max_model_len=8192 (config.json max_position_embeddings 8192)."""
    assert _json(DEEPSEEK / "config.json")["language_config"]["max_position_embeddings"] == 8192
    engine = create_engine("deepseek-ocr")
    engine.plan, engine._processor = EnginePlan(), _Files()
    for prompt_tokens in (300, 1200, 8000):
        settings = engine.generation_settings(Task(max_new_tokens=16384), prompt_tokens=prompt_tokens)
        assert settings["max_new_tokens"] == 8192 - prompt_tokens
    assert engine.generation_settings(Task(max_new_tokens=500), prompt_tokens=300)["max_new_tokens"] == 500


def test_deepseek_whitelist_ids_are_the_published_td_tokens() -> None:
    added = {v["content"]: int(k) for k, v in _json(DEEPSEEK / "tokenizer_config.json")["added_tokens_decoder"].items()}
    # run_dpsk_ocr2_image.py: whitelist_token_ids={128821, 128822}  # <td>, </td>
    assert [added[t] for t in deepseek_ocr.NGRAM_WHITELIST] == [128821, 128822]
    assert (added["<image>"], added["<|grounding|>"], added["<｜end▁of▁sentence｜>"]) == (128815, 128820, 1)


def _ban(history: list[int], n: int = 3, window: int = 8, whitelist: tuple[int, ...] = ()) -> set[int]:
    prompt = [99, 99]
    ids = torch.tensor([prompt + history])
    scores = torch.zeros(1, 200)
    out = windowed_no_repeat_ngram(len(prompt), n, window, whitelist)(ids, scores)
    return set(torch.nonzero(torch.isinf(out[0])).flatten().tolist())


def test_windowed_no_repeat_ngram_bans_within_the_window_only() -> None:
    # n=3: the prefix (5, 6) was followed by 7 inside the window, so 7 is banned.
    assert _ban([5, 6, 7, 1, 2, 5, 6]) == {7}
    # The same 3-gram further back than the window may recur.
    assert _ban([5, 6, 7, 10, 11, 12, 13, 14, 15, 16, 5, 6]) == set()
    # Whitelisted tokens (DeepSeek's <td>, </td>) are never banned.
    assert _ban([5, 6, 7, 1, 2, 5, 6], whitelist=(7,)) == set()
    # The prompt is not searched (the authors' processor sees the generated ids).
    ids = torch.tensor([[5, 6, 7, 5, 6]])
    out = windowed_no_repeat_ngram(3, 3, 8)(ids, torch.zeros(1, 10))
    assert not torch.isinf(out).any()


def test_deepseek_parser_on_the_authors_example() -> None:
    """transformers' DeepseekOcr2 integration test: "<|ref|>title<|/ref|><|det|>[[330, 198, 559, 230]]
    <|/det|>\\n# R"; the authors scale by x / 999 * width (run_dpsk_ocr2_image.py). The page size
    here is chosen so that a divisor of 1000 gives other boxes."""
    size = (2000, 1400)
    [block] = parse_deepseek_grounding("<|ref|>title<|/ref|><|det|>[[330, 198, 559, 230]]<|/det|>\n# R", size)
    assert block.category == "Title" and block.text == "# R"
    expected = tuple(round(v / 999 * s, 1) for v, s in zip((330, 198, 559, 230), (*size, *size), strict=True))
    assert block.bbox == expected
    assert block.bbox != tuple(
        round(v / 1000 * s, 1) for v, s in zip((330, 198, 559, 230), (*size, *size), strict=True)
    )


# ---------------------------------------------------------------------------- Qwen3-VL


def test_qwen3vl_layout_is_its_trained_qwenvl_html_mode() -> None:
    """QwenLM/Qwen3-VL cookbooks/document_parsing.ipynb: the prompt "qwenvl html"; elements carry
    data-bbox="x1 y1 x2 y2" in 0..1000. A truncated answer keeps its complete elements."""
    from polyocr.engines.hf.qwen3vl import QWEN3VL, parse_qwenvl_html
    from polyocr.results import TextFormat

    assert QWEN3VL.prompts["layout"] == "qwenvl html" and QWEN3VL.parse_layout is parse_qwenvl_html
    answer = (
        '```html\n<html><body>\n<h1 data-bbox="100 50 900 90">Annual Report</h1>\n'
        '<p data-bbox="100 100 900 200">First paragraph with <b>bold</b> text.</p>\n'
        '<table data-bbox="100 220 900 400"><tr><td>A</td><td>1</td></tr></table>\n'
        '<div class="image" data-bbox="100 420 500 600"><img src="x"></div>\n'
        '<div class="formula" data-bbox="100 620 900 660">E = mc^2</div>\n<p data-bbox="100 700 900 7'
    )
    blocks = parse_qwenvl_html(answer, (1000, 2000))
    assert [(b.category, b.text, b.format) for b in blocks] == [
        ("Title", "Annual Report", TextFormat.PLAIN),
        ("Text", "First paragraph with bold text.", TextFormat.PLAIN),
        ("Table", "<table><tr><td>A</td><td>1</td></tr></table>", TextFormat.HTML),
        ("Picture", "", TextFormat.PLAIN),
        ("Formula", "E = mc^2", TextFormat.LATEX),
    ]
    assert blocks[0].bbox == (100.0, 100.0, 900.0, 180.0)  # 0..1000 of a 1000 x 2000 page
