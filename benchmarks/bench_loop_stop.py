"""The loop stop (engines/vlm.py loop_stop) measured: a looping page through the router with the
dots engine, with the stop off (plan.generation {"loop_stop": false}, what every page cost before)
and on, side by side in one run; and what the stop costs on generation that does not loop.

The model is the tiny random-weight dots.ocr checkpoint of the tests (tests/tiny_dots.py) and the
loop is forced by a logits processor (tests/forced_loop.py): the model's answer is an aperiodic
prefix of `--start` tokens, then one unit of `--period` tokens forever. The router runs its loop
ladder (the first attempt and three retries). Figures: generated tokens (decoding steps, summed
over attempts) and seconds per page, medians over `--repeats` runs.

Overhead: one page generating `--plain` tokens that never repeat, with the stop off and on; and
the host time of one check (find_loop on a 16,384-token row), which runs every 32 steps.

    PYTHONPATH=src:tests python benchmarks/bench_loop_stop.py --json benchmarks/loop-stopping.json
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--max-new-tokens", type=int, default=2048)
    parser.add_argument("--start", type=int, default=100)
    parser.add_argument("--period", type=int, default=17)
    parser.add_argument("--plain", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    import torch
    from PIL import Image, ImageDraw

    from forced_loop import ForcedLoop, force_loop
    from polyocr.config import RouterConfig
    from polyocr.documents import Page
    from polyocr.engines import vlm
    from polyocr.router import Router
    from polyocr.types import Task, TaskKind
    from tiny_dots import build_tiny_dots

    torch.set_num_threads(2)
    checkpoint = build_tiny_dots(Path(tempfile.mkdtemp()) / "dots.ocr")
    image = Image.new("RGB", (420, 300), "white")
    ImageDraw.Draw(image).text((10, 10), "A page that loops", fill="black")
    page = Page(image=image, number=1, source="loop.png")

    def words(engine) -> list[int]:
        tokenizer = engine.processor.tokenizer
        special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
        return [i for i in range(len(tokenizer)) if i not in special and tokenizer.decode([i]).strip().isalpha()][:60]

    def run(loop_stop: bool, start: int, period: int, max_new_tokens: int) -> dict:
        plans = {
            "dots": {
                "model_path": str(checkpoint),
                "max_pixels": 28 * 28 * 48,
                "batch_size": 1,
                "generation": {"loop_stop": loop_stop},
            }
        }
        task = Task(kind=TaskKind.LAYOUT, max_new_tokens=max_new_tokens)
        with Router(["dots"], task, config=RouterConfig(engines=["dots"], plans=plans)) as router:
            engine = router.pool.get("dots").engine
            used = force_loop(engine.model, lambda: ForcedLoop(words(engine), start=start, period=period))
            began = time.perf_counter()
            [result] = router.recognize_pages([page])
            seconds = time.perf_counter() - began
        return {
            "attempts": len(used),
            "tokens": sum(p.steps for p in used),
            "seconds": seconds,
            "stop_reason": result.generation.stop_reason if result.generation else None,
            "last_attempt_tokens": result.generation.generated_tokens if result.generation else None,
            "status": result.status.value,
        }

    report: dict = {"args": vars(args) | {"json": str(args.json) if args.json else None}, "looping": {}, "plain": {}}
    for name, on in (("before (loop stop off)", False), ("after (loop stop on)", True)):
        runs = [run(on, args.start, args.period, args.max_new_tokens) for _ in range(args.repeats)]
        report["looping"][name] = {
            "attempts": runs[0]["attempts"],
            "tokens": statistics.median(r["tokens"] for r in runs),
            "seconds": round(statistics.median(r["seconds"] for r in runs), 2),
            "stop_reason": runs[0]["stop_reason"],
            "last_attempt_tokens": runs[0]["last_attempt_tokens"],
            "status": runs[0]["status"],
        }
    # No repetition at all (the prefix is as long as the generation), one engine, the stop toggled
    # between runs (alternating, so drift on a shared machine falls on both alike).
    from dataclasses import replace

    from polyocr.engines.base import create_engine
    from polyocr.types import EnginePlan

    engine = create_engine("dots")
    engine.load(EnginePlan(model_path=str(checkpoint), max_pixels=28 * 28 * 48, batch_size=1))
    force_loop(engine.model, lambda: ForcedLoop(words(engine), start=args.plain + 10, period=1))
    plain_task = Task(kind=TaskKind.TEXT, max_new_tokens=args.plain)
    timings: dict[str, list[float]] = {"loop stop off": [], "loop stop on": []}
    for _ in range(args.repeats):
        for name, on in (("loop stop off", False), ("loop stop on", True)):
            engine.plan = replace(engine.plan, generation={"loop_stop": on})
            began = time.perf_counter()
            [result] = engine.recognize([page], plain_task)
            timings[name].append(time.perf_counter() - began)
            assert result.generation is not None and result.generation.generated_tokens == args.plain
    for name, values in timings.items():
        report["plain"][name] = {
            "tokens": args.plain,
            "seconds": round(statistics.median(values), 3),
            "ms_per_token": round(1000 * statistics.median(values) / args.plain, 3),
        }
    draw = random.Random(0)
    row = [draw.randrange(100, 150_000) for _ in range(16_384)]
    checks = []
    for _ in range(20):
        began = time.perf_counter()
        vlm.find_loop(row)
        checks.append(time.perf_counter() - began)
    report["check_ms_16k_row"] = round(1000 * statistics.median(checks), 3)
    report["check_ms_per_step"] = round(report["check_ms_16k_row"] / vlm.LOOP_CHECK_EVERY, 4)
    print(json.dumps(report, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
