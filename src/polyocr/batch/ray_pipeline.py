"""The same pages on a Ray cluster, with Ray Data (optional extra: `pip install 'polyocr[ray]'`).

Rows are pages: {"doc", "path", "source", "page"}. The pipeline is three kinds of actor:

- `RenderPages` (CPU, a fraction of a core each): opens the file and renders one page per row into
  raw RGB bytes; it keeps the last file open (loader.PageReader), so the pages of one PDF that
  arrive together are not reopened. A page that cannot be read becomes a failed result here.
- `RecognizePages` (one per GPU, `num_gpus=1` or a fraction for a small model; or one per core for
  a classical chain): holds one Router, so one loaded engine per actor for its whole life, and
  recognises a batch of rows at a time (the router batches them for the GPU as it does locally).
- `FallbackPages` (CPU): only when the chain starts with a VLM: the classical rest of the chain for
  the pages the VLM did not answer, so no GPU actor waits on Tesseract; its attempts are joined to
  the VLM's, so the page record reads as one router's would.

`build_pipeline` gives that Dataset over any dataset of such rows (a user's own, too);
`run_on_ray` is what `polyocr batch --ray` runs: it feeds only the work list's pending pages and the
driver writes each result into the batch folder as it streams back (driver.py), so a batch can move
between local workers and Ray in either direction. Open-source Ray Data has no job checkpointing:
resuming is the work list's job, not Ray's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

import numpy as np

from polyocr.batch.worker import PageRecognizer, PageTask, WorkerSpec, failed_result
from polyocr.results import Outcome, PageResult, PageStatus

RENDER_CPUS = 0.25  # a render actor's share of a core: rendering is short next to recognition
RENDER_BATCH = 4
CPU_ENGINE_CPUS = 0.75
MAX_BLOCKS = 1000  # the work list's pending rows in at most this many blocks: small blocks stream pages evenly


def _column(batch: dict[str, Any], name: str) -> list[Any]:
    return list(batch[name]) if name in batch else []


class RenderPages:
    """Ray Data actor: (path, page) rows -> rows with the page image as raw RGB bytes, or an error."""

    def __init__(self, dpi: float, max_pixels: int):
        from polyocr.documents.loader import PageReader

        self.reader = PageReader(dpi=dpi, max_pixels=max_pixels)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from polyocr.errors import InputError

        images, widths, heights, dpis, errors = [], [], [], [], []
        docs = _column(batch, "doc") or [0] * len(batch["path"])
        sources = _column(batch, "source") or [str(p) for p in batch["path"]]
        for path, source, number in zip(batch["path"], sources, batch["page"], strict=True):
            try:
                page = self.reader.read(str(path), int(number), str(source))
                images.append(page.image.tobytes())
                widths.append(page.image.width)
                heights.append(page.image.height)
                dpis.append(page.dpi or 0.0)
                errors.append("")
            except (InputError, OSError, ValueError) as exc:
                images.append(b"")
                widths.append(0)
                heights.append(0)
                dpis.append(0.0)
                errors.append(str(exc) if isinstance(exc, InputError) else f"{source} page {number}: {exc}")
        return {
            "doc": np.asarray(docs, dtype=np.int64),
            "source": np.asarray(sources, dtype=object),
            "page": np.asarray(batch["page"], dtype=np.int64),
            "image": np.asarray(images, dtype=object),
            "width": np.asarray(widths, dtype=np.int64),
            "height": np.asarray(heights, dtype=np.int64),
            "dpi": np.asarray(dpis, dtype=np.float64),
            "error": np.asarray(errors, dtype=object),
        }


def _pages(batch: dict[str, np.ndarray], wanted: Iterable[int]):
    from PIL import Image

    from polyocr.documents import Page

    for i in wanted:
        size = (int(batch["width"][i]), int(batch["height"][i]))
        image = Image.frombytes("RGB", size, batch["image"][i])
        yield (
            i,
            Page(
                image=image,
                number=int(batch["page"][i]),
                source=str(batch["source"][i]),
                dpi=float(batch["dpi"][i]) or None,
            ),
        )


class RecognizePages:
    """Ray Data actor holding one Router (one loaded engine per chain member) for its whole life."""

    def __init__(self, spec: WorkerSpec, keep_images: bool = False):
        self.recognizer = PageRecognizer(spec)
        self.keep_images = keep_images

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        count = len(batch["page"])
        results: list[str] = [""] * count
        readable = []
        for i in range(count):
            if batch["error"][i]:
                task = PageTask(int(batch["doc"][i]), "", str(batch["source"][i]), int(batch["page"][i]))
                results[i] = failed_result(task, str(batch["error"][i])).model_dump_json()
            else:
                readable.append(i)
        pairs = list(_pages(batch, readable))
        for (i, _), result in zip(pairs, self.recognizer.recognize([p for _, p in pairs]), strict=True):
            results[i] = result.model_dump_json()
        out = {
            "doc": batch["doc"],
            "source": batch["source"],
            "page": batch["page"],
            "result": np.asarray(results, dtype=object),
        }
        if self.keep_images:
            out |= {k: batch[k] for k in ("image", "width", "height", "dpi", "error")}
        return out


def accepted(result: PageResult) -> bool:
    """An engine's answer passed the checks (the router's last word was an OK attempt)."""
    return any(a.outcome == Outcome.OK for a in result.attempts)


def merge_fallback(first: PageResult, second: PageResult) -> PageResult:
    """One router's result for a page the head engine did not answer (`first`, as the router gave it
    up) and the rest of the chain then tried (`second`): every attempt in order; the rest's answer if
    accepted, else the longer incomplete answer (the head's on a tie), else a failed page."""
    attempts = [*first.attempts, *second.attempts]
    errors = [f"{a.engine}: {a.error}" for a in attempts if a.error]
    if accepted(second):
        return second.model_copy(update={"attempts": attempts})
    salvage = [r for r in (first, second) if r.status == PageStatus.PARTIAL and r.text.strip()]
    if salvage:
        best = max(salvage, key=lambda r: len(r.text))  # max keeps the first of equals, as the router does
        own_count = len(best.errors) - len([a for a in best.attempts if a.error])
        own = best.errors[: max(0, own_count)]
        return best.model_copy(update={"attempts": attempts, "errors": [*own, *errors]})
    return first.model_copy(
        update={"attempts": attempts, "errors": errors or ["no engine in the chain"], "status": PageStatus.FAILED}
    )


class FallbackPages:
    """Ray Data actor (CPU): the rest of the chain for the pages the GPU stage did not answer."""

    def __init__(self, spec: WorkerSpec):
        self.recognizer = PageRecognizer(spec)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = list(batch["result"])
        firsts = {i: PageResult.model_validate_json(results[i]) for i in range(len(results))}
        wanted = [i for i, r in firsts.items() if not batch["error"][i] and not accepted(r)]
        pairs = list(_pages(batch, wanted))
        for (i, _), second in zip(pairs, self.recognizer.recognize([p for _, p in pairs]), strict=True):
            results[i] = merge_fallback(firsts[i], second).model_dump_json()
        return {
            "doc": batch["doc"],
            "source": batch["source"],
            "page": batch["page"],
            "result": np.asarray(results, dtype=object),
        }


def build_pipeline(
    ds: Any,
    spec: WorkerSpec,
    *,
    engine_actors: int | None = None,
    gpus_per_actor: float = 1.0,
    render_actors: int | None = None,
    batch_size: int | None = None,
) -> Any:
    """The Ray Dataset of results over `ds`, a Dataset of rows {"path", "page"} (1-based), optionally
    "source" (the name results carry; default the path) and "doc" (an id passed through; default 0).
    Each output row is {"doc", "source", "page", "result"}: the page's PageResult as JSON.

    The chain's head decides the shape: a VLM gets `engine_actors` GPU actors (default: the cluster's
    GPUs / `gpus_per_actor`) and a CPU stage for the rest of the chain; a classical chain gets
    `engine_actors` CPU actors (default: one per cluster CPU). Needs `ray.init()` first.
    """
    import ray
    from ray.data import ActorPoolStrategy

    from polyocr.engines.base import engine_entry
    from polyocr.types import EngineKind

    resources = ray.cluster_resources()
    cpus = max(1.0, float(resources.get("CPU", 1)))
    gpus = float(resources.get("GPU", 0))
    renders = render_actors or max(1, min(4, math.floor(cpus / 4)))
    rendered = ds.map_batches(
        RenderPages,
        fn_constructor_args=(spec.dpi, spec.max_pixels),
        batch_size=RENDER_BATCH,
        compute=ActorPoolStrategy(min_size=1, max_size=renders),
        num_cpus=RENDER_CPUS,
        batch_format="numpy",
    )
    head = engine_entry(spec.chain[0]).kind
    if head == EngineKind.VLM and gpus > 0:
        from polyocr import defaults

        actors = engine_actors or max(1, math.floor(gpus / gpus_per_actor))
        first = replace(spec, chain=spec.chain[:1])
        recognized = rendered.map_batches(
            RecognizePages,
            fn_constructor_args=(first, len(spec.chain) > 1),
            batch_size=batch_size or defaults.WINDOW_PAGES,
            compute=ActorPoolStrategy(size=actors),
            num_gpus=gpus_per_actor,
            batch_format="numpy",
        )
        if len(spec.chain) == 1:
            return recognized
        rest = replace(spec, chain=spec.chain[1:])
        return recognized.map_batches(
            FallbackPages,
            fn_constructor_args=(rest,),
            batch_size=batch_size or defaults.WINDOW_PAGES,
            compute=ActorPoolStrategy(min_size=1, max_size=max(1, math.floor(cpus / 2))),
            num_cpus=1,
            batch_format="numpy",
        )
    actors = engine_actors or max(1, math.floor(cpus))
    return rendered.map_batches(
        RecognizePages,
        fn_constructor_args=(spec,),
        batch_size=batch_size or 1,
        compute=ActorPoolStrategy(size=actors),
        num_cpus=CPU_ENGINE_CPUS,
        batch_format="numpy",
    )


def run_on_ray(
    tasks: Iterable[PageTask],
    spec: WorkerSpec,
    on_result: Callable[[PageTask, PageResult], None],
    *,
    address: str = "local",
    gpus_per_actor: float = 1.0,
    workers: int | None = None,
) -> int:
    """The tasks through `build_pipeline` on Ray; each result goes to `on_result` as it streams back
    to this process. `address` "local" starts a Ray here (unless this process already has one);
    anything else is passed to `ray.init(address=...)`. Returns the pages handled."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        from polyocr.errors import EngineUnavailable

        raise EngineUnavailable("ray", f"Ray is not installed: {exc}", "pip install 'polyocr[ray]'") from exc
    import logging
    import warnings

    logging.getLogger("ray.data").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*minimum number of concurrent actors.*")
    started = False
    if not ray.is_initialized():
        ray.init(
            address=None if address == "local" else address,
            include_dashboard=False,
            log_to_driver=False,
            logging_level=logging.WARNING,
        )
        started = True
    try:
        by_key = {(t.doc, t.number): t for t in tasks}
        if not by_key:
            return 0
        ray.data.DataContext.get_current().enable_progress_bars = False
        rows = [{"doc": t.doc, "path": t.path, "source": t.source, "page": t.number} for t in by_key.values()]
        ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), MAX_BLOCKS))
        handled = 0
        for row in build_pipeline(ds, spec, engine_actors=workers, gpus_per_actor=gpus_per_actor).iter_rows():
            task = by_key[(int(row["doc"]), int(row["page"]))]
            on_result(task, PageResult.model_validate_json(row["result"]))
            handled += 1
        return handled
    finally:
        if started:
            ray.shutdown()
