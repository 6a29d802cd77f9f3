"""The transformers VLM engines end to end on tiny random-weight checkpoints built in the session.

Random weights cannot read; these tests check what they can show: the real loading, prompting,
batching, generation and reporting path, attention implementations agreeing, batches equal to
pages one by one, the parsers of each model's answer format, and the weights-missing path.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from polyocr.documents import Page  # noqa: E402
from polyocr.engines.base import engine_class, engine_names  # noqa: E402
from polyocr.engines.hf.deepseek_ocr import parse_deepseek_grounding  # noqa: E402
from polyocr.engines.hf.engine import HFVLMEngine  # noqa: E402
from polyocr.engines.hf.pp_doclayout import LayoutStageEngine  # noqa: E402
from polyocr.engines.hf.qwen3vl import parse_qwen3_json  # noqa: E402
from polyocr.engines.hf.spec import VLMSpec  # noqa: E402
from polyocr.errors import EngineUnavailable  # noqa: E402
from polyocr.results import PageStatus, TextFormat  # noqa: E402
from polyocr.types import EnginePlan, Task, TaskKind  # noqa: E402
from tiny_hf import BUILDERS  # noqa: E402

EVAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval"
PAGE_IMAGE = EVAL / "tesseract_test" / "phototest.tif"
NAMES = [n for n in engine_names() if issubclass(engine_class(n), HFVLMEngine)]
# Engines run as layout stage + element stage (engines/hf/twostage.py): one generation per region.
TWO_STAGE = {n for n in NAMES if issubclass(engine_class(n), LayoutStageEngine)}


def spec_of(name: str) -> VLMSpec:
    return engine_class(name).spec  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def pages() -> list[Page]:
    """Two small crops of a real scanned page, of different sizes (so batches need padding)."""
    if not PAGE_IMAGE.exists():
        pytest.skip(f"eval pages not found at {PAGE_IMAGE} (clone shared/ next to the repo)")
    image = Image.open(PAGE_IMAGE).convert("RGB")
    return [
        Page(image=image.crop((0, 0, 320, 240)), number=1, source=str(PAGE_IMAGE)),
        Page(image=image.crop((40, 200, 300, 420)), number=2, source=str(PAGE_IMAGE)),
    ]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf_vlm")
    return {name: build(root / name) for name, build in BUILDERS.items()}


def _engine(name: str, path: Path, attention: str = "sdpa", batch_size: int = 1) -> HFVLMEngine:
    torch.set_num_threads(2)
    engine = engine_class(name)(model_path=path)
    engine.load(EnginePlan(attention=attention, batch_size=batch_size, generation={"min_new_tokens": 4}))
    return engine


@pytest.mark.parametrize("name", NAMES)
def test_end_to_end_on_a_real_page(name: str, checkpoints: dict[str, Path], pages: list[Page]) -> None:
    engine = _engine(name, checkpoints[name])
    assert engine.available(None).ok
    spec = spec_of(name)
    assert engine.attention == spec.implementation("sdpa")
    [result] = engine.recognize(pages[:1], Task(kind=TaskKind.LAYOUT, max_new_tokens=6))
    assert (result.engine, result.page, result.width, result.height) == (name, 1, 320, 240)
    generation = result.generation
    assert generation is not None
    # a two-stage engine reads each region the layout found that has an element prompt, 6 tokens each
    reads = sum(r.mode is not None for r in engine.detect(pages[:1])[0]) if name in TWO_STAGE else 1
    assert reads > 0
    assert (generation.stop_reason, generation.generated_tokens) == ("max_tokens", 6 * reads)
    assert result.status == PageStatus.PARTIAL  # cut by the token limit, so incomplete
    image_tokens = engine.inputs([pages[0].image], "text")["input_ids"][0]
    assert generation.prompt_tokens > 0 and len(image_tokens) > 0
    assert result.text == "\n\n".join(b.text for b in result.blocks if b.text)


@pytest.mark.parametrize("name", NAMES)
def test_eager_and_sdpa_agree(name: str, checkpoints: dict[str, Path], pages: list[Page]) -> None:
    eager = _engine(name, checkpoints[name], attention="eager")
    sdpa = _engine(name, checkpoints[name], attention="sdpa")
    assert set(eager.attention.values()) == {"eager"}
    for part, implementation in sdpa.attention.items():  # what the loaded model actually runs
        config = getattr(sdpa._model.config, part) if part else sdpa._model.config
        assert config._attn_implementation == implementation
    batch = eager.inputs([pages[0].image], "text")
    with torch.inference_mode():
        a = eager._model(**batch).logits
        b = sdpa._model(**batch).logits
    assert torch.isfinite(a).all()
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4), (a - b).abs().max()


@pytest.mark.parametrize("name", NAMES)
def test_batch_equals_one_by_one(name: str, checkpoints: dict[str, Path], pages: list[Page]) -> None:
    engine = _engine(name, checkpoints[name])
    task = Task(kind=TaskKind.TEXT, max_new_tokens=5)
    images = [p.image for p in pages]
    single = [engine._generate([image], "text", task)[0] for image in images]
    batched = engine._generate(images, "text", task)
    assert [tokens for tokens, _ in batched] == [tokens for tokens, _ in single]
    assert [g.prompt_tokens for _, g in batched] == [g.prompt_tokens for _, g in single]
    if name not in ("got", "deepseek-ocr"):  # fixed views give both crops the same token count
        assert single[0][1].prompt_tokens != single[1][1].prompt_tokens  # the batch really was padded


def test_region_task_reads_the_crop(checkpoints: dict[str, Path], pages: list[Page]) -> None:
    engine = _engine("qwen2vl", checkpoints["qwen2vl"])
    region = (10.0, 20.0, 170.0, 140.0)
    [result] = engine.recognize(pages[:1], Task(kind=TaskKind.REGION, region=region, max_new_tokens=4))
    whole = engine.inputs([pages[0].image], "text")["input_ids"].shape[1]
    assert result.generation.prompt_tokens < whole  # a smaller image, so fewer image tokens
    assert all(block.bbox == region for block in result.blocks)


def test_got_cuts_only_odd_shaped_pages_into_patches(checkpoints: dict[str, Path], pages: list[Page]) -> None:
    """One 1024 px view for a whole page, however large (the authors' run_ocr_2.0.py); tiles only for
    a stitched or odd-shaped one (run_ocr_2.0_crop.py), with the multi-crop prompt."""
    engine = _engine("got", checkpoints["got"])
    small = engine.inputs([pages[0].image], "text")
    a4 = engine.inputs([pages[0].image.resize((1654, 2339))], "markdown")
    assert small["pixel_values"].shape[0] == a4["pixel_values"].shape[0] == 1
    assert "\nOCR with format: <|im_end|>" in engine._processor.tokenizer.decode(a4["input_ids"][0])
    large = engine.inputs([pages[0].image.resize((2400, 1000))], "markdown")
    views = large["pixel_values"].shape[0]
    assert 2 < views <= 7  # at most 6 patches plus a thumbnail
    assert (large["input_ids"] == engine._model.config.image_token_index).sum() == 256 * views
    prompt = engine._processor.tokenizer.decode(large["input_ids"][0])
    assert "OCR with format upon the patch reference: " in prompt


def test_plan_pixel_budget_limits_qwen_image_tokens(checkpoints: dict[str, Path], pages: list[Page]) -> None:
    engine = _engine("qwen2vl", checkpoints["qwen2vl"])
    image = engine._model.config.image_token_id
    before = int((engine.inputs([pages[0].image], "text")["input_ids"] == image).sum())
    engine.plan.max_pixels = 28 * 28 * 16
    after = int((engine.inputs([pages[0].image], "text")["input_ids"] == image).sum())
    assert after <= 16 < before  # one token per 28x28 px (2x2 patches of 14 px): at most 16


def test_missing_weights_make_engines_unavailable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    for name in NAMES:
        engine = engine_class(name)()
        availability = engine.available(None)
        assert not availability.ok
        assert spec_of(name).repo_id in availability.reason
        assert availability.fix == f"hf download {spec_of(name).repo_id}"
        with pytest.raises(EngineUnavailable, match=name):
            engine.load(EnginePlan())
        assert not engine_class(name)(model_path=tmp_path).available(None).ok


def test_registry_lists_the_five_engines() -> None:
    assert set(NAMES) <= set(engine_names())
    for name in NAMES:
        cls = engine_class(name)
        assert cls.name == name and cls.kind == "vlm"
        assert (TaskKind.LAYOUT in cls.tasks) == ("layout" in spec_of(name).prompts or name in TWO_STAGE)


def test_weights_found_in_the_hugging_face_cache(
    checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hub's cache layout (models--org--name/refs/main -> snapshots/<commit>/) is found offline."""
    from huggingface_hub import constants

    repo = tmp_path / ("models--" + spec_of("qwen2vl").repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    shutil.copytree(checkpoints["qwen2vl"], repo / "snapshots" / "0123abcd")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    engine = engine_class("qwen2vl")()
    assert engine.available(None).ok
    engine.load(EnginePlan())
    assert engine.attention == {"": "sdpa", "vision_config": "sdpa", "text_config": "sdpa"}


def test_cli_ocr_with_a_local_checkpoint(checkpoints: dict[str, Path], pages: list[Page], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from polyocr.cli import app

    image = tmp_path / "page.png"
    pages[0].image.save(image)
    args = [
        "ocr",
        str(image),
        "--engine",
        "qwen2vl",
        "--model",
        str(checkpoints["qwen2vl"]),
        "--max-new-tokens",
        "3",
        "--format",
        "json",
        "--quiet",
    ]
    result = CliRunner().invoke(app, args)
    document = json.loads(result.stdout)
    [page] = document["pages"]
    assert page["engine"] == "qwen2vl"
    assert page["generation"]["prompt_tokens"] > 0
    assert page["generation"]["generated_tokens"] <= 3


def test_benchmark_runs_the_engines_attention() -> None:
    """benchmarks/bench_hf_vlm_gpu.py cannot import polyocr on the GPU machine; its copy must agree."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_hf_vlm_gpu.py"
    module_spec = importlib.util.spec_from_file_location("bench_hf_vlm_gpu", path)
    bench = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(bench)
    assert {name: spec.implementation("sdpa") for name, spec in ((n, spec_of(n)) for n in NAMES)} == bench.ATTENTION
    assert set(bench.CONFIGS) == set(NAMES)
    assert all(bench.CONFIGS[name][0] == spec.repo_id for name, spec in ((n, spec_of(n)) for n in NAMES))


def test_got_vision_never_gets_sdpa() -> None:
    assert spec_of("got").implementation("sdpa") == {"": "eager", "vision_config": "eager", "text_config": "sdpa"}
    assert spec_of("deepseek-ocr").implementation("flash_attention_2")["vision_config"] == "sdpa"
    # The runtime chooses for the language model (""), the vision part shows its own choices.
    assert engine_class("got").supported_attention() == {
        "": ("flash_attention_2", "sdpa", "eager"),
        "vision_config": ("eager",),
    }


def test_qwen3_json_to_blocks_survives_truncation() -> None:
    output = (
        '```json\n[{"bbox_2d": [0, 0, 500, 100], "label": "section-header", "text": "Intro"},\n'
        ' {"bbox_2d": [0, 120, 1000, 900], "label": "table", "text": "<table></table>"},\n {"bbox_2d": [0, 9'
    )
    blocks = parse_qwen3_json(output, (1000, 2000))
    assert [(b.category, b.bbox) for b in blocks] == [
        ("Section-header", (0.0, 0.0, 500.0, 200.0)),
        ("Table", (0.0, 240.0, 1000.0, 1800.0)),
    ]


def test_deepseek_grounding_to_blocks() -> None:
    output = (
        "<|ref|>title<|/ref|><|det|>[[330, 198, 558, 230]]<|/det|>\n# R&D QUALITY\n\n"
        "<|ref|>equation<|/ref|><|det|>[[10, 10, 20, 20], [30, 5, 40, 25]]<|/det|>\n$$x^2$$"
    )
    blocks = parse_deepseek_grounding(output, (999, 999))
    assert [(b.category, b.text, b.format) for b in blocks] == [
        ("Title", "# R&D QUALITY", TextFormat.MARKDOWN),
        ("Formula", "$$x^2$$", TextFormat.LATEX),
    ]
    assert blocks[1].bbox == (10.0, 5.0, 40.0, 25.0)


@pytest.mark.parametrize("name", NAMES)
def test_decoding_steps_reuse_the_cache(name: str, checkpoints: dict[str, Path], pages: list[Page]) -> None:
    """The vision encoder runs in the prefill only and each later step feeds the decoder one token:
    a step that re-encoded the image or the prompt would cost as much as the prefill, per token."""
    engine = _engine(name, checkpoints[name])
    inner = engine._model.model
    vision = next(
        getattr(inner, a)
        for a in ("visual", "vision_tower", "vision_model", "vision_encoder", "sam_model")
        if hasattr(inner, a)
    )
    events: list[object] = []
    hooks = [
        vision.register_forward_pre_hook(lambda module, args: events.append("vision")),
        inner.language_model.layers[0].register_forward_pre_hook(
            lambda module, args, kwargs: events.append(kwargs.get("hidden_states", args[0] if args else None).shape[1]),
            with_kwargs=True,
        ),
    ]
    task = Task(max_new_tokens=6)
    if name in TWO_STAGE:  # one generation: the region task reads one crop (the whole page here)
        task = Task(kind=TaskKind.REGION, region=(0.0, 0.0, *map(float, pages[0].image.size)), max_new_tokens=6)
    try:
        [result] = engine.recognize(pages[:1], task)
    finally:
        for hook in hooks:
            hook.remove()
    prefill = next(i for i, e in enumerate(events) if e != "vision")
    assert "vision" in events[:prefill]
    assert events[prefill] == result.generation.prompt_tokens
    assert events[prefill + 1 :] == [1] * (result.generation.generated_tokens - 1)


def test_cuda_plans_compile_a_static_cache(checkpoints: dict[str, Path]) -> None:
    engine = _engine("qwen2vl", checkpoints["qwen2vl"])
    task = Task(max_new_tokens=8)
    assert "cache_implementation" not in engine.generation_settings(task, 300)
    engine.plan = EnginePlan(device="cuda")
    settings = engine.generation_settings(task, 300)
    assert settings["cache_implementation"] == "static"
    # The static cache's length is rounded up as for dots (engines/vlm.py), so decoding products align.
    assert settings["max_cache_len"] == 512
    engine.plan = EnginePlan(device="cuda", generation={"cache_implementation": "dynamic"})
    assert "cache_implementation" not in engine.generation_settings(task, 300)
