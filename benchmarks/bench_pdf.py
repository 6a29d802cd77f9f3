"""Searchable PDF output: polyocr `--format pdf` against OCRmyPDF on one 40-page scanned PDF, the
born-digital speed-up of reading pages from their text layer, and the output size per page.

    PYTHONPATH=src HF_HUB_OFFLINE=1 python benchmarks/bench_pdf.py --out benchmarks/pdf-output.md

Variants, in one run on the same input (the dev set's 30 old_books_eng pages, its 4 tesseract_test
pages and 6 ru_borndigital_pdf page images, each embedded at its own resolution):
- polyocr: `polyocr ocr scan.pdf -e tesseract --lang eng+rus -f pdf --dpi 300` (one process; pages
  rendered at 300 DPI for OCR, text layer added to the original pages);
- ocrmypdf: `ocrmypdf --force-ocr -j 2 -l eng+rus` (Tesseract 5 CLI, two workers, its default
  PDF/A output);
- ocrmypdf+polyocr: the same command with `--plugin polyocr.ocrmypdf_plugin --polyocr-engine tesseract`.
Born-digital: the 19 ru_borndigital_pdf ground-truth texts set in DejaVu Sans (tests/pdf_samples.py),
read through the router with --text-layer auto and with never (Tesseract rus), in process.

The born-digital part alone, an older commit's src/ against this tree's, interleaved, in one run:

    PYTHONPATH=src python benchmarks/bench_pdf.py --born-digital-before b0dd26f --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from pdf_samples import EVAL, born_digital_pdf, dev_text  # noqa: E402


def build_scan(path: Path) -> list[Path]:
    """The 40-page scanned PDF: each page image in its own one-page Pillow PDF at its DPI, joined;
    returns the ground-truth file of each page."""
    import pikepdf
    from PIL import Image

    items = sorted((EVAL / "old_books_eng").glob("*.png"))[:30]
    items += sorted((EVAL / "tesseract_test").glob("*.tif"))[:4]
    items += sorted((EVAL / "ru_borndigital_pdf").glob("*.png"))[:6]
    out = pikepdf.new()
    with tempfile.TemporaryDirectory() as tmp:
        for index, item in enumerate(items):
            image = Image.open(item)
            dpi = image.info.get("dpi", (300, 300))[0] or 300
            if "ru_borndigital" in str(item):
                dpi = 200  # rendered at 200 DPI (their README)
            one = Path(tmp) / f"{index}.pdf"
            image.convert("RGB" if image.mode not in ("1", "L") else image.mode).save(one, "PDF", resolution=dpi)
            with pikepdf.open(one) as page_pdf:
                out.pages.extend(page_pdf.pages)
        out.save(path)
    manifest = {}
    for line in (EVAL / "MANIFEST.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        image, gt = line.split("\t")[:2]
        manifest[image] = EVAL / gt if gt else None
    return [manifest[str(item.relative_to(EVAL))] for item in items]


def text_cer(pdf: Path, truths: list[Path]) -> float:
    """CER of the text extracted from the output (pypdfium2) against the pages' ground truth."""
    from pdf_samples import pdf_text
    from polyocr.bench.metrics import char_errors, total

    return round(
        total(char_errors(gt.read_text(encoding="utf-8"), pdf_text(pdf, i)) for i, gt in enumerate(truths)).rate, 4
    )


def timed(cmd: list[str], env: dict) -> float:
    start = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({run.returncode}):\n{run.stderr[-3000:]}")
    return seconds


def born_digital(tmp: Path) -> dict:
    import polyocr  # noqa: F401  (imports before timing)
    from polyocr.documents import open_source
    from polyocr.router import Router
    from polyocr.types import Task

    texts = [dev_text(f"ru_borndigital_pdf/{p.name}") for p in sorted((EVAL / "ru_borndigital_pdf").glob("*.gt.txt"))]
    path = born_digital_pdf(tmp / "born.pdf", texts)
    ruled = born_digital_pdf(tmp / "ruled.pdf", texts, rule=True)  # pages that draw a line: the ink is checked
    results = {}
    with Router(["tesseract"], Task(languages=("rus", "eng"))) as router:
        router.recognize_page(next(open_source(path, text_layer="never").pages()))  # load Tesseract
        for mode in ("auto", "auto-ruled", "never"):
            start = time.perf_counter()
            doc = router.run_source(open_source(ruled if mode == "auto-ruled" else path, text_layer=mode.split("-")[0]))
            seconds = time.perf_counter() - start
            per_page = [sum(a.seconds for a in p.attempts) for p in doc.pages]
            results[mode] = {
                "pages": len(doc.pages),
                "seconds": round(seconds, 2),
                "pages_per_s": round(len(doc.pages) / seconds, 2),
                "median_page_s": round(statistics.median(per_page), 4),
                "engines": sorted({p.engine or "-" for p in doc.pages}),
            }
    results["speedup"] = round(results["never"]["seconds"] / results["auto"]["seconds"], 1)
    results["speedup_ruled"] = round(results["never"]["seconds"] / results["auto-ruled"]["seconds"], 1)
    results["speedup_median_page"] = round(results["never"]["median_page_s"] / results["auto"]["median_page_s"], 1)
    return results


def born_digital_trees(before: str, rounds: int, machine: str) -> None:
    """The born-digital part alone, for the tree of commit `before` (its src/ from git archive) and
    this tree, each in a fresh process, interleaved `rounds` times in one invocation; prints a
    Markdown table and writes benchmarks/pdf-born-digital.json."""
    trees = {"before": Path(tempfile.mkdtemp(prefix="polyocr-before-")), "after": ROOT}
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", before, "src"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(trees["before"])], input=archive.stdout, check=True)
    load_start = os.getloadavg()[0]
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    for _ in range(rounds):
        for side, tree in trees.items():
            env = {**os.environ, "PYTHONPATH": str(tree / "src"), "HF_HUB_OFFLINE": "1"}
            cmd = [sys.executable, str(Path(__file__).resolve()), "--born-digital-json"]
            run = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
            runs[side].append(json.loads(run.stdout.strip().splitlines()[-1]))
            print(side, runs[side][-1], flush=True)
    load = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    record = {"date": str(date.today()), "machine": machine, "before": before, "rounds": rounds, "load": load}
    record["runs"] = runs
    (ROOT / "benchmarks" / "pdf-born-digital.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nbefore = {before}, after = this tree; {rounds} interleaved rounds; load {load[0]} -> {load[1]}\n")
    print(
        "| tree | round | auto s | auto pages/s | auto, ruled pages s | never (Tesseract) s "
        "| speed-up: document | ruled document | median page |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for side in ("before", "after"):
        for i, r in enumerate(runs[side], 1):
            print(
                f"| {side} | {i} | {r['auto']['seconds']} | {r['auto']['pages_per_s']} | {r['auto-ruled']['seconds']} "
                f"| {r['never']['seconds']} | {r['speedup']}x | {r['speedup_ruled']}x | {r['speedup_median_page']}x |"
            )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "pdf-output.md")
    parser.add_argument("--machine", default="2-core CPU dev machine (shared)")
    parser.add_argument(
        "--born-digital-before", metavar="COMMIT", help="only the born-digital part: COMMIT against this tree"
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--born-digital-json", action="store_true", help=argparse.SUPPRESS)  # one tree's run
    args = parser.parse_args()
    if args.born_digital_json:
        with tempfile.TemporaryDirectory() as name:
            print(json.dumps(born_digital(Path(name))))
        return
    if args.born_digital_before:
        born_digital_trees(args.born_digital_before, args.rounds, args.machine)
        return
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        scan = tmp / "scan40.pdf"
        truths = build_scan(scan)
        pages = len(truths)
        load_start = os.getloadavg()[0]
        py = sys.executable
        polyocr_pdf = [py, "-m", "polyocr", "ocr", "-e", "tesseract", "--lang", "eng+rus", "-f", "pdf", "--dpi", "300"]
        plugin = [py, "-m", "ocrmypdf", "--plugin", "polyocr.ocrmypdf_plugin", "--polyocr-engine", "tesseract"]
        variants = {
            "polyocr --format pdf": (
                [*polyocr_pdf, "-q", "--out", str(tmp / "polyocr"), str(scan)],
                tmp / "polyocr" / "scan40.pdf",
            ),
            "ocrmypdf --force-ocr -j 2": (
                [py, "-m", "ocrmypdf", "--force-ocr", "-j", "2", "-l", "eng+rus", "-q", str(scan), str(tmp / "o.pdf")],
                tmp / "o.pdf",
            ),
            "ocrmypdf --force-ocr -j 2 --plugin polyocr": (
                [*plugin, "--force-ocr", "-j", "2", "-l", "eng+rus", "-q", str(scan), str(tmp / "op.pdf")],
                tmp / "op.pdf",
            ),
        }
        rows = {}
        for label, (cmd, output) in variants.items():
            seconds = timed(cmd, env)
            rows[label] = {
                "seconds": round(seconds, 1),
                "pages_per_s": round(pages / seconds, 3),
                "kb_per_page": round(output.stat().st_size / pages / 1024, 1),
                "cer_vs_ground_truth": text_cer(output, truths),
                "command": " ".join(c if not c.startswith(str(tmp)) else Path(c).name for c in cmd[1:]),
            }
            print(label, rows[label], flush=True)
        born = born_digital(tmp)
        print("born-digital", born, flush=True)
        input_kb = round(scan.stat().st_size / pages / 1024, 1)
    load = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    record = {"date": str(date.today()), "machine": args.machine, "python": platform.python_version()}
    record["load_average_start_end"] = load
    record |= {"pages": pages, "input_kb_per_page": input_kb, "variants": rows, "born_digital": born}
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    lines = [
        "# Searchable PDF output: polyocr against OCRmyPDF",
        "",
        f"Command: `PYTHONPATH=src HF_HUB_OFFLINE=1 python benchmarks/bench_pdf.py` on the {args.machine},",
        f"{record['date']}; one run of each variant, in one invocation, on the same {pages}-page scanned PDF",
        f"(the dev set's page images at their own DPI, {input_kb} KB/page). "
        f"Raw: `{args.out.with_suffix('.json').name}`. Load average (1 min) {load[0]} at the start, {load[1]} at the",
        "end: the machine is shared, so seconds are indicative; the variants ran back to back under the same load.",
        "CER: the output's extracted text (pypdfium2) against the pages' ground truth.",
        "",
        "| variant | seconds | pages/s | output KB/page | CER | command |",
        "|---|---|---|---|---|---|",
    ]
    for label, row in rows.items():
        lines.append(
            f"| {label} | {row['seconds']} | {row['pages_per_s']} | {row['kb_per_page']} "
            f"| {row['cer_vs_ground_truth']} | `{row['command']}` |"
        )
    auto, never = born["auto"], born["never"]
    lines += [
        "",
        f"Born-digital pages ({auto['pages']} dev-set Russian texts set in DejaVu Sans), "
        "through the router in one process:",
        "",
        "| --text-layer | seconds | pages/s | median s/page | engines |",
        "|---|---|---|---|---|",
        f"| auto | {auto['seconds']} | {auto['pages_per_s']} | {auto['median_page_s']} "
        f"| {', '.join(auto['engines'])} |",
        f"| never (Tesseract) | {never['seconds']} | {never['pages_per_s']} | {never['median_page_s']} "
        f"| {', '.join(never['engines'])} |",
        "",
        f"Speed-up of reading the text layer: {born['speedup']}x in wall time for the whole document (page",
        f"rendering at 200 DPI, the checks and the router included), {born['speedup_median_page']}x in the median",
        "page's attempt time (the layer's extraction and checks against one Tesseract call).",
        "",
    ]
    args.out.write_text("\n".join(lines))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
