"""olmOCR-2 as its authors run it (allenai/olmocr @ f7cfe4c): golden prompt and ids from the published
Qwen2.5-VL tokenizer files, the 1,288 px rendering, budgets and end tokens, the front matter and Markdown
parsers on the authors' own sample answers, the rotated-page re-run, and the engine end to end through
`polyocr ocr` and the router on a tiny random-weight Qwen2.5-VL."""

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
from polyocr.engines.hf import olmocr  # noqa: E402
from polyocr.engines.hf.olmocr import markdown_blocks, parse_olmocr, render_page  # noqa: E402
from polyocr.engines.hf.spec import image_only_processor  # noqa: E402
from polyocr.results import Generation, TextFormat  # noqa: E402
from polyocr.types import EnginePlan, Task, TaskKind  # noqa: E402
from tiny_hf import BUILDERS  # noqa: E402

MODELS = Path(__file__).resolve().parent / "fixtures" / "models"
QWEN2 = MODELS / "qwen2-vl"  # Qwen2.5-VL-7B-Instruct's tokenizer files are the same (SOURCES.md)
EXAMPLES = MODELS / "olmocr-2"

# olmocr/prompts/prompts.py build_no_anchoring_v4_yaml_prompt(), copied here character for character.
AUTHORS_PROMPT = (
    "Attached is one page of a document that you must process. Just return the plain text representation of "
    "this document as if you were reading it naturally. Convert equations to LateX and tables to HTML.\n"
    "If there are any figures or charts, label them with the following markdown syntax ![Alt text describing "
    "the contents of the figure](page_startx_starty_width_height.png)\n"
    "Return your output as markdown, with a front matter section on top specifying values for the "
    "primary_language, is_rotation_valid, rotation_correction, is_table, and is_diagram parameters."
)


class _NoModel:
    device = torch.device("cpu")
    dtype = torch.float32


def _published_engine() -> object:
    """The olmocr engine with its processor built from the published tokenizer/preprocessor files."""
    engine = create_engine("olmocr")
    engine.plan = EnginePlan()
    engine._model = _NoModel()
    engine._processor = image_only_processor(transformers.Qwen2_5_VLProcessor).from_pretrained(QWEN2)
    engine._processor.tokenizer.padding_side = "left"
    return engine


def test_prompt_is_the_authors_v4_yaml_prompt() -> None:
    assert olmocr.OLMOCR_PROMPT == AUTHORS_PROMPT
    assert set(olmocr.OLMOCR.prompts.values()) == {AUTHORS_PROMPT}
    assert olmocr.OLMOCR.instruction_first  # pipeline.py build_page_query: text, then image_url


def _expected_tokens(width: int, height: int) -> int:
    """Image tokens of the authors' page: longest side rendered at 1,288 px (renderpdf.py), then
    Qwen2.5-VL's smart_resize (sides rounded to 28, 3,136..12,845,056 px), one token per 28x28."""
    scale = 1288 / max(width, height)
    w, h = round(width * scale), round(height * scale)
    rw, rh = round(w / 28) * 28, round(h / 28) * 28
    assert 3136 <= rw * rh <= 12_845_056
    return (rw // 28) * (rh // 28)


# page size (200 DPI A4, US Letter, a small scan, a wide page) -> image tokens
TOKENS = {(1654, 2339): 1518, (1700, 2200): 1656, (640, 480): 1564, (2339, 1654): 1518}


@pytest.mark.parametrize("size", list(TOKENS))
def test_prompt_ids_equal_the_authors_chat_and_processor(size: tuple[int, int]) -> None:
    engine = _published_engine()
    page = Image.new("RGB", size, "white")
    ours = engine.inputs([page], "text")["input_ids"][0].tolist()
    # The authors' path (scripts/hf_local_test.py): Qwen2.5-VL's processor, messages [text, image], the
    # page rendered to 1,288 px on its longest side.
    rendered = page.resize(render_page(page).size)
    assert max(rendered.size) == 1288
    processor = image_only_processor(transformers.Qwen2_5_VLProcessor).from_pretrained(QWEN2)
    messages = [{"role": "user", "content": [{"type": "text", "text": AUTHORS_PROMPT}, {"type": "image"}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert ours == processor(images=[rendered], text=[text], return_tensors="pt")["input_ids"][0].tolist()
    config = json.loads((QWEN2 / "config.json").read_text())
    assert ours.count(config["image_token_id"]) == TOKENS[size] == _expected_tokens(*size)
    tokenizer = engine._processor.tokenizer
    decoded = tokenizer.decode(ours)
    assert decoded.startswith(
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        + AUTHORS_PROMPT
        + "<|vision_start|><|image_pad|>"
    )
    assert decoded.endswith("<|image_pad|><|vision_end|><|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.convert_tokens_to_ids(["<|vision_start|>", "<|image_pad|>", "<|vision_end|>"]) == [
        151652,
        151655,
        151653,
    ]


def test_end_tokens_and_budget() -> None:
    engine = _published_engine()
    # <|im_end|> 151645 (the training labels' end_of_message_token, dataloader.py Tokenizer) and
    # <|endoftext|> 151643, the tokenizer's pad.
    assert engine._processor.tokenizer.convert_tokens_to_ids(list(olmocr.OLMOCR.stop_tokens)) == [151645, 151643]
    # build_page_query max_tokens 8000; try_single_page MODEL_MAX_CONTEXT 16384 for prompt + answer.
    assert olmocr.OLMOCR.token_budget(1600) == 8000
    assert olmocr.OLMOCR.token_budget(9000) == 16384 - 9000


def test_pages_are_rendered_to_1288_on_the_longest_side() -> None:
    assert render_page(Image.new("RGB", (1654, 2339))).size == (911, 1288)
    assert render_page(Image.new("RGB", (300, 200))).size == (1288, 859)  # small ones grow too
    assert render_page(Image.new("RGB", (1288, 900))).size == (1288, 900)


def test_front_matter_on_the_authors_examples() -> None:
    """tests/sample_dataset of allenai/olmocr: the answer format olmOCR-2 is trained to give."""
    edgar = parse_olmocr((EXAMPLES / "edgar.md").read_text())
    assert edgar.valid and edgar.primary_language == "en" and edgar.is_rotation_valid
    assert (edgar.rotation_correction, edgar.is_table, edgar.is_diagram) == (0, True, False)
    assert edgar.natural_text is not None and edgar.natural_text.startswith("Edgar (or Eadgar;[1]")
    blocks = markdown_blocks(edgar.natural_text)
    assert [b.category for b in blocks] == ["Text", "Text", "Text"]

    table = parse_olmocr((EXAMPLES / "untable.md").read_text())
    blocks = markdown_blocks(table.natural_text or "")
    assert [(b.category, b.format) for b in blocks] == [
        ("Text", TextFormat.MARKDOWN),
        ("Text", TextFormat.MARKDOWN),
        ("Table", TextFormat.HTML),
    ]
    assert blocks[2].text.startswith("<table>") and blocks[2].text.endswith("</table>")
    assert blocks[2].text.count("<tr>") == table.natural_text.count("<tr>")

    blank = parse_olmocr((EXAMPLES / "blanktext.md").read_text())
    assert blank.valid and blank.natural_text is None and markdown_blocks("") == []


def test_front_matter_types_as_the_authors_parser() -> None:
    """front_matter.py: "False" strings are booleans, a YAML boolean language (no = Norwegian) is None,
    a missing field or a rotation outside 0/90/180/270 makes the answer invalid."""
    answer = parse_olmocr(
        "---\nprimary_language: no\nis_rotation_valid: false\nrotation_correction: 90\n"
        "is_table: False\nis_diagram: false\n---\n# Title\n\nText."
    )
    assert answer.valid and answer.primary_language is None
    assert (answer.is_rotation_valid, answer.rotation_correction) == (False, 90)
    assert not parse_olmocr("---\nprimary_language: en\n---\nText").valid
    assert not parse_olmocr(
        "---\nprimary_language: en\nis_rotation_valid: true\nrotation_correction: 45\n"
        "is_table: false\nis_diagram: false\n---\nText"
    ).valid
    plain = parse_olmocr("Just text, no front matter.")
    assert not plain.valid and plain.natural_text == "Just text, no front matter."


def test_markdown_blocks_formulas_headings_figures() -> None:
    text = (
        "# Annual report\n\n## Results\n\nInline \\(x\\) stays text.\n\n\\[\nE = mc^2\n\\]\n\n"
        "![A bar chart of sales](page_10_20_300_200.png)\n\nCaption text\n<table><tr><td>1</td></tr></table>"
    )
    blocks = markdown_blocks(text)
    assert [(b.category, b.text) for b in blocks] == [
        ("Title", "# Annual report"),
        ("Section-header", "## Results"),
        ("Text", "Inline \\(x\\) stays text."),
        ("Formula", "E = mc^2"),
        ("Picture", "A bar chart of sales"),
        ("Text", "Caption text"),
        ("Table", "<table><tr><td>1</td></tr></table>"),
    ]
    assert all(b.bbox is None for b in blocks)


# ---------------------------------------------------------------------------- the engine on a tiny model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return BUILDERS["olmocr"](tmp_path_factory.mktemp("olmocr") / "tiny")


def _engine(path: Path) -> object:
    torch.set_num_threads(2)
    engine = create_engine("olmocr", model_path=str(path))
    engine.load(EnginePlan(attention="sdpa", generation={"min_new_tokens": 2}))
    return engine


def _scripted(engine: object, answer_for: object) -> list[Image.Image]:
    """The model's answers scripted per image (random weights never write front matter); what it saw
    is returned. Everything around the generation (rotation, parsing, reporting) is the engine's."""
    seen: list[Image.Image] = []
    tokenizer = engine._processor.tokenizer

    def generate(images: list[Image.Image], mode: str, task: Task) -> list[tuple[list[int], Generation]]:
        seen.extend(images)
        return [
            (tokenizer.encode(answer_for(image), add_special_tokens=False), Generation(stop_reason="eos",
             prompt_tokens=10, generated_tokens=5, seconds=0.5))
            for image in images
        ]  # fmt: skip

    engine._generate = generate
    return seen


def _answer(valid: bool, correction: int) -> str:
    return (
        f"---\nprimary_language: en\nis_rotation_valid: {valid}\nrotation_correction: {correction}\n"
        "is_table: False\nis_diagram: False\n---\nThe text."
    )


def test_rotated_pages_are_read_again_turned(checkpoint: Path) -> None:
    """process_page: a page whose front matter says the rotation is wrong is read again turned by the
    correction; here the model reads a portrait page as rotated and a landscape one as right."""
    engine = _engine(checkpoint)
    seen = _scripted(engine, lambda im: _answer(im.width > im.height, 0 if im.width > im.height else 90))
    portrait = Image.new("RGB", (200, 300), "white")
    portrait.putpixel((0, 0), (255, 0, 0))
    [result] = engine.recognize([Page(image=portrait, number=1, source="page.png")], Task(kind=TaskKind.TEXT))
    assert len(seen) == 2
    assert seen[1].size == (300, 200)
    # PIL's ROTATE_90 (counter-clockwise), as build_page_query turns the page: the red corner goes
    # from top-left to bottom-left.
    assert seen[1].getpixel((0, 199)) == (255, 0, 0)
    assert (result.text, result.language, result.width, result.height) == ("The text.", "en", 200, 300)
    assert (result.generation.prompt_tokens, result.generation.generated_tokens) == (20, 10)
    assert result.generation.seconds == 1.0


def test_rotation_retries_stop_when_a_turn_repeats(checkpoint: Path) -> None:
    """Greedy decoding answers a page it has seen the same way: 0 -> 180 -> 0 would loop, so the
    engine stops after two reads (the authors, sampling, allow 8 attempts)."""
    engine = _engine(checkpoint)
    seen = _scripted(engine, lambda im: _answer(False, 180))
    page = Page(image=Image.new("RGB", (200, 300)), number=1, source="page.png")
    [result] = engine.recognize([page], Task(kind=TaskKind.TEXT))
    assert len(seen) == 2 and result.text == "The text."
    engine2 = _engine(checkpoint)
    seen2 = _scripted(engine2, lambda im: _answer(False, 90))
    engine2.recognize([page], Task(kind=TaskKind.TEXT))
    assert len(seen2) == 4  # 90, 180, 270, then 0 again: stop


def test_random_weights_end_to_end_through_the_cli(checkpoint: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from polyocr.cli import app

    image = tmp_path / "page.png"
    Image.new("RGB", (320, 240), "white").save(image)
    args = ["ocr", str(image), "--engine", "olmocr", "--model", str(checkpoint), "--task", "text"]
    result = CliRunner().invoke(app, [*args, "--max-new-tokens", "3", "--format", "json", "--quiet"])
    [page] = json.loads(result.stdout)["pages"]
    assert page["engine"] == "olmocr"
    # 320x240 rendered to 1288x966, in the tiny processor's 64-token cap: the authors' rendering first.
    assert page["generation"]["prompt_tokens"] > 64
    assert page["generation"]["generated_tokens"] <= 3
    assert page["attempts"] and page["attempts"][0]["engine"] == "olmocr"


def test_registry_entry_cites_its_score() -> None:
    entry = engine_entry("olmocr")
    # The bf16 checkpoint's score on its card (82.4 in the README is the FP8 one's): polyocr/published.py.
    evidence = published.evidence("olmocr")
    assert entry.rank is None and "82.3" in evidence and "olmOCR-bench" in evidence
    # A 200 DPI A4 page's prompt (1,518 image tokens and the instruction) and the full budget fit 16,384.
    assert 1518 + 200 + olmocr.MAX_TOKENS <= olmocr.MODEL_MAX_CONTEXT
