"""GLM-OCR as its authors' SDK runs it: PP-DocLayoutV3 with the SDK's rules, then the model per region.

Golden values come from the SDK's default configuration (tests/fixtures/models/glm-ocr/config.yaml =
zai-org/GLM-OCR glmocr/config.yaml) and its code (glmocr/layout/layout_detector.py,
glmocr/utils/layout_postprocess_utils.py, glmocr/utils/image_utils.py,
glmocr/postprocess/result_formatter.py; cited in src/polyocr/engines/hf/glm_ocr.py). The end-to-end
tests run the real engine on the tiny GLM-OCR and tiny PP-DocLayoutV3 (tests/tiny_hf.py build_glm_ocr).
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
yaml = pytest.importorskip("yaml")

from PIL import Image  # noqa: E402

from polyocr.documents import Page  # noqa: E402
from polyocr.engines.base import engine_class  # noqa: E402
from polyocr.engines.hf import glm_ocr, pp_doclayout  # noqa: E402
from polyocr.engines.hf.glm_ocr import (  # noqa: E402
    GLM_LAYOUT,
    GLM_PROMPTS,
    GLM_RULES,
    LABEL_TASKS,
    MERGE_MODES,
    assemble_page,
    finish_element,
    sdk_crop_box,
    sdk_image,
    sdk_mode,
    sdk_size,
)
from polyocr.engines.hf.pp_doclayout import LABELS, postprocess  # noqa: E402
from polyocr.engines.hf.twostage import Region, read_regions  # noqa: E402
from polyocr.errors import EngineError  # noqa: E402
from polyocr.results import Block, TextFormat  # noqa: E402
from polyocr.types import EnginePlan, Task, TaskKind  # noqa: E402
from tiny_hf import build_glm_ocr  # noqa: E402

CONFIG = yaml.safe_load((Path(__file__).parent / "fixtures" / "models" / "glm-ocr" / "config.yaml").read_text())
PIPELINE = CONFIG["pipeline"]
EVAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval"
PAGE_IMAGE = EVAL / "tesseract_test" / "phototest.tif"


# ---------------------------------------------------------------------------- golden: the SDK's config


def test_prompts_and_label_mapping_are_the_sdks() -> None:
    layout = PIPELINE["layout"]
    assert PIPELINE["page_loader"]["task_prompt_mapping"] == GLM_PROMPTS == glm_ocr.GLM_OCR.prompts
    assert {task: list(labels) for task, labels in LABEL_TASKS.items()} == layout["label_task_mapping"]
    assert [layout["id2label"][i] for i in range(len(LABELS))] == list(LABELS)
    # every label in exactly one list; each list's labels get its prompt, skip none, abandon dropped
    assert sorted(label for labels in LABEL_TASKS.values() for label in labels) == sorted(LABELS)
    for task, labels in layout["label_task_mapping"].items():
        for label in labels:
            assert sdk_mode(label) == (task if task in GLM_PROMPTS else None)
    assert GLM_RULES.abandon == frozenset(layout["label_task_mapping"]["abandon"])
    # label_visualization_mapping: a seal is shown as text
    assert "seal" in PIPELINE["result_formatter"]["label_visualization_mapping"]["text"]
    assert GLM_RULES.categories == {"seal": "Text"}


def test_layout_thresholds_and_modes_are_the_sdks() -> None:
    layout = PIPELINE["layout"]
    assert GLM_LAYOUT.thresholds == layout["threshold"] == 0.3 and "threshold_by_class" not in layout
    assert GLM_LAYOUT.repo_id == layout["model_dir"] == "PaddlePaddle/PP-DocLayoutV3_safetensors"
    assert GLM_LAYOUT.model_type == "pp_doclayout_v3"
    assert layout["layout_merge_bboxes_mode"] == MERGE_MODES
    assert layout["layout_nms"] is True and layout["layout_unclip_ratio"] == [1.0, 1.0]  # no unclip
    assert layout["use_polygon"] is False  # box crops
    assert engine_class("glm-ocr").detector is GLM_LAYOUT
    assert engine_class("glm-ocr").companion_repos == ("PaddlePaddle/PP-DocLayoutV3_safetensors",)
    assert engine_class("glm-ocr").tasks == frozenset(TaskKind)


def test_image_preparation_is_the_sdks() -> None:
    loader = PIPELINE["page_loader"]
    assert (loader["min_pixels"], loader["max_pixels"]) == (glm_ocr.SDK_MIN_PIXELS, glm_ocr.SDK_MAX_PIXELS)
    assert loader["t_patch_size"] == 2 and loader["patch_expand_factor"] == 1 and loader["image_format"] == "JPEG"
    # smart_resize(t=2, ..., factor 28): worked by hand from image_utils.py
    assert sdk_size(20, 20) == (84, 84)  # 2*28*28 < 12544: scaled up, ceil to 28s
    assert sdk_size(100, 100) == (112, 112)  # rounded to 28s
    assert sdk_size(10000, 8000) == (6664, 5320)  # 2*h*w > 71,372,800: scaled down, floor to 28s
    assert glm_ocr.GLM_OCR.prepare_image is sdk_image
    out = sdk_image(Image.new("L", (101, 57), 200))
    assert out.mode == "RGB" and out.size == sdk_size(101, 57)


def test_crops_go_through_the_sdks_0_1000_boxes() -> None:
    """layout_detector.py normalises to int(x / W * 1000); crop_image_region scales back and truncates."""
    assert sdk_crop_box((100, 50, 200, 80), (333, 200)) == (99.0, 50.0, 199.0, 80.0)
    assert sdk_crop_box((100, 50, 200, 80), (1000, 1000)) == (100.0, 50.0, 200.0, 80.0)


# ---------------------------------------------------------------------------- the SDK's layout rules


def _row(label: str, score: float, box: tuple[float, float, float, float], order: int) -> list[float]:
    return [float(LABELS.index(label)), score, *box, float(order)]


ROWS = np.array([
    _row("text", 0.9, (10.6, 10, 300, 100), 0),
    _row("reference", 0.8, (20, 20, 100, 60), 1),  # inside the first text box
    _row("text", 0.7, (10.6, 120, 150, 190), 2),
    _row("seal", 0.3, (200, 120, 260, 180), 3),  # exactly at the threshold
    _row("header", 0.5, (0, 200, 300, 230), 4),
    _row("formula_number", 0.6, (160, 130, 190, 150), 5),  # beside the third text box
    _row("image", 0.6, (30, 130, 60, 160), 6),  # inside the third text box
])  # fmt: skip


def test_sdk_rules_differ_from_paddlex_where_its_code_does() -> None:
    glm = postprocess(ROWS, (320, 240), LABELS, 0.3, GLM_RULES)
    # the text box holding a reference box goes ("small" for reference) and the reference with it
    # ("large" for text); the header is abandoned; the seal at exactly 0.3 stays (>=) and is read as
    # text; the image inside a text box is preserved; boxes truncated, not rounded (10.6 -> 10)
    assert [(r.label, r.bbox, r.category, r.mode, r.order) for r in glm] == [
        ("text", (10.0, 120.0, 150.0, 190.0), "Text", "text", 0),
        ("seal", (200.0, 120.0, 260.0, 180.0), "Text", "text", 1),
        ("formula_number", (160.0, 130.0, 190.0, 150.0), "Text", "text", 2),
        ("image", (30.0, 130.0, 60.0, 160.0), "Picture", None, 3),
    ]
    paddlex = postprocess(ROWS, (320, 240), LABELS, 0.3)  # PaddleOCR-VL-1.5's pipeline
    assert [(r.label, r.bbox[0]) for r in paddlex] == [
        ("text", 11.0), ("text", 11.0), ("header", 0.0), ("formula_number", 160.0), ("image", 30.0)
    ]  # fmt: skip


def test_sdk_containment_is_80_percent_for_every_class() -> None:
    """Merge mode "large" for content (PaddleX: only chart, formulas and titles) at 0.8 (PaddleX 0.9);
    two classes, so that NMS (IoU 0.6 within a class) does not decide first."""
    rows = np.array([_row("content", 0.9, (0, 0, 100, 100), 0), _row("text", 0.8, (15, 0, 115, 50), 1)])
    assert [r.order for r in postprocess(rows, (320, 240), LABELS, 0.3, GLM_RULES)] == [0]  # 85% inside
    rows[1, 2:6] = (25, 0, 125, 50)  # 75% inside: both stay
    assert len(postprocess(rows, (320, 240), LABELS, 0.3, GLM_RULES)) == 2
    rows[1, 2:6] = (15, 0, 115, 100)  # two equal boxes, each 85% inside the other: both go, as in the SDK
    assert postprocess(rows, (320, 240), LABELS, 0.3, GLM_RULES) == []


def _merge_by_pairs(rows: np.ndarray, rules: pp_doclayout.LayoutRules) -> np.ndarray:
    """check_containment as layout_postprocess_utils.py writes it, pair by pair (the reference)."""

    def contained(a: np.ndarray, b: np.ndarray) -> bool:
        area = (a[4] - a[2]) * (a[5] - a[3])
        iw = max(0.0, min(a[4], b[4]) - max(a[2], b[2]))
        ih = max(0.0, min(a[5], b[5]) - max(a[3], b[3]))
        return bool(area > 0 and iw * ih / area >= rules.containment)

    preserved = {LABELS.index(label) for label in rules.preserve}
    keep = np.ones(len(rows), dtype=bool)
    for category, mode in rules.merge.items():
        contains, inside = np.zeros(len(rows), dtype=int), np.zeros(len(rows), dtype=int)
        for i in range(len(rows)):
            for j in range(len(rows)):
                if i == j or rows[i][0] in preserved:
                    continue
                subject = rows[j][0] if mode == "large" else rows[i][0]
                if subject == category and contained(rows[i], rows[j]):
                    inside[i] = contains[j] = 1
        keep &= (inside == 0) if mode == "large" else ((contains == 0) | (inside == 1))
    return keep


@pytest.mark.parametrize("rules", [GLM_RULES, pp_doclayout.PADDLEX_RULES], ids=["glm", "paddlex"])
def test_merge_modes_equal_the_pairwise_reference(rules: pp_doclayout.LayoutRules) -> None:
    rng = np.random.default_rng(7)
    kinds = [LABELS.index(x) for x in ("text", "reference", "image", "table", "chart", "doc_title")]
    dropped = 0
    for _ in range(30):
        n = int(rng.integers(2, 14))
        corners = rng.integers(0, 60, size=(n, 2)).astype(float)
        sizes = rng.integers(1, 50, size=(n, 2)).astype(float)
        rows = np.column_stack([rng.choice(kinds, n), rng.random(n), corners, corners + sizes, np.arange(n)])
        keep = pp_doclayout.merge_keep(rows, LABELS, rules)
        assert keep.tolist() == _merge_by_pairs(rows, rules).tolist()
        dropped += int((~keep).sum())
    assert dropped > 10  # the cases really nest boxes


# ---------------------------------------------------------------------------- the SDK's result assembly


def _region(label: str, order: int = 0, box: tuple[float, float, float, float] = (0, 0, 10, 10)) -> Region:
    category = GLM_RULES.categories.get(label) or pp_doclayout.CATEGORY[label]
    return Region(bbox=box, category=category, label=label, order=order, mode=sdk_mode(label))


def test_answers_formatted_as_the_sdk_formats_them() -> None:
    """ResultFormatter._format_content, case by case."""
    table = "<table><tr><td>a</td></tr></table>"
    assert finish_element(_region("table"), f" {table}\n") == (table, TextFormat.HTML)
    assert finish_element(_region("table"), "a | b") == ("a | b", TextFormat.PLAIN)
    for answer in ("$$E = mc^2$$", "\\[E = mc^2\\]", "\\(E = mc^2\\)", "E = mc^2"):
        assert finish_element(_region("display_formula"), answer) == ("E = mc^2", TextFormat.LATEX)
    text = _region("text")
    assert finish_element(text, "Wait.......\nthen ____ go") == ("Wait...\n\nthen ___ go", TextFormat.MARKDOWN)
    assert finish_element(text, "· item")[0] == "- item"
    assert finish_element(text, "1.First")[0] == "1. First"
    assert finish_element(text, "（2）second")[0] == "(2) second"
    assert finish_element(text, "x is $ a+b $here")[0] == "x is $a+b$ here"
    assert finish_element(text, "```python\nprint(1)")[0] == "```python\n\nprint(1)\n\n```"
    assert finish_element(_region("paragraph_title"), "## - Intro")[0] == "- Intro"
    assert finish_element(_region("paragraph_title"), "- ## Intro")[0] == "Intro"
    assert finish_element(_region("doc_title"), "# Title")[0] == "Title"
    loop = "intro " + "abcdefghij" * 30
    assert finish_element(text, loop + "x" * 1800)[0] == "intro abcdefghij"  # >= 2048 chars: loop cut


def _pair(label: str, text: str, order: int, x: float = 0) -> tuple[Region, Block]:
    region = _region(label, order, (x, order * 10, x + 100, order * 10 + 9))
    return region, Block(bbox=region.bbox, category=region.category, text=text)


def test_formula_numbers_become_tags_and_never_stay_alone() -> None:
    pairs = [
        _pair("display_formula", "a = b", 0),
        _pair("formula_number", "(1)", 1),
        _pair("formula_number", "（2.1）", 2),
        _pair("display_formula", "c = d", 3),
        _pair("formula_number", "(3)", 4),  # no formula beside it
        _pair("text", "end", 5),
    ]
    out = assemble_page(pairs, (1000, 1000))
    assert [b.text for b in out] == ["a = b \\tag{1}", "c = d \\tag{2.1}", "end"]


def test_hyphenated_paragraphs_join_and_list_items_get_bullets() -> None:
    pairs = [
        _pair("text", "The experi-", 0),
        _pair("image", "", 1),
        _pair("text", "ment works.", 2),
        _pair("text", "- one", 3, x=100),
        _pair("text", "two", 4, x=105),
        _pair("text", "- three", 5, x=98),
        _pair("text", "not-", 6),
        _pair("text", "Capital", 7),
    ]
    out = assemble_page(pairs, (1000, 1000))
    assert [b.text for b in out] == ["The experiment works.", "", "- one", "- two", "- three", "not-", "Capital"]
    far = [_pair("text", "- one", 0, x=100), _pair("text", "two", 1, x=150), _pair("text", "- three", 2, x=100)]
    assert [b.text for b in assemble_page(far, (1000, 1000))][1] == "two"  # not aligned: no bullet


# ---------------------------------------------------------------------------- the real engine, tiny


@pytest.fixture(scope="module")
def page() -> Page:
    if not PAGE_IMAGE.exists():
        pytest.skip(f"eval pages not found at {PAGE_IMAGE}")
    image = Image.open(PAGE_IMAGE).convert("RGB").crop((0, 0, 320, 240))
    return Page(image=image, number=1, source=str(PAGE_IMAGE))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_glm_ocr(tmp_path_factory.mktemp("glm") / "glm-ocr")


def _engine(path: Path, **generation: object):  # type: ignore[no-untyped-def]
    torch.set_num_threads(2)
    engine = engine_class("glm-ocr")(model_path=str(path))
    engine.load(EnginePlan(batch_size=8, generation={"min_new_tokens": 3, **generation}))
    return engine


@pytest.fixture(scope="module")
def engine(checkpoint: Path):  # type: ignore[no-untyped-def]
    return _engine(checkpoint)


def _recording(engine, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, list[tuple[int, int]]]]:  # type: ignore[no-untyped-def]
    calls: list[tuple[str, list[tuple[int, int]]]] = []
    generate = engine._generate
    monkeypatch.setattr(
        engine,
        "_generate",
        lambda images, mode, task: calls.append((mode, [im.size for im in images])) or generate(images, mode, task),
    )
    return calls


def test_constructed_regions_read_and_assembled(engine, page: Page, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """Regions as the layout stage gives them, through the real tiny VLM (one batch per prompt); the
    decoded answers replaced, in reading order, by answers in the model's formats to check the page's
    assembly."""
    calls = _recording(engine, monkeypatch)
    regions = [
        _region("table", 5, (0, 150, 320, 240)),
        _region("paragraph_title", 0, (0, 0, 320, 20)),
        _region("image", 6, (200, 40, 300, 100)),
        _region("display_formula", 3, (0, 100, 160, 130)),
        _region("formula_number", 4, (170, 100, 200, 130)),
        _region("text", 1, (0, 20, 320, 50)),
        _region("text", 2, (0, 50, 320, 90)),
    ]
    answers = iter(["## Results", "The experi-", "ment works.", "$$E = mc^2$$", "(1)", "<table><tr></tr></table>"])
    monkeypatch.setattr(engine, "decode", lambda tokens, skip_special_tokens=True: next(answers))
    [result] = engine.read_elements([page], [regions], Task(max_new_tokens=3))
    assert sorted(mode for mode, _ in calls) == ["formula", "table", "text"]  # 4 text regions, one batch
    assert [(b.category, b.text, b.format) for b in result.blocks] == [
        ("Section-header", "Results", TextFormat.MARKDOWN),
        ("Text", "The experiment works.", TextFormat.MARKDOWN),
        ("Formula", "E = mc^2 \\tag{1}", TextFormat.LATEX),
        ("Table", "<table><tr></tr></table>", TextFormat.HTML),
        ("Picture", "", TextFormat.PLAIN),
    ]
    assert result.blocks[0].bbox == (0, 0, 320, 20) and result.generation is not None
    assert result.generation.generated_tokens == 3 * 6
    assert result.markdown.startswith("## Results\n")  # polyocr's renderer writes the heading


def test_two_stages_on_the_tiny_layout(engine, page: Page, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    calls = _recording(engine, monkeypatch)
    [regions] = engine.detect([page])
    assert regions and all(r.label not in GLM_RULES.abandon for r in regions)
    [result] = engine.recognize([page], Task(kind=TaskKind.LAYOUT, max_new_tokens=3))
    read = [r for r in regions if r.mode is not None]
    assert sum(len(sizes) for _, sizes in calls) == len(read)
    assert {mode for mode, _ in calls} == {r.mode for r in read}
    assert {b.bbox for b in result.blocks} <= {r.bbox for r in regions}
    [text] = engine.recognize([page], Task(kind=TaskKind.TEXT, max_new_tokens=3))
    assert text.text == result.text


def test_layout_only_makes_no_vlm_call(engine, page: Page, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(engine, "_generate", None)  # a VLM call would fail
    [result] = engine.recognize([page], Task(kind=TaskKind.LAYOUT_ONLY))
    [regions] = engine.detect([page])
    assert [(b.bbox, b.category, b.text) for b in result.blocks] == [(r.bbox, r.category, "") for r in regions]


def test_region_task_reads_the_crop_with_text_recognition(engine, page: Page, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    calls = _recording(engine, monkeypatch)
    monkeypatch.setattr(engine, "detect", None)  # no layout stage
    region = (10.0, 20.0, 170.0, 140.0)
    [result] = engine.recognize([page], Task(kind=TaskKind.REGION, region=region, max_new_tokens=3))
    assert [mode for mode, _ in calls] == ["text"] and engine.spec.prompts["text"] == "Text Recognition:"
    assert all(b.bbox == region for b in result.blocks)


def test_whole_page_option(checkpoint: Path, page: Page, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = _engine(checkpoint, prompt_mode="page")
    calls = _recording(engine, monkeypatch)
    monkeypatch.setattr(engine, "detect", None)  # no layout stage
    [result] = engine.recognize([page], Task(kind=TaskKind.TEXT, max_new_tokens=3))
    assert calls == [("text", [page.image.size])]  # the whole page, one call
    assert all(b.bbox is None for b in result.blocks)
    wrong = _engine(checkpoint, prompt_mode="markdown")
    with pytest.raises(EngineError, match="prompt_mode"):
        wrong.recognize([page], Task(kind=TaskKind.TEXT, max_new_tokens=3))


def test_read_regions_crops_the_authors_box(engine, page: Page, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    """twostage.read_regions crops Region.crop_bbox where it is set (the block keeps bbox)."""
    seen: list[tuple[int, int]] = []
    region = Region((0, 0, 100, 100), "Text", "text", 0, "text", crop_bbox=(0, 0, 57, 31))
    prepare = lambda r, image: seen.append(image.size) or image  # noqa: E731
    [result] = read_regions(engine, [page], [[region]], Task(max_new_tokens=3), prepare=prepare, keep_empty=True)
    assert seen == [(57, 31)] and result.blocks[0].bbox == (0, 0, 100, 100)


def test_cli_ocr_runs_both_stages(engine, checkpoint: Path, page: Page, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from polyocr.cli import app

    image = tmp_path / "page.png"
    page.image.save(image)
    args = ["ocr", str(image), "--engine", "glm-ocr", "--model", str(checkpoint), "--max-new-tokens", "3"]
    result = CliRunner().invoke(app, [*args, "--format", "json", "--quiet"])
    assert result.exit_code in (0, 1), result.output
    [out] = json.loads(result.stdout)["pages"]
    assert out["engine"] == "glm-ocr"
    [regions] = engine.detect([Page(image=Image.open(image).convert("RGB"), number=1, source=str(image))])
    assert {tuple(b["bbox"]) for b in out["blocks"]} <= {r.bbox for r in regions}
    assert {b["category"] for b in out["blocks"]} <= {r.category for r in regions}
    assert out["generation"]["prompt_tokens"] > 0
