"""The dots engine end to end on a tiny random-weight checkpoint in the published layout.

Random weights cannot read, so these tests check what they can show: pages in, one result per page
with the right identity, token counts that match the prompt arithmetic, batches that give the same
tokens as pages one at a time, and, for a known answer, boxes, Markdown and status as a user sees them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from conftest import SAMPLE_PDF
from polyocr.documents import Page, load_pages
from polyocr.engines.base import create_engine
from polyocr.engines.dots.engine import FETCH_FIX, DotsEngine, page_result, split_generation
from polyocr.engines.dots.prompts import PROMPTS, PromptMode, prompt_text
from polyocr.errors import EngineError, InputError
from polyocr.formats import render
from polyocr.results import DocumentResult, Generation, Outcome, PageStatus, TextFormat
from polyocr.runtime.probe import GPU, Profile
from polyocr.types import EnginePlan, Task, TaskKind
from tiny_dots import build_tiny_dots

MAX_PIXELS = 28 * 28 * 48  # a few dozen image tokens per page keeps the tiny model fast


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_dots(tmp_path_factory.mktemp("dots") / "dots.ocr")


@pytest.fixture(scope="module")
def engine(checkpoint: Path) -> DotsEngine:
    engine = create_engine("dots")
    assert isinstance(engine, DotsEngine)
    engine.load(EnginePlan(model_path=str(checkpoint), max_pixels=MAX_PIXELS, batch_size=2))
    return engine


def _page(size: tuple[int, int], number: int = 1, text: str = "Invoice 42") -> Page:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((10, 10), text, fill="black")
    return Page(image=image, number=number, source="page.png")


def test_pdf_to_markdown_and_json(engine: DotsEngine) -> None:
    pages = load_pages(SAMPLE_PDF, dpi=40)
    results = engine.recognize(pages, Task(max_new_tokens=6))
    assert [(r.page, r.width, r.height) for r in results] == [(p.number, *p.image.size) for p in pages]
    for page, result in zip(pages, results, strict=True):
        image = engine.processor.prepare(page.image)
        expected_prompt = engine.processor.prompt_ids(PROMPTS[PromptMode.LAYOUT_ALL], image.token_count)
        generation = result.generation
        assert generation.prompt_tokens == len(expected_prompt)
        assert 1 <= generation.generated_tokens <= 6 and generation.stop_reason in ("eos", "max_tokens")
        assert result.engine == "dots" and generation.seconds > 0
        # Random weights never write clean layout JSON: the page says so instead of pretending.
        assert result.status in (PageStatus.PARTIAL, PageStatus.FAILED)
        assert result.errors and all(e.startswith("dots: ") for e in result.errors)
    doc = DocumentResult(source=str(SAMPLE_PDF), pages=results)
    assert DocumentResult.from_json(render(doc, "json")) == doc
    assert render(doc, "md").count("\n---\n") == len(pages) - 1


def test_a_batch_gives_the_same_tokens_as_pages_one_at_a_time(checkpoint: Path, engine: DotsEngine) -> None:
    pages = [_page((300, 200), 1), _page((120, 260), 2, "Итого"), _page((150, 150), 3, "x")]
    task = Task(kind=TaskKind.TEXT, max_new_tokens=10)
    batched = engine.recognize(pages, task)  # batch_size 2: pages 1-2 padded together, then page 3
    single = DotsEngine(checkpoint)
    single.load(EnginePlan(max_pixels=MAX_PIXELS, batch_size=1))
    alone = single.recognize(pages, task)
    assert any(r.generation.generated_tokens > 3 for r in alone)  # enough tokens for the check to mean something
    assert [r.generation.prompt_tokens for r in batched] == [r.generation.prompt_tokens for r in alone]
    assert len({r.generation.prompt_tokens for r in alone}) == 3  # different lengths, so padding was needed
    for b, a in zip(batched, alone, strict=True):
        assert (b.text, b.generation.generated_tokens, b.generation.stop_reason) == (
            a.text,
            a.generation.generated_tokens,
            a.generation.stop_reason,
        )


def test_region_task_prompts_with_the_box_in_model_pixels(engine: DotsEngine) -> None:
    page = _page((280, 560))  # resized to 112 x 252 under MAX_PIXELS: x by 0.4, y by 0.45
    image = engine.processor.prepare(page.image)
    assert image.resized_size == (112, 252)
    assert engine._prompt(
        page, image, Task(kind=TaskKind.REGION, region=(100, 200, 250, 500)), PromptMode.GROUNDING_OCR
    ) == prompt_text(PromptMode.GROUNDING_OCR, (40, 90, 100, 225))
    [result] = engine.recognize([page], Task(kind=TaskKind.REGION, region=(100, 200, 250, 500), max_new_tokens=4))
    assert result.blocks == [] or result.blocks[0].bbox == (100, 200, 250, 500)
    with pytest.raises(EngineError, match=r"needs Task\.region"):
        engine.recognize([page], Task(kind=TaskKind.REGION, max_new_tokens=4))


def test_timeout_and_unreadable_pages(engine: DotsEngine) -> None:
    [late] = engine.recognize([_page((300, 200))], Task(kind=TaskKind.TEXT, max_new_tokens=50, timeout=1e-6))
    assert late.generation.stop_reason == "timeout" and late.generation.generated_tokens < 50
    assert late.status == PageStatus.PARTIAL and "stopped by timeout" in late.errors[0]
    with pytest.raises(InputError, match=r"page\.png: page 1: aspect ratio 210:1"):
        engine.recognize([_page((2100, 10))], Task(max_new_tokens=2))


def test_nonfinite_logits_are_reported(checkpoint: Path, engine: DotsEngine) -> None:
    [clean] = engine.recognize([_page((200, 200))], Task(max_new_tokens=2))
    assert clean.generation.nonfinite_logits is False
    broken = DotsEngine(checkpoint)
    broken.load(EnginePlan(max_pixels=MAX_PIXELS))
    with torch.no_grad():
        broken.model.lm_head.weight[3, 0] = float("nan")  # what a numerically failing dtype looks like
    [result] = broken.recognize([_page((200, 200))], Task(max_new_tokens=2))
    assert result.generation.nonfinite_logits is True


def test_generation_settings_follow_the_plan(engine: DotsEngine) -> None:
    eos = engine.processor.eos_token_ids
    greedy = engine._generation_kwargs(Task(max_new_tokens=99), 300)
    assert greedy == {
        "do_sample": False,
        "max_new_tokens": 99,
        "eos_token_id": eos,
        "pad_token_id": engine.processor.pad_token_id,
    }
    plan = engine.plan
    try:
        engine.plan = replace(
            plan,
            generation={
                "temperature": 0.3,
                "top_p": 0.95,
                "repetition_penalty": 1.05,
                "no_repeat_ngram_size": 20,
                "unknown": 1,
            },
        )
        sampled = engine._generation_kwargs(Task(timeout=30.0), 300)
        assert sampled["do_sample"] is True and sampled["max_time"] == 30.0
        assert {k: sampled[k] for k in ("temperature", "top_p", "repetition_penalty", "no_repeat_ngram_size")} == {
            "temperature": 0.3,
            "top_p": 0.95,
            "repetition_penalty": 1.05,
            "no_repeat_ngram_size": 20,
        }
        assert "unknown" not in sampled
        engine.plan = replace(plan, generation={"temperature": 0, "top_p": 0.9})
        greedy_again = engine._generation_kwargs(Task(), 300)
        assert "temperature" not in greedy_again and "top_p" not in greedy_again
        # A static cache (the default on CUDA) is sized past prompt + new tokens to a multiple of 256,
        # which keeps the GPU's decoding products aligned (benchmarks/dots-gpu.md).
        engine.plan = replace(plan, generation={"cache_implementation": "static"})
        static = engine._generation_kwargs(Task(max_new_tokens=99), 300)
        assert static["cache_implementation"] == "static" and static["max_cache_len"] == 512
        engine.plan = replace(plan, generation={"cache_implementation": "dynamic"})
        assert "max_cache_len" not in engine._generation_kwargs(Task(max_new_tokens=99), 300)
    finally:
        engine.plan = plan


ANSWER = [
    {"bbox": [10, 9, 100, 27], "category": "Page-header", "text": "ACME"},
    {"bbox": [10, 36, 100, 63], "category": "Title", "text": "# Invoice"},
    {"bbox": [10, 72, 100, 144], "category": "Table", "text": "<table><tr><td>Pen</td><td>2</td></tr></table>"},
    {"bbox": [10, 153, 100, 171], "category": "Formula", "text": "$$a^2+b^2=c^2$$"},
]


def _known_answer(engine: DotsEngine, answer: str, *, end: bool = True, max_new_tokens: int = 4096):
    """A known answer through the engine's own decoding and result path, as generate() would return it."""
    page = _page((280, 560))
    image = engine.processor.prepare(page.image)
    tokens = engine.processor.tokenizer.encode(answer, add_special_tokens=False)
    if end:
        tokens += [engine.processor.eos_token_ids[1], engine.processor.pad_token_id]  # padding after the end
    kept, stop, count = split_generation(tokens, engine.processor.eos_token_ids, max_new_tokens)
    generation = Generation(stop_reason=stop, prompt_tokens=100, generated_tokens=count)
    return page_result(page, image, PromptMode.LAYOUT_ALL, Task(), engine.processor.decode(kept), generation)


def test_known_answer_becomes_blocks_on_the_original_page(engine: DotsEngine) -> None:
    result = _known_answer(engine, json.dumps(ANSWER))
    assert result.status == PageStatus.OK and result.errors == []
    assert result.generation.stop_reason == "eos"
    # The model saw 112 x 252 pixels of a 280 x 560 page: x grows by 5/2, y by 20/9.
    assert [b.bbox for b in result.blocks] == [
        (25.0, 20.0, 250.0, 60.0),
        (25.0, 80.0, 250.0, 140.0),
        (25.0, 160.0, 250.0, 320.0),
        (25.0, 340.0, 250.0, 380.0),
    ]
    assert [b.format for b in result.blocks] == [
        TextFormat.MARKDOWN,
        TextFormat.MARKDOWN,
        TextFormat.HTML,
        TextFormat.LATEX,
    ]
    assert result.markdown == (
        "ACME\n\n# Invoice\n\n<table><tr><td>Pen</td><td>2</td></tr></table>\n\n$$\na^2+b^2=c^2\n$$"
    )
    assert result.text == "ACME\n\nInvoice\n\nPen\t2\n\na^2+b^2=c^2"


def test_truncated_answer_is_partial_with_its_complete_elements(engine: DotsEngine) -> None:
    answer = json.dumps(ANSWER)[:-30]
    result = _known_answer(engine, answer, end=False, max_new_tokens=len(engine.processor.tokenizer.encode(answer)))
    assert result.status == PageStatus.PARTIAL and result.generation.stop_reason == "max_tokens"
    assert [b.category for b in result.blocks] == ["Page-header", "Title", "Table"]
    assert any("max_tokens" in e for e in result.errors) and any("truncated" in e for e in result.errors)


def test_unparsed_and_empty_answers(engine: DotsEngine) -> None:
    prose = _known_answer(engine, "Invoice from ACME, total 42.")
    assert prose.status == PageStatus.PARTIAL and prose.blocks == []
    assert prose.text == "Invoice from ACME, total 42." and "not layout JSON" in prose.errors[0]
    empty = _known_answer(engine, "")
    assert empty.status == PageStatus.FAILED and empty.generation.generated_tokens == 1
    assert empty.errors == ["dots: empty output (stop: eos after 1 token(s))"]


def test_layout_only_and_text_answers(engine: DotsEngine) -> None:
    page = _page((280, 560))
    image = engine.processor.prepare(page.image)
    done = Generation(stop_reason="eos", prompt_tokens=100, generated_tokens=50)
    boxes = json.dumps([{k: v for k, v in e.items() if k != "text"} for e in ANSWER])
    layout = page_result(page, image, PromptMode.LAYOUT_ONLY, Task(kind=TaskKind.LAYOUT_ONLY), boxes, done)
    assert layout.status == PageStatus.OK and len(layout.blocks) == 4
    assert all(b.text == "" for b in layout.blocks) and layout.text == layout.markdown == ""
    ocr = "## Totals\n\n<table><tr><td>Pen</td><td>2</td></tr></table>"
    text = page_result(page, image, PromptMode.OCR, Task(kind=TaskKind.TEXT), ocr, done)
    assert text.status == PageStatus.OK and text.markdown == ocr and text.text == "Totals\n\nPen\t2"
    assert [(b.bbox, b.format) for b in text.blocks] == [(None, TextFormat.MARKDOWN)]


def _profile(**fields) -> Profile:
    packages = dict.fromkeys(("torch", "transformers", "safetensors", "tokenizers", "huggingface_hub"), "1")
    return Profile(packages=packages, hf_cache="/cache", **fields)


def test_availability_explains_what_is_missing(checkpoint: Path) -> None:
    no_weights = DotsEngine().available(_profile())
    assert not no_weights.ok and "not in the Hugging Face cache (/cache)" in no_weights.reason
    assert no_weights.fix == FETCH_FIX and FETCH_FIX.startswith("hf download rednote-hilab/dots.ocr ")
    not_a_checkpoint = DotsEngine(checkpoint.parent).available(_profile())
    assert not not_a_checkpoint.ok and "no config.json" in not_a_checkpoint.reason
    other_repo = DotsEngine("someone/dots.ocr-ft").available(_profile(hf_cache_models=["someone/dots.ocr-ft"]))
    assert other_repo.ok and "someone/dots.ocr-ft in /cache" in other_repo.reason
    assert not DotsEngine("someone/missing").available(_profile()).ok
    no_torch = DotsEngine().available(Profile(packages={}))
    assert not no_torch.ok and "torch" in no_torch.reason
    cpu = DotsEngine(checkpoint).available(_profile())
    assert cpu.ok and "runs on the CPU, very slowly" in cpu.reason
    gpu = GPU(
        index=0,
        name="NVIDIA GeForce RTX 5070",
        sm="sm_120",
        total_memory=12 << 30,
        free_memory=11 << 30,
        bf16=True,
        in_arch_list=True,
        kernels_ok=True,
    )
    cached = DotsEngine().available(_profile(gpus=[gpu], hf_cache_models=["rednote-hilab/dots.ocr"]))
    assert cached.ok and "RTX 5070" in cached.reason and "CPU" not in cached.reason


def test_cli_ocr_with_the_dots_engine(checkpoint: Path, tmp_path: Path) -> None:
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "polyocr",
            "ocr",
            str(SAMPLE_PDF),
            "--engine",
            "dots",
            "--model",
            str(checkpoint),
            "--dpi",
            "30",
            "--max-new-tokens",
            "5",
            "--format",
            "json",
            "--out",
            str(tmp_path),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode in (0, 1), run.stderr  # 1: the router may refuse what random weights write
    doc = DocumentResult.from_json((tmp_path / f"{SAMPLE_PDF.stem}.json").read_text())
    assert [p.page for p in doc.pages] == [1, 2]
    for page in doc.pages:
        # The engine loaded from --model and answered; whether the router accepted the answer is its call.
        assert [(a.engine, a.outcome) for a in page.attempts][:1] in (
            [("dots", Outcome.OK)],
            [("dots", Outcome.REJECTED)],
        ), page.attempts
