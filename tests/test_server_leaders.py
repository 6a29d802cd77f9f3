"""The 2026 leaders through the real server (issue 19's "Done when"): glm-ocr, lighton-ocr, olmocr,
mineru, dots-mocr and paddleocr-vl-1.5 on tiny random-weight checkpoints with their real structure,
each found by the server through polyocr.toml's `[engines."<name>"] model_path` as a user would set
it (quoted: a name with a dot, paddleocr-vl-1.5, is otherwise a TOML sub-table).

Random weights write no real text, so what is checked is what is deterministic: the engine named
ran (every attempt is its own), its generation statistics come back under the server's token limit,
its own answer format was parsed (olmOCR's front matter, dots' layout JSON, MinerU's layout stage),
and the server answers exactly what the library answers for the same page. MinerU's layout stage
on random weights draws no region, so its two stages are also run with the model's answers scripted
(as tests/test_mineru.py does), through /v1/ocr and the chat endpoint.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch

import polyocr
from polyocr.config import ServerSettings, server_settings
from polyocr.engines.dots.prompts import PROMPTS, PromptMode
from polyocr.engines.openai_server import DOTS_IMAGE_MARKER
from polyocr.results import DocumentResult, Generation, PageResult, PageStatus
from polyocr.types import Task
from test_server_support import running_server, text_png
from tiny_dots import build_tiny_dots_mocr
from tiny_hf import BUILDERS

LEADERS = ("glm-ocr", "lighton-ocr", "olmocr", "mineru", "dots-mocr", "paddleocr-vl-1.5")
TOKENS = 4  # the server's --max-new-tokens: random weights never end on their own


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("leaders")
    built = {name: BUILDERS[name](root / name) for name in LEADERS if name != "dots-mocr"}
    return {**built, "dots-mocr": build_tiny_dots_mocr(root / "dots-mocr")}


@pytest.fixture(scope="module")
def server(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = tmp_path_factory.mktemp("config") / "polyocr.toml"
    config.write_text("".join(f'[engines."{name}"]\nmodel_path = "{path}"\n\n' for name, path in checkpoints.items()))
    settings = ServerSettings(
        engine="glm-ocr",  # loaded at start-up: /ready waits for a leader's checkpoint
        workers=1,
        max_new_tokens=TOKENS,
        job_dir=tmp_path_factory.mktemp("jobs"),
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POLYOCR_CONFIG", str(config))
        with running_server(settings) as url:
            yield url


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=300) as c:
        yield c


def _page(response: httpx.Response) -> PageResult:
    assert response.status_code == 200, response.text
    doc = DocumentResult.model_validate_json(response.content)
    [page] = doc.pages
    failed = "1" if page.status == PageStatus.FAILED else "0"
    assert response.headers["x-polyocr-failed-pages"] == failed
    return page


def _chat(client: httpx.Client, model: str, png: bytes, prompt: str) -> httpx.Response:
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": prompt}]
    messages = [{"role": "user", "content": content}]
    return client.post("/v1/chat/completions", json={"model": model, "messages": messages})


def _seen(page: PageResult) -> dict:
    """What a page result says, less what differs from run to run (seconds)."""
    generation = page.generation.model_dump(exclude={"seconds"}) if page.generation else None
    attempts = [(a.engine, a.outcome, a.error) for a in page.attempts]
    blocks = [b.model_dump() for b in page.blocks]
    return dict(
        status=page.status, engine=page.engine, text=page.text, blocks=blocks, errors=page.errors,
        generation=generation, attempts=attempts,
    )  # fmt: skip


def test_ready_once_the_default_leader_has_loaded(client: httpx.Client) -> None:
    ready = client.get("/ready").json()
    assert ready["ready"] is True and ready["engines"] == ["glm-ocr"]
    rows = {row["name"]: row for row in client.get("/v1/engines").json()["engines"]}
    assert all(rows[name]["kind"] == "vlm" for name in LEADERS)


@pytest.mark.parametrize("task", ["layout", "text"])
@pytest.mark.parametrize("name", LEADERS)
def test_each_leader_reads_a_page_through_the_server(
    client: httpx.Client, checkpoints: dict[str, Path], name: str, task: str
) -> None:
    png = text_png()
    torch.manual_seed(0)  # the router's last retries sample (policy.py's loop ladder): the same draws for both
    page = _page(client.post("/v1/ocr", files={"file": ("page.png", png)}, data={"engine": name, "task": task}))
    # The engine named ran every attempt, at the server's token limit, and the router judged each.
    assert page.attempts and {a.engine for a in page.attempts} == {name}
    assert all(a.error for a in page.attempts if a.outcome != "accepted")
    if page.status != PageStatus.FAILED:
        assert page.engine == name and page.blocks
        assert page.generation is not None and page.generation.prompt_tokens > 0
        assert 0 < page.generation.generated_tokens <= TOKENS
    else:
        assert page.errors and all(e.startswith(f"{name}: ") for e in page.errors)
    # The server answers what the library answers for the same page, checkpoint and token limit. (The
    # server's layout task is the default one, which an engine without layout answers with its text,
    # as the library's is when no task is named; the library refuses a named layout task instead.)
    named = None if task == "layout" else task
    torch.manual_seed(0)
    library = polyocr.ocr(png, name, task=named, model=checkpoints[name], max_new_tokens=TOKENS)
    assert _seen(page) == _seen(library.pages[0])


def test_each_leader_parsed_its_own_answer_format(client: httpx.Client) -> None:
    """The honest failures random weights give, each from the engine's own parser or stage."""

    def layout(name: str) -> PageResult:
        torch.manual_seed(0)  # the router's sampled retries draw the same each run
        return _page(client.post("/v1/ocr", files={"file": ("page.png", text_png())}, data={"engine": name}))

    assert "olmocr: no front matter" in layout("olmocr").errors  # olmOCR-2's YAML front matter + Markdown
    dots = layout("dots-mocr")  # dots' layout JSON
    assert dots.status == PageStatus.FAILED and any("not layout JSON" in e for e in dots.errors)
    mineru = layout("mineru")  # the layout stage drew no region, so no element was read
    assert mineru.status == PageStatus.FAILED and all("empty_output" in a.error for a in mineru.attempts)
    for name in ("glm-ocr", "lighton-ocr"):  # Markdown answers, cut at the token limit
        page = layout(name)
        assert page.status == PageStatus.PARTIAL and page.generation.stop_reason == "max_tokens"


@pytest.mark.parametrize("name", LEADERS)
def test_each_leader_answers_the_chat_endpoint(client: httpx.Client, name: str) -> None:
    png = text_png()
    torch.manual_seed(0)  # the same draws for the router's sampled retries in both requests
    response = _chat(client, name, png, PROMPTS[PromptMode.OCR])
    torch.manual_seed(0)
    page = _page(client.post("/v1/ocr", files={"file": ("page.png", png)}, data={"engine": name, "task": "text"}))
    if page.status == PageStatus.FAILED:  # MinerU: no region drawn, so nothing to answer
        assert response.status_code == 502 and name in response.json()["error"]["message"]
        return
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == name and body["polyocr"]["engine"] == name
    assert body["choices"][0]["finish_reason"] == "length"  # stopped at the server's token limit
    assert body["choices"][0]["message"]["content"] == page.text
    assert 0 < body["usage"]["completion_tokens"] <= TOKENS and body["usage"]["prompt_tokens"] > 0


def test_mineru_two_stages_through_the_server(client: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """MinerU2.5's layout then element stage with the model's answers scripted (random weights draw no
    region): the page comes back through /v1/ocr and the chat endpoint with MinerU's blocks, boxes in
    page pixels and the table as HTML."""
    from polyocr.engines.hf.mineru import MinerUEngine

    answers = {
        "layout": "<|box_start|>0 0 1000 500<|box_end|><|ref_start|>text<|ref_end|><|rotate_up|>\n"
        "<|box_start|>0 500 1000 1000<|box_end|><|ref_start|>table<|ref_end|><|rotate_up|>",
        "text": "A paragraph of text that the router accepts.",
        "table": "<fcel>a<fcel>b<nl>",
    }
    modes: list[str] = []

    def generate(self: MinerUEngine, images: list, mode: str, task: Task) -> list:
        modes.append(mode)
        ids = self._processor.tokenizer.encode(answers[mode], add_special_tokens=False)
        return [(ids, Generation(stop_reason="eos", prompt_tokens=5, generated_tokens=4, seconds=0.1))] * len(images)

    monkeypatch.setattr(MinerUEngine, "_generate", generate)
    png = text_png()  # 640 x 200
    page = _page(client.post("/v1/ocr", files={"file": ("page.png", png)}, data={"engine": "mineru"}))
    assert modes[0] == "layout" and set(modes[1:]) == {"text", "table"}
    assert (page.status, page.engine) == (PageStatus.OK, "mineru")
    assert [(b.category, b.bbox) for b in page.blocks] == [
        ("Text", (0.0, 0.0, 640.0, 100.0)),
        ("Table", (0.0, 100.0, 640.0, 200.0)),
    ]
    assert page.blocks[1].text == "<table><tr><td>a</td><td>b</td></tr></table>"

    chat = _chat(client, "mineru", png, DOTS_IMAGE_MARKER + PROMPTS[PromptMode.LAYOUT_ALL])
    assert chat.status_code == 200, chat.text
    elements = json.loads(chat.json()["choices"][0]["message"]["content"])
    assert [(e["category"], e["bbox"]) for e in elements] == [("Text", [0, 0, 640, 100]), ("Table", [0, 100, 640, 200])]


def test_the_servers_token_limit_is_a_setting(tmp_path: Path) -> None:
    config = tmp_path / "polyocr.toml"
    config.write_text("[server]\nmax_new_tokens = 512\n")
    assert server_settings(environ={"POLYOCR_CONFIG": str(config)}, cwd=tmp_path).max_new_tokens == 512
    assert ServerSettings().max_new_tokens == 16384
    with pytest.raises(ValueError, match="max_new_tokens"):
        ServerSettings(max_new_tokens=0)
