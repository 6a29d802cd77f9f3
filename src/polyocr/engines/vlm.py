"""What every VLM engine does the same way, written once: finding weights, the generate() settings
(static cache with its length rounded, timeouts, the plan's sampling and repetition controls), the
loop stop (a row whose tail repeats is ended while it happens), and why a row's generation stopped.

Nothing here imports torch or transformers at import time: `polyocr engines` and availability
checks use the weight resolution without loading a model.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from polyocr.errors import EngineError, EngineUnavailable
from polyocr.types import EnginePlan, Task

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")

# Generation options an engine passes on from plan.generation (the router's loop ladder sets
# repetition controls and sampling; a user's polyocr.toml may set any of them).
GENERATION_OPTIONS = (
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "min_new_tokens",
    "cache_implementation",
)

# The static KV cache's length is rounded up to a multiple of this. transformers sizes the cache to
# prompt + max_new_tokens - 1, often not a multiple of 8, and bf16 rows that are not 16-byte aligned
# send cuBLAS to a slow sm80 fallback kernel once per layer per step (benchmarks/dots-decode-profile.md:
# 15-33% per step on an H100). Rounding costs a few masked slots and lets a page with a slightly
# longer prompt reuse the cache (and the compiled step) of an earlier one.
STATIC_CACHE_MULTIPLE = 256


def is_repo_id(name: str) -> bool:
    return bool(_REPO_ID.match(name))


def has_weights(path: Path) -> bool:
    """A directory holding a config and safetensors weights (one file or shards)."""
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def cached_snapshot(repo_id: str) -> Path | None:
    """The local snapshot of a hub repository holding a config and safetensors weights, if any.

    Reads the cache only (huggingface_hub's try_to_load_from_cache): no network, no lock files.
    """
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo_id, "config.json")
    if not isinstance(config, str):
        return None
    snapshot = Path(config).parent
    return snapshot if has_weights(snapshot) else None


def find_weights(model_path: str | None, repo_id: str) -> Path | None:
    """The checkpoint directory for a user's path, a hub repo id in the local cache, or the engine's
    default repository in the cache; None when there is none here."""
    if model_path:
        path = Path(model_path).expanduser()
        if path.is_dir():
            return path if has_weights(path) else None
        return cached_snapshot(model_path) if is_repo_id(model_path) else None
    return cached_snapshot(repo_id)


def resolve_checkpoint(engine: str, path_or_repo_id: str | Path, download: bool = False) -> Path:
    """A local checkpoint directory for a path or a hub repo id: the local cache, or the hub only when
    `download` (`polyocr fetch`); EngineUnavailable naming the fix otherwise."""
    path = Path(path_or_repo_id).expanduser()
    if path.is_dir():
        return path
    repo_id = str(path_or_repo_id)
    if not is_repo_id(repo_id) or path.exists():
        raise EngineUnavailable(engine, f"{repo_id} is not a checkpoint directory")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=not download))
    except Exception as exc:  # the hub raises many types (offline, not cached, gated, network)
        where = "the local Hugging Face cache" if not download else "the Hugging Face hub"
        raise EngineUnavailable(
            engine, f"{repo_id} is not in {where}: {type(exc).__name__}", f"hf download {repo_id}"
        ) from exc


# What `polyocr fetch` downloads of a checkpoint: configs, tokenizer files, templates and the
# safetensors weights; never a repository's Python files (polyocr runs no remote code).
FETCH_PATTERNS = ("*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.jinja", "LICENSE*", "README*")


def fetch_weights(engine: str, repo_id: str) -> Path:
    """Download a checkpoint into the Hugging Face cache (huggingface_hub shows the progress); the
    snapshot's directory. EngineUnavailable naming the reason when the hub cannot be reached."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, allow_patterns=list(FETCH_PATTERNS)))
    except Exception as exc:  # offline (HF_HUB_OFFLINE), no network, gated, not found: all say why
        raise EngineUnavailable(
            engine,
            f"could not download {repo_id}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
            "check the network and HF_HUB_OFFLINE, or download it elsewhere and pass --model DIR",
        ) from exc


def static_cache_length(prompt_tokens: int, max_new_tokens: int, multiple: int = STATIC_CACHE_MULTIPLE) -> int:
    """transformers' own static cache length (the last token is never cached), rounded up to `multiple`."""
    needed = prompt_tokens + max_new_tokens - 1
    return -(-needed // multiple) * multiple


def generation_settings(
    plan: EnginePlan,
    task: Task,
    *,
    eos_token_ids: Sequence[int],
    pad_token_id: int | None,
    prompt_tokens: int,
    max_new_tokens: int | None = None,
) -> dict[str, Any]:
    """generate()'s keyword arguments for a task under a plan, the same for every VLM engine.

    Greedy unless the plan asks for sampling (a temperature above 0 or do_sample). On CUDA the cache
    is static, so transformers compiles the one-token decoding step: eager steps are ~1,000-1,700
    small kernel launches whose host cost (20-80 ms per token on an H100 host) dwarfs the GPU's
    3-9 ms (benchmarks/hf-vlm-gpu.md, dots-gpu.md); its length is rounded up
    (STATIC_CACHE_MULTIPLE). The first generate per batch size pays the compilation.
    plan.generation {"cache_implementation": "dynamic"} turns it off (for one short page, say).
    `max_new_tokens` is the engine's own budget where the model's context is shorter than the task's.
    """
    options = {k: v for k, v in plan.generation.items() if k in GENERATION_OPTIONS}
    temperature = float(options.pop("temperature", None) or 0.0)
    sample = bool(options.pop("do_sample", False)) or temperature > 0.0
    if temperature > 0.0:
        options["temperature"] = temperature
    if not sample:
        options.pop("top_p", None)
        options.pop("top_k", None)
    limit = task.max_new_tokens if max_new_tokens is None else min(task.max_new_tokens, max_new_tokens)
    settings: dict[str, Any] = {
        **options,
        "do_sample": sample,
        "max_new_tokens": limit,
        "eos_token_id": list(eos_token_ids),
        "pad_token_id": pad_token_id,
    }
    if str(plan.device).startswith("cuda"):
        settings.setdefault("cache_implementation", "static")
    if settings.get("cache_implementation") == "dynamic":
        del settings["cache_implementation"]
    elif settings.get("cache_implementation") == "static":
        settings["max_cache_len"] = static_cache_length(prompt_tokens, limit)
    if task.timeout:
        settings["max_time"] = task.timeout
    return settings


# ---------------------------------------------------------------------------- loops, stopped while they happen
#
# A looping VLM repeats one unit of tokens exactly (greedy decoding has fallen into a cycle) until the
# token limit: 16,384 tokens for dots.ocr, most of a page's time. The loop stop looks at each row's
# generated ids every LOOP_CHECK_EVERY steps and ends a row whose tail is one unit of at most
# LOOP_MAX_PERIOD tokens repeated over at least LOOP_MIN_SPAN tokens and LOOP_MIN_REPEATS times.
# Tables and forms repeat too, but not exactly for that long: the thresholds are set above the
# longest exact repetition found in real documents' text under the Qwen2 tokenizer (tables of the
# dots.ocr, PaddleOCR-VL and DeepSeek-OCR-2 model cards as HTML and Markdown, tables of contents with
# dotted leaders, the evaluation set's transcriptions, empty forms), with a margin: see
# benchmarks/loop_thresholds.py and benchmarks/loop-stopping.md. A loop starting at token s with
# period p is stopped by s + max(LOOP_MIN_SPAN, LOOP_MIN_REPEATS * p) + LOOP_CHECK_EVERY tokens.
LOOP_CHECK_EVERY = 32
LOOP_MAX_PERIOD = 200
LOOP_MIN_SPAN = 240
LOOP_MIN_REPEATS = 4
# A unit with no letter or digit outside its tags (empty table cells, dotted leaders, rules) is
# legitimate for longer: an empty form's rows repeat exactly. Such a loop is stopped later.
LOOP_MARKUP_SPAN = 1536
_TAGS = re.compile(r"<[^<>]{0,40}>|&[a-z]{2,8};|&#\d{1,6};")
# Only the tail is examined: enough to hold the longest unit's repeats.
LOOP_WINDOW = max(LOOP_MARKUP_SPAN, LOOP_MAX_PERIOD * LOOP_MIN_REPEATS)


@dataclass(frozen=True)
class Loop:
    """A repeating tail: it starts `start` tokens into the generation, its unit is `period` tokens
    long, and generation was stopped after `length` tokens."""

    start: int
    period: int
    length: int

    @property
    def keep(self) -> int:
        """How many generated tokens to keep: the text before the loop and its unit once."""
        return self.start + self.period


def repeating_tail(
    tokens: Sequence[int] | np.ndarray,
    *,
    min_span: int = LOOP_MIN_SPAN,
    min_repeats: int = LOOP_MIN_REPEATS,
    max_period: int = LOOP_MAX_PERIOD,
) -> Loop | None:
    """The shortest unit that the end of `tokens` repeats over at least `min_span` tokens and
    `min_repeats` times, or None.

    For a period p, the tail is periodic over r + p tokens where r is the run of trailing positions
    i with tokens[i] == tokens[i - p]; the loop starts where that run (less one unit) begins.
    """
    ids = np.asarray(tokens, dtype=np.int64)
    total = len(ids)
    window = ids[-LOOP_WINDOW:] if total > LOOP_WINDOW else ids
    n = len(window)
    if n < min_span:
        return None
    for period in range(1, min(max_period, n // min_repeats) + 1):
        # Cheap test first: the last min_span tokens must already be periodic.
        if not np.array_equal(window[n - min_span + period :], window[n - min_span : n - period]):
            continue
        same = window[period:] == window[:-period]
        breaks = np.flatnonzero(~same)
        run = len(same) - (int(breaks[-1]) + 1 if len(breaks) else 0)
        span = run + period
        if span >= min_span and span >= min_repeats * period:
            start = total - span
            if len(breaks) == 0 and total > n:  # the repetition may reach back beyond the window
                start = _loop_start(ids, period, total - span)
            return Loop(start=start, period=period, length=total)
    return None


def is_markup(unit: str) -> bool:
    """True when a repeated unit holds no letter or digit outside tags and entities.

    A unit starts wherever the repetition happened to begin, often inside a tag ("></tr><tr><td"),
    so it is judged three times over with the cut tags at both ends dropped.
    """
    text = _TAGS.sub("", unit * 3)
    text = re.sub(r"^[^<>]{0,40}>|<[^<>]{0,40}$", "", text)
    return not any(c.isalnum() for c in text)


def _loop_start(ids: np.ndarray, period: int, start: int) -> int:
    """Walk back from `start` while the tokens keep the period (a loop longer than the window)."""
    while start > 0 and ids[start - 1] == ids[start - 1 + period]:
        start -= 1
    return start


def find_loop(tokens: Sequence[int] | np.ndarray, decode: Callable[[list[int]], str] | None = None) -> Loop | None:
    """The loop stop's verdict on a row's generated ids: a repeating tail past the thresholds, with
    a markup-only unit (decoded by `decode`) needing LOOP_MARKUP_SPAN tokens; None otherwise."""
    found = repeating_tail(tokens)
    if found is None or decode is None or found.length - found.start >= LOOP_MARKUP_SPAN:
        return found
    unit = np.asarray(tokens)[found.start : found.start + found.period].tolist()
    return None if is_markup(decode(unit)) else found


def loop_stop_enabled(plan: EnginePlan) -> bool:
    """The loop stop is on unless plan.generation {"loop_stop": false} turns it off (to measure it, or
    to see a model's loop run to the token limit)."""
    return bool(plan.generation.get("loop_stop", True))


def loop_stop(
    prompt_length: int,
    eos_token_ids: Sequence[int],
    decode: Callable[[list[int]], str] | None = None,
    every: int = LOOP_CHECK_EVERY,
    enabled: bool = True,
) -> Any:
    """A transformers StoppingCriteria that ends each row of a batch whose generated tail loops.

    It returns a per-row flag, so generate() ends that row alone: transformers fills a finished row
    with padding and the other rows' computation is untouched (each row attends only to its own
    cache), so their tokens are the same as without it. Rows run in one batch until the last one
    ends, so a stopped row still occupies its batch slot (neither the static nor the dynamic cache
    drops rows), but the whole generate() ends as soon as every row has ended or looped. Every
    `every` steps it copies the rows' ids to the host once; `loops` maps a row to the Loop that
    stopped it. Rows that already ended on an end token are not examined (their padding would look
    like a loop). `decode` (the tokenizer's) tells markup-only units apart (find_loop).
    """
    import torch
    from transformers import StoppingCriteria

    eos = np.asarray(sorted(set(eos_token_ids)), dtype=np.int64)

    class LoopStop(StoppingCriteria):
        def __init__(self) -> None:
            self.loops: dict[int, Loop] = {}
            self.checks = 0

        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            batch, length = input_ids.shape
            stop = torch.zeros(batch, dtype=torch.bool, device=input_ids.device)
            generated = length - prompt_length
            if not enabled or generated < LOOP_MIN_SPAN or generated % every:
                return stop
            self.checks += 1
            rows = input_ids[:, prompt_length:].cpu().numpy()
            ended: np.ndarray = np.asarray(np.isin(rows, eos).any(axis=1))
            for row in range(batch):
                if ended[row] or row in self.loops:
                    continue
                found = find_loop(rows[row], decode)
                if found is not None:
                    self.loops[row] = found
                    stop[row] = True
            return stop

    return LoopStop()


def split_generation(
    tokens: Sequence[int], eos_token_ids: Sequence[int], max_new_tokens: int, loop: Loop | None = None
) -> tuple[list[int], str, int]:
    """The tokens before the first end token, why generation stopped, and how many tokens it made.

    In a batch, rows that ended early are filled with padding after their end token, so the first
    end token marks where each row's answer stops. A row the loop stop ended (`loop`, from
    loop_stop().loops) keeps the text before its loop and the repeated unit once, with stop reason
    "loop". A row that neither ended nor reached the limit was stopped by the time limit (max_time).
    """
    if loop is not None:
        return list(tokens[: loop.keep]), "loop", loop.length
    eos = set(eos_token_ids)
    end = next((i for i, t in enumerate(tokens) if t in eos), None)
    if end is not None:
        return list(tokens[:end]), "eos", end + 1
    if len(tokens) >= max_new_tokens:
        return list(tokens), "max_tokens", len(tokens)
    return list(tokens), "timeout", len(tokens)


# ---------------------------------------------------------------------------- strict loading
# For the native ports (engines/phi35v, the original GOT checkpoint in engines/hf/got_original.py):
# a checkpoint must hold exactly the tensors the architecture has, with the same shapes; anything
# missing, unexpected or mis-shaped is an error naming the tensors, instead of the silent random
# initialisation that makes a wrong checkpoint emit plausible garbage. (dots/model.py has its own
# copy from before these helpers existed.)

NAMES_SHOWN = 8


class CheckpointError(EngineError):
    """A checkpoint directory whose tensors do not match the engine's architecture."""

    def __init__(self, engine: str, path: str | Path, reason: str):
        self.path = str(path)
        super().__init__(engine, f"checkpoint {self.path}: {reason}")


def listing(kind: str, names: Sequence[str]) -> str:
    shown = ", ".join(names[:NAMES_SHOWN])
    more = f" (+{len(names) - NAMES_SHOWN} more)" if len(names) > NAMES_SHOWN else ""
    return f"{len(names)} {kind}: {shown}{more}"


def checkpoint_tensors(engine: str, directory: Path) -> dict[str, tuple[Path, list[int]]]:
    """Every tensor of a safetensors checkpoint (one file, or shards with an index): file and shape."""
    import json

    from safetensors import safe_open

    index_path = directory / "model.safetensors.index.json"
    if index_path.exists():
        weight_map: dict[str, str] = json.loads(index_path.read_text())["weight_map"]
        files = [directory / name for name in sorted(set(weight_map.values()))]
    else:
        weight_map = {}
        files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise CheckpointError(engine, directory, "no *.safetensors weight files")
    found: dict[str, tuple[Path, list[int]]] = {}
    for file in files:
        if not file.exists():
            raise CheckpointError(engine, directory, f"the index names {file.name}, which is missing")
        with safe_open(file, framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open handles are not iterable)
                if key in found:
                    raise CheckpointError(engine, directory, f"tensor {key} is in {found[key][0].name} and {file.name}")
                found[key] = (file, list(handle.get_slice(key).get_shape()))
    misplaced = sorted(k for k, name in weight_map.items() if k not in found or found[k][0].name != name)
    if misplaced:
        raise CheckpointError(
            engine, directory, "the index disagrees with the shards; " + listing("tensors", misplaced)
        )
    return found


def mismatches(expected: dict[str, list[int]], found: dict[str, list[int]]) -> str:
    """'' when the names and shapes agree, else the missing, unexpected and mis-shaped tensors, named."""
    problems = {
        "missing tensors": sorted(set(expected) - set(found)),
        "unexpected tensors": sorted(set(found) - set(expected)),
        "mis-shaped tensors": [
            f"{name} (checkpoint {found[name]}, model {shape})"
            for name, shape in sorted(expected.items())
            if name in found and found[name] != shape
        ],
    }
    return "; ".join(listing(kind, names) for kind, names in problems.items() if names)


def scatter_image_embeds(embeds: Any, input_ids: Any, image_embeds: Any, image_token_id: int) -> Any:
    """Token embeddings with the image-token positions replaced, in order, by the image embeddings
    (the layout dots.ocr and Phi-3.5-Vision share); ValueError when their counts differ."""
    mask = input_ids == image_token_id
    slots = int(mask.sum())
    if slots != image_embeds.shape[0]:
        raise ValueError(f"the prompt has {slots} image tokens but the images give {image_embeds.shape[0]} embeddings")
    return embeds.masked_scatter(mask.unsqueeze(-1), image_embeds)


def left_pad(sequences: Sequence[Sequence[int]], pad_token_id: int) -> tuple[Any, Any]:
    """A batch's token ids and attention mask, padded on the left so every prompt ends at the same
    position (generation appends on the right)."""
    import torch

    length = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, length - len(seq) :] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, length - len(seq) :] = 1
    return input_ids, attention_mask
