"""PaddleOCR-VL (and -1.5) as its authors run it: PP-DocLayout then the VLM on each region.

Golden values come from the published files in tests/fixtures/models/paddleocr-vl/ (the checkpoint's
preprocessor, chat template, added tokens, and the PP-DocLayoutV2 config in Paddle's format) and from
PaddleX's pipeline code (cited in src/polyocr/engines/hf/paddleocr_vl.py and pp_doclayout.py). The
end-to-end tests run the real engine on tiny random checkpoints (tests/tiny_hf.py, tests/tiny_layout.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "2")

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from polyocr.documents import Page  # noqa: E402
from polyocr.engines.base import engine_class, engine_entry  # noqa: E402
from polyocr.engines.hf import pp_doclayout  # noqa: E402
from polyocr.engines.hf.otsl import otsl_to_html  # noqa: E402
from polyocr.engines.hf.paddleocr_vl import (  # noqa: E402
    ELEMENT_PROMPTS,
    PADDLEOCR_VL,
    crop_margin,
    finish_element,
    paddle_pixels,
    prepare_element,
)
from polyocr.engines.hf.pp_doclayout import LABELS, element_mode, postprocess, preprocess  # noqa: E402
from polyocr.engines.hf.twostage import Region, crop, read_regions, worst_stop  # noqa: E402
from polyocr.results import TextFormat  # noqa: E402
from polyocr.types import EnginePlan, Task, TaskKind  # noqa: E402
from tiny_hf import PADDLE_CHAT, build_paddleocr_vl, build_paddleocr_vl15  # noqa: E402

FIXTURES = Path(__file__).parent / "fixtures" / "models" / "paddleocr-vl"
EVAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval"
PAGE_IMAGE = EVAL / "tesseract_test" / "phototest.tif"


# ---------------------------------------------------------------------------- golden: published files


def test_layout_labels_are_the_published_label_list_in_order() -> None:
    published = json.loads((FIXTURES / "PP-DocLayoutV2" / "config.json").read_text())
    assert list(LABELS) == published["label_list"]
    assert set(pp_doclayout.CATEGORY) >= set(LABELS)


def test_layout_preprocessing_is_the_published_one() -> None:
    """Paddle's config: Resize 800 x 800 without keeping the ratio, interp 2 (cubic), mean 0, std 1."""
    published = json.loads((FIXTURES / "PP-DocLayoutV2" / "config.json").read_text())["Preprocess"]
    resize, normalize = published[0], published[1]
    assert (resize["type"], resize["keep_ratio"], resize["interp"]) == ("Resize", False, 2)
    spec = pp_doclayout.PP_DOCLAYOUT_V2.preprocessor
    assert [spec["size"]["height"], spec["size"]["width"]] == resize["target_size"]
    assert spec["image_mean"] == normalize["mean"] and spec["image_std"] == normalize["std"]


def test_layout_resize_matches_cv2_cubic() -> None:
    """The published resize is cv2.INTER_CUBIC (what transformers approximates with antialias=False)."""
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    array = rng.integers(0, 256, size=(300, 410, 3), dtype=np.uint8)
    ours = preprocess([Image.fromarray(array)], pp_doclayout.PP_DOCLAYOUT_V2.preprocessor)[0]
    theirs = cv2.resize(array, (800, 800), interpolation=cv2.INTER_CUBIC).astype(np.float32) / 255
    assert ours.shape == (3, 800, 800)
    # an antialiased (PIL-style) bicubic differs from cv2 by far more than this on noise
    assert float(np.abs(ours.permute(1, 2, 0).numpy() - theirs).max()) <= 2 / 255


def test_vlm_pixel_limits_are_the_published_preprocessor() -> None:
    processor = transformers.PaddleOCRVLImageProcessorPil.from_pretrained(FIXTURES)
    own = dict(processor.size)
    assert (own["shortest_edge"], own["longest_edge"]) == (147_384, 2_822_400)
    assert paddle_pixels([(100, 100)], None, None, own) == {
        "size": {"shortest_edge": 147_384, "longest_edge": 2_822_400}
    }
    assert paddle_pixels([(100, 100)], None, 1_000_000, own)["size"]["longest_edge"] == 1_000_000


def test_element_prompts_render_through_the_published_chat_template() -> None:
    import jinja2

    template = jinja2.Environment().from_string((FIXTURES / "chat_template.jinja").read_text())
    tiny = jinja2.Environment().from_string(PADDLE_CHAT)
    assert ELEMENT_PROMPTS == {
        "text": "OCR:",
        "table": "Table Recognition:",
        "formula": "Formula Recognition:",
        "chart": "Chart Recognition:",
    }
    for prompt in ELEMENT_PROMPTS.values():
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        rendered = template.render(messages=messages, add_generation_prompt=True)
        assert rendered == (
            f"<|begin_of_sentence|>User: <|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>{prompt}\nAssistant: "
        )
        assert tiny.render(messages=messages, add_generation_prompt=True) == rendered  # the tiny model's


def test_table_tokens_are_plain_added_tokens_that_survive_decoding() -> None:
    added = json.loads((FIXTURES / "added_tokens.json").read_text())
    special = json.loads((FIXTURES / "special_tokens_map.json").read_text())["additional_special_tokens"]
    otsl = {"<ecel>": 101308, "<fcel>": 101309, "<xcel>": 101310, "<lcel>": 101311, "<ucel>": 101312, "<nl>": 101313}
    assert {t: added[t] for t in otsl} == otsl
    assert not set(otsl) & set(special)  # skip_special_tokens keeps them
    assert added["<|IMAGE_PLACEHOLDER|>"] == 100295
    generation = json.loads((FIXTURES / "generation_config.json").read_text())
    assert (generation["eos_token_id"], generation["pad_token_id"]) == (2, 0)


def test_element_token_budget_is_the_pipelines() -> None:
    assert PADDLEOCR_VL.token_budget(500) == 4096  # PaddleX: max_new_tokens 4096 when none is given


# ---------------------------------------------------------------------------- the pipeline's rules


def test_labels_get_the_pipelines_element_prompts() -> None:
    assert element_mode("table") == "table"
    assert element_mode("display_formula") == element_mode("inline_formula") == "formula"
    assert element_mode("formula") == "formula"  # transformers' test config spelling
    assert element_mode("formula_number") == "text"
    for label in ("image", "header_image", "footer_image", "chart", "seal"):  # chart/seal recognition off
        assert element_mode(label) is None
    for label in ("text", "paragraph_title", "doc_title", "abstract", "footnote", "number", "vertical_text"):
        assert element_mode(label) == "text"


def test_otsl_to_html_with_spans() -> None:
    assert otsl_to_html("<fcel>Name<fcel>Age<nl><fcel>Ann<fcel>31<nl>") == (
        "<table><tr><td>Name</td><td>Age</td></tr><tr><td>Ann</td><td>31</td></tr></table>"
    )
    assert otsl_to_html("<fcel>Head<lcel><nl><fcel>a<fcel>b<nl>") == (
        '<table><tr><td colspan="2">Head</td></tr><tr><td>a</td><td>b</td></tr></table>'
    )
    assert otsl_to_html("<fcel>A<fcel>B<nl><ucel><fcel>x<nl>") == (
        '<table><tr><td rowspan="2">A</td><td>B</td></tr><tr><td>x</td></tr></table>'
    )
    # rows of unequal length are squared with empty cells; text is escaped
    assert otsl_to_html("<fcel>a<fcel>b<nl><fcel>1 < 2<nl>") == (
        "<table><tr><td>a</td><td>b</td></tr><tr><td>1 &lt; 2</td><td></td></tr></table>"
    )
    assert otsl_to_html("no table here") == ""


def _region(label: str, order: int = 0, box: tuple[float, float, float, float] = (0, 0, 10, 10)) -> Region:
    return Region(bbox=box, category=pp_doclayout.CATEGORY[label], label=label, order=order, mode=element_mode(label))


def test_answers_post_processed_as_the_pipeline_does() -> None:
    assert finish_element(_region("table"), "<fcel>x<nl>") == ("<table><tr><td>x</td></tr></table>", TextFormat.HTML)
    assert finish_element(_region("table"), "not otsl") == ("not otsl", TextFormat.PLAIN)
    assert finish_element(_region("display_formula"), "\\[E=mc^2\\]") == ("E=mc^2", TextFormat.LATEX)
    text, fmt = finish_element(_region("text"), "where \\(x\\) is $5")
    assert (text, fmt) == ("where  $ x $ is 5", TextFormat.MARKDOWN)
    assert finish_element(_region("formula_number"), "\\((1)\\)")[0] == "(1)"


def test_formula_crops_lose_their_white_margin() -> None:
    image = Image.new("RGB", (60, 40), "white")
    image.paste((0, 0, 0), (20, 10, 35, 25))
    assert crop_margin(image).size == (15, 15)
    blank = Image.new("RGB", (60, 40), "white")
    assert crop_margin(blank) is blank


def _rows(*rows: tuple[int, float, float, float, float, float]) -> np.ndarray:
    return np.array([[*row, order] for order, row in enumerate(rows)], dtype=np.float64)


def test_layout_postprocess_thresholds_nms_containment_and_order() -> None:
    thresholds = pp_doclayout.V2_THRESHOLDS
    text, table, formula, seal, reference, image = (
        LABELS.index(n) for n in ("text", "table", "display_formula", "seal", "reference", "image")
    )
    rows = _rows(
        (text, 0.9, 10, 10, 200, 50),  # kept, first in reading order
        (table, 0.6, 10, 10, 200, 50),  # the same box as another class: NMS (IoU >= 0.98) drops the lower score
        (formula, 0.8, 10, 100, 300, 200),  # kept; "large" mode drops what lies inside it
        (text, 0.95, 20, 110, 100, 150),  # inside the formula: dropped
        (seal, 0.44, 300, 300, 350, 350),  # under seal's threshold 0.45: dropped
        (reference, 0.9, 10, 400, 200, 450),  # the pipeline's overlap filter leaves references out
        (table, 0.7, 10, 500, 300, 600),  # kept
        (image, 0.9, 0, 0, 640, 700),  # an image covering the page (> 0.93 of it): dropped
    )
    regions = postprocess(rows, (640, 700), LABELS, thresholds)
    assert [(r.label, r.bbox, r.order) for r in regions] == [
        ("text", (10.0, 10.0, 200.0, 50.0), 0),
        ("display_formula", (10.0, 100.0, 300.0, 200.0), 1),
        ("table", (10.0, 500.0, 300.0, 600.0), 2),
    ]
    assert [r.category for r in regions] == ["Text", "Formula", "Table"]
    assert [r.mode for r in regions] == ["text", "formula", "table"]


def test_reading_order_votes() -> None:
    """Order logits [i, j] (i < j) say "i comes before j" (transformers' _get_order_seqs): here query 2
    comes first, then 0, then 1."""
    logits = torch.full((1, 3, 3), -10000.0)  # the model masks the lower triangle
    logits[0, 0, 1] = 10.0  # 0 before 1
    logits[0, 0, 2] = -10.0  # 0 not before 2
    logits[0, 1, 2] = -10.0  # 1 not before 2
    assert pp_doclayout.order_sequence(logits).tolist() == [[1, 2, 0]]


def test_crop_truncates_like_paddlex_and_pads_within_the_page() -> None:
    image = Image.new("RGB", (100, 80))
    assert crop(image, (10.7, 5.2, 50.9, 40.99)).size == (40, 35)
    assert crop(image, (10, 5, 50, 40), pad=20).size == (70, 60)
    assert crop(image, (99.5, 79.5, 99.9, 79.9)).size == (1, 1)


def test_worst_stop_reason_wins() -> None:
    assert worst_stop(["eos", "max_tokens", "eos"]) == "max_tokens"
    assert worst_stop(["eos", "loop", "max_tokens"]) == "loop"
    assert worst_stop([]) == "eos"


# ---------------------------------------------------------------------------- end to end, tiny models


@pytest.fixture(scope="module")
def page() -> Page:
    if not PAGE_IMAGE.exists():
        pytest.skip(f"eval pages not found at {PAGE_IMAGE}")
    image = Image.open(PAGE_IMAGE).convert("RGB").crop((0, 0, 320, 240))
    return Page(image=image, number=1, source=str(PAGE_IMAGE))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_paddleocr_vl(tmp_path_factory.mktemp("paddle") / "paddleocr-vl")


@pytest.fixture(scope="module")
def engine(checkpoint: Path):  # type: ignore[no-untyped-def]
    return _engine("paddleocr-vl", checkpoint)


def _engine(name: str, path: Path, batch_size: int = 8):  # type: ignore[no-untyped-def]
    torch.set_num_threads(2)
    engine = engine_class(name)(model_path=str(path))
    engine.load(EnginePlan(batch_size=batch_size, generation={"min_new_tokens": 3}))
    return engine


def test_two_stage_blocks_are_the_layouts_regions_in_order(engine, page: Page, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    calls: list[tuple[str, int]] = []
    generate = engine._generate
    monkeypatch.setattr(
        engine,
        "_generate",
        lambda images, mode, task: calls.append((mode, len(images))) or generate(images, mode, task),
    )
    [regions] = engine.detect([page])
    assert regions and [r.order for r in regions] == list(range(len(regions)))
    [result] = engine.recognize([page], Task(kind=TaskKind.LAYOUT, max_new_tokens=3))
    read = [r for r in regions if r.mode is not None]
    # one batch per element prompt (batch_size 8), every region with a prompt read once
    assert sum(n for _, n in calls) == len(read)
    assert {mode for mode, _ in calls} == {r.mode for r in read}
    kept = regions  # every region is a block, in the layout's order
    assert [(b.bbox, b.category) for b in result.blocks] == [(r.bbox, r.category) for r in kept]
    assert result.generation is not None and result.generation.generated_tokens == 3 * len(read)
    for block, region in zip(result.blocks, kept, strict=True):
        if region.mode == "formula":
            assert block.format == TextFormat.LATEX
        elif region.mode is None:
            assert block.text == ""


def test_element_stage_keeps_categories_order_and_formats(engine, page: Page, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Regions as a layout stage gives them (out of order here): blocks come back in reading order with
    the layout's categories, a picture kept without text, a formula as LaTeX, one batch per prompt."""
    calls: list[str] = []
    generate = engine._generate
    monkeypatch.setattr(
        engine, "_generate", lambda images, mode, task: calls.append(mode) or generate(images, mode, task)
    )
    regions = [
        _region("table", 2, (0, 120, 320, 240)),
        _region("paragraph_title", 0, (0, 0, 320, 30)),
        _region("image", 3, (200, 40, 300, 100)),
        _region("display_formula", 1, (0, 30, 160, 110)),
        _region("text", 4, (0, 110, 320, 120)),
    ]
    task = Task(max_new_tokens=3)
    [result] = read_regions(
        engine, [page], [regions], task, prepare=prepare_element, finish=finish_element, keep_empty=True
    )
    assert sorted(calls) == ["formula", "table", "text"]  # two text regions, one batch
    expected = sorted(regions, key=lambda r: r.order)
    assert [b.bbox for b in result.blocks] == [r.bbox for r in expected]
    assert [b.category for b in result.blocks] == [
        "Section-header", "Formula", "Table", "Picture", "Text"
    ]  # fmt: skip
    picture, formula = result.blocks[3], result.blocks[1]
    assert picture.text == "" and formula.format == TextFormat.LATEX
    assert result.blocks[2].format in (TextFormat.HTML, TextFormat.PLAIN)  # HTML when the answer is OTSL


def test_layout_only_makes_no_vlm_call(engine, page: Page, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(engine, "_generate", None)  # a VLM call would fail
    [result] = engine.recognize([page], Task(kind=TaskKind.LAYOUT_ONLY))
    [regions] = engine.detect([page])
    assert [(b.bbox, b.category, b.text) for b in result.blocks] == [(r.bbox, r.category, "") for r in regions]
    assert result.generation is None


def test_region_task_reads_the_crop_with_the_ocr_prompt(engine, page: Page, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    modes: list[str] = []
    generate = engine._generate
    monkeypatch.setattr(
        engine, "_generate", lambda images, mode, task: modes.append(mode) or generate(images, mode, task)
    )
    region = (10.0, 20.0, 170.0, 140.0)
    [result] = engine.recognize([page], Task(kind=TaskKind.REGION, region=region, max_new_tokens=3))
    assert modes == ["text"] and engine.spec.prompts["text"] == "OCR:"
    assert all(b.bbox == region for b in result.blocks)


def test_paddleocr_vl_15_runs_with_pp_doclayout_v3(tmp_path: Path, page: Page) -> None:
    path = build_paddleocr_vl15(tmp_path / "paddleocr-vl-1.5")
    assert json.loads((path / "layout" / "config.json").read_text())["model_type"] == "pp_doclayout_v3"
    engine = _engine("paddleocr-vl-1.5", path)
    assert engine.detector.repo_id == "PaddlePaddle/PP-DocLayoutV3_safetensors"
    [result] = engine.recognize([page], Task(kind=TaskKind.LAYOUT, max_new_tokens=3))
    [regions] = engine.detect([page])
    assert result.engine == "paddleocr-vl-1.5" and regions
    assert {b.bbox for b in result.blocks} <= {r.bbox for r in regions}
    from polyocr import published

    assert engine_entry("paddleocr-vl-1.5").rank is None
    assert "94.5" in published.evidence("paddleocr-vl-1.5")  # arXiv:2601.21957
    # the pipeline's crop pixel limits for 1.5 (PaddleX pipeline.py defaults)
    assert engine.spec.pixel_kwargs([(10, 10)], None, None, {})["size"] == {
        "shortest_edge": 112_896,
        "longest_edge": 1_003_520,
    }


def test_layout_weights_missing_or_in_paddle_format(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    bare = tmp_path / "vlm-only"
    shutil.copytree(checkpoint, bare, ignore=shutil.ignore_patterns("layout"))
    # the PaddlePaddle/PaddleOCR-VL repository's own PP-DocLayoutV2/ folder is Paddle's format
    (bare / "PP-DocLayoutV2").mkdir()
    shutil.copy(FIXTURES / "PP-DocLayoutV2" / "config.json", bare / "PP-DocLayoutV2" / "config.json")
    (bare / "PP-DocLayoutV2" / "model.safetensors").write_bytes(b"")
    engine = engine_class("paddleocr-vl")(model_path=str(bare))
    availability = engine.available(None)
    assert not availability.ok
    assert "PaddlePaddle/PP-DocLayoutV2_safetensors" in availability.reason
    assert availability.fix.startswith("polyocr fetch paddleocr-vl")
    assert engine_class("paddleocr-vl")(model_path=str(checkpoint)).available(None).ok


@pytest.mark.parametrize(
    ("name", "repos"),
    [
        ("paddleocr-vl", ["PaddlePaddle/PaddleOCR-VL", "PaddlePaddle/PP-DocLayoutV2_safetensors"]),
        ("glm-ocr", ["zai-org/GLM-OCR", "PaddlePaddle/PP-DocLayoutV3_safetensors"]),
    ],
)
def test_fetch_downloads_the_layout_model_too(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, repos: list[str]
) -> None:
    """`polyocr fetch` of a two-stage engine downloads its layout model's repository too (the hub
    itself, outside polyocr, is the test double)."""
    import huggingface_hub
    from typer.testing import CliRunner

    from polyocr.cli import app

    fetched: list[str] = []

    def snapshot_download(repo_id: str, **kwargs: object) -> str:
        fetched.append(repo_id)
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    result = CliRunner().invoke(app, ["fetch", name])
    assert result.exit_code == 0, result.output
    assert fetched == repos


def test_cli_ocr_runs_both_stages(engine, checkpoint: Path, page: Page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from polyocr.cli import app

    image = tmp_path / "page.png"
    page.image.save(image)
    args = ["ocr", str(image), "--engine", "paddleocr-vl", "--model", str(checkpoint)]
    result = CliRunner().invoke(app, [*args, "--max-new-tokens", "3", "--format", "json", "--quiet"])
    document = json.loads(result.stdout)
    [out] = document["pages"]
    assert out["engine"] == "paddleocr-vl"
    [regions] = engine.detect([Page(image=Image.open(image).convert("RGB"), number=1, source=str(image))])
    categories = {r.category for r in regions}
    assert out["blocks"] and {b["category"] for b in out["blocks"]} <= categories
    assert all(b["bbox"] is not None for b in out["blocks"])
