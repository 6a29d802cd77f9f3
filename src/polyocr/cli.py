"""The command line: a thin layer over polyocr's Python calls (Typer + Rich).

Results go to stdout (or files with --out); progress, notes, errors and the summary go to stderr so
that `polyocr ocr page.png > page.txt` stays clean.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from polyocr.documents import DEFAULT_DPI, DEFAULT_MAX_PAGES, DEFAULT_MAX_PIXELS, expand_inputs, open_source
from polyocr.errors import PolyOCRError
from polyocr.formats import FORMATS, render, suffix_for
from polyocr.results import DocumentResult, PageStatus, json_schema_text
from polyocr.types import Task, TaskKind

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="OCR documents with whichever engine works best on this machine.",
)
out = Console()
err = Console(stderr=True, soft_wrap=True)  # error lines stay whole for logs and grep


def main() -> None:
    app()


def _error(message: object) -> None:
    """An error line on stderr; the message is escaped so texts like polyocr[classic] survive Rich."""
    err.print(f"[red]error:[/red] {escape(str(message))}")


def _languages(value: str) -> tuple[str, ...]:
    return tuple(part for part in value.replace(",", "+").split("+") if part)


@dataclass
class _RunStats:
    pages: int = 0
    failed_pages: int = 0
    failed_inputs: int = 0


@app.command()
def ocr(
    inputs: Annotated[list[Path], typer.Argument(help="Image or PDF files, or directories.")],
    engine: Annotated[str, typer.Option("--engine", "-e", help="auto, an engine name, or a chain a,b,c.")] = "auto",
    lang: Annotated[str, typer.Option(help="Languages, Tesseract codes joined by +.")] = "eng+rus",
    lang_detect: Annotated[
        str, typer.Option(help="on: add eng/rus where a page has Latin/Cyrillic text --lang lacks; off: --lang only.")
    ] = "on",
    fmt: Annotated[str, typer.Option("--format", "-f", help="txt, md or json.")] = "txt",
    task: Annotated[TaskKind, typer.Option(help="What to extract.")] = TaskKind.LAYOUT,
    out_dir: Annotated[Path | None, typer.Option("--out", "-o", help="Write one file per input here.")] = None,
    dpi: Annotated[float, typer.Option(help="Resolution for rendering PDF pages.")] = DEFAULT_DPI,
    overlay: Annotated[bool, typer.Option(help="Also write a PNG of each page with its blocks (needs --out).")] = False,
    max_pages: Annotated[int, typer.Option(help="Refuse documents with more pages.")] = DEFAULT_MAX_PAGES,
    max_pixels: Annotated[int, typer.Option(help="Refuse pages with more pixels.")] = DEFAULT_MAX_PIXELS,
    max_new_tokens: Annotated[int, typer.Option(help="Token limit per page for generative engines.")] = 16384,
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
    from polyocr.formats.overlay import draw_overlay
    from polyocr.router import Router, RunSummary, load_config, resolve_chain

    if fmt not in FORMATS:
        raise typer.BadParameter(f"choose one of {', '.join(FORMATS)}", param_hint="--format")
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
    try:
        config = load_config(engine, timeout)
        task_obj = Task(
            kind=task,
            languages=_languages(lang),
            max_new_tokens=max_new_tokens,
            timeout=config.timeout,
            lang_detect=lang_detect == "on",
        )
        chain = resolve_chain(config.engines, task_obj)
    except PolyOCRError as exc:
        _error(exc)
        raise typer.Exit(2) from None
    if model is not None:
        if config.engines == ["auto"]:
            raise typer.BadParameter("name the engine the checkpoint is for with --engine", param_hint="--model")
        config.plans.setdefault(chain[0], {})["model_path"] = str(model)
    overrides = {k: v for k, v in (("device", device), ("dtype", dtype), ("attention", attn)) if v}
    for name in chain:
        config.plans.setdefault(name, {}).update(overrides)
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    stats = _RunStats()
    summary = RunSummary()
    start = time.perf_counter()
    used_names: set[str] = set()
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
        transient=False,
    )
    router = Router(chain, task_obj, config=config)
    try:
        router.preflight()
    except PolyOCRError as exc:
        _error(exc)
        raise typer.Exit(2) from None
    with router, progress:
        bar = progress.add_task("pages", total=None, rate="")
        documents: list[DocumentResult] = []
        for path in files:
            try:
                source = open_source(path, dpi=dpi, max_pixels=max_pixels, max_pages=max_pages)
            except PolyOCRError as exc:
                _error(exc)
                stats.failed_inputs += 1
                documents.append(DocumentResult(source=str(path), errors=[str(exc)]))
                continue
            progress.update(bar, total=(progress.tasks[0].total or 0) + source.page_count)
            stem = _unique_stem(out_dir, path, used_names) if out_dir else path.stem

            def on_page(page, result, stem=stem):
                stats.pages += 1
                if result.status == PageStatus.FAILED:
                    stats.failed_pages += 1
                    err.print(
                        f"[red]page failed:[/red] {escape(page.source)} page {page.number}: "
                        + escape("; ".join(result.errors))
                    )
                summary.add(result)
                if overlay and out_dir is not None:
                    draw_overlay(page.image, result).save(out_dir / f"{stem}.page{page.number:04d}.png")
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
            if out_dir is not None:
                (out_dir / f"{stem}{suffix_for(fmt)}").write_text(render(doc, fmt), encoding="utf-8")
            else:
                documents.append(doc)
    if out_dir is None:
        _print_documents([d for d in documents if d.pages], fmt)
    seconds = time.perf_counter() - start
    if not quiet:
        if fmt == "json":
            err.print_json(
                json.dumps(
                    {
                        "summary": summary.to_dict(),
                        "inputs": len(files),
                        "unreadable_inputs": stats.failed_inputs,
                        "seconds": round(seconds, 3),
                    }
                )
            )
        else:
            err.print(
                f"{len(files)} input(s), {stats.pages} page(s), {stats.failed_pages} failed page(s), "
                f"{summary.partial} partial, {summary.fell_back} fallback(s), "
                f"{stats.failed_inputs} unreadable input(s), {seconds:.1f} s; engines: {summary.line()}",
                soft_wrap=True,
            )
    if stats.failed_pages or stats.failed_inputs:
        raise typer.Exit(1)


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
) -> None:
    """List every engine, whether it can run here, and why not."""
    from dataclasses import asdict

    from polyocr.doctor import engine_statuses
    from polyocr.runtime.probe import get_profile

    statuses = engine_statuses(get_profile())
    if as_json:
        sys.stdout.write(json.dumps([asdict(s) for s in statuses], indent=2) + "\n")
        return
    table = Table(title="polyocr engines")
    for column in ("engine", "kind", "runs here", "why / fix", "scripts and notes"):
        table.add_column(column, overflow="fold")
    for status in statuses:
        runs = "[green]yes[/green]" if status.available else "[red]no[/red]"
        if status.available and status.device:
            runs += f"\n{status.device} {status.dtype} {status.attention}".rstrip()
        why = escape(status.reason) + (f"\n[cyan]fix:[/cyan] {escape(status.fix)}" if status.fix else "")
        table.add_row(status.name, status.kind, runs, why, escape(", ".join(status.scripts) + "\n" + status.notes))
    out.print(table)


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

    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
    )
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
        from polyocr.bench.speed import run_speed, speed_markdown, write_speed

        try:
            results = run_speed(
                specs,
                device=device,
                attentions=[a for a in attention.split(",") if a],
                new_tokens=new_tokens,
                repeats=repeats,
                on_result=None
                if quiet
                else lambda r: err.print(f"{r.engine} {r.attention}: vision {r.vision_ms_per_page:.1f} ms/page"),
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
        return
    from polyocr.bench.report import markdown, write_report
    from polyocr.bench.runner import AUTO, run_bench
    from polyocr.bench.synthetic import generate
    from polyocr.engines.base import engine_names

    sets = list(datasets or [])
    if synth is not None:
        generate(synth, count, seed, dpi=dpi)
        sets.append(synth)
    if not sets:
        err.print("[red]error:[/red] give at least one dataset directory, or --synth DIR")
        raise typer.Exit(2)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=quiet,
    )
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
    result.command = " ".join(
        ["polyocr bench", *map(str, datasets or []), "--engines", ",".join(r.spec for r in result.runs)]
        + ([f"--limit {limit}"] if limit is not None else [])
        + ([f"--synth {synth} --count {count} --seed {seed} --dpi {dpi}"] if synth else [])
    )
    paths = write_report(result, out_dir)
    sys.stdout.write(markdown(result))
    if not quiet:
        err.print("wrote " + ", ".join(str(p) for p in paths.values()))
    if not any(run.items for run in result.runs):
        raise typer.Exit(2)


@app.command()
def schema() -> None:
    """Print the JSON schema of `--format json` output."""
    sys.stdout.write(json_schema_text() + "\n")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to bind; anything but loopback wants --api-key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    engine: Annotated[str, typer.Option("--engine", "-e", help="Default chain: auto, a name, or a,b,c.")] = "auto",
    allow_engines: Annotated[str | None, typer.Option(help="Engines requests may name, a,b,c (default all).")] = None,
    lang: Annotated[str, typer.Option(help="Default languages, joined by +.")] = "eng+rus",
    api_key: Annotated[str | None, typer.Option(help="Bearer token required on /v1/* (or POLYOCR_API_KEY).")] = None,
    cors: Annotated[str | None, typer.Option(help="Origins allowed by CORS, a,b (default: CORS off).")] = None,
    workers: Annotated[int, typer.Option(help="Pages recognised at once; each holds its own engines.")] = 1,
    queue: Annotated[int, typer.Option(help="Requests that may wait for a worker before 429.")] = 8,
    timeout: Annotated[float, typer.Option(help="Seconds per synchronous request before 504.")] = 300.0,
    max_request_mb: Annotated[float, typer.Option(help="Largest request body, MiB.")] = 50.0,
    max_pages: Annotated[int, typer.Option(help="Refuse documents with more pages.")] = 200,
    max_pixels: Annotated[int, typer.Option(help="Refuse pages with more pixels.")] = 50_000_000,
    job_dir: Annotated[
        Path | None, typer.Option(help="Job database and files (default ~/.cache/polyocr/jobs).")
    ] = None,
    job_ttl: Annotated[float, typer.Option(help="Hours a finished job is kept.")] = 24.0,
) -> None:
    """Serve polyocr over HTTP: /v1/ocr, /v1/jobs, /v1/engines, OpenAI-compatible /v1/chat/completions, /docs."""
    from polyocr.server.app import serve as run_server
    from polyocr.server.settings import ServerSettings, default_job_dir

    try:
        settings = ServerSettings(
            host=host,
            port=port,
            engine=engine,
            languages=_languages(lang),
            api_key=api_key,
            allowed_engines=tuple(n.strip() for n in allow_engines.split(",") if n.strip()) if allow_engines else None,
            cors_origins=tuple(o.strip() for o in cors.split(",") if o.strip()) if cors else (),
            workers=workers,
            queue_size=queue,
            request_timeout=timeout,
            max_request_bytes=int(max_request_mb * 1024 * 1024),
            max_pages=max_pages,
            max_pixels=max_pixels,
            job_dir=job_dir or default_job_dir(),
            job_ttl=job_ttl * 3600,
        )
        run_server(settings)
    except (PolyOCRError, ValueError) as exc:
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
        raise typer.Exit(run_and_wait(command, wait_seconds=wait))
