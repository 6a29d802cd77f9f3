"""`polyocr doctor`: what this machine can run, what each engine would run with, and how to fix the rest.

The report is built from a Profile, so a profile recorded on another machine yields the same report
that machine would print: that is how the decision logic is tested without the hardware.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from polyocr.engines.base import Engine, create_engine, engine_names
from polyocr.errors import ConfigError, EngineUnavailable
from polyocr.published import published
from polyocr.router.plans import make_plan
from polyocr.runtime.attention import TORCH_CUDA_FIX, choose, cuda_fix, kernel_fix
from polyocr.runtime.probe import ATTENTION_PATHS, Profile, get_profile, probe, run_deferred
from polyocr.types import EngineKind, TaskKind


@dataclass
class Finding:
    problem: str
    fix: str


@dataclass
class EngineStatus:
    name: str
    kind: str
    available: bool
    reason: str = ""
    fix: str = ""
    device: str = ""
    dtype: str = ""
    attention: str = ""
    reasons: dict[str, str] = field(default_factory=dict)
    scripts: list[str] = field(default_factory=list)
    notes: str = ""
    tasks: list[str] = field(default_factory=list)  # the tasks it really does (the router asks no other)
    licence: str = ""  # the model card's licence (polyocr/published.py), "" where the table has no row
    commercial_use: bool | None = None  # True allowed, False restricted, None not verified


@dataclass
class Report:
    profile: Profile
    engines: list[EngineStatus]
    findings: list[Finding]

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": self.profile.to_dict(),
            "engines": [asdict(e) for e in self.engines],
            "findings": [asdict(f) for f in self.findings],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def machine_findings(profile: Profile) -> list[Finding]:
    """Problems with torch, CUDA, the GPUs and their attention kernels, each with its fix."""
    findings = [
        Finding(f"the probe itself failed at {error}", "please report this as a polyocr bug")
        for error in profile.errors
    ]
    torch = profile.torch
    if torch is None:
        findings.append(
            Finding(
                "torch is not installed, so no VLM engine can run",
                "pip install 'polyocr[vlm]' (on a GPU machine, the torch build for its CUDA "
                "version: https://pytorch.org/get-started/locally/)",
            )
        )
        return findings
    if torch.error:
        findings.append(Finding(torch.error, cuda_fix(profile)))
    if torch.cuda is None and torch.hip is None and profile.gpu_node:
        findings.append(
            Finding(
                f"a GPU is attached ({profile.gpu_node}) but torch {torch.version} is a CPU-only build", TORCH_CUDA_FIX
            )
        )
    for gpu in profile.gpus:
        if not gpu.kernels_ok:
            shipped = ", ".join(torch.arch_list) or "none"
            findings.append(
                Finding(
                    f"GPU {gpu.index} {gpu.name} ({gpu.sm}) cannot run torch {torch.version}'s "
                    f"kernels (kernel images in this build: {shipped}): {gpu.error}",
                    kernel_fix(profile, gpu),
                )
            )
        elif gpu.total_memory and gpu.free_memory < gpu.total_memory / 4:
            used = (gpu.total_memory - gpu.free_memory) / 2**30
            findings.append(
                Finding(
                    f"GPU {gpu.index} {gpu.name}: {used:.1f} GiB is already in use by other "
                    "processes, so VLMs get smaller pages and batches",
                    "close them (nvidia-smi lists them) or pick another GPU with --device cuda:N",
                )
            )
    if profile.attention_device.startswith("cuda"):
        findings += _attention_findings(profile)
    return findings


def _attention_findings(profile: Profile) -> list[Finding]:
    checks = profile.attention
    gpu = profile.gpu(int(profile.attention_device.partition(":")[2]))
    sm = gpu.sm if gpu else profile.attention_device
    version = profile.packages.get("flash_attn")
    findings = []
    broken = [checks[p] for p in ("flash_attn_func", "flash_attn_varlen_func") if p in checks and not checks[p].ran]
    if version and broken:
        torch_version = profile.torch.version if profile.torch else "torch"
        findings.append(
            Finding(
                f"flash-attn {version} is installed but its kernel failed on {sm}: {broken[0].error}; "
                "polyocr uses SDPA instead",
                f"nothing is needed; to use flash-attn install a wheel built for {sm} and torch "
                f"{torch_version}, or `pip uninstall flash-attn` to silence this",
            )
        )
    fused = [p for p in ("sdpa_flash", "sdpa_efficient", "sdpa_cudnn") if checks.get(p) and checks[p].ran]
    if not fused:
        findings.append(
            Finding(
                f"none of SDPA's fused kernels (flash, memory-efficient, cuDNN) ran on {sm}: "
                "attention memory grows with the square of the tokens, so large pages may not fit",
                "install a newer torch build for this GPU (https://pytorch.org/get-started/locally/)",
            )
        )
    return findings


def _apply_decisions(status: EngineStatus, engine: Engine, profile: Profile) -> None:
    """Fill a VLM's device, dtype, attention and page size with the plan the router would make
    (router.plans.make_plan), and show each sub-model whose attention differs from the main one.

    An engine tells what it implements through `supported_attention()` (sub-model -> names, best
    first; "" is the whole model) and whether it is stable in float16 through `fp16_stable`.
    """
    try:
        plan = make_plan(engine, profile)
    except EngineUnavailable as exc:  # not even the smallest page fits this device
        raise ConfigError(status.name, "page size", exc.reason, exc.fix) from exc
    status.device, status.dtype, status.reasons = plan.device, plan.dtype, dict(plan.reasons)
    if "max_pixels" in status.reasons:
        status.reasons["page size"] = status.reasons.pop("max_pixels")
    parts = {part: s for part, s in engine.supported_attention().items() if part}
    fp16_stable = engine.fp16_stable
    decisions = {
        part: choose(status.name, profile, supports=tuple(s), fp16_stable=fp16_stable) for part, s in parts.items()
    }
    differing = {part: d for part, d in decisions.items() if d.attention != plan.attention}
    if not differing:
        status.attention = plan.attention
        return
    status.attention = ", ".join(
        [f"model: {plan.attention}"] + [f"{part}: {d.attention}" for part, d in decisions.items()]
    )
    for part, decision in differing.items():
        status.reasons[f"attention ({part})"] = decision.reasons["attention"]


def engine_statuses(profile: Profile) -> list[EngineStatus]:
    """Every registered engine: can it run here, and with which device, dtype and attention."""
    statuses = []
    for name in engine_names():
        try:
            engine = create_engine(name)
            availability = engine.available(profile)
        except Exception as exc:  # one broken engine must not hide the report on the others
            reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
            statuses.append(EngineStatus(name, "", False, reason, getattr(exc, "fix", "")))
            continue
        status = EngineStatus(
            name,
            engine.kind,
            availability.ok,
            availability.reason,
            availability.fix,
            scripts=sorted(engine.scripts),
            notes=engine.notes or engine.description,
            tasks=[t.value for t in TaskKind if t in engine.tasks],
        )
        row = published(name)
        if row is not None:
            status.licence, status.commercial_use = row.licence.label, row.licence.commercial_use
        if availability.ok and engine.kind == EngineKind.VLM:
            try:
                _apply_decisions(status, engine, profile)
            except ConfigError as exc:
                status.available, status.reason, status.fix = False, exc.reason, exc.fix
        elif availability.ok and engine.kind == EngineKind.CLASSICAL:
            status.device = "cpu"
        statuses.append(status)
    return statuses


def build_report(profile: Profile | None = None, *, full: bool = False) -> Report:
    """The doctor's report for `profile` (default: this machine; `full` runs the CPU kernel checks too)."""
    if profile is None:
        profile = probe(kernels=True) if full else get_profile()
        run_deferred(profile)
    engines = engine_statuses(profile)
    findings = machine_findings(profile)
    findings += [
        Finding(f"engine {e.name!r} cannot run: {e.reason}", e.fix or "see the reason")
        for e in engines
        if not e.available
    ]
    return Report(profile, engines, findings)


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def render_report(report: Report, console: Console) -> None:
    """The report as Rich tables: machine, GPUs, attention kernels, engines, then problems and fixes."""
    p = report.profile
    console.print(_machine_table(p))
    if p.gpus:
        console.print(_gpu_table(p))
    if p.attention:
        console.print(_attention_table(p))
    else:
        console.print(f"attention kernels: {escape(p.attention_note)}")
    console.print(_engine_table(report.engines))
    if not report.findings:
        console.print("[green]no problems found[/green]")
    for finding in report.findings:
        console.print(f"[yellow]problem:[/yellow] {escape(finding.problem)}\n  [cyan]fix:[/cyan] {escape(finding.fix)}")


def _torch_text(p: Profile) -> str:
    torch = p.torch
    if torch is None:
        return "[red]not installed[/red]"
    build = f"CUDA {torch.cuda}" if torch.cuda else f"ROCm {torch.hip}" if torch.hip else "CPU-only build"
    return escape(f"{torch.version} ({build})") + (f" [red]{escape(torch.error)}[/red]" if torch.error else "")


def _machine_table(p: Profile) -> Table:
    machine = Table(title="polyocr doctor", show_header=False)
    machine.add_column(style="bold")
    machine.add_column(overflow="fold")
    memory = f"RAM {_gib(p.ram_available)} free of {_gib(p.ram_total)}"
    machine.add_row("system", escape(f"{p.os} {p.machine}, Python {p.python}, {p.cpu_count} CPUs, {memory}"))
    machine.add_row("torch", _torch_text(p))
    if p.torch is not None and p.torch.arch_list:
        machine.add_row("kernel images", escape(" ".join(p.torch.arch_list)))
    installed = [f"{name} {version}" for name, version in p.packages.items() if version and name != "torch"]
    machine.add_row("packages", escape(", ".join(installed) or "none"))
    languages = ", ".join(p.tessdata_languages)
    tessdata = escape(f"{languages} in {p.tessdata_path}") if p.tessdata_path else "[red]none found[/red]"
    machine.add_row("tessdata", tessdata)
    machine.add_row("HF cache", escape(f"{p.hf_cache}: {', '.join(p.hf_cache_models) or 'no model weights'}"))
    steps = ", ".join(f"{step} {seconds:.2f}" for step, seconds in p.timings.items())
    machine.add_row("probe", escape(f"{p.recorded}; {p.probe_seconds:.2f} s" + (f" ({steps})" if steps else "")))
    return machine


def _gpu_table(p: Profile) -> Table:
    gpus = Table(title="GPUs")
    for column in ("#", "name", "arch", "memory free / total", "bf16", "kernels"):
        gpus.add_column(column, overflow="fold")
    for gpu in p.gpus:
        kernels = "[green]ran[/green]" if gpu.kernels_ok else f"[red]failed:[/red] {escape(gpu.error or '')}"
        memory = f"{_gib(gpu.free_memory)} / {_gib(gpu.total_memory)}"
        gpus.add_row(str(gpu.index), escape(gpu.name), gpu.sm, memory, "yes" if gpu.bf16 else "no", kernels)
    return gpus


def _attention_table(p: Profile) -> Table:
    dtype = next(iter(p.attention.values())).dtype
    attention = Table(title=f"attention kernels on {p.attention_device} ({dtype}, vs a float64 reference)")
    for column in ("path", "ran", "relative error", "error"):
        attention.add_column(column, overflow="fold")
    for name in ATTENTION_PATHS:
        check = p.attention.get(name)
        if check is None:
            continue
        error = f"{check.rel_error:.1e}" if check.rel_error is not None else ""
        ran = "[green]yes[/green]" if check.ran else "[red]no[/red]"
        attention.add_row(name, ran, error, escape(check.error or ""))
    return attention


def _engine_table(statuses: list[EngineStatus]) -> Table:
    engines = Table(title="engines")
    for column in ("engine", "kind", "runs here", "device / dtype / attention", "why"):
        engines.add_column(column, overflow="fold")
    for e in statuses:
        settings = " / ".join(s for s in (e.device, e.dtype, e.attention) if s)
        why = "\n".join(f"{k}: {v}" for k, v in e.reasons.items()) or e.reason
        runs = "[green]yes[/green]" if e.available else "[red]no[/red]"
        engines.add_row(escape(e.name), escape(e.kind), runs, escape(settings), escape(why))
    return engines
