"""The remote engine: against a real polyocr server (Tesseract behind it), including the server
going away mid-document, and against a stand-in for vLLM (outside polyocr's control) for the chat
protocol, dots.ocr's prompt format, retries and timeouts."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from polyocr.config import ServerSettings
from polyocr.documents import Page
from polyocr.documents.loader import image_source
from polyocr.engines.base import create_engine
from polyocr.engines.dots.prompts import PROMPTS, PromptMode
from polyocr.engines.openai_server import DOTS_IMAGE_MARKER, OpenAIServerEngine
from polyocr.errors import EngineError, EngineUnavailable
from polyocr.results import DocumentResult, Outcome, PageStatus
from polyocr.router import Router
from polyocr.runtime.probe import Profile
from polyocr.types import EnginePlan, Task, TaskKind
from test_server_support import (
    free_port,
    running_server,
    spawn_server,
    stop,
    text_image,
    text_pdf,
    text_png,
    wait_ready,
)

ENG = Task(languages=("eng",))


@pytest.fixture
def remote_env(monkeypatch: pytest.MonkeyPatch):
    """Point the engine at a URL; short backoff so failing tests stay fast."""
    monkeypatch.setattr("polyocr.engines.openai_server.BACKOFF_SECONDS", 0.01)
    for name in ("POLYOCR_OPENAI_MODEL", "POLYOCR_OPENAI_API_KEY", "POLYOCR_OPENAI_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)

    def point(url: str, **extra: str) -> None:
        monkeypatch.setenv("POLYOCR_OPENAI_URL", url)
        for key, value in extra.items():
            monkeypatch.setenv(f"POLYOCR_OPENAI_{key.upper()}", value)

    return point


def test_unconfigured_engine_says_how_to_configure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POLYOCR_OPENAI_URL", raising=False)
    availability = create_engine("openai").available(Profile())
    assert not availability.ok and "POLYOCR_OPENAI_URL" in availability.reason
    assert "vllm-command" in availability.fix


def test_unreachable_server_is_unavailable_at_load(remote_env) -> None:
    remote_env(f"http://127.0.0.1:{free_port()}", retries="1")
    with pytest.raises(EngineUnavailable, match="ConnectError"):
        OpenAIServerEngine().load(EnginePlan())


def test_polyocr_server_behind_the_engine(remote_env, tmp_path) -> None:
    pytest.importorskip("tesserocr")
    settings = ServerSettings(engine="tesseract", languages=("eng",), workers=2, job_dir=tmp_path)
    with running_server(settings) as url:
        remote_env(url + "/v1", model="tesseract", concurrency="3")
        engine = OpenAIServerEngine()
        engine.load(EnginePlan())
        assert engine.protocol == "polyocr" and engine.url == url
        pages = list(image_source(text_pdf(3), "book.pdf", dpi=100).pages())
        results = engine.recognize(pages, ENG)  # three requests in flight
        assert [r.page for r in results] == [1, 2, 3]
        assert all(f"Page {r.page}" in r.text and r.blocks[0].bbox for r in results)
        assert results[0].width == pages[0].image.width
        region = Task(kind=TaskKind.REGION, languages=("eng",), region=(0.0, 60.0, 640.0, 110.0))
        [line] = engine.recognize([Page(image=text_image(), number=1, source="p.png")], region)
        assert "lazy dog" in line.text and "Invoice" not in line.text
        assert all(b.bbox[1] >= 60 for b in line.blocks) and line.blocks  # boxes back in page coordinates
        with Router(["openai"], ENG) as router:
            doc = router.run_source(image_source(text_pdf(2), "two.pdf", dpi=100))
        assert [p.engine for p in doc.pages] == ["openai", "openai"] and "Page 2" in doc.pages[1].text
        engine.close()


def test_a_remote_that_comes_up_later_is_used_by_a_long_running_server(remote_env, tmp_path) -> None:
    """The router gives an unreachable engine up; the server must not keep that verdict forever."""
    pytest.importorskip("tesserocr")
    port = free_port()
    remote_env(f"http://127.0.0.1:{port}", retries="0")
    front = ServerSettings(engine="tesseract", languages=("eng",), job_dir=tmp_path / "front")
    back = ServerSettings(engine="tesseract", languages=("eng",), job_dir=tmp_path / "back", warm_up=False)
    files = {"file": ("p.png", text_png())}
    with running_server(front) as url:
        down = DocumentResult.model_validate_json(
            httpx.post(f"{url}/v1/ocr", files=files, data={"engine": "openai"}, timeout=30).content
        )
        assert down.pages[0].status == PageStatus.FAILED and "ConnectError" in down.pages[0].errors[0]
        with running_server(back, port=port):
            up = DocumentResult.model_validate_json(
                httpx.post(f"{url}/v1/ocr", files=files, data={"engine": "openai"}, timeout=30).content
            )
    assert up.pages[0].engine == "openai" and "quick brown fox" in up.pages[0].text


def test_server_going_away_mid_document(remote_env, tmp_path) -> None:
    pytest.importorskip("tesserocr")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = spawn_server(port, tmp_path, "--lang", "eng")
    try:
        wait_ready(url, 60, server)
        remote_env(url, retries="2")

        def kill_after_first(page: Page, _result: object) -> None:
            if page.number == 1:
                stop(server)

        with Router(["openai", "tesseract"], ENG) as router:
            doc = router.run_source(image_source(text_pdf(3), "book.pdf", dpi=100), on_page=kill_after_first)
    finally:
        stop(server)
    first, *rest = doc.pages
    assert first.engine == "openai" and first.status == PageStatus.OK
    for page in rest:  # the remote is gone: each later page records why, and the next engine reads it
        remote, local = page.attempts
        assert remote.engine == "openai" and remote.outcome == Outcome.ERROR
        assert "failed after 3 attempt(s)" in remote.error and "ConnectError" in remote.error
        assert local.engine == "tesseract" and local.outcome == Outcome.OK
        assert page.engine == "tesseract" and f"Page {page.page}" in page.text


class _FakeVllm(BaseHTTPRequestHandler):
    """A stand-in for `vllm serve`: answers from a script, records what it was sent."""

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, None)
        elif self.path == "/v1/models":
            self._send(200, {"object": "list", "data": self.server.models})
        else:
            self._send(404, {"detail": "Not Found"})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append((body, dict(self.headers)))
        status, reply, delay = self.server.script.pop(0) if self.server.script else (200, _reply("ok"), 0)
        time.sleep(delay)
        self._send(status, reply)


def _reply(content: str, finish: str = "stop", prompt_tokens: int = 1200, completion_tokens: int = 30) -> dict:
    return {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that timed out and left makes the late answer fail to send; that is expected."""


@pytest.fixture
def fake_vllm() -> Iterator[ThreadingHTTPServer]:
    server = _QuietServer(("127.0.0.1", 0), _FakeVllm)
    server.models = [{"id": "model", "object": "model", "root": "/weights/rednote-hilab/dots.ocr"}]
    server.requests, server.script = [], []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield server
    server.shutdown()
    server.server_close()
    thread.join(10)


def _page(size: tuple[int, int] = (1000, 700)) -> Page:
    return Page(image=text_image(size=size), number=1, source="page.png")


def _loaded(fake: ThreadingHTTPServer, remote_env, **extra: str) -> OpenAIServerEngine:
    remote_env(fake.url, **extra)
    engine = OpenAIServerEngine()
    engine.load(EnginePlan(generation={"temperature": 0.1}))
    return engine


def _sent_image_size(request: dict) -> tuple[int, int]:
    import base64
    import io

    from PIL import Image

    url = request["messages"][0]["content"][0]["image_url"]["url"]
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).size


def test_dots_on_vllm_layout_prompt_boxes_and_stop_reason(fake_vllm, remote_env) -> None:
    engine = _loaded(fake_vllm, remote_env, api_key="k1")
    assert (engine.protocol, engine.family, engine.model) == ("chat", "dots", "model")
    # the model answers in the pixels of the image it was sent (smart-resized to 1008 x 700)
    elements = [
        {"bbox": [0, 0, 504, 350], "category": "Title", "text": "# The quick brown fox"},
        {"bbox": [504, 350, 1008, 700], "category": "Text", "text": "jumps over"},
    ]
    fake_vllm.script.append((200, _reply(json.dumps(elements), "length", 900, 16384), 0))
    [result] = engine.recognize([_page()], Task(max_new_tokens=16384))
    body, headers = fake_vllm.requests[-1]
    text = body["messages"][0]["content"][1]["text"]
    assert text == DOTS_IMAGE_MARKER + PROMPTS[PromptMode.LAYOUT_ALL]
    assert headers["Authorization"] == "Bearer k1" and body["model"] == "model"
    assert body["max_tokens"] == 16384 and body["temperature"] == 0.1
    assert _sent_image_size(body) == (1008, 700)
    assert [b.bbox for b in result.blocks] == [(0.0, 0.0, 500.0, 350.0), (500.0, 350.0, 1000.0, 700.0)]
    assert result.blocks[0].category == "Title" and "quick brown fox" in result.text
    assert result.generation.stop_reason == "max_tokens" and result.generation.generated_tokens == 16384
    assert result.generation.prompt_tokens == 900


def test_dots_truncated_answer_is_partial_and_text_task_uses_the_ocr_prompt(fake_vllm, remote_env) -> None:
    engine = _loaded(fake_vllm, remote_env)
    cut = '[{"bbox": [1, 1, 100, 50], "category": "Text", "text": "kept"}, {"bbox": [1, 60, 1'
    fake_vllm.script.append((200, _reply(cut, "length"), 0))
    [partial] = engine.recognize([_page()], Task())
    assert partial.status == PageStatus.PARTIAL and [b.text for b in partial.blocks] == ["kept"]
    assert any("truncated" in problem for problem in partial.errors)

    fake_vllm.script.append((200, _reply("The quick brown fox", "stop"), 0))
    [plain] = engine.recognize([_page()], Task(kind=TaskKind.TEXT))
    assert fake_vllm.requests[-1][0]["messages"][0]["content"][1]["text"] == DOTS_IMAGE_MARKER + PROMPTS[PromptMode.OCR]
    assert plain.text == "The quick brown fox" and plain.generation.stop_reason == "eos"

    fake_vllm.script.append((200, _reply("jumps over"), 0))
    engine.recognize([_page()], Task(kind=TaskKind.REGION, region=(100.0, 70.0, 600.0, 140.0)))
    prompt = fake_vllm.requests[-1][0]["messages"][0]["content"][1]["text"]
    assert prompt == DOTS_IMAGE_MARKER + PROMPTS[PromptMode.GROUNDING_OCR] + "[101, 70, 605, 140]"


def test_qwen_on_vllm_gets_a_plain_instruction(fake_vllm, remote_env) -> None:
    fake_vllm.models = [{"id": "Qwen2-VL-2B-Instruct", "root": "Qwen/Qwen2-VL-2B-Instruct"}]
    engine = _loaded(fake_vllm, remote_env, model="Qwen/Qwen2-VL-2B-Instruct")
    assert engine.family == "generic" and engine.model == "Qwen2-VL-2B-Instruct"
    fake_vllm.script.append((200, _reply("# Title\n\nbody"), 0))
    [result] = engine.recognize([_page()], Task())
    text = fake_vllm.requests[-1][0]["messages"][0]["content"][1]["text"]
    assert DOTS_IMAGE_MARKER not in text and "Markdown" in text
    assert result.markdown == "# Title\n\nbody" and _sent_image_size(fake_vllm.requests[-1][0]) == (1000, 700)
    with pytest.raises(EngineError, match="layout_only"):
        engine.recognize([_page()], Task(kind=TaskKind.LAYOUT_ONLY))


def test_model_not_served_is_unavailable_with_the_served_names(fake_vllm, remote_env) -> None:
    remote_env(fake_vllm.url, model="other-model")
    with pytest.raises(EngineUnavailable, match=r"'other-model' is not served .*served: model"):
        OpenAIServerEngine().load(EnginePlan())


def test_retries_5xx_then_succeeds_but_not_4xx(fake_vllm, remote_env) -> None:
    engine = _loaded(fake_vllm, remote_env, retries="3")
    fake_vllm.script += [(503, {"error": {"message": "warming up"}}, 0), (500, None, 0), (200, _reply("fine"), 0)]
    [result] = engine.recognize([_page()], Task(kind=TaskKind.TEXT))
    assert result.text == "fine" and len(fake_vllm.requests) == 3

    fake_vllm.requests.clear()
    fake_vllm.script += [(400, {"error": {"message": "max_tokens is too large"}}, 0)]
    with pytest.raises(EngineError, match="HTTP 400: max_tokens is too large"):
        engine.recognize([_page()], Task(kind=TaskKind.TEXT))
    assert len(fake_vllm.requests) == 1

    fake_vllm.script += [(502, None, 0)] * 4
    with pytest.raises(EngineError, match=r"failed after 4 attempt\(s\): HTTP 502"):
        engine.recognize([_page()], Task(kind=TaskKind.TEXT))


def test_a_hung_server_times_out(fake_vllm, remote_env) -> None:
    engine = _loaded(fake_vllm, remote_env, timeout="0.3")
    fake_vllm.script.append((200, _reply("late"), 1.5))
    with pytest.raises(EngineError, match=r"no answer within 0.3 s"):
        engine.recognize([_page()], Task(kind=TaskKind.TEXT))
    fake_vllm.script.append((200, _reply("late"), 1.0))
    with pytest.raises(EngineError, match=r"no answer within 0.2 s"):
        engine.recognize([_page()], Task(kind=TaskKind.TEXT, timeout=0.2))  # the task's own limit wins


@pytest.mark.parametrize(
    ("served", "family"),
    [
        ({"id": "model", "root": "/weights/rednote-hilab/dots.ocr"}, "dots"),
        # dots.mocr speaks dots.ocr's protocol (the same marker, prompts, resize and layout JSON)
        ({"id": "rednote-hilab/dots.mocr", "root": "rednote-hilab/dots.mocr"}, "dots"),
        ({"id": "model", "root": "./weights/DotsMOCR"}, "dots"),  # the authors' download and launch scripts
        ({"id": "dots.mocr-svg", "root": "rednote-hilab/dots.mocr-svg"}, "dots"),
        ({"id": "model", "root": "./weights/DotsOCR"}, "dots"),
        # a "dots" that is not dots.ocr: a general VLM that knows none of its prompts
        ({"id": "dots.vlm1.inst", "root": "dots-studio/dots.vlm1.inst"}, "generic"),
        ({"id": "polkadots-vl", "root": "/models/polkadots-vl"}, "generic"),
    ],
)
def test_dots_protocol_is_recognised_by_the_ocr_models_names(fake_vllm, remote_env, served: dict, family: str) -> None:
    fake_vllm.models = [{"object": "model", **served}]
    engine = _loaded(fake_vllm, remote_env)
    assert engine.family == family
    fake_vllm.script.append((200, _reply("The quick brown fox", "stop"), 0))
    engine.recognize([_page()], Task(kind=TaskKind.TEXT))
    text = fake_vllm.requests[-1][0]["messages"][0]["content"][1]["text"]
    assert (text == DOTS_IMAGE_MARKER + PROMPTS[PromptMode.OCR]) == (family == "dots")
