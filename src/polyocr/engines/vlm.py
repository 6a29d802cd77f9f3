"""What every VLM engine does the same way, written once: finding weights, the generate() settings
(static cache with its length rounded, timeouts, the plan's sampling and repetition controls), and
why a row's generation stopped.

Nothing here imports torch or transformers at import time: `polyocr engines` and availability
checks use the weight resolution without loading a model.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from polyocr.errors import EngineUnavailable
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


def split_generation(
    tokens: Sequence[int], eos_token_ids: Sequence[int], max_new_tokens: int
) -> tuple[list[int], str, int]:
    """The tokens before the first end token, why generation stopped, and how many tokens it made.

    In a batch, rows that ended early are filled with padding after their end token, so the first
    end token marks where each row's answer stops. A row that neither ended nor reached the limit was
    stopped by the time limit (max_time).
    """
    eos = set(eos_token_ids)
    end = next((i for i, t in enumerate(tokens) if t in eos), None)
    if end is not None:
        return list(tokens[:end]), "eos", end + 1
    if len(tokens) >= max_new_tokens:
        return list(tokens), "max_tokens", len(tokens)
    return list(tokens), "timeout", len(tokens)
