"""Speed and memory measurement: the harness behind `polyocr bench --speed` and the GPU scripts in
benchmarks/.

GPU kernels run asynchronously, so wall-clock timing around a call measures the launch, not the
work: on CUDA every interval here is taken with CUDA events after a synchronisation, after warm-up
runs that absorb compilation, autotuning and allocator growth, and reported as a median (with p90)
over repeats. Peak memory on CUDA is the allocator's own peak (`max_memory_allocated`) reset before
each measurement; on the CPU it is the process's resident set sampled while the work runs.

`measure_vlm` needs no checkpoint: engines hand it a model with their full-size config and random
weights plus a page-sized prompt (a `SpeedSubject`), which is all that speed and memory depend on.
On a CPU it runs tiny configs for tests; those timings say nothing about a GPU and are labelled so.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

CPU_NOTE = "CPU timings of tiny random-weight models: they test the harness and are not GPU numbers"


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of a non-empty list."""
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Timing:
    median_ms: float
    p90_ms: float
    samples_ms: list[float]
    peak_bytes: int | None = None

    @classmethod
    def of(cls, samples_ms: list[float], peak_bytes: int | None = None) -> Timing:
        return cls(statistics.median(samples_ms), percentile(samples_ms, 90), samples_ms, peak_bytes)


class RSSPeak:
    """Peak resident memory of this process while a block runs, sampled by a background thread.

    ru_maxrss cannot be reset, so it cannot separate one engine from the next in one process;
    sampling can. A spike shorter than the interval can be missed.
    """

    def __init__(self, interval: float = 0.02):
        import psutil

        self._process = psutil.Process()
        self.interval = interval
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self._process.memory_info().rss)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self) -> RSSPeak:
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


@contextmanager
def cuda_peak(device: str) -> Iterator[dict[str, int | None]]:
    """Yields a dict whose "peak_bytes" holds the CUDA allocator's peak over the block (None off CUDA)."""
    box: dict[str, int | None] = {"peak_bytes": None}
    if not device.startswith("cuda"):
        yield box
        return
    import torch

    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    yield box
    torch.cuda.synchronize(device)
    box["peak_bytes"] = torch.cuda.max_memory_allocated(device)


def _elapsed_ms(fn: Callable[[], Any], device: str) -> float:
    if device.startswith("cuda"):
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize(device)
        return float(start.elapsed_time(end))
    begin = time.perf_counter()
    fn()
    return (time.perf_counter() - begin) * 1000.0


def time_call(fn: Callable[[], Any], device: str = "cpu", *, warmup: int = 2, repeats: int = 5) -> Timing:
    """Median and p90 milliseconds of fn() after warm-up runs, with the peak memory of the timed runs."""
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    for _ in range(warmup):
        fn()
    with cuda_peak(device) as peak:
        samples = [_elapsed_ms(fn, device) for _ in range(repeats)]
    return Timing.of(samples, peak["peak_bytes"])


@dataclass
class SpeedSubject:
    """A model ready to time, and how to feed it: built by an engine's code from its config.

    `inputs(batch)` returns the keyword arguments of `model.generate` for `batch` copies of one
    page-sized prompt (image tensors and the prompt's token ids, image tokens included);
    `vision(inputs)` runs only the vision encoder on them; `decode_options(new_tokens)` is what
    the engine itself adds to `generate` on this device (e.g. its static cache), so the figures are
    those of the engine as it runs, not of transformers' defaults.
    """

    engine: str
    model: Any
    inputs: Callable[[int], dict[str, Any]]
    vision: Callable[[dict[str, Any]], Any]
    device: str
    dtype: str
    attention: str
    details: dict[str, Any] = field(default_factory=dict)  # config dims, patches, prompt tokens
    decode_options: Callable[[int], dict[str, Any]] = lambda new_tokens: {}


@dataclass
class VLMSpeed:
    engine: str
    attention: str
    device: str
    dtype: str
    vision_ms_per_page: float
    vision_peak_bytes: int | None
    decode_ms_per_token: dict[int, float]  # batch -> ms per decoding step (one token per sequence)
    pages_per_s: dict[int, float]  # batch -> pages/s generating `new_tokens` tokens per page
    peak_bytes: dict[int, int | None]  # batch -> peak memory of the whole generate call
    new_tokens: int
    details: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _generate(subject: SpeedSubject, inputs: dict[str, Any], new_tokens: int, options: dict[str, Any]) -> None:
    import torch

    with torch.inference_mode():
        subject.model.generate(
            **inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, **options
        )


def measure_vlm(
    subject: SpeedSubject,
    *,
    batches: tuple[int, ...] = (1, 8),
    new_tokens: int = 256,
    warmup: int = 1,
    repeats: int = 3,
) -> VLMSpeed:
    """Vision ms/page, decode ms/token and pages/s at a fixed output length for one subject.

    Decode cost is separated from prefill by timing generate() for `new_tokens` tokens and for one
    token and dividing the difference by the extra steps; random weights would stop at once, so
    min_new_tokens pins the length.
    """
    import torch

    if new_tokens < 2:
        raise ValueError(f"new_tokens must be at least 2 to separate decoding from prefill, got {new_tokens}")
    device = subject.device
    one = subject.inputs(1)
    with torch.inference_mode():
        vision = time_call(lambda: subject.vision(one), device, warmup=warmup, repeats=repeats)
    decode: dict[int, float] = {}
    pages: dict[int, float] = {}
    peaks: dict[int, int | None] = {}
    # Both calls get the options for the full length, so a static cache has one shape (no recompile).
    options = subject.decode_options(new_tokens)
    for batch in batches:
        inputs = subject.inputs(batch)
        full = time_call(
            partial(_generate, subject, inputs, new_tokens, options), device, warmup=warmup, repeats=repeats
        )
        first = time_call(partial(_generate, subject, inputs, 1, options), device, warmup=warmup, repeats=repeats)
        decode[batch] = max(full.median_ms - first.median_ms, 0.0) / (new_tokens - 1)
        pages[batch] = batch / (full.median_ms / 1000.0)
        peaks[batch] = full.peak_bytes
    return VLMSpeed(
        engine=subject.engine,
        attention=subject.attention,
        device=device,
        dtype=subject.dtype,
        vision_ms_per_page=vision.median_ms,
        vision_peak_bytes=vision.peak_bytes,
        decode_ms_per_token=decode,
        pages_per_s=pages,
        peak_bytes=peaks,
        new_tokens=new_tokens,
        details=dict(subject.details),
        note="" if device.startswith("cuda") else CPU_NOTE,
    )


# dots.ocr at its published size is DotsOCRConfig(**PUBLISHED_TEXT) (the vision tower's defaults are the
# published ones); a tiny variant keeps the CPU path testable.
DOTS_TINY_TEXT = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "vocab_size": 256,
    "image_token_id": 255,
    "attention_bias": True,
    "tie_word_embeddings": False,
}
DOTS_TINY_VISION = {
    "embed_dim": 32,
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
}
A4_200_DPI = (1654, 2339)  # width, height of an A4 page rendered at 200 DPI, as PDFs are by default
TINY_PAGE = (280, 392)
PROMPT_TEXT_TOKENS = 60  # the layout prompt's length around the image, roughly


def dots_subject(
    attention: str, device: str, *, tiny: bool = False, page: tuple[int, int] | None = None, dtype: str | None = None
) -> SpeedSubject:
    """dots.ocr with random weights at its published size fed a 200-DPI A4 page (or tiny, a small page).

    `attention` is the plan's setting: the vision tower runs it, and the decoder what the engine
    pairs with it (polyocr's packed one-token decoding unless eager or flash-attn was asked for).
    """
    import torch

    from polyocr.engines.dots.config import PUBLISHED_TEXT, DotsOCRConfig
    from polyocr.engines.dots.engine import _DECODER_ATTENTION
    from polyocr.engines.dots.model import PACKED_DECODE, DotsOCRForCausalLM
    from polyocr.engines.dots.processor import image_token_count, smart_resize
    from polyocr.engines.vlm import static_cache_length

    dtype = dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    torch_dtype = getattr(torch, dtype)
    text = DOTS_TINY_TEXT if tiny else PUBLISHED_TEXT
    config = DotsOCRConfig(**text, vision_config=DOTS_TINY_VISION if tiny else {})
    decoder_attention = _DECODER_ATTENTION.get(attention, PACKED_DECODE)
    torch.manual_seed(0)
    with torch.device(device):
        model = DotsOCRForCausalLM._from_config(config, attn_implementation=decoder_attention, dtype=torch_dtype)
    model.eval()
    model.set_vision_attention(attention)
    page = page or (TINY_PAGE if tiny else A4_200_DPI)
    height, width = smart_resize(page[1], page[0])
    grid = (height // 14, width // 14)
    image_tokens = image_token_count(height, width)
    text_id = 1  # an ordinary token id in every vocabulary here
    ids = [text_id] * 4 + [config.image_token_id] * image_tokens + [text_id] * PROMPT_TEXT_TOKENS
    pixels = torch.randn(grid[0] * grid[1], 3 * 14 * 14, device=device, dtype=torch_dtype)

    def inputs(batch: int) -> dict[str, Any]:
        input_ids = torch.tensor([ids] * batch, device=device)
        return {
            "input_ids": input_ids,
            "attention_mask": torch.ones_like(input_ids),
            "pixel_values": pixels.repeat(batch, 1),
            "image_grid_thw": torch.tensor([[1, *grid]] * batch, device=device),
            "pad_token_id": 0,
        }

    def vision(batch_inputs: dict[str, Any]) -> Any:
        return model.vision_tower(batch_inputs["pixel_values"], batch_inputs["image_grid_thw"])

    details = {
        "size": "tiny" if tiny else "published",
        "page_px": list(page),
        "resized_px": [width, height],
        "patches": grid[0] * grid[1],
        "prompt_tokens": len(ids),
        "decoder_attention": decoder_attention,
        "parameters": sum(p.numel() for p in model.parameters()),
    }

    def decode_options(new_tokens: int) -> dict[str, Any]:
        # As DotsEngine decodes on CUDA: a compiled static cache, its length rounded to 256 slots.
        if not device.startswith("cuda"):
            return {}
        return {"cache_implementation": "static", "max_cache_len": static_cache_length(len(ids), new_tokens)}

    # transformers' generate path; the engine's default on CUDA, the slot decoder, is measured by
    # benchmarks/bench_dots_throughput_gpu.py (benchmarks/dots-throughput-gpu.md).
    details["cache"] = "static, compiled (generate)" if device.startswith("cuda") else "dynamic"
    return SpeedSubject(
        engine="dots",
        model=model,
        inputs=inputs,
        vision=vision,
        device=device,
        dtype=dtype,
        attention=attention,
        details=details,
        decode_options=decode_options,
    )


SPEED_BUILDERS: dict[str, Callable[..., SpeedSubject]] = {"dots": dots_subject}


def _other_script(name: str) -> str | None:
    """Where a registered engine without a speed model gets its GPU numbers: the transformers VLMs
    (engines/hf/) from benchmarks/bench_hf_vlm_gpu.py, Phi-3.5-Vision from bench_phi35v_gpu.py."""
    from polyocr.engines.base import engine_entry
    from polyocr.errors import EngineUnavailable

    try:
        target = engine_entry(name).target
    except EngineUnavailable:
        return None
    scripts = {"polyocr.engines.hf.": "bench_hf_vlm_gpu.py", "polyocr.engines.phi35v.": "bench_phi35v_gpu.py"}
    return next((f"benchmarks/{script}" for prefix, script in scripts.items() if target.startswith(prefix)), None)


def run_speed(
    engines: list[str],
    *,
    device: str | None = None,
    attentions: list[str] | None = None,
    new_tokens: int = 256,
    batches: tuple[int, ...] = (1, 8),
    repeats: int = 3,
    tiny: bool | None = None,
    on_result: Callable[[VLMSpeed], None] | None = None,
) -> list[VLMSpeed]:
    """Every engine x attention implementation; published sizes on CUDA, tiny ones elsewhere.

    An implementation that cannot run here (no kernel, not installed) is recorded with its reason
    instead of stopping the others; so is running out of memory.
    """
    device = device or ("cuda" if cuda_available() else "cpu")
    tiny = (not device.startswith("cuda")) if tiny is None else tiny
    names = engines or list(SPEED_BUILDERS)
    for name in names:
        if name not in SPEED_BUILDERS:
            other = _other_script(name)
            where = f"; its GPU numbers come from {other}" if other else ""
            raise ValueError(f"no speed model for engine {name!r} (have: {', '.join(SPEED_BUILDERS)}){where}")
    results = []
    subject: SpeedSubject | None = None
    for name in names:
        for attention in attentions or ["sdpa"]:
            try:
                subject = SPEED_BUILDERS[name](attention, device, tiny=tiny)
                result = measure_vlm(subject, batches=batches, new_tokens=new_tokens, repeats=repeats)
            except Exception as exc:  # one implementation failing must not lose the others' numbers
                result = VLMSpeed(
                    engine=name,
                    attention=attention,
                    device=device,
                    dtype="",
                    vision_ms_per_page=0.0,
                    vision_peak_bytes=None,
                    decode_ms_per_token={},
                    pages_per_s={},
                    peak_bytes={},
                    new_tokens=new_tokens,
                    note=f"not run: {type(exc).__name__}: {exc}"[:400],
                )
            finally:
                subject = None
                _free(device)
            if tiny and not result.note:
                result.note = CPU_NOTE if not device.startswith("cuda") else "tiny config: not the published size"
            results.append(result)
            if on_result is not None:
                on_result(result)
    return results


def _free(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _machine(device: str) -> str:
    import platform

    import torch

    where = torch.cuda.get_device_name(device) if device.startswith("cuda") else (platform.processor() or "CPU")
    cuda = f", CUDA {torch.version.cuda}" if device.startswith("cuda") else ""
    return f"{where}; torch {torch.__version__}{cuda}; {platform.platform()}"


def speed_markdown(results: list[VLMSpeed], command: str = "") -> str:
    batches = sorted({b for r in results for b in r.decode_ms_per_token})
    device = results[0].device if results else "cpu"
    lines = [
        "VLM speed with random weights" + (f" ({CPU_NOTE})" if not device.startswith("cuda") else ""),
        "",
        *([f"- command: `{command}`"] if command else []),
        f"- machine: {_machine(device)}",
        f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "- vision: the vision encoder alone on one page; decode: (generate N tokens - generate 1) / (N - 1) per "
        "step of the whole batch; pages/s: batch / time to generate N tokens per page, prefill included; "
        "peak: CUDA allocator peak of that generate call, weights included. Medians of the repeats after one "
        "warm-up run.",
        "",
        "| engine | attention | dtype | vision ms/page | "
        + " | ".join(f"decode ms/token b{b} | pages/s b{b} | peak b{b}" for b in batches)
        + " | details / note |",
        "|---|---|---|---:|" + "---:|" * (3 * len(batches)) + "---|",
    ]
    for r in results:
        cells = [r.engine, r.attention, r.dtype or "-", f"{r.vision_ms_per_page:.1f}" if r.dtype else "-"]
        for b in batches:
            peak = r.peak_bytes.get(b)
            cells += [
                f"{r.decode_ms_per_token[b]:.2f}" if b in r.decode_ms_per_token else "-",
                f"{r.pages_per_s[b]:.3f}" if b in r.pages_per_s else "-",
                f"{peak / 2**30:.2f} GiB" if peak else "-",
            ]
        details = ", ".join(f"{k} {v}" for k, v in r.details.items())
        cells.append("; ".join(part for part in (details, r.note) if part))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_speed(results: list[VLMSpeed], out_dir: str | Path, command: str = "") -> dict[str, Path]:
    """speed.md and speed.json in out_dir."""
    import json

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "speed.md", "json": out / "speed.json"}
    paths["markdown"].write_text(speed_markdown(results, command), encoding="utf-8")
    paths["json"].write_text(
        json.dumps({"command": command, "results": [r.to_dict() for r in results]}, indent=2) + "\n", encoding="utf-8"
    )
    return paths
