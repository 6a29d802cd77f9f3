"""MinerU2.5 as its authors run it (opendatalab/mineru-vl-utils 0.1.22, arXiv 2509.22186): the prompts,
the layout pass's image and answer format, crops, the OTSL table conversion, equation blocks, and both
stages end to end on a tiny random-weight Qwen2-VL through the engine, the CLI and the router."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from PIL import Image  # noqa: E402

from polyocr import published  # noqa: E402
from polyocr.documents import Page  # noqa: E402
from polyocr.engines.base import create_engine, engine_entry  # noqa: E402
from polyocr.engines.hf import mineru  # noqa: E402
from polyocr.engines.hf.mineru import (  # noqa: E402
    combine_equation_blocks,
    element_image,
    finish,
    layout_image,
    parse_layout,
    regions,
)
from polyocr.engines.hf.otsl import otsl_to_html, pad_to_longest  # noqa: E402
from polyocr.engines.hf.spec import image_only_processor  # noqa: E402
from polyocr.engines.hf.twostage import Region  # noqa: E402
from polyocr.results import Block, Generation, TextFormat  # noqa: E402
from polyocr.types import EnginePlan, Task, TaskKind  # noqa: E402
from tiny_hf import BUILDERS  # noqa: E402

QWEN2 = Path(__file__).resolve().parent / "fixtures" / "models" / "qwen2-vl"

# The MinerU report's Layout Detection example (MinerU2.5-Pro report, appendix A.1; the 2509 model's
# format: mineru-vl-utils mineru_client.py _layout_re), one region a line.
LAYOUT_EXAMPLE = "\n".join(
    [
        "<|box_start|>705 112 899 146<|box_end|><|ref_start|>header<|ref_end|><|rotate_up|>",
        "<|box_start|>030 343 132 397<|box_end|><|ref_start|>title<|ref_end|><|rotate_up|>",
        "<|box_start|>212 330 491 382<|box_end|><|ref_start|>title<|ref_end|><|rotate_up|>",
        "<|box_start|>214 389 767 441<|box_end|><|ref_start|>title<|ref_end|><|rotate_up|>",
        "<|box_start|>219 494 359 523<|box_end|><|ref_start|>text<|ref_end|><|rotate_up|>",
        "<|box_start|>654 940 907 975<|box_end|><|ref_start|>footer<|ref_end|><|rotate_up|>",
    ]
)
# The report's Table Recognition example (appendix A.4): two rows of eight cells.
TABLE_EXAMPLE = (
    "<fcel>\\( \\frac{t}{\\min} \\)<fcel>3<fcel>5<fcel>7<fcel>10<fcel>15<fcel>21<fcel>25<nl>"
    "<fcel>\\( \\frac{1/c}{{\\mathrm{\\;{mol}}}^{-1}\\cdot {\\mathrm{{dm}}}^{3}} \\)<fcel>135.1 <fcel>157.7"
    "<fcel>181.8<fcel>215.5<fcel>275.5<fcel>347.2<fcel>393.2<nl>"
)


def test_prompts_and_constants_are_the_authors() -> None:
    # mineru_client.py DEFAULT_PROMPTS, MinerUClient defaults; base_client.py DEFAULT_SYSTEM_PROMPT.
    assert dict(mineru.PROMPTS) == {
        "layout": "\nLayout Detection:",
        "text": "\nText Recognition:",
        "table": "\nTable Recognition:",
        "formula": "\nFormula Recognition:",
    }
    assert mineru.MINERU.system_prompt == "You are a helpful assistant."
    assert not mineru.MINERU.instruction_first  # build_messages: the image, then the text
    assert (mineru.LAYOUT_IMAGE_SIZE, mineru.MIN_IMAGE_EDGE, mineru.MAX_IMAGE_EDGE_RATIO) == ((1036, 1036), 28, 50)
    assert mineru.MINERU.generation == {"no_repeat_ngram_size": 100}


def test_layout_prompt_ids_under_the_qwen2_vl_template() -> None:
    """The layout request as the transformers client builds it: system, then the 1036 x 1036 page
    (37 x 37 = 1,369 image tokens under Qwen2-VL's 28 px grid), then the prompt."""
    engine = create_engine("mineru")
    engine.plan = EnginePlan()
    engine._model = type("NoModel", (), {"device": torch.device("cpu"), "dtype": torch.float32})()
    engine._processor = image_only_processor(transformers.Qwen2VLProcessor).from_pretrained(QWEN2)
    page = Image.new("RGB", (1654, 2339), "white")
    ids = engine.inputs([layout_image(page)], "layout")["input_ids"][0].tolist()
    assert ids.count(151655) == 37 * 37
    text = engine._processor.tokenizer.decode(ids)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert text.endswith("<|vision_end|>\nLayout Detection:<|im_end|>\n<|im_start|>assistant\n")


def test_layout_parser_on_the_authors_example() -> None:
    lines = parse_layout(LAYOUT_EXAMPLE)
    assert [line.type for line in lines] == ["header", "title", "title", "title", "text", "footer"]
    assert all(line.angle == 0 for line in lines)
    assert lines[0].box == (0.705, 0.112, 0.899, 0.146)  # 0..1000, divided by 1000 (_convert_bbox)
    found = regions(lines, (2000, 1000))
    assert found[0].bbox == (1410.0, 112.0, 1798.0, 146.0)
    assert [(r.category, r.mode) for r in found] == [
        ("Page-header", "text"),
        ("Section-header", "text"),
        ("Section-header", "text"),
        ("Section-header", "text"),
        ("Text", "text"),
        ("Page-footer", "text"),
    ]
    # The same regions written on one line are read too (HEAD's regex); swapped corners are ordered;
    # boxes past 1000, empty boxes and unknown types are dropped; angles from the rotate tags.
    odd = (
        "<|box_start|>900 800 100 200<|box_end|><|ref_start|>table<|ref_end|><|rotate_right|>"
        "<|box_start|>000 000 000 010<|box_end|><|ref_start|>text<|ref_end|><|rotate_up|>"
        "<|box_start|>0 0 1001 10<|box_end|><|ref_start|>text<|ref_end|><|rotate_up|>"
        "<|box_start|>0 0 10 10<|box_end|><|ref_start|>poem<|ref_end|><|rotate_up|>"
        "<|box_start|>0 0 1000 1000<|box_end|><|ref_start|>equation_block<|ref_end|><|rotate_left|>"
    )
    lines = parse_layout(odd)
    assert [(line.type, line.box, line.angle) for line in lines] == [
        ("table", (0.1, 0.2, 0.9, 0.8), 90),
        ("equation_block", (0.0, 0.0, 1.0, 1.0), 270),
    ]
    assert [(r.mode, r.bbox) for r in regions(lines, (100, 50))] == [
        ("table", (10.0, 10.0, 90.0, 40.0)),
        (None, (0.0, 0.0, 100.0, 50.0)),  # equation_block, image and list are not read (skip_list)
    ]
    unknown = regions(parse_layout("<|box_start|>0 0 10 10<|box_end|><|ref_start|>unknown<|ref_end|>"), (100, 100))
    assert [(r.category, r.mode) for r in unknown] == [("Text", "text")]  # 0.1.22 reads it as text


def test_table_answer_to_html_on_the_authors_example() -> None:
    html, fmt = finish(Region((0, 0, 1, 1), "Table", "table", 0, "table"), TABLE_EXAMPLE)
    assert fmt == TextFormat.HTML
    assert html.count("<tr>") == 2 and html.count("<td>") == 16
    assert "<td>135.1</td>" in html and "<td>\\( \\frac{t}{\\min} \\)</td>" in html
    # otsl2html.py: short rows padded to the longest (not cut), spans from lcel/ucel/xcel.
    assert otsl_to_html("<fcel>a<fcel>b<fcel>c<nl><fcel>d<nl>", pad_to_longest) == (
        "<table><tr><td>a</td><td>b</td><td>c</td></tr><tr><td>d</td><td></td><td></td></tr></table>"
    )
    assert otsl_to_html("<fcel>a<lcel><nl><ucel><ucel><nl>", pad_to_longest) == (
        '<table><tr><td rowspan="2" colspan="2">a</td></tr><tr></tr></table>'
    )
    kept = "<table><tr><td>x</td></tr></table>"
    assert finish(Region((0, 0, 1, 1), "Table", "table", 0, "table"), kept) == (kept, TextFormat.HTML)


def test_formula_and_text_answers() -> None:
    # The report's formula example: display delimiters dropped (polyocr's Formula holds bare LaTeX).
    answer = "\\[L = 0.004 \\ln (2D/d) \\quad (\\mu \\mathrm{H} / \\mathrm{cm}) \\tag{4-2-10}\\]"
    text, fmt = finish(Region((0, 0, 1, 1), "Formula", "equation", 0, "formula"), answer)
    assert (text, fmt) == (
        "L = 0.004 \\ln (2D/d) \\quad (\\mu \\mathrm{H} / \\mathrm{cm}) \\tag{4-2-10}",
        TextFormat.LATEX,
    )
    assert finish(Region((0, 0, 1, 1), "Text", "text", 0, "text"), " Hello \n") == ("Hello", TextFormat.PLAIN)
    # Four of the authors' six LaTeX repairs (post_process/__init__.py _process_equation).
    formula = Region((0, 0, 1, 1), "Formula", "equation", 0, "formula")
    repaired, _ = finish(formula, "a \\coloneqq b_{1}_{2} < c } \\{ {x")
    assert repaired == "a := b <  c  \\{ x"


def test_equation_blocks_combine_their_equations() -> None:
    """equation_block.py: the equations an equation_block covers become one array; two \\tag{}s become (x)."""
    labelled = [
        ("text", Block(bbox=(0, 0, 100, 10), text="before")),
        ("equation_block", Block(bbox=(0, 20, 100, 60), category="Formula")),
        ("equation", Block(bbox=(5, 22, 95, 38), category="Formula", text="a=1 \\tag{1}", format=TextFormat.LATEX)),
        ("equation", Block(bbox=(5, 40, 95, 58), category="Formula", text="b=2 \\tag{2}", format=TextFormat.LATEX)),
        ("equation", Block(bbox=(5, 70, 95, 80), category="Formula", text="c=3", format=TextFormat.LATEX)),
    ]
    blocks = combine_equation_blocks(labelled)
    assert [(b.category, b.text) for b in blocks] == [
        ("Text", "before"),
        ("Formula", "\\begin{array}{l} a=1 (1) \\\\ b=2 (2) \\\\ \\end{array}"),
        ("Formula", "c=3"),
    ]
    assert blocks[1].bbox == (0, 20, 100, 60)
    # One equation inside: the block is just dropped, the equation stays.
    single = combine_equation_blocks(labelled[:3])
    assert [b.text for b in single] == ["before", "a=1 \\tag{1}"]


def test_element_images_upright_padded_and_grown() -> None:
    piece = Image.new("RGB", (40, 100), "white")
    piece.putpixel((0, 0), (255, 0, 0))
    turned = element_image(piece, 90)  # rotate(90, expand=True): counter-clockwise
    assert turned.size == (100, 40) and turned.getpixel((0, 39)) == (255, 0, 0)
    strip = element_image(Image.new("RGB", (3000, 20), "black"), 0)  # ratio 150 > 50: padded to 60 px high
    assert strip.size == (3000, 60) and strip.getpixel((0, 0)) == (255, 255, 255)
    assert element_image(Image.new("RGB", (50, 14)), None).size == (100, 28)  # shortest edge to 28 px


# ---------------------------------------------------------------------------- the engine on a tiny model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return BUILDERS["mineru"](tmp_path_factory.mktemp("mineru") / "tiny")


def _engine(path: Path, batch_size: int = 4) -> object:
    torch.set_num_threads(2)
    engine = create_engine("mineru", model_path=str(path))
    engine.load(EnginePlan(attention="sdpa", batch_size=batch_size, generation={"min_new_tokens": 2}))
    return engine


def test_both_stages_with_scripted_answers(checkpoint: Path) -> None:
    """The model's answers scripted per prompt (random weights draw no layout): what each stage sends
    and how the answers become blocks is the engine's own."""
    engine = _engine(checkpoint)
    tokenizer = engine._processor.tokenizer
    layout = (
        "<|box_start|>100 100 900 200<|box_end|><|ref_start|>title<|ref_end|><|rotate_up|>\n"
        "<|box_start|>100 300 500 400<|box_end|><|ref_start|>table<|ref_end|><|rotate_up|>\n"
        "<|box_start|>600 300 700 700<|box_end|><|ref_start|>text<|ref_end|><|rotate_right|>\n"
        "<|box_start|>100 800 900 900<|box_end|><|ref_start|>image<|ref_end|><|rotate_up|>"
    )
    answers = {"layout": layout, "table": "<fcel>1<fcel>2<nl>", "text": "Read", "formula": "x"}
    calls: list[tuple[str, list[tuple[int, int]]]] = []

    def generate(images: list[Image.Image], mode: str, task: Task) -> list[tuple[list[int], Generation]]:
        calls.append((mode, [im.size for im in images]))
        ids = tokenizer.encode(answers[mode], add_special_tokens=False)
        return [(ids, Generation(stop_reason="eos", prompt_tokens=3, generated_tokens=2, seconds=0.25))] * len(images)

    engine._generate = generate
    page = Page(image=Image.new("RGB", (1000, 2000), "white"), number=1, source="p.png")
    [result] = engine.recognize([page], Task(kind=TaskKind.LAYOUT))
    assert calls[0] == ("layout", [(1036, 1036)])
    modes = {mode: sizes for mode, sizes in calls[1:]}
    assert modes["table"] == [(400, 200)]
    # The text column (100 x 800 px) turned by its angle before reading; the title as is.
    assert modes["text"] == [(800, 200), (800, 100)]
    assert [(b.category, b.text, b.format, b.bbox) for b in result.blocks] == [
        ("Section-header", "Read", TextFormat.PLAIN, (100.0, 200.0, 900.0, 400.0)),
        ("Table", "<table><tr><td>1</td><td>2</td></tr></table>", TextFormat.HTML, (100.0, 600.0, 500.0, 800.0)),
        ("Text", "Read", TextFormat.PLAIN, (600.0, 600.0, 700.0, 1400.0)),
        ("Picture", "", TextFormat.PLAIN, (100.0, 1600.0, 900.0, 1800.0)),
    ]
    generation = result.generation
    assert (generation.prompt_tokens, generation.generated_tokens, generation.stop_reason) == (12, 8, "eos")
    [boxes] = engine.recognize([page], Task(kind=TaskKind.LAYOUT_ONLY))
    assert [b.category for b in boxes.blocks] == ["Section-header", "Table", "Text", "Picture"]
    assert all(not b.text for b in boxes.blocks)


def test_layout_answer_keeps_its_special_tags(checkpoint: Path) -> None:
    """The authors decode with skip_special_tokens=False (the tags are special tokens), dropping only
    bos/eos/pad."""
    engine = _engine(checkpoint)
    tokenizer = engine._processor.tokenizer
    text = "<|box_start|>1 2 3 4<|box_end|><|ref_start|>text<|ref_end|><|rotate_up|>"
    ids = [*tokenizer.encode(text, add_special_tokens=False), tokenizer.pad_token_id]
    assert tokenizer.convert_tokens_to_ids("<|box_start|>") in ids
    assert engine.decode(ids) == text


def test_budget_is_the_models_context(checkpoint: Path) -> None:
    engine = _engine(checkpoint)  # the tiny config's max_position_embeddings: 4096
    assert engine.generation_settings(Task(max_new_tokens=16384), 1500)["max_new_tokens"] == 4096 - 1500
    assert engine.generation_settings(Task(max_new_tokens=100), 1500)["max_new_tokens"] == 100
    assert engine.generation_settings(Task(), 10)["no_repeat_ngram_size"] == 100


def test_random_weights_end_to_end_through_the_cli(checkpoint: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from polyocr.cli import app

    image = tmp_path / "page.png"
    Image.new("RGB", (320, 240), "white").save(image)
    args = ["ocr", str(image), "--engine", "mineru", "--model", str(checkpoint), "--max-new-tokens", "3"]
    result = CliRunner().invoke(app, [*args, "--format", "json", "--quiet"])
    [page] = json.loads(result.stdout)["pages"]
    # Random weights never end a layout answer within 3 tokens and draw no region, so every attempt
    # is rejected at the token limit and nothing is kept; the retries keep the authors' n-gram ban.
    attempts = page["attempts"]
    assert len(attempts) > 1 and {a["engine"] for a in attempts} == {"mineru"}
    assert all("token_limit" in a["error"] for a in attempts)
    assert all(a["settings"]["generation"]["no_repeat_ngram_size"] == 100 for a in attempts[1:])


def test_registry_entry_cites_its_score() -> None:
    entry = engine_entry("mineru")
    evidence = published.evidence("mineru")
    assert entry.rank is None and "90.67" in evidence and "2509.22186" in evidence


def test_scripted_page_through_the_cli_and_router(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both stages through `polyocr ocr` and the router, the model's answers scripted: the page is
    accepted with MinerU's blocks (boxes in page pixels, the table as HTML)."""
    from typer.testing import CliRunner

    from polyocr.cli import app
    from polyocr.engines.hf.mineru import MinerUEngine

    answers = {
        "layout": "<|box_start|>0 0 1000 500<|box_end|><|ref_start|>text<|ref_end|><|rotate_up|>\n"
        "<|box_start|>0 500 1000 1000<|box_end|><|ref_start|>table<|ref_end|><|rotate_up|>",
        "text": "A paragraph of text that the router accepts.",
        "table": "<fcel>a<fcel>b<nl>",
    }

    def generate(self: MinerUEngine, images: list, mode: str, task: Task) -> list:
        ids = self._processor.tokenizer.encode(answers[mode], add_special_tokens=False)
        return [(ids, Generation(stop_reason="eos", prompt_tokens=5, generated_tokens=4, seconds=0.1))] * len(images)

    monkeypatch.setattr(MinerUEngine, "_generate", generate)
    image = tmp_path / "page.png"
    Image.new("RGB", (320, 240), "white").save(image)
    args = ["ocr", str(image), "--engine", "mineru", "--model", str(checkpoint), "--format", "json", "--quiet"]
    [page] = json.loads(CliRunner().invoke(app, args).stdout)["pages"]
    assert (page["status"], page["engine"]) == ("ok", "mineru")
    assert [(b["category"], b["bbox"]) for b in page["blocks"]] == [
        ("Text", [0.0, 0.0, 320.0, 120.0]),
        ("Table", [0.0, 120.0, 320.0, 240.0]),
    ]
    assert page["blocks"][1]["text"] == "<table><tr><td>a</td><td>b</td></tr></table>"
