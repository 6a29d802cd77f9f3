"""Every limit of the server, on real servers: size, pages, pixels, auth, CORS, queue and timeout."""

from __future__ import annotations

import io
import threading

import httpx
import pytest

from conftest import SAMPLE_PDF
from polyocr.config import ServerSettings, server_settings
from polyocr.results import DocumentResult
from test_server_support import running_server, text_pdf, text_png, wait_until

pytest.importorskip("tesserocr")

KEY = "s3cret-token"
ORIGIN = "https://app.example"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Small caps, an API key and one CORS origin."""
    settings = ServerSettings(
        engine="tesseract",
        languages=("eng",),
        max_request_bytes=200_000,
        max_pages=2,
        max_pixels=400_000,
        api_key=KEY,
        cors_origins=(ORIGIN,),
        job_dir=tmp_path_factory.mktemp("jobs"),
    )
    with running_server(settings) as url:
        yield url


@pytest.fixture(scope="module")
def narrow(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One worker, no queue, a short timeout, defaults otherwise (CORS off)."""
    settings = ServerSettings(
        engine="tesseract",
        languages=("eng",),
        workers=1,
        queue_size=0,
        request_timeout=0.5,
        job_dir=tmp_path_factory.mktemp("jobs"),
    )
    with running_server(settings) as url:
        yield url


def _status(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    return response.json()["error"]["message"]


def test_body_over_the_cap_is_refused_by_length_and_by_stream(guarded: str) -> None:
    big = b"\x89PNG\r\n\x1a\n" + b"\x00" * 300_000
    message = _status(httpx.post(f"{guarded}/v1/ocr", files={"file": ("big.png", big)}, headers=AUTH), 413)
    assert "200,000 bytes" in message

    def chunks():
        for _ in range(40):
            yield b"\x00" * 10_000

    streamed = httpx.post(f"{guarded}/v1/ocr", content=chunks(), headers={**AUTH, "content-type": "application/json"})
    assert "over the limit" in _status(streamed, 413)
    assert httpx.get(f"{guarded}/health").status_code == 200


def test_page_and_pixel_caps(guarded: str) -> None:
    pages = _status(httpx.post(f"{guarded}/v1/ocr", files={"file": ("three.pdf", text_pdf(3))}, headers=AUTH), 413)
    assert "three.pdf" in pages and "3 pages" in pages and "limit of 2" in pages
    jobs = _status(httpx.post(f"{guarded}/v1/jobs", files={"file": ("three.pdf", text_pdf(3))}, headers=AUTH), 413)
    assert "limit of 2" in jobs
    wide = text_png(size=(1000, 500))
    pixels = _status(httpx.post(f"{guarded}/v1/ocr", files={"file": ("wide.png", wide)}, headers=AUTH), 413)
    assert "1000x500" in pixels and "400,000" in pixels
    # a PDF page is measured when it is rendered (200 DPI here: 1778x694)
    pdf_page = _status(httpx.post(f"{guarded}/v1/ocr", files={"file": ("two.pdf", text_pdf(2))}, headers=AUTH), 413)
    assert "two.pdf page 1" in pdf_page and "400,000" in pdf_page
    assert httpx.post(f"{guarded}/v1/ocr", files={"file": ("ok.png", text_png())}, headers=AUTH).status_code == 200


def test_bearer_key_guards_v1_but_not_health(guarded: str) -> None:
    png = text_png()
    missing = httpx.post(f"{guarded}/v1/ocr", files={"file": ("p.png", png)})
    assert "API key" in _status(missing, 401) and missing.headers["www-authenticate"] == "Bearer"
    _status(httpx.get(f"{guarded}/v1/engines", headers={"Authorization": "Bearer wrong"}), 401)
    _status(httpx.get(f"{guarded}/v1/engines", headers={"Authorization": KEY}), 401)
    assert httpx.get(f"{guarded}/v1/engines", headers=AUTH).status_code == 200
    assert httpx.get(f"{guarded}/health").status_code == 200 and httpx.get(f"{guarded}/ready").status_code == 200


def test_cors_only_for_configured_origins(guarded: str, narrow: str) -> None:
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    allowed = httpx.options(f"{guarded}/v1/ocr", headers=preflight)
    assert allowed.headers.get("access-control-allow-origin") == ORIGIN
    other = httpx.options(f"{guarded}/v1/ocr", headers={**preflight, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in other.headers
    off = httpx.options(f"{narrow}/v1/ocr", headers=preflight)
    assert "access-control-allow-origin" not in off.headers
    assert "access-control-allow-origin" not in httpx.get(f"{narrow}/health", headers={"Origin": ORIGIN}).headers


def test_full_queue_gets_429_and_a_slow_request_504_until_its_work_ends(narrow: str) -> None:
    lines = tuple(f"line {i} the quick brown fox jumps over the lazy dog" for i in range(40))
    slow = text_png(lines, (1400, 2000))  # about 2 s of Tesseract on this machine
    answers: list[httpx.Response] = []
    first = threading.Thread(
        target=lambda: answers.append(httpx.post(f"{narrow}/v1/ocr", files={"file": ("slow.png", slow)}, timeout=30))
    )
    first.start()
    wait_until(lambda: httpx.get(f"{narrow}/ready").json()["requests"] == 1, 10, 0.02, "the slow request to start")
    assert httpx.get(f"{narrow}/health", timeout=5).status_code == 200  # the event loop is not blocked by OCR
    busy = httpx.post(f"{narrow}/v1/ocr", files={"file": ("p.png", text_png())}, timeout=30)
    assert "busy" in _status(busy, 429) and busy.headers["retry-after"] == "1"
    first.join(30)
    assert "0.5 s request timeout" in _status(answers[0], 504)
    # the slot stays taken until the page in the worker ends; then requests are served again
    after = wait_until(
        lambda: (
            (r := httpx.post(f"{narrow}/v1/ocr", files={"file": ("p.png", text_png())}, timeout=30)).status_code == 200
            and r
        ),
        20,
        0.3,
        "a free worker",
    )
    # the router gave Tesseract up after the slow page overran the page timeout; the server did not
    page = DocumentResult.model_validate_json(after.content).pages[0]
    assert page.engine == "tesseract" and "quick brown fox" in page.text


def test_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYOCR_API_KEY", "from-env")
    assert server_settings().api_key == "from-env" and server_settings(api_key="given").api_key == "given"
    assert ServerSettings().api_key is None  # the environment is read by polyocr.config, once


def test_binds_loopback_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POLYOCR_API_KEY", raising=False)
    assert ServerSettings().host == "127.0.0.1" and ServerSettings().is_loopback
    assert ServerSettings().cors_origins == () and ServerSettings().api_key is None
    with pytest.raises(ValueError, match="workers"):
        ServerSettings(workers=0)


def test_not_ready_while_the_default_chain_cannot_load(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.delenv("POLYOCR_OPENAI_URL", raising=False)
    with running_server(ServerSettings(engine="openai", job_dir=tmp_path), ready=False) as url:
        reply = wait_until(
            lambda: (r := httpx.get(f"{url}/ready")).json().get("reason", "").startswith("no engine") and r,
            20,
            0.05,
            "the warm-up to finish",
        )
        assert reply.status_code == 503 and "POLYOCR_OPENAI_URL is not set" in reply.json()["reason"]
        assert httpx.get(f"{url}/health").status_code == 200


def test_the_router_config_file_applies_to_the_server(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    config = tmp_path / "polyocr.toml"
    config.write_text('[router]\nengines = ["rapidocr", "tesseract"]\n')
    monkeypatch.setenv("POLYOCR_CONFIG", str(config))
    with running_server(ServerSettings(job_dir=tmp_path, warm_up=False), ready=False) as url:
        assert httpx.get(f"{url}/v1/engines").json()["default"] == ["rapidocr", "tesseract"]
    with running_server(ServerSettings(engine="tesseract", job_dir=tmp_path, warm_up=False), ready=False) as url:
        assert httpx.get(f"{url}/v1/engines").json()["default"] == ["tesseract"]  # --engine wins over the file


def test_a_worker_never_holds_two_copies_of_a_vlm(tmp_path) -> None:
    from polyocr.server.service import OCRService

    service = OCRService(ServerSettings(job_dir=tmp_path))
    try:
        first = service._router(("qwen2vl", "tesseract"))
        assert service._router(("qwen2vl", "tesseract")) is first  # kept and reused, whatever the task
        service._router(("qwen2vl",))  # another chain with the same model: the first router goes
        classical = service._router(("tesseract",))
        assert first not in service._routers and classical in service._routers
        assert len(service._routers) == 2
    finally:
        service.close()


def test_one_router_serves_every_task_with_the_engines_it_loaded(tmp_path) -> None:
    from polyocr.documents import load_pages
    from polyocr.server.service import OCRParams, OCRService
    from polyocr.types import TaskKind

    service = OCRService(ServerSettings(job_dir=tmp_path))
    page = load_pages(SAMPLE_PDF)[1].image.crop((0, 0, 1280, 330))
    buffer = io.BytesIO()
    page.save(buffer, "PNG")
    try:
        russian = service.recognize(buffer.getvalue(), "ru.png", OCRParams(("tesseract",), TaskKind.TEXT, ("rus",)))
        layout = service.recognize(buffer.getvalue(), "ru.png", OCRParams(("tesseract",), TaskKind.LAYOUT_ONLY))
        assert "заметка" in russian.pages[0].text
        assert layout.pages[0].blocks and not layout.pages[0].text  # layout only: boxes, no text
        assert len(service._routers) == 1
    finally:
        service.close()


@pytest.mark.parametrize(("args", "needle"), [(["--workers", "0"], "workers"), (["--engine", "nosuch"], "nosuch")])
def test_serve_refuses_bad_settings_before_listening(tmp_path, args: list[str], needle: str) -> None:
    from typer.testing import CliRunner

    from polyocr.cli import app

    result = CliRunner().invoke(app, ["serve", "--job-dir", str(tmp_path), "--port", "1", *args])
    assert result.exit_code == 2 and needle in result.output
