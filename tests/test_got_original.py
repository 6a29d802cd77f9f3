"""The original GOT-OCR 2.0 checkpoint (ucaslcl/GOT-OCR2_0 layout) through the `got` engine: the name
mapping round trip (same logits as the same weights in transformers' layout), the tokenizer
conversion, strict loading, the vision config read off the published shapes, and discovery in the
Hugging Face cache."""

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
transformers = pytest.importorskip("transformers")

import regex  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

from polyocr.engines.base import create_engine  # noqa: E402
from polyocr.engines.hf import got_original  # noqa: E402
from polyocr.engines.vlm import CheckpointError  # noqa: E402
from polyocr.types import EnginePlan, Task, TaskKind  # noqa: E402
from tiny_got_original import build_pair, original_name, train_ranks  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return build_pair(tmp_path_factory.mktemp("got"))


def _engine(path: Path, attention: str = "sdpa"):
    engine = create_engine("got", model_path=str(path))
    engine.load(EnginePlan(attention=attention, generation={"min_new_tokens": 3}))
    return engine


def _image() -> Image.Image:
    return Image.new("RGB", (300, 200), "white")


@pytest.mark.parametrize("tied", [True, False])
def test_original_layout_gives_the_logits_of_the_hf_layout(tmp_path: Path, tied: bool) -> None:
    original, native = build_pair(tmp_path, tied=tied, seed=3)
    assert ("lm_head.weight" in load_file(original / "model.safetensors")) == (not tied)
    a, b = _engine(original), _engine(native)
    assert a.attention == b.attention == {"": "eager", "vision_config": "eager", "text_config": "sdpa"}
    for mode in ("text", "markdown"):
        x, y = a.inputs([_image()], mode), b.inputs([_image()], mode)
        assert torch.equal(x["input_ids"], y["input_ids"]) and torch.equal(x["pixel_values"], y["pixel_values"])
        with torch.inference_mode():
            torch.testing.assert_close(a._model(**x).logits, b._model(**y).logits, atol=0, rtol=0)
    assert a._stop_ids == b._stop_ids
    assert a._model.config.image_token_index == b._model.config.image_token_index


def test_generation_batch_and_eager(pair: tuple[Path, Path]) -> None:
    original, native = pair
    engine = _engine(original)
    task = Task(kind=TaskKind.TEXT, max_new_tokens=4)
    single = [engine._generate([image], "text", task)[0][0] for image in (_image(), _image().resize((200, 300)))]
    assert [t for t, _ in engine._generate([_image(), _image().resize((200, 300))], "text", task)] == single
    assert single == [
        t
        for t, _ in (_engine(native)._generate([im], "text", task)[0] for im in (_image(), _image().resize((200, 300))))
    ]
    eager = _engine(original, attention="eager")
    x = engine.inputs([_image()], "text")
    with torch.inference_mode():
        torch.testing.assert_close(eager._model(**x).logits, engine._model(**x).logits, atol=1e-4, rtol=1e-4)


def reference_encode(ranks: dict[bytes, int], text: str) -> list[int]:
    """tiktoken's algorithm: split by the pattern, then in each piece merge the lowest-ranked pair first."""
    ids = []
    for piece in regex.findall(got_original.PATTERN, text):
        parts = [bytes([b]) for b in piece.encode()]
        while len(parts) > 1:
            ranked = [(ranks.get(parts[i] + parts[i + 1], 1 << 30), i) for i in range(len(parts) - 1)]
            rank, i = min(ranked)
            if rank == 1 << 30:
                break
            parts[i : i + 2] = [parts[i] + parts[i + 1]]
        ids += [ranks[p] for p in parts]
    return ids


def test_tokenizer_conversion(pair: tuple[Path, Path]) -> None:
    original, _ = pair
    tokenizer = got_original.convert_tokenizer(original)
    ranks = got_original.read_tiktoken(original / got_original.TIKTOKEN)
    assert ranks == train_ranks()
    for text in ("The quick brown fox, 2024-12-01!", "Съешь же ещё этих булок", "  x\n\n\ty 12345 OCR:"):
        assert tokenizer.encode(text, add_special_tokens=False) == reference_encode(ranks, text)
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    # Numbers go digit by digit, as in the original tokenization_qwen.py (the conversion script's
    # \p{N}{1,3} would keep "123" together when the ranks have it).
    assert regex.findall(got_original.PATTERN, "123") == ["1", "2", "3"]
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<img>", "</img>", "<imgpad>")}
    assert ids["<|endoftext|>"] == len(ranks) and ids["<imgpad>"] == len(ranks) + 216
    assert ids["<img>"] + 1 == ids["</img>"] == ids["<imgpad>"] - 1
    prompt = tokenizer.encode("<img><imgpad></img>\nOCR: <|im_end|>", add_special_tokens=False)
    assert prompt[:3] == [ids["<img>"], ids["<imgpad>"], ids["</img>"]]
    assert tokenizer.pad_token == tokenizer.eos_token == "<|endoftext|>"


def _edited(original: Path, target: Path, edit) -> Path:
    shutil.copytree(original, target)
    state = load_file(target / "model.safetensors")
    edit(state)
    save_file(state, target / "model.safetensors", metadata={"format": "pt"})
    return target


def test_strict_loading_names_what_is_wrong(pair: tuple[Path, Path], tmp_path: Path) -> None:
    original, _ = pair
    unmapped = _edited(original, tmp_path / "unmapped", lambda s: s.update({"model.mystery.weight": torch.zeros(1)}))
    with pytest.raises(CheckpointError, match=r"1 unmapped tensors: model\.mystery\.weight"):
        got_original.load_model(unmapped, dtype=torch.float32, attention={"": "eager"})
    missing = _edited(original, tmp_path / "missing", lambda s: s.pop("model.mm_projector_vary.bias"))
    with pytest.raises(CheckpointError, match=r"missing tensors: model\.multi_modal_projector\.multimodal_projector"):
        got_original.load_model(missing, dtype=torch.float32, attention={"": "eager"})
    name = "model.layers.0.mlp.up_proj.weight"
    shaped = _edited(original, tmp_path / "shaped", lambda s: s.update({name: torch.zeros(3, 3)}))
    with pytest.raises(CheckpointError, match=r"mis-shaped tensors: model\.language_model\.layers\.0\.mlp\.up_proj"):
        got_original.load_model(shaped, dtype=torch.float32, attention={"": "eager"})


def test_vision_config_read_off_the_published_shapes() -> None:
    """The published tower (transformers' GotOcr2VisionConfig defaults = build_GOT_vit_b's constants),
    built on the meta device, renamed to the original names: its config comes back from the shapes."""
    config = transformers.GotOcr2Config()
    with torch.device("meta"):
        model = transformers.GotOcr2ForConditionalGeneration._from_config(config)
    shapes = {original_name(k): list(v.shape) for k, v in model.state_dict().items() if "language_model" not in k}
    assert shapes["model.vision_tower_high.blocks.2.attn.rel_pos_h"] == [127, 64]
    vision = got_original.vision_config(shapes)
    assert vision == {
        "hidden_size": 768,
        "num_channels": 3,
        "patch_size": 16,
        "image_size": 1024,
        "num_hidden_layers": 12,
        "num_attention_heads": 12,
        "mlp_dim": 3072,
        "output_channels": 256,
        "global_attn_indexes": [2, 5, 8, 11],
        "window_size": 14,
        "qkv_bias": True,
        "use_abs_pos": True,
        "use_rel_pos": True,
    }
    assert shapes["model.vision_tower_high.net_3.weight"][0] == 1024  # the decoder width, 1024 in GOT


def _hub_cache(root: Path, repo_id: str, checkpoint: Path) -> Path:
    repo = root / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0123abcd")
    shutil.copytree(checkpoint, repo / "snapshots" / "0123abcd")
    return root


def test_the_original_is_found_in_the_cache(pair: tuple[Path, Path], tmp_path: Path, monkeypatch) -> None:
    from huggingface_hub import constants

    original, _ = pair
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    missing = create_engine("got").available(None)
    assert not missing.ok and got_original.ORIGINAL_REPO in missing.reason
    cache = _hub_cache(tmp_path / "hub", got_original.ORIGINAL_REPO, original)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    engine = create_engine("got")
    availability = engine.available(None)
    assert availability.ok and "GOT-OCR2_0" in availability.reason
    engine.load(EnginePlan())
    assert engine._model is not None
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    listed = subprocess.run(
        [sys.executable, "-m", "polyocr", "engines", "--json"], capture_output=True, text=True, env=env, check=True
    )
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["got"]["available"] and "GOT-OCR2_0" in rows["got"]["reason"]


def test_cli_ocr_with_the_original_checkpoint(pair: tuple[Path, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from polyocr.cli import app

    original, _ = pair
    image = tmp_path / "page.png"
    _image().save(image)
    args = ["ocr", str(image), "--engine", "got", "--model", str(original), "--max-new-tokens", "3"]
    result = CliRunner().invoke(app, [*args, "--format", "json", "--quiet"])
    assert result.exit_code == 0, result.output
    [page] = json.loads(result.stdout)["pages"]
    assert page["engine"] == "got" and page["generation"]["prompt_tokens"] > 256


def test_server_runs_the_original_checkpoint(pair: tuple[Path, Path], tmp_path: Path, monkeypatch) -> None:
    """The server reads the original checkpoint's path from polyocr.toml; a per-page timeout bounds
    random-weight generation (the server asks for the default token budget)."""
    import httpx

    from polyocr.config import ServerSettings
    from polyocr.results import DocumentResult
    from test_server_support import encode, running_server

    original, _ = pair
    config = tmp_path / "polyocr.toml"
    config.write_text(f'[router]\ntimeout = 2\n\n[engines.got]\nmodel_path = "{original}"\n')
    monkeypatch.setenv("POLYOCR_CONFIG", str(config))
    settings = ServerSettings(engine="got", languages=("eng",), job_dir=tmp_path / "jobs", warm_up=False)
    with running_server(settings) as url, httpx.Client(base_url=url, timeout=120) as client:
        response = client.post("/v1/ocr", files={"file": ("page.png", encode(_image()))}, data={"task": "text"})
        assert response.status_code == 200, response.text
        [page] = DocumentResult.model_validate_json(response.content).pages
        attempts = [a for a in page.attempts if a.engine == "got"]
        assert attempts and all(a.settings["device"] == "cpu" for a in attempts)
        assert all(a.settings["attention"] == "sdpa" for a in attempts)
