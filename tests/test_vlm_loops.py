"""The loop stop shared by the VLM engines (engines/vlm.py): it ends a forced loop soon after it
starts, never fires on the repetition real documents have, leaves the other rows of a batch alone,
and the router retries a page it stopped with the engine's own anti-repeat settings, at a fraction
of the tokens a loop used to cost."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from polyocr.engines import vlm

ROOT = Path(__file__).resolve().parent
QWEN2 = ROOT / "fixtures" / "models" / "qwen2-vl"
EVAL = ROOT.parents[1] / "shared" / "data" / "eval"


def first_stop(tokens: list[int], every: int = vlm.LOOP_CHECK_EVERY) -> vlm.Loop | None:
    """What the stopping criterion sees: find_loop on the prefix at every check step."""
    for length in range(every, len(tokens) + 1, every):
        found = vlm.find_loop(tokens[:length])
        if found is not None:
            return found
    return None


def looping(start: int, period: int, total: int, seed: int = 0) -> list[int]:
    draw = random.Random(seed)
    prefix = [draw.randrange(1000, 50_000) for _ in range(start)]
    unit = [draw.randrange(50_000, 60_000) for _ in range(period)]
    return prefix + [unit[i % period] for i in range(total - start)]


@pytest.mark.parametrize(("start", "period"), [(300, 1), (300, 7), (1000, 37), (4000, 120), (700, 200)])
def test_a_forced_loop_ends_within_twice_its_start_plus_a_period(start: int, period: int) -> None:
    found = first_stop(looping(start, period, 16_384))
    assert found is not None
    assert found.length <= 2 * start + period
    assert found.period == period and start - period < found.start <= start
    assert found.keep <= start + period  # the text before the loop and the unit once


def test_an_early_loop_ends_after_the_minimum_span() -> None:
    found = first_stop(looping(0, 5, 16_384))
    assert found is not None and found.start == 0
    assert found.length <= vlm.LOOP_MIN_SPAN + vlm.LOOP_CHECK_EVERY


def test_a_loop_longer_than_the_window_starts_where_it_began() -> None:
    tokens = looping(500, 3, 500 + 3 * vlm.LOOP_WINDOW)
    found = vlm.repeating_tail(tokens)
    assert found is not None and found.start <= 500 and found.period == 3


def test_no_repetition_no_loop() -> None:
    draw = random.Random(1)
    assert first_stop([draw.randrange(100, 200) for _ in range(4000)]) is None


def test_markup_units_need_a_longer_span() -> None:
    assert vlm.is_markup("></tr><tr><td></td><td") and vlm.is_markup(" . . . .") and vlm.is_markup("|---")
    assert not vlm.is_markup("<td>0</td>") and not vlm.is_markup("></td><td>Total</td><td")
    # Tokens of an empty table row "<tr><td></td><td></td></tr>": a markup loop is stopped only
    # after LOOP_MARKUP_SPAN tokens.
    unit = [1, 2, 3, 2, 3, 4]
    text = {1: "<tr>", 2: "<td>", 3: "</td>", 4: "</tr>", 9: "x"}
    decode = lambda ids: "".join(text[i] for i in ids)  # noqa: E731
    rows = unit * 300
    assert vlm.find_loop(rows[: vlm.LOOP_MARKUP_SPAN - 60], decode) is None
    assert vlm.find_loop(rows[: vlm.LOOP_MARKUP_SPAN + 6], decode) is not None
    assert vlm.find_loop([9, 9, 2, 3, 9] * 100, decode) is not None  # a unit with a letter: soon


def _real_texts() -> dict[str, str]:
    texts = {
        p.name: p.read_text() for p in sorted((ROOT / "fixtures" / "texts").glob("*.md")) if p.name != "SOURCES.md"
    }
    texts.update({p.name: p.read_text() for p in sorted(EVAL.rglob("*.txt"))})
    import sys

    sys.path.insert(0, str(ROOT.parent / "benchmarks"))
    from loop_thresholds import constructed

    texts.update(constructed())
    return texts


def test_real_documents_repetition_is_not_a_loop() -> None:
    """Tables of the dots.ocr README and blog (HTML), model cards, the evaluation set's
    transcriptions and constructed forms, tables of contents and price lists, in Qwen2 tokens:
    the stop never fires at any check step."""
    transformers = pytest.importorskip("transformers")
    tokenizer = transformers.AutoTokenizer.from_pretrained(QWEN2)
    texts = _real_texts()
    assert len(texts) > 50 and any("<td>" in t for t in texts.values())
    for name, text in texts.items():
        ids = tokenizer(text)["input_ids"]
        for length in range(vlm.LOOP_CHECK_EVERY, len(ids) + 1, vlm.LOOP_CHECK_EVERY):
            assert vlm.find_loop(ids[:length], tokenizer.decode) is None, (name, length)


def test_split_generation_reports_the_loop() -> None:
    loop = vlm.Loop(start=10, period=3, length=288)
    tokens = list(range(288))
    assert vlm.split_generation(tokens, [0], 4096, loop) == (tokens[:13], "loop", 288)
    assert vlm.split_generation([5, 6, 2, 9], [2], 4096) == ([5, 6], "eos", 3)


def test_the_criterion_stops_only_looping_rows() -> None:
    torch = pytest.importorskip("torch")
    stop = vlm.loop_stop(prompt_length=4, eos_token_ids=[0])
    prompt = [[7, 7, 7, 7]] * 3
    draw = random.Random(2)
    rows = [
        looping(0, 4, 256, seed=1),  # loops from the start
        [draw.randrange(100, 900) for _ in range(256)],  # reads on
        [11] * 100 + [0] * 156,  # ended on an end token, then padding: not a loop
    ]
    ids = torch.tensor([p + r for p, r in zip(prompt, rows, strict=True)])
    assert stop(ids[:, :-1], None).tolist() == [False, False, False]  # not a check step
    assert stop(ids, None).tolist() == [True, False, False]
    assert set(stop.loops) == {0} and stop.loops[0].period == 4
    assert np.array_equal(stop(ids, None).tolist(), [False, False, False])  # a stopped row is not re-stopped


# ---------------------------------------------------------------------------- through the engines


@pytest.fixture(scope="module")
def qwen2vl_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    from tiny_hf import build_qwen2vl

    return build_qwen2vl(tmp_path_factory.mktemp("loops") / "qwen2vl")


def _pages() -> list:
    from PIL import Image, ImageDraw

    from polyocr.documents import Page

    pages = []
    for number, size in ((1, (320, 240)), (2, (260, 220))):
        image = Image.new("RGB", size, "white")
        ImageDraw.Draw(image).text((10, 10), f"Page {number} words", fill="black")
        pages.append(Page(image=image, number=number, source="page.png"))
    return pages


def _ordinary(tokenizer) -> list[int]:
    """Ordinary word tokens (a loop of punctuation alone counts as markup and is stopped later)."""
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    words = [i for i in range(len(tokenizer)) if i not in special and tokenizer.decode([i]).strip().isalpha()]
    return words[:60]


def test_hf_engine_stops_a_looping_row_and_leaves_the_other_alone(qwen2vl_checkpoint: Path) -> None:
    import torch

    from forced_loop import force_loop
    from polyocr.engines.base import create_engine
    from polyocr.types import EnginePlan, Task, TaskKind

    torch.set_num_threads(2)
    engine = create_engine("qwen2vl", model_path=str(qwen2vl_checkpoint))
    engine.load(EnginePlan(attention="eager", batch_size=2, generation={"min_new_tokens": 300}))
    pages = _pages()
    task = Task(kind=TaskKind.TEXT, max_new_tokens=300)
    alone = engine.recognize(pages[1:], task)[0]  # the model's own answer for page 2
    tokens = _ordinary(engine._processor.tokenizer)
    from forced_loop import ForcedLoop

    used = force_loop(engine._model, lambda: ForcedLoop(tokens, start=40, period=6, rows={0}))
    looped, other = engine.recognize(pages, task)
    assert looped.generation.stop_reason == "loop"
    assert looped.generation.generated_tokens <= 2 * 40 + 6 + vlm.LOOP_MIN_SPAN  # start below the min span
    assert looped.status.value == "partial"
    assert (other.text, other.generation.stop_reason, other.generation.generated_tokens) == (
        alone.text,
        alone.generation.stop_reason,
        alone.generation.generated_tokens,
    )
    assert used[0].steps == max(looped.generation.generated_tokens, other.generation.generated_tokens)


def test_a_looping_page_through_the_router_costs_a_quarter_of_the_old_tokens(qwen2vl_checkpoint: Path) -> None:
    """Before: each of the four attempts (the first and three loop retries) ran to max_new_tokens.
    Now each ends soon after the loop starts; the retries carry the engine's own anti-repeat settings."""
    import torch

    from forced_loop import ForcedLoop, force_loop
    from polyocr.config import RouterConfig
    from polyocr.engines.hf.got import GotOcr2Engine
    from polyocr.router import Router
    from polyocr.router.policy import LOOP_LADDER
    from polyocr.runtime.probe import Profile, TorchInfo
    from polyocr.types import Task, TaskKind

    torch.set_num_threads(2)
    limit = 1100
    config = RouterConfig(
        engines=["qwen2vl"],
        plans={"qwen2vl": {"model_path": str(qwen2vl_checkpoint), "attention": "eager", "batch_size": 1}},
    )
    profile = Profile(recorded="hand-written: a CPU machine with torch", torch=TorchInfo(version="2.13.0"))
    with Router(["qwen2vl"], Task(kind=TaskKind.TEXT, max_new_tokens=limit), config=config, profile=profile) as router:
        engine = router.pool.get("qwen2vl").engine
        tokens = _ordinary(engine._processor.tokenizer)
        used = force_loop(engine._model, lambda: ForcedLoop(tokens, start=0, period=9))
        [result] = router.recognize_pages(_pages()[:1])
    attempts = [a for a in result.attempts if a.engine == "qwen2vl"]
    assert len(attempts) == 1 + len(LOOP_LADDER) == len(used)
    assert all("generation_loop" in (a.error or "") for a in attempts)
    spent = sum(p.steps for p in used)
    assert spent < len(used) * limit / 4, spent
    assert result.generation.stop_reason == "loop" and result.status.value == "partial"
    assert all(a.settings["generation"]["no_repeat_ngram_size"] == 20 for a in attempts[1:])
    assert GotOcr2Engine.anti_repeat == {"no_repeat_ngram_size": 20}


def test_loop_retries_keep_the_engines_own_anti_repeat_settings() -> None:
    from polyocr.results import Outcome
    from polyocr.router.policy import LOOP_LADDER, History, decide
    from polyocr.types import EnginePlan

    own = {"no_repeat_ngram_size": 35}
    for step in range(len(LOOP_LADDER)):
        decision = decide(Outcome.REJECTED, History(step, looped=True, anti_repeat=own), EnginePlan())
        assert decision.plan is not None and decision.plan.generation["no_repeat_ngram_size"] == 35
