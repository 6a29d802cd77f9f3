"""The command line: a thin layer over polyocr's Python calls (Typer + Rich).

Results go to stdout (or files with --out); progress, notes, errors and the summary go to stderr so
that `polyocr ocr page.png > page.txt` stays clean.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from polyocr import defaults
from polyocr.defaults import LANGUAGES as DEFAULT_LANGUAGES
from polyocr.documents import DEFAULT_DPI, DEFAULT_MAX_PAGES, DEFAULT_MAX_PIXELS, expand_inputs
from polyocr.documents.textlayer import TEXT_LAYER_MODES
from polyocr.errors import PolyOCRError
from polyocr.formats import BINARY_FORMATS, FORMATS, render, suffix_for
from polyocr.formats.atomic import write_atomic
from polyocr.results import DocumentResult, PageStatus, json_schema_text
from polyocr.types import TaskKind

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="OCR documents with whichever engine works best on this machine.",
)
out = Console()
err = Console(stderr=True, soft_wrap=True)  # error lines stay whole for logs and grep


LOG_LEVELS = ("debug", "info", "warning", "error")


@app.callback()
def _options(
    log_level: Annotated[
        str,
        typer.Option(
            help="What polyocr logs on stderr: debug (every retry and fallback), info (engine loads), warning or error."
        ),
    ] = "warning",
) -> None:
    """OCR documents with whichever engine works best on this machine."""
    if log_level not in LOG_LEVELS:
        raise typer.BadParameter(f"choose one of {', '.join(LOG_LEVELS)}", param_hint="--log-level")
    configure_logging(log_level)


def configure_logging(level: str) -> None:
    """polyocr's loggers on the CLI's stderr console, so log lines and the progress bar do not collide."""
    from rich.logging import RichHandler

    logger = logging.getLogger("polyocr")
    logger.handlers = [RichHandler(console=err, show_time=False, show_path=False, markup=False)]
    logger.setLevel(level.upper())
    logger.propagate = False


def main() -> None:
    app()


def _error(message: object) -> None:
    """An error line on stderr; the message is escaped so texts like polyocr[classic] survive Rich."""
    err.print(f"[red]error:[/red] {escape(str(message))}")


def _progress(quiet: bool, *, rate: bool = False) -> Progress:
    """The progress bar on stderr: what is being read, done / total, the rate when asked, elapsed."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    if rate:
        columns.append(TextColumn("{task.fields[rate]}"))
    return Progress(*columns, TimeElapsedColumn(), console=err, disable=quiet, transient=False)


def _languages(value: str) -> tuple[str, ...]:
    return tuple(part for part in value.replace(",", "+").split("+") if part)


@dataclass
class _RunStats:
    pages: int = 0
    failed_pages: int = 0
    failed_inputs: int = 0
    failed_outputs: int = 0


@app.command()
def ocr(
    # readable=False: an unreadable input is that input's error, not a refusal of the whole run
    inputs: Annotated[list[Path], typer.Argument(help="Image or PDF files, or directories.", readable=False)],
    engine: Annotated[str, typer.Option("--engine", "-e", help="auto, an engine name, or a chain a,b,c.")] = "auto",
    lang: Annotated[str, typer.Option(help="Languages, Tesseract codes joined by +.")] = "+".join(defaults.LANGUAGES),
    lang_detect: Annotated[
        str, typer.Option(help="on: add eng/rus where a page has Latin/Cyrillic text --lang lacks; off: --lang only.")
    ] = "on",
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="txt, md, json, hocr, alto, or pdf (searchable PDF; needs --out).")
    ] = "txt",
    text_layer: Annotated[
        str,
        typer.Option(
            help="PDFs: read pages from their own text layer: auto (when it passes the checks), always, never."
        ),
    ] = "auto",
    pdfa: Annotated[bool, typer.Option(help="--format pdf: write PDF/A-2b.")] = False,
    task: Annotated[
        TaskKind | None,
        typer.Option(help="What to extract (default: layout; an engine named without layout then gives its text)."),
    ] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Write one file per input here.")] = None,
    dpi: Annotated[float, typer.Option(help="Resolution for rendering PDF pages.")] = DEFAULT_DPI,
    overlay: Annotated[bool, typer.Option(help="Also write a PNG of each page with its blocks (needs --out).")] = False,
    max_pages: Annotated[int, typer.Option(help="Refuse documents with more pages.")] = DEFAULT_MAX_PAGES,
    max_pixels: Annotated[int, typer.Option(help="Refuse pages with more pixels.")] = DEFAULT_MAX_PIXELS,
    max_new_tokens: Annotated[
        int, typer.Option(help="Token limit per page for generative engines.")
    ] = defaults.MAX_NEW_TOKENS,
    model: Annotated[
        Path | None, typer.Option(help="A local checkpoint directory for the first engine of --engine.")
    ] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds per page before moving on to the next engine.")] = None,
    device: Annotated[str | None, typer.Option(help="VLM engines: cpu, cuda or cuda:N (default: decided).")] = None,
    dtype: Annotated[str | None, typer.Option(help="VLM engines: bfloat16, float16 or float32.")] = None,
    attn: Annotated[
        str | None, typer.Option(help="VLM engines: flash_attention_2, sdpa, varlen, flex or eager.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary.")] = False,
) -> None:
    """Recognise text in documents. Exit code 0 only if every page of every input succeeded."""
    from polyocr.api import RunOptions, open_input, prepare_router
    from polyocr.formats.layout import placement_note
    from polyocr.formats.overlay import draw_overlay
    from polyocr.formats.pdf import PageImage
    from polyocr.router import RunSummary

    if fmt not in (*FORMATS, *BINARY_FORMATS):
        raise typer.BadParameter(f"choose one of {', '.join((*FORMATS, *BINARY_FORMATS))}", param_hint="--format")
    if fmt in BINARY_FORMATS and out_dir is None:
        raise typer.BadParameter(f"--format {fmt} writes files, so it needs --out DIR", param_hint="--format")
    if text_layer not in TEXT_LAYER_MODES:
        raise typer.BadParameter(f"choose one of {', '.join(TEXT_LAYER_MODES)}", param_hint="--text-layer")
    if lang_detect not in ("on", "off"):
        raise typer.BadParameter("choose on or off", param_hint="--lang-detect")
    if overlay and out_dir is None:
        raise typer.BadParameter("--overlay writes files, so it needs --out DIR", param_hint="--overlay")
    files, notes = expand_inputs(inputs)
    if not quiet:
        for note in notes:
            err.print(f"[dim]note: {note}[/dim]")
    if not files:
        err.print("[red]error:[/red] no input documents found")
        raise typer.Exit(2)
    options = RunOptions(
        engine=engine,
        task=task,
        languages=lang,
        dpi=dpi,
        max_pixels=max_pixels,
        max_pages=max_pages,
        max_new_tokens=max_new_tokens,
        timeout=timeout,
        model=model,
        device=device,
        dtype=dtype,
        attn=attn,
        text_layer=text_layer,
        lang_detect=lang_detect == "on",
    )
    try:
        router = prepare_router(options)
    except PolyOCRError as exc:
        _error(exc)
        raise typer.Exit(2) from None
    if out_dir is not None:
        problem = _output_dir_problem(out_dir)
        if problem:
            _error(problem)
            raise typer.Exit(2)
    stats = _RunStats()
    summary = RunSummary()
    start = time.perf_counter()
    used_names: set[str] = set()
    progress = _progress(quiet, rate=True)
    with router, progress:
        bar = progress.add_task("pages", total=None, rate="")
        documents: list[DocumentResult] = []
        for path in files:
            try:
                source = open_input(path, options)
            except PolyOCRError as exc:
                _error(exc)
                stats.failed_inputs += 1
                documents.append(DocumentResult(source=str(path), errors=[str(exc)]))
                continue
            progress.update(bar, total=(progress.tasks[0].total or 0) + source.page_count)
            stem = _unique_stem(out_dir, path, used_names) if out_dir else path.stem
            images: dict = {}  # --format pdf of an image input: each page's image, encoded as it arrives

            def on_page(page, result, stem=stem, images=images, kind=source.kind):
                if fmt == "pdf" and kind == "image":
                    images[page.number] = PageImage.encode(page.image, page.dpi)
                stats.pages += 1
                if result.status == PageStatus.FAILED:
                    stats.failed_pages += 1
                    err.print(
                        f"[red]page failed:[/red] {escape(page.source)} page {page.number}: "
                        + escape("; ".join(result.errors))
                    )
                summary.add(result)
                if overlay and out_dir is not None and page.error is None:
                    target = out_dir / f"{stem}.page{page.number:04d}.png"
                    try:
                        draw_overlay(page.image, result).save(target)
                    except OSError as exc:
                        stats.failed_outputs += 1
                        _error(f"{target}: overlay not written: {exc.strerror or exc}")
                elapsed = time.perf_counter() - start
                progress.update(
                    bar,
                    advance=1,
                    description=f"{Path(page.source).name} [{result.engine or '-'}]",
                    rate=f"{stats.pages / elapsed:.2f} pages/s",
                )

            doc = router.run_source(source, on_page=on_page)
            if doc.errors:
                stats.failed_inputs += 1
                for message in doc.errors:
                    _error(message)
            if fmt in ("pdf", "hocr", "alto") and not quiet:
                for note in filter(None, map(placement_note, doc.pages)):
                    err.print(f"[dim]note: {escape(note)}[/dim]")
            if out_dir is not None and fmt == "pdf":
                source_pdf = path if source.kind == "pdf" else None
                _write_pdf(doc, out_dir / f"{stem}.pdf", images, source_pdf, dpi, pdfa, stats)
            elif out_dir is not None:
                target = out_dir / f"{stem}{suffix_for(fmt)}"
                try:
                    _write_output(target, render(doc, fmt))
                except OSError as exc:  # one output that cannot be written fails that input only
                    stats.failed_outputs += 1
                    _error(f"{path}: result not written to {target}: {exc.strerror or exc}")
            else:
                documents.append(doc)
    if out_dir is None:
        if fmt == "json":
            # One shape whatever failed: an object for one file named, a list otherwise (failed
            # inputs included, with their errors and no pages).
            single = len(inputs) == 1 and not inputs[0].is_dir()
            _print_json(documents, single)
        else:
            _print_documents([d for d in documents if d.pages], fmt)
    seconds = time.perf_counter() - start
    if not quiet:
        if fmt == "json":
            err.print_json(
                json.dumps(
                    {
                        "summary": summary.to_dict(),
                        "inputs": len(files),
                        "pages": stats.pages,
                        "failed_pages": stats.failed_pages,
                        "unreadable_inputs": stats.failed_inputs,
                        "unwritten_outputs": stats.failed_outputs,
                        "seconds": round(seconds, 3),
                    }
                )
            )
        else:
            err.print(
                f"{len(files)} input(s), {stats.pages} page(s), {stats.failed_pages} failed page(s), "
                f"{summary.partial} partial, {summary.fell_back} fallback(s), "
                f"{stats.failed_inputs} unreadable input(s), "
                + (f"{stats.failed_outputs} output(s) not written, " if stats.failed_outputs else "")
                + f"{seconds:.1f} s; engines: {summary.line()}",
                soft_wrap=True,
            )
    if stats.failed_pages or stats.failed_inputs or stats.failed_outputs:
        raise typer.Exit(1)


def _output_dir_problem(out_dir: Path) -> str | None:
    """Why --out cannot take files at all (then nothing is run), or None."""
    if out_dir.exists() and not out_dir.is_dir():
        return f"--out {out_dir}: exists and is not a directory; give a directory (it is created if missing)"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"--out {out_dir}: cannot create the directory: {exc.strerror or exc}"
    return None


def _write_output(target: Path, text: str) -> None:
    """Write one result file; a directory in the way is an error like any other (OSError)."""
    if target.is_dir():
        raise IsADirectoryError(21, "a directory with that name is in the way")
    write_atomic(target, text)


def _print_json(documents: list[DocumentResult], single: bool) -> None:
    if single and len(documents) == 1:
        sys.stdout.write(documents[0].to_json() + "\n")
        return
    sys.stdout.write("[\n" + ",\n".join(d.to_json() for d in documents) + "\n]\n")


def _write_pdf(doc, target: Path, images: dict, source_pdf: Path | None, dpi: float, pdfa: bool, stats) -> None:
    """The searchable PDF of one input; an input with no readable page, or whose PDF cannot be
    rewritten, gets an error line and no file (never a half-written or empty one)."""
    from polyocr.formats.pdf import write_pdf

    if not doc.pages or (source_pdf is None and not images):
        _error(f"{doc.source}: no page could be read, so no PDF was written")
        return
    try:
        write_pdf(doc, target, images=images, source_pdf=source_pdf, dpi=dpi, pdfa=pdfa)
    except Exception as exc:  # pikepdf refusing a PDF that pdfium could read, a full disk...
        stats.failed_outputs += 1
        _error(f"{doc.source}: the searchable PDF could not be written: {type(exc).__name__}: {exc}")


class _OptionalRayAddress(typer.core.TyperCommand):
    """`--ray` alone means "local"; `--ray auto|local|HOST:PORT|ray://...` names the cluster."""

    def parse_args(self, ctx, args):
        args = list(args)
        for i, arg in enumerate(args):
            if arg == "--ray":
                nxt = args[i + 1] if i + 1 < len(args) else ""
                if not (nxt in ("auto", "local") or ":" in nxt):
                    args.insert(i + 1, "local")
                break
        return super().parse_args(ctx, args)


@app.command(cls=_OptionalRayAddress)
def batch(
    inputs: Annotated[list[Path], typer.Argument(help="Image or PDF files, or directories.")],
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="The batch folder: work list, page results, outputs.")],
    engine: Annotated[str, typer.Option("--engine", "-e", help="auto, an engine name, or a chain a,b,c.")] = "auto",
    lang: Annotated[str, typer.Option(help="Languages, Tesseract codes joined by +.")] = "+".join(defaults.LANGUAGES),
    fmt: Annotated[str, typer.Option("--format", "-f", help="txt, md, json, or several: txt,json.")] = "txt",
    task: Annotated[TaskKind, typer.Option(help="What to extract.")] = TaskKind.LAYOUT,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: cores, or one per GPU).")] = None,
    recycle_after: Annotated[int, typer.Option(help="Pages per worker process before a fresh one.")] = 500,
    max_worker_mb: Annotated[float | None, typer.Option(help="Replace a worker whose memory passes this.")] = None,
    retry_failed: Annotated[bool, typer.Option(help="Run the pages that failed last time again.")] = False,
    ray: Annotated[
        str | None,
        typer.Option(help="Run on Ray: --ray starts one here, --ray ADDRESS joins a cluster."),
    ] = None,
    ray_gpus: Annotated[float, typer.Option(help="--ray: GPUs per engine actor (0.5: two small models a GPU).")] = 1.0,
    dpi: Annotated[float, typer.Option(help="Resolution for rendering PDF pages.")] = DEFAULT_DPI,
    max_pixels: Annotated[int, typer.Option(help="Refuse pages with more pixels.")] = DEFAULT_MAX_PIXELS,
    timeout: Annotated[float | None, typer.Option(help="Seconds per page before moving on to the next engine.")] = None,
    model: Annotated[Path | None, typer.Option(help="A local checkpoint for the first engine of --engine.")] = None,
    device: Annotated[str | None, typer.Option(help="VLM engines: cpu, cuda or cuda:N.")] = None,
    json_report: Annotated[bool, typer.Option("--json-report", help="The final report as JSON.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress.")] = False,
) -> None:
    """OCR many documents into --out page by page; run it again after any interruption to resume.

    Exit code as `ocr`: 0 only if every page of every input succeeded, 1 otherwise, 2 when it cannot run.
    """
    from polyocr.batch import BatchOptions, run_batch
    from polyocr.batch.console import RichProgress, print_report

    options = BatchOptions(
        engine=engine, languages=_languages(lang), formats=tuple(f.strip() for f in fmt.split(",") if f.strip()),
        task=task, workers=workers, recycle_after=recycle_after, max_worker_mb=max_worker_mb,
        retry_failed=retry_failed, ray=ray, ray_gpus_per_actor=ray_gpus,
        dpi=dpi, max_pixels=max_pixels, timeout=timeout,
        model=str(model) if model else None, device=device,
    )  # fmt: skip
    try:
        with RichProgress(err, quiet=quiet) as progress:
            report = run_batch(inputs, out_dir, options, progress)
    except (PolyOCRError, ValueError) as exc:
        _error(exc)
        raise typer.Exit(2) from None
    print_report(err, report, as_json=json_report)
    raise typer.Exit(report.exit_code)


def _unique_stem(out_dir: Path, path: Path, used: set[str]) -> str:
    """Output names follow input names; inputs sharing a name in different folders get -2, -3..."""
    stem, n = path.stem, 1
    while stem in used:
        n += 1
        stem = f"{path.stem}-{n}"
    used.add(stem)
    return stem


def _print_documents(documents: list[DocumentResult], fmt: str) -> None:
    if fmt == "json" and len(documents) > 1:
        sys.stdout.write("[\n" + ",\n".join(d.to_json() for d in documents) + "\n]\n")
        return
    for doc in documents:
        if len(documents) > 1:
            sys.stdout.write(f"==> {doc.source} <==\n")
        sys.stdout.write(render(doc, fmt))


@app.command()
def engines(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    ranked: Annotated[
        bool, typer.Option("--ranked", help="The auto chain's order, with the published scores and their sources.")
    ] = False,
    lang: Annotated[str, typer.Option(help="--ranked: the languages your measured results are matched on.")] = "+".join(
        DEFAULT_LANGUAGES
    ),
) -> None:
    """List every engine, whether it can run here and why not, its licence and the tasks it does."""
    from dataclasses import asdict

    if ranked:
        _engines_ranked(as_json, [code for code in lang.replace(",", "+").split("+") if code])
        return
    from polyocr.doctor import engine_statuses
    from polyocr.runtime.probe import get_profile

    statuses = engine_statuses(get_profile())
    if as_json:
        sys.stdout.write(json.dumps([asdict(s) for s in statuses], indent=2) + "\n")
        return
    table = Table(title="polyocr engines")
    for column in ("engine", "kind", "runs here", "why / fix", "tasks", "licence", "scripts and notes"):
        table.add_column(column, overflow="fold")
    for status in statuses:
        runs = "[green]yes[/green]" if status.available else "[red]no[/red]"
        if status.available and status.device:
            runs += f"\n{status.device} {status.dtype} {status.attention}".rstrip()
        why = escape(status.reason) + (f"\n[cyan]fix:[/cyan] {escape(status.fix)}" if status.fix else "")
        licence = escape(status.licence or "-")
        if status.commercial_use is not True and status.licence:
            licence = f"[yellow]{licence}[/yellow]"
        table.add_row(
            status.name,
            status.kind,
            runs,
            why,
            ", ".join(status.tasks),
            licence,
            escape(", ".join(status.scripts) + "\n" + status.notes),
        )
    out.print(table)


def _engines_ranked(as_json: bool, languages: list[str]) -> None:
    """`engines --ranked`: auto's order (GPU part, then CPU part), the scores it rests on, the rule."""
    from polyocr.published import RULE
    from polyocr.router.measured import results_path
    from polyocr.router.resolve import ranking

    rows = ranking(languages)
    if as_json:
        sys.stdout.write(json.dumps({"rule": RULE, "languages": languages, "engines": rows}, indent=2) + "\n")
        return
    table = Table(title="the auto chain's order (VLMs on a GPU, then the CPU engines)", caption=RULE)
    for column in ("#", "engine", "published scores (source, date)", "size", "licence", "your bench"):
        table.add_column(column, overflow="fold")
    for row in rows:
        scores = "\n".join(
            f"{s['benchmark']} {s['version']} {s['metric']} {s['value']:g} ({s['source']}, {s['date']})".replace(
                "  ", " "
            )
            for s in row["scores"]
        )
        mine = row["measured"]
        bench = f"CER {mine['cer']:.4f} on {mine['pages']} page(s), {mine['created']}" if mine else "-"
        place = str(row["place"]) if row["place"] is not None else f"[yellow]out[/yellow]: {escape(row['left_out'])}"
        size = f"{row['params_b']:g}B" if row["params_b"] is not None else "-"
        evidence = scores or row["evidence"] or "-"
        table.add_row(place, row["engine"], escape(evidence), size, escape(row["licence"] or "-"), bench)
    out.print(table)
    where = results_path()
    err.print(
        f"[dim]your `polyocr bench` results: {where if where is not None else 'off (POLYOCR_BENCH_RESULTS=off)'}; "
        f"matched on {'+'.join(languages)}[/dim]"
    )


@app.command()
def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    full: Annotated[
        bool, typer.Option(help="Also run the attention checks on a CPU-only machine (imports torch).")
    ] = False,
) -> None:
    """What this machine can run (devices, kernels that ran, each engine's settings) and the fix for each problem."""
    from polyocr.doctor import build_report, render_report

    report = build_report(full=full)
    if as_json:
        sys.stdout.write(report.to_json() + "\n")
        return
    render_report(report, out)


@app.command("eval")
def eval_(
    dataset: Annotated[Path, typer.Argument(help="A dataset directory holding MANIFEST.tsv, or the manifest.")],
    engine: Annotated[str, typer.Option("--engine", "-e", help="The engine to evaluate.")],
    limit: Annotated[int | None, typer.Option(help="Only the first N matching items.")] = None,
    lang: Annotated[list[str] | None, typer.Option(help="Only items in this language (repeatable).")] = None,
    folder: Annotated[list[str] | None, typer.Option(help="Only items in this top folder (repeatable).")] = None,
    by: Annotated[str, typer.Option(help="Group the table by language or folder.")] = "language",
    json_out: Annotated[Path | None, typer.Option(help="Write the summary and per-item records as JSON.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress.")] = False,
) -> None:
    """Score an engine on the items with ground truth: CER, WER and seconds per page, per language.

    Failed items count as empty output in the scores and are listed; the exit code is 0 once the
    evaluation ran, 2 when it could not (no dataset, no matching item, engine unavailable).
    """
    from polyocr.bench.evaluate import run_eval, summary_table

    progress = _progress(quiet)
    with progress:
        bar = progress.add_task(f"eval {engine}", total=None)
        try:
            report = run_eval(
                dataset,
                engine,
                languages=lang or (),
                folders=folder or (),
                limit=limit,
                by=by,
                on_start=lambda count: progress.update(bar, total=count),
                on_item=lambda record: progress.update(bar, advance=1, description=record.id),
            )
        except (PolyOCRError, ValueError) as exc:
            _error(exc)
            raise typer.Exit(2) from None
    out.print(summary_table(report))
    for record in report.records:
        if record.error:
            err.print(f"[red]failed:[/red] {record.id}: {record.error}")
    if json_out is not None:
        report.write_json(json_out)


@app.command()
def bench(
    datasets: Annotated[list[Path] | None, typer.Argument(help="Dataset directories holding MANIFEST.tsv.")] = None,
    engine_list: Annotated[
        str,
        typer.Option(
            "--engines", "-e", help="Engines and/or auto, comma-separated; default: auto and every registered engine."
        ),
    ] = "",
    limit: Annotated[int | None, typer.Option(help="Only the first N items with ground truth per dataset.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Where the report files go.")] = Path("bench-out"),
    synth: Annotated[
        Path | None, typer.Option(help="Generate synthetic hard pages here and benchmark them too.")
    ] = None,
    count: Annotated[int, typer.Option(help="Synthetic pages to generate (with --synth).")] = 20,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic pages (with --synth).")] = 0,
    dpi: Annotated[int, typer.Option(help="Resolution of the synthetic pages (with --synth).")] = 200,
    speed: Annotated[
        bool, typer.Option(help="Time VLM engines with random weights instead of scoring datasets.")
    ] = False,
    device: Annotated[str | None, typer.Option(help="--speed: cuda or cpu (default: cuda when present).")] = None,
    attention: Annotated[
        str, typer.Option(help="--speed: attention implementations, comma-separated.")
    ] = "sdpa,varlen,flash_attention_2,eager",
    new_tokens: Annotated[int, typer.Option(help="--speed: tokens generated per page.")] = 256,
    repeats: Annotated[int, typer.Option(help="--speed: timed runs per figure (the median is reported).")] = 3,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress.")] = False,
) -> None:
    """Measure engines: quality and speed on datasets, or with --speed the raw speed of VLM engines.

    Writes bench.md, bench.json and PNG charts (speed.md and speed.json with --speed) to --out and
    prints the Markdown table. Exit code 2 when nothing could be measured.
    """
    specs = [name.strip() for name in engine_list.split(",") if name.strip()]
    out_dir.mkdir(parents=True, exist_ok=True)
    if speed:
        _bench_speed(specs, out_dir, device, attention, new_tokens, repeats, quiet)
        return
    sets = list(datasets or [])
    if synth is not None:
        from polyocr.bench.synthetic import generate

        generate(synth, count, seed, dpi=dpi)
        sets.append(synth)
    if not sets:
        err.print("[red]error:[/red] give at least one dataset directory, or --synth DIR")
        raise typer.Exit(2)
    command = " ".join(
        ["polyocr bench", *map(str, datasets or []), "--engines", "{engines}"]
        + ([f"--limit {limit}"] if limit is not None else [])
        + ([f"--synth {synth} --count {count} --seed {seed} --dpi {dpi}"] if synth else [])
    )
    _bench_datasets(sets, specs, limit, out_dir, command, quiet)


def _bench_speed(
    specs: list[str], out_dir: Path, device: str | None, attention: str, new_tokens: int, repeats: int, quiet: bool
) -> None:
    """`bench --speed`: VLM engines timed with random weights; speed.md and speed.json."""
    from polyocr.bench.speed import run_speed, speed_markdown, write_speed

    def report(r: Any) -> None:
        err.print(f"{r.engine} {r.attention}: vision {r.vision_ms_per_page:.1f} ms/page")

    try:
        results = run_speed(
            specs,
            device=device,
            attentions=[a for a in attention.split(",") if a],
            new_tokens=new_tokens,
            repeats=repeats,
            on_result=None if quiet else report,
        )
    except (PolyOCRError, ValueError) as exc:
        _error(exc)
        raise typer.Exit(2) from None
    command = (
        f"polyocr bench --speed --engines {','.join(r.engine for r in results) or '-'} "
        f"--attention {attention} --new-tokens {new_tokens} --repeats {repeats}"
        + (f" --device {device}" if device else "")
    )
    write_speed(results, out_dir, command=command)
    sys.stdout.write(speed_markdown(results, command=command))


def _bench_datasets(
    sets: list[Path], specs: list[str], limit: int | None, out_dir: Path, command: str, quiet: bool
) -> None:
    """`bench` over datasets: quality and speed per engine spec; exit code 2 when nothing was measured."""
    from polyocr.bench.report import markdown, write_report
    from polyocr.bench.runner import AUTO, run_bench
    from polyocr.engines.base import engine_names
    from polyocr.router.measured import record as record_measured

    progress = _progress(quiet)
    with progress:
        bar = progress.add_task("bench", total=None)
        try:
            result = run_bench(
                sets,
                specs or [AUTO, *engine_names()],
                limit=limit,
                on_item=lambda spec, item: progress.update(bar, advance=1, description=f"{spec}: {item.record.id}"),
            )
        except PolyOCRError as exc:
            _error(exc)
            raise typer.Exit(2) from None
    result.command = command.replace("{engines}", ",".join(r.spec for r in result.runs))
    paths = write_report(result, out_dir)
    # The user's own results order auto before the published scores (router/measured.py).
    recorded = record_measured(
        [(run.spec, [row.to_dict() for row in run.rows()]) for run in result.runs if run.available],
        created=result.created,
        command=result.command,
        datasets=result.datasets,
    )
    sys.stdout.write(markdown(result))
    if not quiet:
        err.print("wrote " + ", ".join(str(p) for p in paths.values()))
        if recorded is not None:
            err.print(f"recorded the engines' results for auto in {recorded} (`polyocr engines --ranked` shows them)")
    if not any(run.items for run in result.runs):
        raise typer.Exit(2)


@app.command()
def schema() -> None:
    """Print the JSON schema of `--format json` output."""
    sys.stdout.write(json_schema_text() + "\n")


@app.command()
def serve(
    host: Annotated[
        str | None,
        typer.Option(help="Address to bind (default 127.0.0.1); beyond loopback needs a key or --insecure-no-auth."),
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on (default 8000).")] = None,
    engine: Annotated[str | None, typer.Option("--engine", "-e", help="Default chain: auto, a name, or a,b,c.")] = None,
    allow_engines: Annotated[str | None, typer.Option(help="Engines requests may name, a,b,c (default all).")] = None,
    lang: Annotated[str | None, typer.Option(help="Default languages, joined by + (default eng+rus).")] = None,
    api_key: Annotated[
        str | None, typer.Option(help="Bearer token required on /v1/* (visible in ps: prefer --api-key-file).")
    ] = None,
    api_key_file: Annotated[
        Path | None,
        typer.Option(help="File whose first line is the bearer token (or POLYOCR_API_KEY_FILE / POLYOCR_API_KEY)."),
    ] = None,
    insecure_no_auth: Annotated[
        bool, typer.Option("--insecure-no-auth", help="Allow a --host beyond loopback without an API key.")
    ] = False,
    cors: Annotated[str | None, typer.Option(help="Origins allowed by CORS, a,b (default: CORS off).")] = None,
    workers: Annotated[
        int | None, typer.Option(help="Pages recognised at once; each holds its own engines (1).")
    ] = None,
    queue: Annotated[int | None, typer.Option(help="Requests that may wait for a worker before 429 (8).")] = None,
    timeout: Annotated[float | None, typer.Option(help="Seconds per synchronous request before 504 (300).")] = None,
    max_new_tokens: Annotated[
        int | None, typer.Option(help="Most tokens a VLM may generate for one page (16384).")
    ] = None,
    max_request_mb: Annotated[float | None, typer.Option(help="Largest request body, MiB (50).")] = None,
    max_pages: Annotated[int | None, typer.Option(help="Refuse documents with more pages (200).")] = None,
    max_pixels: Annotated[int | None, typer.Option(help="Refuse pages with more pixels (50,000,000).")] = None,
    job_dir: Annotated[
        Path | None, typer.Option(help="Job database and files (default ~/.cache/polyocr/jobs).")
    ] = None,
    job_ttl: Annotated[float | None, typer.Option(help="Hours a finished job is kept (24).")] = None,
    max_job_mb: Annotated[
        float | None, typer.Option(help="Uploads and results kept in --job-dir, MiB, before new jobs get 507 (2048).")
    ] = None,
    job_timeout: Annotated[
        float | None, typer.Option(help="Seconds a job may run before it is stopped and failed (no limit).")
    ] = None,
) -> None:
    """Serve polyocr over HTTP: /v1/ocr, /v1/jobs, /v1/engines, OpenAI-compatible /v1/chat/completions, /docs.

    Unset options come from polyocr.toml's [server] section, then the defaults.
    """
    from polyocr.config import read_key_file, server_settings
    from polyocr.server.app import serve as run_server

    def names(value: str | None) -> tuple[str, ...] | None:
        return tuple(n.strip() for n in value.split(",") if n.strip()) if value is not None else None

    try:
        if api_key_file is not None:
            api_key = read_key_file(api_key_file)
        settings = server_settings(
            host=host,
            port=port,
            engine=engine,
            languages=_languages(lang) if lang is not None else None,
            api_key=api_key,
            insecure_no_auth=insecure_no_auth or None,
            allowed_engines=names(allow_engines),
            cors_origins=names(cors),
            workers=workers,
            queue_size=queue,
            request_timeout=timeout,
            max_new_tokens=max_new_tokens,
            max_request_bytes=int(max_request_mb * 1024 * 1024) if max_request_mb is not None else None,
            max_pages=max_pages,
            max_pixels=max_pixels,
            job_dir=job_dir,
            job_ttl=job_ttl * 3600 if job_ttl is not None else None,
            max_job_bytes=int(max_job_mb * 1024 * 1024) if max_job_mb is not None else None,
            job_timeout=job_timeout,
        )
        run_server(settings)
    except (PolyOCRError, ValueError) as exc:
        _error(exc)
        raise typer.Exit(2) from None


@app.command()
def fetch(
    model: Annotated[str, typer.Argument(help="An engine name (dots, qwen2vl, ...) or a hub repository id.")],
) -> None:
    """Download a model's published weights into the Hugging Face cache, where its engine finds them.

    The one command of polyocr that uses the network; only configs, tokenizer files and safetensors
    weights are fetched, never a repository's code.
    """
    from polyocr.engines.base import engine_class, engine_names
    from polyocr.engines.vlm import fetch_weights, is_repo_id

    companions: tuple[str, ...] = ()
    if model in engine_names():
        repo_id = engine_class(model).repo_id
        companions = engine_class(model).companion_repos
        if not repo_id:
            _error(f"engine {model!r} has no published weights to fetch")
            raise typer.Exit(2)
    elif is_repo_id(model):
        repo_id = model
    else:
        _error(f"{model!r} is neither an engine ({', '.join(engine_names())}) nor a hub repository id (owner/name)")
        raise typer.Exit(2)
    try:
        for repo in (repo_id, *companions):
            out.print(escape(str(fetch_weights(model, repo))))
    except PolyOCRError as exc:
        _error(exc)
        raise typer.Exit(2) from None


@app.command("vllm-command")
def vllm_command(
    model: Annotated[str, typer.Argument(help="dots.ocr or a Qwen-VL: hub id or local checkpoint folder.")],
    host: Annotated[str, typer.Option(help="Address vLLM binds.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port vLLM listens on.")] = 8001,
    served_name: Annotated[str | None, typer.Option(help="Served model name (default: the model's).")] = None,
    gpu: Annotated[int, typer.Option(help="GPU index to use.")] = 0,
    run: Annotated[bool, typer.Option("--run", help="Start it and wait for its /health.")] = False,
    wait: Annotated[float, typer.Option(help="Seconds --run waits for /health.")] = 900.0,
) -> None:
    """Print the `vllm serve` command that suits this machine (stdout), with the reasons (stderr)."""
    from polyocr.runtime.probe import get_profile
    from polyocr.server.vllm import build_command, run_and_wait

    try:
        command = build_command(model, get_profile(), host=host, port=port, served_name=served_name, gpu_index=gpu)
    except ValueError as exc:
        _error(exc)
        raise typer.Exit(2) from None
    sys.stdout.write(command.line + "\n")
    for note in command.notes:
        err.print(f"[dim]# {note}[/dim]", highlight=False, soft_wrap=True)
    for warning in command.warnings:
        err.print(f"[yellow]warning:[/yellow] {warning}", highlight=False, soft_wrap=True)
    if run:
        raise typer.Exit(run_and_wait(command, wait_seconds=wait, say=lambda text: err.print(escape(text))))
