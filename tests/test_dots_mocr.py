"""dots.mocr (dots.ocr-1.5) on the native dots port: its published files, prompt modes, end tokens and
answers, on a tiny random-weight checkpoint in its published layout (tests/tiny_dots.py).

Sources (tests/fixtures/models/SOURCES.md): config.json and preprocessor_config.json as a dots.mocr
checkout holds them (contrapuntal/dots.mocr weights/DotsMOCR/), the licence files of the official
repository github.com/rednote-hilab/dots.mocr; prompts from its dots_mocr/utils/prompts.py (23f3e56).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from safetensors.torch import load_file, save_file

from conftest import SAMPLE_PDF
from polyocr import published
from polyocr.documents import Page
from polyocr.engines.base import create_engine, engine_entry
from polyocr.engines.dots import mocr
from polyocr.engines.dots.engine import DotsEngine, page_result
from polyocr.engines.dots.layout import close_svg, extract_svg, parse_scene_text
from polyocr.engines.dots.model import CheckpointError
from polyocr.engines.dots.processor import DotsProcessor, image_token_count, smart_resize
from polyocr.engines.dots.prompts import PROMPTS, PromptMode, prompt_text
from polyocr.errors import EngineError
from polyocr.results import DocumentResult, Generation, PageStatus, TextFormat
from polyocr.types import EngineKind, EnginePlan, Task, TaskKind
from tiny_dots import build_tiny_dots_mocr

MODELS = Path(__file__).resolve().parent / "fixtures" / "models"
MOCR = MODELS / "dots.mocr"
DOTS = MODELS / "dots.ocr"
QWEN2 = MODELS / "qwen2-vl"
MAX_PIXELS = 28 * 28 * 48


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_dots_mocr(tmp_path_factory.mktemp("mocr") / "dots.mocr")


@pytest.fixture(scope="module")
def engine(checkpoint: Path) -> mocr.DotsMOCREngine:
    engine = create_engine("dots-mocr", model_path=str(checkpoint))
    assert isinstance(engine, mocr.DotsMOCREngine)
    engine.load(EnginePlan(max_pixels=MAX_PIXELS, batch_size=2))
    return engine


def _page(size: tuple[int, int], number: int = 1, text: str = "Open 24h") -> Page:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((10, 10), text, fill="black")
    return Page(image=image, number=number, source="photo.png")


# ---------------------------------------------------------------------------- the published files


def test_the_published_config_is_dots_ocr_s() -> None:
    """dots.mocr's config.json (huggingface.co/rednote-hilab/dots.mocr/blob/main/config.json) carries
    dots.ocr's model_type, architectures and every dimension; the checkout copy here differs only in the
    vision tower's attn_implementation, which that repository switched to sdpa (and polyocr ignores)."""
    published, dots = _json(MOCR / "config.json"), _json(DOTS / "config.json")
    assert published["model_type"] == "dots_ocr" and published["architectures"] == ["DotsOCRForCausalLM"]
    assert published["vision_config"].pop("attn_implementation") == "sdpa"
    assert dots["vision_config"].pop("attn_implementation") == "flash_attention_2"
    assert published == dots
    # The preprocessor: dots.ocr's values, plus the auto_map of its later (432-byte) revision.
    preprocessor = _json(MOCR / "preprocessor_config.json")
    assert preprocessor.pop("auto_map") == {"AutoProcessor": "configuration_dots.DotsVLProcessor"}
    assert preprocessor == _json(DOTS / "preprocessor_config.json")


def test_the_tiny_checkpoint_has_the_published_structure(checkpoint: Path) -> None:
    tiny, published = _json(checkpoint / "config.json"), _json(MOCR / "config.json")
    assert tiny.keys() == published.keys() and tiny["vision_config"].keys() == published["vision_config"].keys()
    for key in ("model_type", "architectures", "auto_map", "attention_bias", "rope_theta", "tie_word_embeddings"):
        assert tiny[key] == published[key], key
    pre, published_pre = _json(checkpoint / "preprocessor_config.json"), _json(MOCR / "preprocessor_config.json")
    assert pre == published_pre  # the published preprocessor exactly (its auto_map is never followed)
    names = load_file(checkpoint / "model.safetensors").keys()
    assert {n.split(".")[0] for n in names} == {"model", "lm_head", "vision_tower"}


def test_end_tokens_are_read_from_the_checkpoint(checkpoint: Path, engine: mocr.DotsMOCREngine) -> None:
    """generation_config.json's eos_token_id (dots.mocr: <|endoftext|>, <|assistant|>, <|endofassistant|>,
    as mlx-community/dots.mocr-6bit carries it: [151643, 151672, 151673]); the engine's stand-in for a
    checkpoint without the file is the same three, where dots.ocr's is two."""
    tok = engine.processor.tokenizer
    ids = [tok.convert_tokens_to_ids(t) for t in mocr.END_TOKENS]
    assert engine.processor.eos_token_ids == _json(checkpoint / "generation_config.json")["eos_token_id"] == ids
    bare = checkpoint.parent / "no-generation-config"
    shutil.copytree(checkpoint, bare, dirs_exist_ok=True)
    (bare / "generation_config.json").unlink()
    assert DotsProcessor.from_pretrained(bare, end_tokens=mocr.END_TOKENS).eos_token_ids == ids
    assert DotsProcessor.from_pretrained(bare).eos_token_ids == [ids[0], ids[2]]


@pytest.fixture(scope="module")
def published_tokenizer(tmp_path_factory: pytest.TempPathFactory) -> DotsProcessor:
    """The dots tokenizer rebuilt from published files (Qwen2's vocab.json/merges.txt plus dots.ocr's
    tokenizer_config.json, as tests/test_vlm_fidelity.py does): dots.mocr's tokenizer.json has the same
    size (7.04 MB, its hub file page) and its eos ids 151672/151673 are these tokens."""
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("mocr-published")
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(QWEN2 / name, root)
    for name in ("tokenizer_config.json", "special_tokens_map.json", "chat_template.json"):
        shutil.copy(DOTS / name, root)
    transformers.AutoTokenizer.from_pretrained(root).save_pretrained(root)
    shutil.copy(MOCR / "preprocessor_config.json", root)
    (root / "generation_config.json").write_text(json.dumps({"max_length": 32768}))  # no eos: the stand-in
    return DotsProcessor.from_pretrained(root, end_tokens=mocr.END_TOKENS)


def test_published_end_token_ids(published_tokenizer: DotsProcessor) -> None:
    assert published_tokenizer.eos_token_ids == [151643, 151672, 151673]


# The authors' texts (github.com/rednote-hilab/dots.mocr dots_mocr/utils/prompts.py at 23f3e56).
GOLDEN = {
    PromptMode.WEB_PARSING: "Parsing the layout info of this webpage image with format json:\n",
    PromptMode.SCENE_SPOTTING: "Detect and recognize the text in the image.",
    PromptMode.IMAGE_TO_SVG: 'Please generate the SVG code based on the image.viewBox="0 0 {width} {height}"',
}


def test_golden_prompt_strings() -> None:
    for mode, text in GOLDEN.items():
        assert PROMPTS[mode] == text
    # dots_mocr/parser.py get_prompt: the original image's width and height in the viewBox
    assert prompt_text(PromptMode.IMAGE_TO_SVG, size=(800, 600)) == (
        'Please generate the SVG code based on the image.viewBox="0 0 800 600"'
    )
    with pytest.raises(ValueError, match="image size"):
        prompt_text(PromptMode.IMAGE_TO_SVG)


@pytest.mark.parametrize("size", [(1654, 2339), (800, 600), (40, 30)])
@pytest.mark.parametrize("mode", list(GOLDEN))
def test_golden_prompt_ids(published_tokenizer: DotsProcessor, size: tuple[int, int], mode: PromptMode) -> None:
    """<|user|><|img|> + N x <|imgpad|> + <|endofimg|> + prompt + <|endofuser|><|assistant|> (the authors'
    vLLM request, dots_mocr/model/inference.py; no system turn outside prompt_general, parser.py)."""
    processor = published_tokenizer
    height, width = smart_resize(size[1], size[0], min_pixels=processor.min_pixels, max_pixels=processor.max_pixels)
    n = image_token_count(height, width)
    prompt = prompt_text(mode, size=size)
    expected = (
        [151670, 151666]
        + [151665] * n
        + [151667]
        + processor.tokenizer.encode(prompt, add_special_tokens=False)
        + [151671, 151672]
    )
    assert processor.prompt_ids(prompt, n) == expected


# ---------------------------------------------------------------------------- strict loading


def test_loading_is_strict_by_the_published_names(checkpoint: Path, tmp_path: Path) -> None:
    state = load_file(checkpoint / "model.safetensors")
    renamed = tmp_path / "renamed"
    shutil.copytree(checkpoint, renamed)
    name = "vision_tower.merger.ln_q.weight"
    assert name in state
    save_file({("vision_tower.merger.norm.weight" if k == name else k): v for k, v in state.items()},
              renamed / "model.safetensors", metadata={"format": "pt"})  # fmt: skip
    engine = create_engine("dots-mocr", model_path=str(renamed))
    with pytest.raises(CheckpointError, match=r"ln_q\.weight") as info:
        engine.load(EnginePlan(max_pixels=MAX_PIXELS))
    assert "merger.norm.weight" in str(info.value)
    other = tmp_path / "other-type"
    shutil.copytree(checkpoint, other)
    config = _json(other / "config.json")
    (other / "config.json").write_text(json.dumps({**config, "model_type": "qwen2_vl"}))
    with pytest.raises(CheckpointError, match=r"model_type 'qwen2_vl'.*dots_ocr"):
        create_engine("dots-mocr", model_path=str(other)).load(EnginePlan(max_pixels=MAX_PIXELS))


# ---------------------------------------------------------------------------- modes


def test_prompt_modes_map_onto_tasks(checkpoint: Path, engine: mocr.DotsMOCREngine) -> None:
    def mode(choice: str | None, kind: TaskKind) -> PromptMode:
        probe = mocr.DotsMOCREngine(checkpoint)
        probe.plan = EnginePlan(generation={} if choice is None else {"prompt_mode": choice})
        return probe.mode_for(Task(kind=kind))

    assert mode(None, TaskKind.LAYOUT) == PromptMode.LAYOUT_ALL
    assert mode("web_parsing", TaskKind.LAYOUT) == PromptMode.WEB_PARSING
    assert mode("image_to_svg", TaskKind.LAYOUT) == PromptMode.IMAGE_TO_SVG
    assert mode("scene_spotting", TaskKind.TEXT) == PromptMode.SCENE_SPOTTING
    assert mode("web_parsing", TaskKind.TEXT) == PromptMode.OCR  # a mode applies to the task it answers
    assert mode("scene_spotting", TaskKind.REGION) == PromptMode.GROUNDING_OCR
    with pytest.raises(EngineError, match=r"unknown prompt_mode 'general'.*web_parsing"):
        mode("general", TaskKind.LAYOUT)
    dots = DotsEngine(checkpoint)  # dots.ocr was not trained on the new modes
    dots.plan = EnginePlan(generation={"prompt_mode": "scene_spotting"})
    with pytest.raises(EngineError, match=r"rednote-hilab/dots\.ocr: grounding_ocr, layout_all"):
        dots.mode_for(Task(kind=TaskKind.TEXT))


def test_svg_is_sampled_as_its_authors_do(engine: mocr.DotsMOCREngine) -> None:
    """demo/demo_vllm_svg.py: temperature 0.9, top_p 1.0; the other modes stay greedy; the plan's own wins."""
    svg = engine._generation_kwargs(Task(), 300, engine.plan_for(PromptMode.IMAGE_TO_SVG))
    assert (svg["do_sample"], svg["temperature"], svg["top_p"]) == (True, 0.9, 1.0)
    assert engine._generation_kwargs(Task(), 300, engine.plan_for(PromptMode.WEB_PARSING))["do_sample"] is False
    plain = engine.plan
    engine.plan = replace(plain, generation={"temperature": 0.3})
    try:
        assert engine._generation_kwargs(Task(), 300, engine.plan_for(PromptMode.IMAGE_TO_SVG))["temperature"] == 0.3
    finally:
        engine.plan = plain


# ---------------------------------------------------------------------------- answers


def _result(engine: mocr.DotsMOCREngine, mode: PromptMode, answer: str, stop: str = "eos") -> object:
    page = _page((280, 560))  # resized to 112 x 252 under MAX_PIXELS: x by 5/2, y by 20/9 back to the page
    image = engine.processor.prepare(page.image)
    generation = Generation(stop_reason=stop, prompt_tokens=100, generated_tokens=50)
    return page_result(page, image, mode, Task(), answer, generation, engine.name)


def test_scene_spotting_answer_becomes_boxed_lines(engine: mocr.DotsMOCREngine) -> None:
    # The answer format of dots_mocr/utils/layout_utils.py parse_scene_text_output.
    answer = "(10, 9), (50, 9), (50, 18), (10, 18) OPEN\n(20, 45), (100, 40), (102, 63), (22, 68) 24 hours"
    assert parse_scene_text(answer) == [
        ([10, 9, 50, 9, 50, 18, 10, 18], "OPEN"),
        ([20, 45, 100, 40, 102, 63, 22, 68], "24 hours"),
    ]
    result = _result(engine, PromptMode.SCENE_SPOTTING, answer)
    assert result.status == PageStatus.OK and result.engine == "dots-mocr"
    assert [(b.bbox, b.text, b.format) for b in result.blocks] == [
        ((25.0, 20.0, 125.0, 40.0), "OPEN", TextFormat.PLAIN),
        ((50.0, 88.89, 255.0, 151.11), "24 hours", TextFormat.PLAIN),
    ]
    assert result.text == "OPEN\n\n24 hours"
    prose = _result(engine, PromptMode.SCENE_SPOTTING, "a shop sign")
    assert prose.status == PageStatus.PARTIAL and prose.text == "a shop sign" and prose.blocks == []
    assert "instances" in prose.errors[0] and prose.errors[0].startswith("dots-mocr: ")


def test_svg_answer_becomes_one_picture_block(engine: mocr.DotsMOCREngine) -> None:
    svg = (
        '<svg viewBox="0 0 280 560"><rect width="10" height="10"/>'
        '<text x="5" y="9">Sales <tspan>2025</tspan></text></svg>'
    )
    result = _result(engine, PromptMode.IMAGE_TO_SVG, "svg:" + svg)
    assert result.status == PageStatus.OK
    [block] = result.blocks
    assert (block.category, block.bbox, block.format, block.text) == ("Picture", (0, 0, 280, 560), TextFormat.HTML, svg)
    assert result.markdown == svg and result.text == "Sales 2025"
    cut = _result(engine, PromptMode.IMAGE_TO_SVG, '<svg viewBox="0 0 9 9"><g><path d="M0 0 L5', stop="max_tokens")
    assert (
        cut.status == PageStatus.PARTIAL
        and cut.blocks[0].text == '<svg viewBox="0 0 9 9"><g><path d="M0 0 L5"></path></g></svg>'
    )
    assert any("cut short" in e for e in cut.errors)
    assert close_svg("<svg><g><rect") == "<svg><g></g></svg>"  # a dangling tag is dropped
    assert extract_svg("no drawing here").svg == ""
    none = _result(engine, PromptMode.IMAGE_TO_SVG, "I cannot draw this.")
    assert none.status == PageStatus.PARTIAL and none.blocks == [] and none.text == "I cannot draw this."


def test_web_parsing_answer_is_parsed_as_layout(engine: mocr.DotsMOCREngine) -> None:
    answer = json.dumps([{"bbox": [4, 9, 100, 18], "category": "Title", "text": "Shop"},
                         {"bbox": [4, 27, 100, 45], "category": "Button", "text": "Buy"}])  # fmt: skip
    result = _result(engine, PromptMode.WEB_PARSING, answer)
    assert result.status == PageStatus.OK
    assert [(b.category, b.bbox, b.text) for b in result.blocks] == [
        ("Title", (10.0, 20.0, 250.0, 40.0), "Shop"),
        ("Button", (10.0, 60.0, 250.0, 100.0), "Buy"),
    ]


# ---------------------------------------------------------------------------- end to end


@pytest.mark.parametrize(
    ("choice", "kind", "mode"),
    [
        ("web_parsing", TaskKind.LAYOUT, PromptMode.WEB_PARSING),
        ("scene_spotting", TaskKind.TEXT, PromptMode.SCENE_SPOTTING),
        ("image_to_svg", TaskKind.LAYOUT, PromptMode.IMAGE_TO_SVG),
    ],
)
def test_each_mode_runs_on_the_tiny_model(checkpoint: Path, choice: str, kind: TaskKind, mode: PromptMode) -> None:
    engine = mocr.DotsMOCREngine(checkpoint)
    engine.load(EnginePlan(max_pixels=MAX_PIXELS, batch_size=2, generation={"prompt_mode": choice}))
    pages = [_page((300, 200), 1), _page((120, 260), 2)]
    torch.manual_seed(0)
    results = engine.recognize(pages, Task(kind=kind, max_new_tokens=6))
    for page, result in zip(pages, results, strict=True):
        image = engine.processor.prepare(page.image)
        prompt = prompt_text(mode, size=page.image.size)
        assert result.generation.prompt_tokens == len(engine.processor.prompt_ids(prompt, image.token_count))
        assert result.engine == "dots-mocr" and 1 <= result.generation.generated_tokens <= 6


def test_a_batch_gives_the_same_tokens_as_pages_one_at_a_time(checkpoint: Path, engine: mocr.DotsMOCREngine) -> None:
    pages = [_page((300, 200), 1), _page((120, 260), 2, "Итого"), _page((150, 150), 3, "x")]
    task = Task(kind=TaskKind.TEXT, max_new_tokens=8)
    batched = engine.recognize(pages, task)
    single = mocr.DotsMOCREngine(checkpoint)
    single.load(EnginePlan(max_pixels=MAX_PIXELS, batch_size=1))
    alone = single.recognize(pages, task)
    assert [(r.text, r.generation.generated_tokens) for r in batched] == [
        (r.text, r.generation.generated_tokens) for r in alone
    ]


def test_registered_unranked_with_its_published_evidence() -> None:
    entry = engine_entry("dots-mocr")
    assert entry.kind == EngineKind.VLM and entry.rank is None
    assert "olmOCR-bench" in published.evidence("dots-mocr") and "83.9" in published.evidence("dots-mocr")
    assert mocr.DotsMOCREngine.repo_id == "rednote-hilab/dots.mocr" and "MIT" in mocr.DotsMOCREngine.notes


def test_cli_ocr_with_the_dots_mocr_engine(checkpoint: Path, tmp_path: Path) -> None:
    """`polyocr ocr --engine dots-mocr --model DIR`, its prompt mode chosen in polyocr.toml."""
    config = tmp_path / "polyocr.toml"
    config.write_text('[engines.dots-mocr]\ngeneration = {prompt_mode = "scene_spotting"}\n')
    run = subprocess.run(
        [sys.executable, "-m", "polyocr", "ocr", str(SAMPLE_PDF), "--engine", "dots-mocr", "--model", str(checkpoint),
         "--task", "text", "--dpi", "30", "--max-new-tokens", "5", "--format", "json", "--out", str(tmp_path),
         "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "POLYOCR_CONFIG": str(config)},
    )  # fmt: skip
    assert run.returncode in (0, 1), run.stderr  # 1: the router may refuse what random weights write
    doc = DocumentResult.from_json((tmp_path / f"{SAMPLE_PDF.stem}.json").read_text())
    assert [p.page for p in doc.pages] == [1, 2]
    for page in doc.pages:
        assert page.attempts and {a.engine for a in page.attempts} == {"dots-mocr"}, page.attempts
        # Random weights write no scene-text instances: the answer was read as the mode's output.
        assert page.engine != "dots-mocr" or any("instances" in e for e in page.errors), page.errors
