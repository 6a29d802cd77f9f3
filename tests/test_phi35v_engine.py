"""The phi35v engine end to end on a tiny random-weight checkpoint in the published layout: the engine,
`polyocr ocr`, the router (never asked for layout by auto), the server, `polyocr engines` and doctor.

Random weights cannot read; these tests check the loading, prompting, batching, generation and
reporting path, attention implementations agreeing, and batches equal to pages one by one.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from PIL import Image, ImageDraw  # noqa: E402

from polyocr.documents import Page  # noqa: E402
from polyocr.engines.base import create_engine, engine_class  # noqa: E402
from polyocr.engines.phi35v.engine import REPO_ID, TEXT_PROMPT, Phi35VEngine  # noqa: E402
from polyocr.errors import EngineError, InputError  # noqa: E402
from polyocr.results import PageStatus  # noqa: E402
from polyocr.router.resolve import auto_chain, reads  # noqa: E402
from polyocr.runtime.probe import GPU, Profile  # noqa: E402
from polyocr.types import EnginePlan, Task, TaskKind  # noqa: E402
from tiny_phi35v import build_tiny_phi35v  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_phi35v(tmp_path_factory.mktemp("phi35v") / "Phi-3.5-vision-instruct")


def _engine(path: Path, attention: str = "sdpa", batch_size: int = 1, **plan: object) -> Phi35VEngine:
    engine = create_engine("phi35v", model_path=str(path))
    assert isinstance(engine, Phi35VEngine)
    engine.load(EnginePlan(attention=attention, batch_size=batch_size, generation={"min_new_tokens": 3}, **plan))
    return engine


@pytest.fixture(scope="module")
def engine(checkpoint: Path) -> Phi35VEngine:
    return _engine(checkpoint, batch_size=2)


def _page(size: tuple[int, int], number: int = 1) -> Page:
    image = Image.new("RGB", size, "white")
    ImageDraw.Draw(image).text((10, 10), f"Invoice {number}", fill="black")
    return Page(image=image, number=number, source="page.png")


def test_end_to_end_reports_tokens_and_status(engine: Phi35VEngine) -> None:
    pages = [_page((500, 300), 1), _page((260, 700), 2)]
    results = engine.recognize(pages, Task(kind=TaskKind.TEXT, max_new_tokens=5))
    assert [(r.engine, r.page, r.width, r.height) for r in results] == [
        ("phi35v", 1, 500, 300),
        ("phi35v", 2, 260, 700),
    ]
    for page, result in zip(pages, results, strict=True):
        image = engine.processor.prepare(page.image)
        assert result.generation.prompt_tokens == len(engine.processor.prompt_ids(TEXT_PROMPT, image.token_count))
        assert result.generation.stop_reason in ("eos", "max_tokens")
        if result.generation.stop_reason == "max_tokens":
            assert result.status == PageStatus.PARTIAL and result.generation.generated_tokens == 5
        assert all(block.bbox is None for block in result.blocks)  # no boxes: text only


def test_batch_equals_one_by_one(engine: Phi35VEngine) -> None:
    task = Task(kind=TaskKind.TEXT, max_new_tokens=4)
    images = [_page((500, 300)).image, _page((260, 700)).image, _page((1000, 300)).image]
    single = [engine.generate([image], task)[0] for image in images]
    batched = engine.generate(images, task)
    assert [tokens for tokens, _ in batched] == [tokens for tokens, _ in single]
    assert [g.prompt_tokens for _, g in batched] == [g.prompt_tokens for _, g in single]
    assert len({g.prompt_tokens for _, g in single}) > 1  # 2x2, 2x2 transposed and 1x3 grids: padding was needed


def test_sdpa_and_eager_agree(checkpoint: Path, engine: Phi35VEngine) -> None:
    eager = _engine(checkpoint, attention="eager")
    assert eager.model.config._attn_implementation == "eager"
    assert engine.model.config._attn_implementation == "sdpa"
    batch = engine.inputs([_page((500, 300)).image]).model_inputs("cpu", torch.float32)
    with torch.inference_mode():
        a = eager.model(**batch).logits
        b = engine.model(**batch).logits
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_decoding_steps_reuse_the_cache(engine: Phi35VEngine) -> None:
    events: list[object] = []
    vision = engine.model.vision
    hooks = [
        vision.register_forward_pre_hook(lambda module, args: events.append("vision")),
        engine.model.model.layers[0].register_forward_pre_hook(
            lambda module, args, kwargs: events.append(kwargs.get("hidden_states", args[0] if args else None).shape[1]),
            with_kwargs=True,
        ),
    ]
    try:
        [result] = engine.recognize([_page((500, 300))], Task(kind=TaskKind.TEXT, max_new_tokens=5))
    finally:
        for hook in hooks:
            hook.remove()
    assert events[0] == "vision" and events[1] == result.generation.prompt_tokens
    assert events[2:] == [1] * (result.generation.generated_tokens - 1)


def test_pixel_budget_lowers_the_crops(checkpoint: Path) -> None:
    engine = _engine(checkpoint)
    image = _page((1654, 2339)).image
    assert engine.inputs([image]).pixel_values.shape[1] == 5  # the checkpoint's num_crops 4, plus the global view
    engine.plan = EnginePlan(max_pixels=336 * 336 * 16)  # a larger budget does not raise it
    assert engine.inputs([image]).pixel_values.shape[1] == 5
    engine.plan = EnginePlan(max_pixels=336 * 336 * 2)  # a GPU short of memory: two crop slots; an A4 page
    # then fits one (scale 2 would need 2 * ceil(2 / 1.41) = 4 crops), as the reference computes
    batch = engine.inputs([image])
    assert batch.pixel_values.shape[1] == 3 and batch.image_sizes.tolist() == [[336, 336]]
    engine.plan = EnginePlan(max_pixels=1000)
    assert engine.inputs([image]).pixel_values.shape[1] == 2  # at least one crop


def test_tasks_layout_and_errors(engine: Phi35VEngine) -> None:
    assert engine_class("phi35v").tasks == {TaskKind.TEXT, TaskKind.REGION}
    layout = Task(kind=TaskKind.LAYOUT, languages=("eng",))
    assert not reads("phi35v", layout) and reads("phi35v", Task(kind=TaskKind.TEXT, languages=("eng",)))
    gpu = GPU(0, "H100", "sm_90", 80 << 30, 80 << 30, bf16=True, in_arch_list=True, kernels_ok=True)
    profile = Profile(gpus=[gpu], packages={"torch": "2.13.0"})
    assert "phi35v" not in auto_chain(layout, profile)
    # Named for a layout task (the CLI's default), it reads the text without boxes.
    [result] = engine.recognize([_page((300, 200))], Task(kind=TaskKind.LAYOUT, max_new_tokens=3))
    assert result.blocks and all(b.bbox is None for b in result.blocks)
    with pytest.raises(EngineError, match="layout_only"):
        engine.recognize([_page((300, 200))], Task(kind=TaskKind.LAYOUT_ONLY))
    with pytest.raises(InputError, match="too elongated"):
        engine.recognize([_page((2000, 1))], Task(kind=TaskKind.TEXT))
    region = (10.0, 10.0, 200.0, 120.0)
    [cropped] = engine.recognize([_page((500, 300))], Task(kind=TaskKind.REGION, region=region, max_new_tokens=3))
    assert all(b.bbox == region for b in cropped.blocks)


def _hub_cache(root: Path, checkpoint: Path) -> Path:
    repo = root / ("models--" + REPO_ID.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    shutil.copytree(checkpoint, repo / "snapshots" / "0123abcd")
    return root


def test_availability_and_the_hugging_face_cache(checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    missing = create_engine("phi35v").available(None)
    assert not missing.ok and REPO_ID in missing.reason and missing.fix.startswith(f"hf download {REPO_ID}")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(_hub_cache(tmp_path / "hub", checkpoint)))
    found = create_engine("phi35v")
    assert found.available(None).ok
    found.load(EnginePlan())
    assert found.model is not None


def test_cli_engines_doctor_and_ocr(checkpoint: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_CACHE": str(_hub_cache(tmp_path / "hub", checkpoint)), "HF_HUB_OFFLINE": "1"}
    listed = subprocess.run(
        [sys.executable, "-m", "polyocr", "engines", "--json"], capture_output=True, text=True, env=env, check=True
    )
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["phi35v"]["available"] and "weights at" in rows["phi35v"]["reason"]
    assert "no layout mode" in rows["phi35v"]["notes"]
    doctor = subprocess.run(
        [sys.executable, "-m", "polyocr", "doctor", "--json"], capture_output=True, text=True, env=env, check=True
    )
    engines = {e["name"]: e for e in json.loads(doctor.stdout)["engines"]}
    assert engines["phi35v"]["available"] and engines["phi35v"]["device"] == "cpu"
    image = tmp_path / "page.png"
    _page((500, 300)).image.save(image)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "polyocr",
            "ocr",
            str(image),
            "--engine",
            "phi35v",
            "--model",
            str(checkpoint),
            "--task",
            "text",
            "--max-new-tokens",
            "3",
            "--format",
            "json",
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    [page] = json.loads(run.stdout)["pages"]
    assert page["engine"] == "phi35v" and page["generation"]["prompt_tokens"] > 757


def test_server_runs_phi35v_from_its_config(checkpoint: Path, tmp_path: Path, monkeypatch) -> None:
    """The server reads the checkpoint from polyocr.toml; a per-page timeout bounds random-weight
    generation (the server asks for the default token budget)."""
    import httpx

    from polyocr.config import ServerSettings
    from polyocr.results import DocumentResult
    from test_server_support import encode, running_server

    config = tmp_path / "polyocr.toml"
    config.write_text(f'[router]\ntimeout = 2\n\n[engines.phi35v]\nmodel_path = "{checkpoint}"\n')
    monkeypatch.setenv("POLYOCR_CONFIG", str(config))
    settings = ServerSettings(engine="phi35v", languages=("eng",), job_dir=tmp_path / "jobs", warm_up=False)
    with running_server(settings) as url, httpx.Client(base_url=url, timeout=120) as client:
        response = client.post(
            "/v1/ocr", files={"file": ("page.png", encode(_page((500, 300)).image))}, data={"task": "text"}
        )
        assert response.status_code == 200, response.text
        [page] = DocumentResult.model_validate_json(response.content).pages
        attempts = [a for a in page.attempts if a.engine == "phi35v"]
        assert attempts, page
        assert all(a.settings["device"] == "cpu" for a in attempts)
