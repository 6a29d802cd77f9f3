"""`polyocr batch` on this machine: worker scaling against parallel `tesseract`, Ray's overhead, and
peak memory for a long PDF against a short one. Writes benchmarks/batch.md.

    .venv/bin/python benchmarks/bench_batch.py --out benchmarks/batch.md

1. Scaling: a 40-page scanned PDF (the old-books scans of the development set, in turn, at 300 dpi)
   through `polyocr batch -e tesseract --lang eng` with 1 and 2 workers, each run into a fresh folder
   (worker start-up included), and the `tesseract` CLI on the same 40 page images (rendered by
   polyocr's PageReader at the batch's 200 dpi, written as PNG beforehand) run 2-wide with
   `xargs -P 2`, OMP_THREAD_LIMIT=1. The three variants take turns, `--repeats` times; medians.
2. Ray: the first `--ray-pages` pages of that PDF through the local path (2 workers) and through
   `--ray` on a local Ray started by the run (`num_cpus` = the cores), both into fresh folders.
3. Memory: a 10-page and a 300-page PDF (the top quarter of each scan, so pages are quick to OCR),
   2 workers, no recycling within the run (recycle_after 1000): the driver process's peak RSS
   (VmHWM) and the largest RSS any worker reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parents[1]
EVAL = REPO.parent / "shared" / "data" / "eval"
PY = sys.executable
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}


def scans(pages: int, crop: bool = False) -> list[Image.Image]:
    files = sorted((EVAL / "old_books_eng").glob("*.png"))
    images = []
    for i in range(pages):
        image = Image.open(files[i % len(files)]).convert("L")
        images.append(image.crop((0, 0, image.width, image.height // 4)) if crop else image)
    return images


def make_pdf(path: Path, images: list[Image.Image]) -> Path:
    images[0].save(path, save_all=True, append_images=images[1:], resolution=300)
    return path


def batch(pdf: Path, out: Path, *extra: str) -> dict:
    """One `polyocr batch` run in a child process; its JSON report and wall seconds."""
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    run = subprocess.run(
        [PY, "-m", "polyocr", "batch", str(pdf), "--out", str(out), "-e", "tesseract", "--lang", "eng",
         "--json-report", "-q", *extra],
        capture_output=True, text=True, env=ENV, check=False,
    )  # fmt: skip
    wall = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"batch failed ({run.returncode}): {run.stderr[-2000:]}")
    report = json.loads(run.stderr[run.stderr.index("{") :])
    return {"wall": wall, "pages": report["done_now"], "report": report}


def tesseract_parallel(images: list[Path], out: Path, width: int) -> float:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    listing = "\n".join(f"{p} {out / p.stem}" for p in images)
    start = time.perf_counter()
    subprocess.run(
        ["xargs", "-P", str(width), "-L", "1", "sh", "-c", 'tesseract "$0" "$1" -l eng >/dev/null 2>&1'],
        input=listing, text=True, env={**ENV, "OMP_THREAD_LIMIT": "1"}, check=True,
    )  # fmt: skip
    return time.perf_counter() - start


_RSS = """
import json, sys
import polyocr


def peak():  # VmHWM: this process's own peak RSS (getrusage would report the parent's from before exec)
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024


r = polyocr.batch([sys.argv[1]], sys.argv[2], "tesseract", languages=["eng"], workers=2, dpi=100, recycle_after=1000)
print(json.dumps({"driver": peak(), "worker": r.worker_peak_rss_mb,
                  "done": r.done_now, "seconds": r.seconds}))
"""


def rss(pdf: Path, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    run = subprocess.run([PY, "-c", _RSS, str(pdf), str(out)], capture_output=True, text=True, env=ENV, check=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "batch.md")
    parser.add_argument("--pages", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ray-pages", type=int, default=12)
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "src"))
    from polyocr.documents.loader import PageReader

    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    load = os.getloadavg()[0]
    pdf = make_pdf(work / "scan40.pdf", scans(args.pages))
    reader = PageReader(dpi=200)
    pngs = []
    for n in range(1, args.pages + 1):
        path = work / "pages" / f"p{n:03d}.png"
        path.parent.mkdir(exist_ok=True)
        reader.read(pdf, n).image.save(path)
        pngs.append(path)
    size = Image.open(pngs[0]).size

    one, two, cli = [], [], []
    for i in range(args.repeats):
        print(f"repeat {i + 1}/{args.repeats}", file=sys.stderr)
        one.append(args.pages / batch(pdf, work / "w1", "--workers", "1")["wall"])
        two.append(args.pages / batch(pdf, work / "w2", "--workers", "2")["wall"])
        cli.append(args.pages / tesseract_parallel(pngs, work / "cli", 2))
    same_text = (work / "w1" / "scan40.txt").read_text() == (work / "w2" / "scan40.txt").read_text()

    ray_rows = []
    if not args.skip_ray:
        small = make_pdf(work / f"scan{args.ray_pages}.pdf", scans(args.ray_pages))
        local = batch(small, work / "rl", "--workers", "2")
        on_ray = batch(small, work / "rr", "--ray")
        same = (work / "rl" / small.with_suffix(".txt").name).read_text() == (
            work / "rr" / small.with_suffix(".txt").name
        ).read_text()
        ray_rows = [("local, 2 workers", local, True), ("--ray (local Ray, started by the run)", on_ray, same)]

    print("memory", file=sys.stderr)
    mem10 = rss(make_pdf(work / "m10.pdf", scans(10, crop=True)), work / "m10")
    mem300 = rss(make_pdf(work / "m300.pdf", scans(300, crop=True)), work / "m300")

    cores = len(os.sched_getaffinity(0))
    lines = [
        "# `polyocr batch`: worker scaling, parallel `tesseract`, Ray overhead, memory of a long PDF",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on the 2-core CPU dev machine: {platform.system()} "
        f"{platform.machine()}, {cores} CPU cores, Python {platform.python_version()}; 1-minute load average "
        f"before the run {load:.2f} (the machine is shared, so other work may fall on any row).",
        "",
        "```sh",
        f".venv/bin/python benchmarks/bench_batch.py --pages {args.pages} --repeats {args.repeats} "
        f"--ray-pages {args.ray_pages}" + (" --skip-ray" if args.skip_ray else ""),
        "```",
        "",
        f"## Scaling: {args.pages}-page scanned PDF, Tesseract, eng",
        "",
        f"The old-books scans of the development set in turn (300 dpi in the PDF, rendered at 200 dpi: {size[0]}x"
        f"{size[1]}). Pages/s is pages over the wall time of the whole command, from a fresh output folder "
        f"(process and worker start-up, rendering, OCR, writing every page and the document). "
        f"Median of {args.repeats} runs; the variants take turns.",
        "",
        "| variant | pages/s (median) | runs |",
        "|---|---|---|",
        f"| `polyocr batch --workers 1` | {statistics.median(one):.2f} | {', '.join(f'{v:.2f}' for v in one)} |",
        f"| `polyocr batch --workers 2` | {statistics.median(two):.2f} | {', '.join(f'{v:.2f}' for v in two)} |",
        f"| `tesseract` CLI, 2 at once (`xargs -P 2`, OMP_THREAD_LIMIT=1), same page images as PNG | "
        f"{statistics.median(cli):.2f} | {', '.join(f'{v:.2f}' for v in cli)} |",
        "",
        f"2 workers / 1 worker: {statistics.median(two) / statistics.median(one):.2f}x. The two batch runs wrote "
        f"{'the same' if same_text else 'DIFFERENT'} text. polyocr does more per page than the bare CLI: it "
        "renders the PDF page itself, measures skew (and straightens pages skewed by a degree or more), keeps "
        "word boxes and confidences, runs the router's checks, and writes a JSON record per page.",
        "",
    ]
    if ray_rows:
        lines += [
            f"## Ray overhead: the first {args.ray_pages} pages of that PDF",
            "",
            "Wall time of the whole command into a fresh folder; the Ray row includes starting a local Ray "
            f"(`ray.init()`, {cores} CPUs) and its actors (render, engine), and shutting it down.",
            "",
            "| path | wall s | pages/s | text equal to local |",
            "|---|---|---|---|",
        ]
        for name, row, same in ray_rows:
            lines.append(f"| {name} | {row['wall']:.1f} | {args.ray_pages / row['wall']:.2f} | {same} |")
        lines.append("")
    lines += [
        "## Memory: 300 pages against 10",
        "",
        "The top quarter of each scan (pages quick to OCR), rendered at 100 dpi, 2 workers, no recycling "
        "within the run. Driver: the batch process's peak RSS (VmHWM). Worker: the largest resident "
        "memory any worker reported after a page.",
        "",
        "| PDF | pages done | driver peak RSS MiB | worker peak RSS MiB | seconds |",
        "|---|---|---|---|---|",
        f"| 10 pages | {mem10['done']} | {mem10['driver']:.0f} | {mem10['worker']:.0f} | {mem10['seconds']:.1f} |",
        f"| 300 pages | {mem300['done']} | {mem300['driver']:.0f} | {mem300['worker']:.0f} | {mem300['seconds']:.1f} |",
        "",
        f"300 / 10: driver {mem300['driver'] / mem10['driver']:.2f}x, worker {mem300['worker'] / mem10['worker']:.2f}x "
        "(the target is within 1.5x).",
        "",
        "GPU: not measured here (no GPU on this machine); see docs/scaling.md for the one-worker-per-GPU plan.",
        "",
    ]
    args.out.write_text("\n".join(lines), encoding="utf-8")
    print("\n".join(lines))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
