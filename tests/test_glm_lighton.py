"""GLM-OCR and LightOnOCR-2: golden tests from their published files (tests/fixtures/models/glm-ocr,
lighton-ocr; SOURCES.md there), the parser on the card's output format, and both engines end to end
through the CLI and the router on tiny random-weight checkpoints (tests/tiny_hf.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
yaml = pytest.importorskip("yaml")

from PIL import Image  # noqa: E402

from polyocr.engines.base import engine_class  # noqa: E402
from polyocr.engines.hf import glm_ocr, lighton_ocr  # noqa: E402
from polyocr.engines.hf.lighton_ocr import parse_lighton_markdown  # noqa: E402
from polyocr.results import TextFormat  # noqa: E402
from polyocr.types import EnginePlan, Task, TaskKind  # noqa: E402
from tiny_hf import build_glm_ocr, build_lighton_ocr  # noqa: E402

MODELS = Path(__file__).resolve().parent / "fixtures" / "models"
GLM = MODELS / "glm-ocr"
LIGHTON = MODELS / "lighton-ocr"
QWEN2 = MODELS / "qwen2-vl"
EVAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval"
PAGE_IMAGE = EVAL / "tesseract_test" / "phototest.tif"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("glm_lighton")
    return {"glm-ocr": build_glm_ocr(root / "glm-ocr"), "lighton-ocr": build_lighton_ocr(root / "lighton-ocr")}


def _engine(name: str, path: Path, **plan: object) -> object:
    torch.set_num_threads(2)
    engine = engine_class(name)(model_path=str(path))
    engine.load(EnginePlan(attention="sdpa", **plan))  # type: ignore[arg-type]
    return engine


# ---------------------------------------------------------------------------- GLM-OCR


def test_glm_prompts_and_decoding_are_the_sdk_config() -> None:
    """glmocr/config.yaml (the authors' SDK): the task prompts, greedy, repetition_penalty 1.1, 8192 tokens."""
    loader = yaml.safe_load((GLM / "config.yaml").read_text())["pipeline"]["page_loader"]
    assert loader["task_prompt_mapping"] == glm_ocr.GLM_PROMPTS
    assert glm_ocr.GLM_OCR.prompts == glm_ocr.GLM_PROMPTS  # one per region kind (tests/test_glm_ocr.py)
    assert (
        glm_ocr.GLM_OCR.generation
        == {"repetition_penalty": loader["repetition_penalty"]}
        == {"repetition_penalty": 1.1}
    )
    assert glm_ocr.GLM_OCR.max_new_tokens == loader["max_tokens"] == 8192
    assert loader["temperature"] == 0.0 and loader["top_k"] == 1  # greedy, as polyocr decodes
    assert engine_class("glm-ocr").anti_repeat == {"repetition_penalty": 1.1}
    # With its PP-DocLayoutV3 stage it does every task (tests/test_glm_ocr.py).
    assert engine_class("glm-ocr").tasks == frozenset(TaskKind)


# Glm46VImageProcessor's own grids on the published preprocessor_config.json (measured with
# transformers 5.12's processor by a public GLM-OCR port; source in tests/fixtures/models/SOURCES.md).
GLM_GRIDS = [
    ((6000, 4000), (1, 128, 192)),  # the 6,144-token ceiling
    ((4000, 3000), (1, 134, 180)),
    ((3000, 3000), (1, 156, 156)),
    ((1700, 2200), (1, 158, 122)),
    ((100, 100), (1, 8, 8)),  # the floor
]


@pytest.mark.parametrize(("size", "grid"), GLM_GRIDS)
def test_glm_image_tokens_from_the_published_preprocessor(size: tuple[int, int], grid: tuple[int, ...]) -> None:
    config = json.loads((GLM / "preprocessor_config.json").read_text())
    config.pop("image_processor_type"), config.pop("processor_class")
    processor = transformers.Glm46VImageProcessorPil(**config)
    kwargs = glm_ocr.glm_pixels([size], None, None, dict(processor.size))  # polyocr's processor arguments
    out = processor(images=[Image.new("RGB", size, "white")], return_tensors="pt", **kwargs)
    assert tuple(out["image_grid_thw"][0].tolist()) == grid
    tokens = grid[1] * grid[2] // 4
    assert tokens <= 6144


def test_glm_plan_pixels_are_page_pixels() -> None:
    """The processor bounds two temporal frames; polyocr's max_pixels is a page's pixels."""
    config = json.loads((GLM / "preprocessor_config.json").read_text())
    config.pop("image_processor_type"), config.pop("processor_class")
    processor = transformers.Glm46VImageProcessorPil(**config)
    budget = 1_000_000
    kwargs = glm_ocr.glm_pixels([(1654, 2339)], None, budget, dict(processor.size))
    _, h, w = processor(images=[Image.new("RGB", (1654, 2339), "white")], return_tensors="pt", **kwargs)[
        "image_grid_thw"
    ][0].tolist()
    assert (h * 14) * (w * 14) <= budget
    assert (h * 14) * (w * 14) > budget * 0.9  # and not half of it


def test_glm_stops_at_the_published_eos_list(tiny: dict[str, Path]) -> None:
    """config.json's eos_token_id [59246, 59253] is <|endoftext|> and <|user|>: both end a page."""
    engine = _engine("glm-ocr", tiny["glm-ocr"])
    tokenizer = engine._processor.tokenizer  # type: ignore[attr-defined]
    assert set(engine._stop_ids) == {tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|user|>")}  # type: ignore[attr-defined]
    settings = engine.generation_settings(Task(max_new_tokens=20000), 500)  # type: ignore[attr-defined]
    assert settings["repetition_penalty"] == 1.1 and settings["do_sample"] is False
    assert settings["max_new_tokens"] == 8192


# ---------------------------------------------------------------------------- LightOnOCR-2


def test_lighton_published_config_loads_with_its_tensor_names() -> None:
    """The published config.json (model_type mistral3) loads into LightOnOcrConfig; the model it
    describes has the published tensor prefixes (llama.cpp's LightOnOCR converter renames
    model.vision_encoder. and model.vision_projection.) and the published size: model.safetensors
    is 2,011,367,489 bytes of bf16."""
    config = transformers.LightOnOcrConfig.from_pretrained(LIGHTON)
    assert (config.image_token_id, config.eos_token_id, config.pad_token_id) == (151655, 151645, 151643)
    assert config.vision_config.image_size == lighton_ocr.LIGHTON_LONGEST_EDGE == 1540
    assert config.text_config.max_position_embeddings == lighton_ocr.LIGHTON_CONTEXT
    with torch.device("meta"):
        model = transformers.LightOnOcrForConditionalGeneration(config)
    prefixes = {
        name.split(".")[0] + "." + name.split(".")[1] for name in model.state_dict() if name.startswith("model.")
    }
    assert prefixes == {"model.vision_encoder", "model.vision_projection", "model.language_model"}
    parameters = sum(p.numel() for p in model.parameters())  # the tied embedding counted once
    assert abs(parameters * 2 - 2_011_367_489) < 2_000_000


def test_lighton_special_tokens_are_qwens() -> None:
    """LightOnOCR-2's tokenizer is Qwen's (transformers maps lighton_ocr to Qwen2TokenizerFast): the
    published Qwen vocabulary gives the ids its config.json names, and the processor's image, break
    and end tokens (transformers' LightOnOcr processor tests)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(QWEN2)
    config = json.loads((LIGHTON / "config.json").read_text())
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|vision_pad|>", "<|vision_end|>")}
    assert ids == {"<|image_pad|>": 151655, "<|vision_pad|>": 151654, "<|vision_end|>": 151653}
    assert ids["<|image_pad|>"] == config["image_token_id"]
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") == config["eos_token_id"]
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") == config["pad_token_id"]


@pytest.mark.parametrize(("size", "tokens"), [((1654, 2339), 55 * 39), ((2339, 1654), 39 * 55), ((800, 600), 29 * 21)])
def test_lighton_image_tokens_for_page_sizes(size: tuple[int, int], tokens: int) -> None:
    """Pixtral at the card's 1540 px longest side: one token per 28 px square after the 2x2 merge
    (an A4 page at 200 DPI: 1540 x 1092 px, 55 x 39 tokens); smaller pages are not enlarged, only
    rounded up to whole 14 px patches (800 x 600 -> 812 x 602: 29 x 21 tokens)."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        QWEN2,
        extra_special_tokens={
            "image_token": "<|image_pad|>",
            "image_break_token": "<|vision_pad|>",
            "image_end_token": "<|vision_end|>",
        },
    )
    images = transformers.PixtralImageProcessorPil(size={"longest_edge": 1540}, patch_size={"height": 14, "width": 14})
    processor = transformers.LightOnOcrProcessor(image_processor=images, tokenizer=tokenizer, patch_size=14)
    kwargs = lighton_ocr.lighton_pixels([size], None, None, dict(images.size))
    batch = processor(images=[Image.new("RGB", size, "white")], text=["<|image_pad|>"], return_tensors="pt", **kwargs)
    assert int((batch["input_ids"] == 151655).sum()) == tokens


def test_lighton_plan_pixels_lower_the_edge_never_raise_it() -> None:
    own = {"longest_edge": 1540}
    assert lighton_ocr.lighton_pixels([(1654, 2339)], None, None, own) == {"size": {"longest_edge": 1540}}
    capped = lighton_ocr.lighton_pixels([(1654, 2339)], None, 500_000, own)["size"]["longest_edge"]
    assert capped < 1540 and capped * capped * 1654 / 2339 <= 500_000 * 1.01
    assert lighton_ocr.lighton_pixels([(100, 100)], None, 10**9, own) == {"size": {"longest_edge": 1540}}


def test_lighton_budget_is_the_cards_within_its_context() -> None:
    spec = lighton_ocr.LIGHTON_OCR
    assert spec.token_budget(2200) == 4096  # the card's max_tokens
    assert spec.token_budget(14000) == 16384 - 14000  # config.json max_position_embeddings


def test_lighton_sends_the_image_alone(tiny: dict[str, Path]) -> None:
    """The card: no system or user text, only the page image."""
    engine = _engine("lighton-ocr", tiny["lighton-ocr"])
    seen: list[object] = []
    render = engine._processor.apply_chat_template  # type: ignore[attr-defined]

    def spy(messages: object, **kwargs: object) -> object:
        seen.append(messages)
        return render(messages, **kwargs)

    engine._processor.apply_chat_template = spy  # type: ignore[attr-defined]
    engine.inputs([Image.new("RGB", (200, 150), "white")], "text")  # type: ignore[attr-defined]
    assert seen == [[{"role": "user", "content": [{"type": "image"}]}]]


def test_lighton_parser_on_the_cards_image_format() -> None:
    """The bbox variants' format (LightOnOCR-2-1B-bbox-soup card, "Image Localization"):
    `![image](image_N.png) x1,y1,x2,y2`, normalised to [0, 1000]."""
    output = (
        "# Quarterly report\n\nRevenue grew in every region.\n\n"
        "![image](image_1.png) 120,40,880,410\n\n"
        "Figure 1: revenue by region.\n\n![image](image_2.png)500,500,1000,1000\n\n![image](image_3.png)"
    )
    blocks = parse_lighton_markdown(output, (1000, 2000), TextFormat.MARKDOWN)
    assert [(b.category, b.text) for b in blocks] == [
        ("Text", "# Quarterly report"),
        ("Text", "Revenue grew in every region."),
        ("Picture", ""),
        ("Text", "Figure 1: revenue by region."),
        ("Picture", ""),
        ("Picture", ""),
    ]
    assert blocks[2].bbox == (120.0, 80.0, 880.0, 820.0)  # 0..1000 of a 1000 x 2000 page
    assert blocks[4].bbox == (500.0, 1000.0, 1000.0, 2000.0)
    assert blocks[5].bbox is None  # the non-bbox checkpoint writes no coordinates
    assert not any("image_" in b.text or "120,40" in b.text for b in blocks)


# ---------------------------------------------------------------------------- through the CLI and the router


@pytest.mark.parametrize("name", ["glm-ocr", "lighton-ocr"])
def test_cli_ocr_through_the_router(name: str, tiny: dict[str, Path], tmp_path: Path) -> None:
    if not PAGE_IMAGE.exists():
        pytest.skip(f"eval pages not found at {PAGE_IMAGE}")
    from typer.testing import CliRunner

    from polyocr.cli import app

    image = tmp_path / "page.png"
    Image.open(PAGE_IMAGE).convert("RGB").crop((0, 0, 320, 240)).save(image)
    args = ["ocr", str(image), "--engine", name, "--model", str(tiny[name]), "--max-new-tokens", "3"]
    result = CliRunner().invoke(app, [*args, "--format", "json", "--quiet"])
    assert result.exit_code in (0, 1), result.output
    [page] = json.loads(result.stdout)["pages"]
    assert page["engine"] == name
    assert 0 < page["generation"]["generated_tokens"] <= 3
    assert page["generation"]["prompt_tokens"] > 0
