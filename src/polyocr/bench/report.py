"""Benchmark reports: a Markdown table for people, JSON for tools, PNG charts for a glance.

The Markdown carries where and how the numbers were taken (date, command, machine, load, chains,
settings) because a speed figure without them cannot be compared with anything.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

from polyocr.bench.runner import BenchResult, Row

COLUMNS = (
    "engine",
    "language",
    "items",
    "pages",
    "CER",
    "WER",
    "bag WER",
    "first try",
    "usable",
    "s/page median",
    "s/page p90",
    "pages/s",
    "peak RAM",
    "peak VRAM",
)


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:,.0f} MiB"


def _others(share: float | None) -> str:
    return "" if share is None else f"; other processes used {share:.0%} of the CPUs meanwhile"


def _cells(row: Row) -> list[str]:
    timed = row.median_s > 0
    if row.refused:
        return [
            row.engine,
            row.language,
            str(row.items),
            str(row.pages),
            "refused",
            "refused",
            "refused",
            "0%",
            "0%",
            "-",
            "-",
            "-",
            _mib(row.peak_rss_bytes),
            _mib(row.peak_vram_bytes),
        ]
    return [
        row.engine,
        row.language,
        str(row.items),
        str(row.pages),
        f"{row.cer:.4f}",
        f"{row.wer:.4f}",
        f"{row.bow_wer:.4f}",
        f"{row.first_try_rate:.0%}",
        f"{row.success_rate:.0%}",
        f"{row.median_s:.2f}" if timed else "-",
        f"{row.p90_s:.2f}" if timed else "-",
        f"{row.pages_per_s:.3f}" if timed else "-",
        _mib(row.peak_rss_bytes),
        _mib(row.peak_vram_bytes),
    ]


def markdown(result: BenchResult) -> str:
    m = result.machine
    gpus = ", ".join(str(gpu.get("name", "?")) for gpu in m.get("profile", {}).get("gpus") or [])
    lines = [
        f"Benchmark of {', '.join(result.datasets)}"
        + (f" (first {result.limit} items with ground truth per dataset)" if result.limit else ""),
        "",
        f"- started: {result.created}",
        *([f"- command: `{result.command}`"] if result.command else []),
        f"- machine: {m.get('platform', '?')}, {m.get('cpus', '?')} CPUs, {gpus or 'no GPU'}, "
        f"Python {m.get('python', '?')}; load average (1, 5, 15 min) {m.get('load_average')} at start, "
        f"{m.get('load_average_after')} at end" + _others(m.get("other_cpu_share")),
    ]
    for run in result.runs:
        if not run.available:
            lines.append(f"- {run.spec}: not run: {run.reason}")
            continue
        chains = "; ".join(
            [f"{langs}: {' > '.join(chain)}" for langs, chain in run.chains.items()]
            + [f"{langs}: refused ({why})" for langs, why in run.refused.items()]
        )
        settings = "; ".join(f"{engine} {s}" for engine, seen in run.settings.items() for s in seen if s)
        used = Counter(engine or "none (failed)" for item in run.items for engine in item.engines)
        lines.append(
            f"- {run.spec}: chain {chains or '-'}; pages by engine: "
            + ", ".join(f"{engine} {count}" for engine, count in used.most_common())
            + f"; load and warm-up {run.load_seconds:.1f} s; settings: {settings or 'engine defaults'}"
            + _others(run.other_cpu_share)
        )
    lines += [
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" if i < 2 else "---:" for i in range(len(COLUMNS))) + "|",
    ]
    lines += ["| " + " | ".join(_cells(row)) + " |" for row in result.rows()]
    lines += [
        "",
        "CER/WER: edit distance over reference length after Unicode NFC and whitespace normalisation, "
        "summed over pages; bag WER ignores word order. Refused: the engine cannot read that language's "
        'script, so the chain never offers it those pages; they stay out of its "all" row. First try: '
        "pages with a usable result from the first engine that ran, without retry; usable: after retries "
        "and fallbacks. Seconds per page exclude loading and cover pages with a usable result. Peak RAM: "
        "resident set of the engine's own process; peak VRAM: CUDA allocator peak.",
    ]
    return "\n".join(lines) + "\n"


def write_json(result: BenchResult, path: Path) -> None:
    path.write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_charts(result: BenchResult, out_dir: Path) -> list[Path]:
    """Quality against speed (one point per engine and language) and per-language error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in result.rows() if row.language != "all" and row.pages_per_s > 0]
    engines = list(dict.fromkeys(row.engine for row in result.rows()))
    languages = list(dict.fromkeys(row.language for row in result.rows() if row.language != "all"))
    colors = {engine: plt.get_cmap("tab10")(i % 10) for i, engine in enumerate(engines)}
    markers = {language: "osD^vP*X"[i % 8] for i, language in enumerate(languages)}

    scatter = out_dir / "quality_vs_speed.png"
    fig, ax = plt.subplots(figsize=(7, 5))
    spots: dict[tuple[float, float, str], tuple[float, float, list[str]]] = {}  # one label per spot
    for row in rows:
        ax.scatter(
            row.pages_per_s,
            row.cer,
            color=colors[row.engine],
            marker=markers[row.language],
            s=70,
            label=f"{row.engine} / {row.language}",
        )
        key = (round(math.log10(row.pages_per_s), 1), round(row.cer, 3), row.language)
        spots.setdefault(key, (row.pages_per_s, row.cer, []))[2].append(row.engine)
    for (_, _, language), (x, y, names) in spots.items():
        ax.annotate(f"{', '.join(names)} ({language})", (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
    if rows:
        ax.set_xscale("log")
        ax.legend(fontsize=7, loc="best")
    ax.set_xlabel("pages per second (log scale, higher is faster)")
    ax.set_ylabel("CER (lower is better)")
    ax.set_title("Quality against speed")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(scatter, dpi=100)
    plt.close(fig)

    bars = out_dir / "per_language.png"
    by_key = {(row.engine, row.language): row for row in result.rows() if row.pages_per_s > 0}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    width = 0.8 / max(1, len(engines))
    for ax, (attribute, title) in zip(axes, (("cer", "CER"), ("bow_wer", "bag-of-words WER")), strict=True):
        for e, engine in enumerate(engines):
            xs = [i + e * width for i, language in enumerate(languages) if (engine, language) in by_key]
            ys = [
                getattr(by_key[engine, language], attribute) for language in languages if (engine, language) in by_key
            ]
            ax.bar(xs, ys, width=width, color=colors[engine], label=engine)
        ax.set_xticks([i + width * (len(engines) - 1) / 2 for i in range(len(languages))], languages)
        ax.set_title(f"{title} per language (lower is better)")
        ax.set_xlabel("no bar: the engine gave no usable page in that language")
        ax.grid(True, axis="y", alpha=0.3)
    if engines:
        axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(bars, dpi=100)
    plt.close(fig)
    return [scatter, bars]


def write_report(result: BenchResult, out_dir: str | Path) -> dict[str, Path]:
    """bench.md, bench.json and the charts in out_dir; returns their paths by kind."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "bench.md", "json": out / "bench.json"}
    paths["markdown"].write_text(markdown(result), encoding="utf-8")
    write_json(result, paths["json"])
    scatter, bars = write_charts(result, out)
    paths.update(scatter=scatter, languages=bars)
    return paths
