"""Where a PaddleOCR-VL page's time goes in polyocr's two stages: the layout detector, then the element
calls (one batch per element prompt), on real pages (any PP-DocLayout engine: --engine glm-ocr too).

    PYTHONPATH=src:tests python benchmarks/bench_paddle_twostage.py --tiny            # CPU, tiny random models
    PYTHONPATH=src python benchmarks/bench_paddle_twostage.py --model DIR --device cuda  # real weights

With --tiny the checkpoints are tests/tiny_hf.py's (random weights, the real structure): the figures
then say what the machinery costs, not what the model reads. Prints one Markdown table; record it in
benchmarks/ with the command, the machine and the date.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

EVAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval"
DEFAULT_PAGES = [EVAL / "tesseract_test" / "phototest.tif"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", default="paddleocr-vl", choices=["paddleocr-vl", "paddleocr-vl-1.5", "glm-ocr"])
    parser.add_argument("--model", type=Path, help="checkpoint directory (with layout/ or the detector cached)")
    parser.add_argument("--tiny", action="store_true", help="build tiny random checkpoints (tests/tiny_hf.py)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--pages", type=Path, nargs="*", default=DEFAULT_PAGES)
    args = parser.parse_args()

    import torch

    from polyocr.documents import Page
    from polyocr.engines.base import engine_class
    from polyocr.types import EnginePlan, Task, TaskKind

    torch.set_num_threads(2)
    model = args.model
    if args.tiny:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from tiny_hf import BUILDERS

        model = BUILDERS[args.engine](Path(tempfile.mkdtemp()) / args.engine)
    engine = engine_class(args.engine)(model_path=str(model) if model else None)
    engine.load(EnginePlan(device=args.device, dtype=args.dtype, batch_size=args.batch_size))
    calls: list[tuple[str, int, float]] = []
    generate = engine._generate

    def timed(images, mode, task):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        out = generate(images, mode, task)
        calls.append((mode, len(images), time.perf_counter() - started))
        return out

    engine._generate = timed  # type: ignore[method-assign]
    print(f"{args.engine} on {platform.node()} ({args.device}, {args.dtype}), {time.strftime('%Y-%m-%d')}")
    print("| page | layout s | regions | read | element calls | tokens | elements s | page s |")
    print("|---|---|---|---|---|---|---|---|")
    for path in args.pages:
        page = Page(image=Image.open(path).convert("RGB"), number=1, source=str(path))
        engine.detect([page])  # warm-up
        started = time.perf_counter()
        [regions] = engine.detect([page])
        layout = time.perf_counter() - started
        calls.clear()
        started = time.perf_counter()
        [result] = engine.recognize([page], Task(kind=TaskKind.LAYOUT, max_new_tokens=args.max_new_tokens))
        total = time.perf_counter() - started
        tokens = result.generation.generated_tokens if result.generation else 0
        read = sum(r.mode is not None for r in regions)
        elements = sum(s for _, _, s in calls)
        print(
            f"| {path.name} | {layout:.2f} | {len(regions)} | {read} | {len(calls)} | {tokens} | "
            f"{elements:.2f} | {total:.2f} |"
        )


if __name__ == "__main__":
    main()
