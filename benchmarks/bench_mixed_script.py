"""Mixed-script pages and RapidOCR's reading order, before and after issue 20, side by side in one run.

The "before" engines are the files of the commit given by --before (git show), loaded beside the
current ones, so both read the same pages in the same process under the same load:

1. script detection on the development set's pages with ground truth: Tesseract's OSD against the
   sampled first pass (langdetect.py), each scored against the scripts of the page's ground truth;
2. Tesseract before and after on the Russian pages with rus and rus+eng, on the English pages with
   eng, on the multilingual page, and on two rendered pages (Russian with Latin terms, pure Russian);
3. RapidOCR's order before and after, and RapidOCR's own output order, on single text lines cut from
   the two UW3 pages (tesseract_test/8071_093.3B, 8087_054.3B) and on the development set's
   non-Russian pages (the multi-column gains).

    OMP_THREAD_LIMIT=1 OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/bench_mixed_script.py \\
        --before a260f7d --out benchmarks/mixed-script.md --json benchmarks/mixed-script.json
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from PIL import Image

from polyocr.bench.manifest import read_manifest, select
from polyocr.bench.metrics import char_errors, normalize, total
from polyocr.bench.mixed import MIXED_LATIN_TERMS, MIXED_RUSSIAN, PURE_RUSSIAN, render_lines
from polyocr.documents import Page, load_pages
from polyocr.engines import rapidocr as rapid_after
from polyocr.engines.rapidocr import RapidOCREngine
from polyocr.engines.tesseract import OSD_SCRIPTS, TesseractEngine
from polyocr.langdetect import page_scripts, word_scripts
from polyocr.types import EnginePlan, Task, TaskKind

REPO = Path(__file__).resolve().parents[1]
EVAL = REPO.parent / "shared" / "data" / "eval"
UW3 = ("8071_093.3B", "8087_054.3B")
LINES_PER_PAGE = 35
DET_SHORT_SIDE = 736  # rapidocr's detector scales a smaller short side up to this (its default config)


def load_before(commit: str, path: str, name: str) -> Any:
    source = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:{path}"], check=True, capture_output=True)
    folder = Path(tempfile.mkdtemp(prefix="polyocr-before-"))
    file = folder / f"{name}.py"
    file.write_bytes(source.stdout)
    spec = importlib.util.spec_from_file_location(name, file)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


# -- 1. detection ---------------------------------------------------------------------------------


def detection(items: list, engine: TesseractEngine, before: Any = None) -> dict[str, Any]:
    """OSD and the sampled pass (with the before commit's rule too, when `before` is its engine)."""
    from tesserocr import PSM, PyTessBaseAPI

    osd = PyTessBaseAPI(path=f"{engine._tessdata}/", lang="osd", psm=PSM.OSD_ONLY)
    rows = []
    for item in items:
        image = load_pages(item.image)[0].image
        truth = page_scripts(word_scripts(item.reference() or ""))
        start = time.perf_counter()
        osd.SetImage(image)
        found = osd.DetectOrientationScript() or {}
        osd.Clear()
        osd_seconds = time.perf_counter() - start
        osd_scripts = OSD_SCRIPTS.get(found.get("script_name", ""), ())
        start = time.perf_counter()
        with engine._lock:
            detected = engine._detect(image, "+".join(item.languages))
        sample_seconds = time.perf_counter() - start
        sample = detected[0] if detected else ()
        row = {
            "id": item.id,
            "truth": list(truth),
            "osd": list(osd_scripts),
            "sample": list(sample),
            "osd_seconds": osd_seconds,
            "sample_seconds": sample_seconds,
        }
        if before is not None:
            start = time.perf_counter()
            with before._lock:
                old = before._detect(image, "+".join(item.languages))
            row["sample_before"] = list(old[0] if old else ())
            row["sample_before_seconds"] = time.perf_counter() - start
        rows.append(row)
    osd.End()
    summary = {}
    for method in ("osd", "sample_before", "sample") if before is not None else ("osd", "sample"):
        summary[method] = {
            "main_right": sum(1 for r in rows if r[method][:1] == r["truth"][:1]),
            "set_right": sum(1 for r in rows if set(r[method]) == set(r["truth"])),
            "median_seconds": median([r[f"{method}_seconds"] for r in rows]),
        }
    return {"pages": len(rows), "summary": summary, "rows": rows}


# -- 2. Tesseract ---------------------------------------------------------------------------------


def read_pages(engine: Any, pages: list[tuple[str, Page, str]], languages: tuple[str, ...]) -> dict[str, Any]:
    counts, seconds, used, per_page = [], [], {}, {}
    for name, page, reference in pages:
        start = time.perf_counter()
        try:
            [result] = engine.recognize([page], Task(kind=TaskKind.TEXT, languages=languages))
            text, language = result.text, result.language
        except Exception as exc:  # the multilingual page: no deu/fra/ita/spa/por traineddata here
            text, language = "", f"error: {exc}"[:120]
        seconds.append(time.perf_counter() - start)
        count = char_errors(reference, text)
        counts.append(count)
        used[language] = used.get(language, 0) + 1
        per_page[name] = {"cer": count.rate, "language": language, "text": text}
    return {
        "cer": total(counts).rate,
        "median_seconds": median(seconds),
        "languages_used": used,
        "pages": per_page,
    }


def tesseract(items: list, before: Any) -> dict[str, Any]:
    def pages_of(selected: list) -> list[tuple[str, Page, str]]:
        return [(i.id, load_pages(i.image)[0], i.reference() or "") for i in selected]

    russian = pages_of(select(items, languages=["rus"]))
    english = pages_of(select(items, languages=["eng"]))
    multilingual = pages_of(select(items, languages=["mul"]))
    mul_languages = select(items, languages=["mul"])[0].languages
    rendered = {}
    for name, lines in (("rendered Russian + Latin terms", MIXED_RUSSIAN), ("rendered pure Russian", PURE_RUSSIAN)):
        image, reference = render_lines(lines)
        rendered[name] = [(name, Page(image=image, number=1, source=name), reference)]
    runs = [
        ("Russian dev pages", russian, ("rus",)),
        ("Russian dev pages", russian, ("rus", "eng")),
        ("English dev pages", english, ("eng",)),
        ("multilingual page (eurotext)", multilingual, mul_languages),
        ("multilingual page (eurotext)", multilingual, ("eng",)),
        *[(name, pages, ("rus",)) for name, pages in rendered.items()],
    ]
    old = before.TesseractEngine()
    old.load(EnginePlan())
    new = TesseractEngine()
    new.load(EnginePlan())
    rows = []
    for name, pages, languages in runs:
        row = {"set": name, "pages": len(pages), "languages": "+".join(languages)}
        row["before"] = read_pages(old, pages, languages)
        row["after"] = read_pages(new, pages, languages)
        if name.startswith("rendered Russian"):
            for side in ("before", "after"):
                text = next(iter(row[side]["pages"].values()))["text"]
                row[side]["latin_terms_right"] = sum(1 for term in MIXED_LATIN_TERMS if term in text)
            row["latin_terms"] = len(MIXED_LATIN_TERMS)
        rows.append(row)
    old.close()
    new.close()
    return {"rows": rows}


# -- 3. RapidOCR order ----------------------------------------------------------------------------


def uw3_lines(engine: TesseractEngine) -> list[tuple[str, Image.Image, str]]:
    """Lines of the UW3 pages: Tesseract's line boxes whose text matches a ground-truth line within
    CER 0.1, the first LINES_PER_PAGE of each page, each on white padded up to the detector's size."""
    from rapidfuzz.distance import Levenshtein
    from tesserocr import RIL, iterate_level

    lines = []
    for name in UW3:
        image = Image.open(EVAL / "tesseract_test" / f"{name}.tif").convert("RGB")
        truth = [normalize(line) for line in (EVAL / "tesseract_test" / f"{name}.txt").read_text().splitlines()]
        truth = [line for line in truth if line]
        with engine._lock:
            api = engine._api_for("eng")
            api.SetImage(image)
            api.Recognize()
            found = []
            for line in iterate_level(api.GetIterator(), RIL.TEXTLINE):
                box, text = line.BoundingBox(RIL.TEXTLINE), normalize(line.GetUTF8Text(RIL.TEXTLINE) or "")
                if box and len(text) >= 15:
                    found.append((box, text))
            api.Clear()
        kept = 0
        for (x1, y1, x2, y2), text in found:
            reference = min(truth, key=lambda t, text=text: Levenshtein.normalized_distance(t, text))
            if kept >= LINES_PER_PAGE or char_errors(reference, text).rate > 0.1:
                continue
            height = y2 - y1
            crop = image.crop((max(0, x1 - 10), max(0, y1 - height // 3), x2 + 10, y2 + height // 3))
            canvas = Image.new("RGB", (crop.width, max(crop.height, DET_SHORT_SIDE)), "white")
            canvas.paste(crop, (0, (canvas.height - crop.height) // 2))
            lines.append((f"{name} line {kept + 1}", canvas, reference))
            kept += 1
    return lines


def orders(module: Any, output: Any) -> str:
    lines = []
    for box, text, score in zip(output.boxes, output.txts, output.scores, strict=True):
        xs, ys = [float(p[0]) for p in box], [float(p[1]) for p in box]
        lines.append(module.TextLine((min(xs), min(ys), max(xs), max(ys)), text.strip(), float(score)))
    groups = module.reading_order(module.paragraphs(lines))
    return "\n\n".join("\n".join(line.text for line in group.lines) for group in groups)


def rapid(items: list, before: Any, tess: TesseractEngine) -> dict[str, Any]:
    engine = RapidOCREngine()
    engine.load(EnginePlan())
    sets = {
        "UW3 single lines": uw3_lines(tess),
        "dev-set non-Russian pages": [
            (i.id, load_pages(i.image)[0].image, i.reference() or "") for i in items if i.language_code != "rus"
        ],
    }
    rows = []
    for name, pages in sets.items():
        counts: dict[str, list] = {"own": [], "before": [], "after": []}
        worse = {"before": 0, "after": 0}
        better = {"before": 0, "after": 0}
        scrambled = []
        for page_name, image, reference in pages:
            output = engine._ocr(image)
            texts = {
                "own": " ".join(t.strip() for t in (output.txts or ())),
                "before": orders(before, output) if output.txts else "",
                "after": orders(rapid_after, output) if output.txts else "",
            }
            page_counts = {key: char_errors(reference, text) for key, text in texts.items()}
            for key, count in page_counts.items():
                counts[key].append(count)
            for key in ("before", "after"):
                worse[key] += page_counts[key].errors > page_counts["own"].errors
                better[key] += page_counts[key].errors < page_counts["own"].errors
            if page_counts["after"].errors > page_counts["own"].errors:
                scrambled.append({"item": page_name, **texts, "reference": reference})
        rows.append(
            {
                "set": name,
                "items": len(pages),
                "cer": {key: total(value).rate for key, value in counts.items()},
                "worse_than_own": worse,
                "better_than_own": better,
                "after_worse_examples": scrambled[:5],
            }
        )
    engine.close()
    return {"rows": rows}


# -- report ---------------------------------------------------------------------------------------


def markdown(report: dict[str, Any]) -> str:
    out = [
        "# Mixed-script pages and RapidOCR's reading order (issue 20)",
        "",
        f"Produced by `benchmarks/bench_mixed_script.py` on {report['created']} ({report['machine']}); "
        f"before = commit {report['before']}, after = this branch, both run in the same process.",
        "",
        "```",
        report["command"],
        "```",
        "",
        f"Load average at start {report['load'][0]}, at end {report['load'][1]} (2 cores shared with other jobs:"
        " the seconds are rough, the error rates exact).",
        "",
        "## 1. Which scripts a page uses: Tesseract OSD against a sampled first pass",
        "",
        f"{report['detection']['pages']} development-set pages with ground truth; the truth is the scripts of the"
        " ground truth's words (langdetect.page_scripts of word_scripts).",
        "",
        "| method | main script right | set of scripts right | median s/page |",
        "|---|---:|---:|---:|",
    ]
    for method, row in report["detection"]["summary"].items():
        label = {
            "osd": "Tesseract OSD (osd.traineddata)",
            "sample_before": f"10 sampled lines read eng+rus, Unicode script: before ({report['before']})",
            "sample": "10 sampled lines read eng+rus, Unicode script"
            + (": after" if "sample_before" in report["detection"]["summary"] else ""),
        }[method]
        n = report["detection"]["pages"]
        out.append(f"| {label} | {row['main_right']}/{n} | {row['set_right']}/{n} | {row['median_seconds']:.2f} |")
    wrong_before = [
        r for r in report["detection"]["rows"] if set(r.get("sample_before", r["truth"])) != set(r["truth"])
    ]
    if "sample_before" in report["detection"]["summary"]:
        out += [
            "",
            "Pages the sampled pass got wrong before: "
            + (
                ", ".join(
                    f"{r['id']} (truth {'+'.join(r['truth'])}, found {'+'.join(r['sample_before']) or 'none'})"
                    for r in wrong_before
                )
                or "none"
            )
            + ".",
        ]
    wrong = [r for r in report["detection"]["rows"] if set(r["sample"]) != set(r["truth"])]
    out += [
        "",
        "Pages the sampled pass got wrong: "
        + (
            ", ".join(
                f"{r['id']} (truth {'+'.join(r['truth'])}, found {'+'.join(r['sample']) or 'none'})" for r in wrong
            )
            or "none"
        )
        + ".",
        "",
    ]
    out += [
        "## 2. Tesseract before and after",
        "",
        "| pages | --lang | items | CER before | CER after | languages used before | languages used after "
        "| s/page before | s/page after |",
        "|---|---|---:|---:|---:|---|---|---:|---:|",
    ]
    for row in report["tesseract"]["rows"]:
        used = ", ".join(f"{k} x{v}" for k, v in row["after"]["languages_used"].items())
        used_before = ", ".join(f"{k} x{v}" for k, v in row["before"]["languages_used"].items())
        out.append(
            f"| {row['set']} | {row['languages']} | {row['pages']} | {row['before']['cer']:.5f} | "
            f"{row['after']['cer']:.5f} | {used_before} | {used} | {row['before']['median_seconds']:.2f} | "
            f"{row['after']['median_seconds']:.2f} |"
        )
        if "latin_terms" in row:
            out.append(
                f"| (Latin terms read right) | | | {row['before']['latin_terms_right']}/{row['latin_terms']} | "
                f"{row['after']['latin_terms_right']}/{row['latin_terms']} | | | | |"
            )
    out += [
        "",
        "## 3. RapidOCR: polyocr's order before and after, against RapidOCR's own output order",
        "",
        "| items | n | CER own order | CER before | CER after | before: worse / better | after: worse / better |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["rapidocr"]["rows"]:
        c, w, b = row["cer"], row["worse_than_own"], row["better_than_own"]
        out.append(
            f"| {row['set']} | {row['items']} | {c['own']:.4f} | {c['before']:.4f} | {c['after']:.4f} | "
            f"{w['before']} / {b['before']} | {w['after']} / {b['after']} |"
        )
    out.append("")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="a260f7d", help="the commit whose engines are 'before'")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "mixed-script.md")
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "mixed-script.json")
    args = parser.parse_args()
    load_start = os.getloadavg()[0]
    # The before Tesseract engine decides with the before commit's langdetect (where it has one): it is
    # put in polyocr.langdetect's place while that engine's module is imported.
    has_langdetect = subprocess.run(
        ["git", "-C", str(REPO), "cat-file", "-e", f"{args.before}:src/polyocr/langdetect.py"], capture_output=True
    )
    current = sys.modules["polyocr.langdetect"]
    if has_langdetect.returncode == 0:
        sys.modules["polyocr.langdetect"] = load_before(args.before, "src/polyocr/langdetect.py", "langdetect_before")
    try:
        before_tess = load_before(args.before, "src/polyocr/engines/tesseract.py", "tesseract_before")
    finally:
        sys.modules["polyocr.langdetect"] = current
    before_rapid = load_before(args.before, "src/polyocr/engines/rapidocr.py", "rapidocr_before")
    items = select(read_manifest(EVAL).items)
    tess = TesseractEngine()
    tess.load(EnginePlan())
    report: dict[str, Any] = {
        "created": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"2-core CPU dev machine, {platform.platform()}, Python {platform.python_version()}",
        "before": args.before,
        "command": "OMP_THREAD_LIMIT=1 OMP_NUM_THREADS=2 PYTHONPATH=src python benchmarks/bench_mixed_script.py "
        + " ".join(sys.argv[1:]),
    }
    report["tesseract"] = tesseract(items, before_tess)
    print(
        json.dumps(
            [
                {k: v for k, v in r.items() if k not in ("before", "after")}
                | {side: {"cer": r[side]["cer"], "used": r[side]["languages_used"]} for side in ("before", "after")}
                for r in report["tesseract"]["rows"]
            ],
            ensure_ascii=False,
        ),
        flush=True,
    )
    old_tess = before_tess.TesseractEngine()
    old_tess.load(EnginePlan())
    report["detection"] = detection(items, tess, old_tess)
    old_tess.close()
    print(json.dumps(report["detection"]["summary"]), flush=True)
    report["rapidocr"] = rapid(items, before_rapid, tess)
    tess.close()
    report["load"] = [round(load_start, 2), round(os.getloadavg()[0], 2)]
    args.json.write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    args.out.write_text(markdown(report), encoding="utf-8")
    print(markdown(report))


if __name__ == "__main__":
    main()
