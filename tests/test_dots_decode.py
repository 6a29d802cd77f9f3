"""polyocr's slot decoder (continuous batching on a static cache): the same tokens as transformers' generate.

Tiny random-weight model on the CPU, float32. The decoder's CUDA graph and compiled step are not run
here (no GPU); the step they capture is the same function that runs eagerly below.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from polyocr.engines.dots.decode import CACHE_BUCKET, Request, SlotDecoder, cache_length_for
from polyocr.engines.dots.model import DotsOCRForCausalLM
from tiny_dots import build_tiny_dots

PATCH = 3 * 14 * 14
GRIDS = [(1, 4, 4), (1, 6, 4), (1, 2, 8), (1, 4, 6), (1, 2, 4)]
NEW = 14


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> DotsOCRForCausalLM:
    # seed 1: a tiny model whose answers differ from page to page (seed 0 answers much the same everywhere)
    return DotsOCRForCausalLM.from_pretrained(build_tiny_dots(tmp_path_factory.mktemp("dots") / "tiny", seed=1))


def _page(model: DotsOCRForCausalLM, index: int) -> dict[str, torch.Tensor]:
    """One page's inputs: image tokens, then random text (so pages differ in their answers), as generate takes them."""
    gen = torch.Generator().manual_seed(index)
    t, h, w = GRIDS[index % len(GRIDS)]
    text = torch.randint(0, model.config.image_token_id, (3 + 2 * index,), generator=gen).tolist()
    ids = [model.config.image_token_id] * (t * h * w // 4) + text
    return {
        "input_ids": torch.tensor([ids]),
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
        "pixel_values": torch.randn(t * h * w, PATCH, generator=gen),
        "image_grid_thw": torch.tensor([[t, h, w]]),
    }


def _generate(model: DotsOCRForCausalLM, inputs: dict, eos: list[int], new: int, min_new: int = 0) -> list[int]:
    with torch.no_grad():
        out = model.generate(
            **inputs, max_new_tokens=new, min_new_tokens=min_new, do_sample=False, eos_token_id=eos, pad_token_id=eos[0]
        )
    tokens = out[0, inputs["input_ids"].shape[1] :].tolist()
    return tokens[: next((i + 1 for i, t in enumerate(tokens) if t in eos), len(tokens))]


def _eos_that_ends_pages_early(model: DotsOCRForCausalLM, pages: list[dict]) -> list[int]:
    """Two end tokens taken from the pages' own answers, so that pages stop after different counts."""
    answers = [_generate(model, p, [model.config.vocab_size - 1], NEW) for p in pages]
    return [answers[0][4], answers[2][8]]


@pytest.mark.parametrize(
    ("slots", "chunk", "refill"), [(1, 4, "continuous"), (2, 3, "continuous"), (3, 5, "static"), (8, 4, "continuous")]
)
def test_pages_joining_and_leaving_get_generates_tokens(
    model: DotsOCRForCausalLM, slots: int, chunk: int, refill: str
) -> None:
    pages = [_page(model, i) for i in range(5)]
    eos = _eos_that_ends_pages_early(model, pages)
    expected = [_generate(model, p, eos, NEW) for p in pages]
    assert len({len(e) for e in expected}) > 1  # pages end at different steps: rows leave and are refilled
    cache = cache_length_for(max(p["input_ids"].shape[1] for p in pages), NEW, bucket=16)
    decoder = SlotDecoder(model, slots, cache, eos, eos[0], chunk=chunk, refill=refill)
    with torch.no_grad():
        done = decoder.run(Request(i, p, NEW) for i, p in enumerate(pages))
    got = {f.key: f for f in done}
    assert [got[i].tokens for i in range(5)] == expected
    for i, tokens in enumerate(expected):
        assert got[i].stop_reason == ("eos" if tokens[-1] in eos else "max_tokens")
        assert got[i].prompt_tokens == pages[i]["input_ids"].shape[1] and not got[i].nonfinite
    assert decoder.stats.prefills == 5 and decoder.stats.step_mode == "eager"
    assert not decoder.k[0].requires_grad  # no autograd graph kept across steps (it filled an H200 once)


def test_continuous_refill_needs_fewer_steps_than_a_static_batch(model: DotsOCRForCausalLM) -> None:
    pages = [_page(model, i) for i in range(5)]
    eos = _eos_that_ends_pages_early(model, pages)
    steps = {}
    for refill in ("static", "continuous"):
        decoder = SlotDecoder(model, 2, 128, eos, eos[0], chunk=2, refill=refill)
        with torch.no_grad():
            decoder.run(Request(i, p, NEW) for i, p in enumerate(pages))
        steps[refill] = decoder.stats.steps
    assert steps["continuous"] < steps["static"]


def test_min_new_tokens_and_timeout(model: DotsOCRForCausalLM) -> None:
    pages = [_page(model, i) for i in range(3)]
    eos = _eos_that_ends_pages_early(model, pages)
    decoder = SlotDecoder(model, 2, 128, eos, eos[0], chunk=4)
    with torch.no_grad():
        done = {f.key: f for f in decoder.run(Request(i, p, NEW, min_new_tokens=10) for i, p in enumerate(pages))}
        assert [done[i].tokens for i in range(3)] == [_generate(model, p, eos, NEW, 10) for p in pages]
        late = decoder.run([Request("late", pages[1], NEW, timeout=0.0)])
    assert late[0].stop_reason == "timeout" and 1 < len(late[0].tokens) < NEW  # stopped at the first chunk boundary


def test_cache_length_is_bucketed_and_checked(model: DotsOCRForCausalLM) -> None:
    assert cache_length_for(5400, 512) == cache_length_for(5600, 512) == 6 * CACHE_BUCKET < cache_length_for(5700, 512)
    assert cache_length_for(10, 2) == CACHE_BUCKET
    page = _page(model, 0)
    decoder = SlotDecoder(model, 1, page["input_ids"].shape[1] + 2, [0], 0)
    with pytest.raises(ValueError, match="needs more than the cache"):
        decoder.run([Request(0, page, 10)])


def test_engine_with_the_slot_decoder_reads_pages_as_generate_does(tmp_path: Path) -> None:
    """The engine's default on CUDA (the slot decoder), forced here on the CPU, against transformers' generate."""
    from PIL import Image, ImageDraw

    from polyocr.documents import Page
    from polyocr.engines.base import EnginePlan, Task, TaskKind
    from polyocr.engines.dots.engine import DotsEngine

    checkpoint = build_tiny_dots(tmp_path / "dots", seed=1)
    pages = []
    for number, (size, text) in enumerate(
        [((300, 200), "Invoice 42"), ((120, 260), "Итого"), ((150, 150), "x"), ((200, 120), "yy")], 1
    ):
        image = Image.new("RGB", size, "white")
        ImageDraw.Draw(image).text((10, 10), text, fill="black")
        pages.append(Page(image=image, number=number, source="page.png"))
    task = Task(kind=TaskKind.TEXT, max_new_tokens=12)
    runs = {}
    for decoder, batch in (("generate", 1), ("slots", 1), ("slots", 3)):
        engine = DotsEngine(checkpoint)
        engine.load(
            EnginePlan(
                max_pixels=28 * 28 * 48,
                batch_size=batch,
                generation={"decoder": decoder, "decode_chunk": 5, "min_new_tokens": 2},
            )
        )
        assert engine._uses_slots() == (decoder == "slots")
        results = engine.recognize(pages, task)
        runs[decoder, batch] = [
            (
                r.page,
                r.text,
                r.status,
                r.generation.stop_reason,
                r.generation.generated_tokens,
                r.generation.prompt_tokens,
            )
            for r in results
        ]
    assert runs["slots", 1] == runs["slots", 3] == runs["generate", 1]
    assert len({r[1] for r in runs["generate", 1]}) > 1  # the pages' answers differ, so the check means something
    sampled = DotsEngine(checkpoint)
    sampled.load(EnginePlan(max_pixels=28 * 28 * 48, generation={"decoder": "slots", "temperature": 0.7}))
    assert not sampled._uses_slots()  # sampling goes to transformers' generate


def test_vision_sdpa_backends_are_chosen_by_name(model: DotsOCRForCausalLM) -> None:
    pixels = torch.randn(16, PATCH)
    grid = torch.tensor([[1, 4, 4]])
    with torch.no_grad():
        default = model.vision_tower(pixels, grid)
        model.vision_tower.set_sdpa_backends(["math"])  # the one backend every CPU has
        try:
            chosen = model.vision_tower(pixels, grid)
        finally:
            model.vision_tower.set_sdpa_backends(None)
    torch.testing.assert_close(chosen, default, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="unknown SDPA backend"):
        model.vision_tower.set_sdpa_backends(["fastest"])


def test_fused_vision_blocks_compute_what_the_modules_do(model: DotsOCRForCausalLM) -> None:
    """The functions torch.compile fuses on CUDA, run plainly: the same arithmetic as the block modules."""
    pixels = torch.randn(16 + 24, PATCH)
    grid = torch.tensor([[1, 4, 4], [1, 6, 4]])
    with torch.no_grad():
        modules = model.vision_tower(pixels, grid)
        model.vision_tower.set_fused(True, compile=False)
        assert model.vision_tower.fused is not None
        try:
            fused = model.vision_tower(pixels, grid)
        finally:
            model.vision_tower.set_fused(False)
    torch.testing.assert_close(fused, modules, rtol=0, atol=1e-6)


def test_the_engine_keeps_its_decoder_until_a_page_needs_a_longer_cache(tmp_path: Path) -> None:
    """What keeps the compiled, captured step across calls on CUDA: same rows and bucket, same decoder."""
    from PIL import Image

    from polyocr.documents import Page
    from polyocr.engines.base import EnginePlan, Task, TaskKind
    from polyocr.engines.dots.engine import DotsEngine

    engine = DotsEngine(build_tiny_dots(tmp_path / "dots", seed=1))
    engine.load(EnginePlan(max_pixels=28 * 28 * 16, batch_size=2, generation={"decoder": "slots"}))
    pages = [
        Page(image=Image.new("RGB", size, "white"), number=i, source="p.png")
        for i, size in enumerate([(100, 80), (60, 120), (90, 90)], 1)
    ]
    engine.recognize(pages[:1], Task(kind=TaskKind.TEXT, max_new_tokens=4))
    first = engine._decoder
    assert first is not None and first.slots == 2 and first.cache_len == CACHE_BUCKET
    engine.recognize(pages, Task(kind=TaskKind.TEXT, max_new_tokens=8))  # more pages, other prompt lengths
    assert engine._decoder is first
    engine.recognize(pages[:1], Task(kind=TaskKind.TEXT, max_new_tokens=CACHE_BUCKET))  # needs a longer bucket
    assert engine._decoder is not first and engine._decoder.cache_len == 2 * CACHE_BUCKET


def test_the_loop_stop_ends_a_looping_row_at_a_chunk_boundary_and_leaves_the_others(model: DotsOCRForCausalLM) -> None:
    """The slot decoder (the CUDA default) runs the loop stop too: a row whose generated ids the check
    finds looping ends with stop reason "loop" and its Loop, the other rows keep generate()'s tokens."""
    from polyocr.engines.vlm import Loop

    pages = [_page(model, i) for i in range(3)]
    eos = [model.config.vocab_size - 1]  # never produced by this model: rows run to their limit
    new = 96
    expected = [_generate(model, p, eos, new) for p in pages]
    assert len({tuple(e[:32]) for e in expected}) == 3  # the check can tell the rows apart by 32 tokens
    seen: list[int] = []

    def check(tokens: list[int]) -> Loop | None:
        seen.append(len(tokens))
        # A stand-in for find_loop, deterministic whatever the random model does: page 1 "loops".
        looping = tokens == expected[1][: len(tokens)]
        return Loop(start=8, period=4, length=len(tokens)) if looping else None

    cache = cache_length_for(max(p["input_ids"].shape[1] for p in pages), new, bucket=16)
    decoder = SlotDecoder(model, 3, cache, eos, eos[0], chunk=16)
    decoder.loop_check, decoder.loop_every = check, 32
    with torch.no_grad():
        got = {f.key: f for f in decoder.run(Request(i, p, new) for i, p in enumerate(pages))}
    assert got[1].stop_reason == "loop" and got[1].loop == Loop(8, 4, len(got[1].tokens))
    assert 32 <= len(got[1].tokens) < new and got[1].tokens == expected[1][: len(got[1].tokens)]
    assert [got[i].tokens for i in (0, 2)] == [expected[0], expected[2]]
    assert all(n >= 32 for n in seen)  # looked at only after loop_every new tokens, at chunk boundaries
