"""The HTTP server, for real: uvicorn on a loopback port, Tesseract behind it, driven with httpx."""

from __future__ import annotations

import base64
import io
import json
import threading

import httpx
import pytest

from polyocr.config import ServerSettings
from polyocr.engines.dots.prompts import PROMPTS, PromptMode
from polyocr.engines.openai_server import DOTS_IMAGE_MARKER
from polyocr.results import DocumentResult
from test_server_support import encode, running_server, text_image, text_pdf, text_png, wait_until

pytest.importorskip("tesserocr")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> str:
    settings = ServerSettings(
        engine="tesseract", languages=("eng",), workers=2, queue_size=16, job_dir=tmp_path_factory.mktemp("jobs")
    )
    with running_server(settings) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> httpx.Client:
    with httpx.Client(base_url=server, timeout=60) as c:
        yield c


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()["error"]
    assert body["code"] == status and body["message"]
    return body["message"]


def test_health_ready_engines_models_docs(client: httpx.Client) -> None:
    assert client.get("/health").json()["service"] == "polyocr"
    ready = client.get("/ready").json()
    assert ready["ready"] is True and ready["engines"] == ["tesseract"] and ready["capacity"] == 18
    engines = client.get("/v1/engines").json()
    assert engines["default"] == ["tesseract"]
    rows = {row["name"]: row for row in engines["engines"]}
    assert rows["tesseract"]["available"] is True and rows["openai"]["kind"] == "remote"
    assert "tesseract" in [m["id"] for m in client.get("/v1/models").json()["data"]]
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {
        "/v1/ocr",
        "/v1/jobs",
        "/v1/jobs/{job_id}",
        "/v1/jobs/{job_id}/result",
        "/v1/chat/completions",
        "/health",
        "/ready",
        "/v1/engines",
    } <= set(paths)
    assert "multipart/form-data" in paths["/v1/ocr"]["post"]["requestBody"]["content"]


def test_ocr_multipart_json_and_rendered_formats(client: httpx.Client) -> None:
    png = text_png()
    response = client.post("/v1/ocr", files={"file": ("page.png", png)}, data={"language": "eng"})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    doc = DocumentResult.model_validate_json(response.content)
    assert doc.source == "page.png" and doc.pages[0].engine == "tesseract"
    assert "quick brown fox" in doc.pages[0].text and doc.pages[0].blocks[0].bbox is not None
    assert response.headers["x-polyocr-failed-pages"] == "0"

    text = client.post("/v1/ocr", files={"file": ("p.png", png)}, data={"format": "txt"})
    assert text.headers["content-type"].startswith("text/plain") and "lazy dog" in text.text
    md = client.post("/v1/ocr?format=markdown", files={"file": ("p.png", png)})
    assert md.headers["content-type"].startswith("text/markdown") and "Invoice 4217" in md.text

    payload = {"file": base64.b64encode(png).decode(), "filename": "b64.png", "task": "text", "format": "json"}
    doc = DocumentResult.model_validate_json(client.post("/v1/ocr", json=payload).content)
    assert doc.source == "b64.png" and "quick brown fox" in doc.text
    data_url = {"file": "data:image/png;base64," + base64.b64encode(png).decode()}
    assert client.post("/v1/ocr", json=data_url).status_code == 200


def test_a_page_no_engine_could_read_is_reported_not_hidden(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POLYOCR_OPENAI_URL", raising=False)
    response = client.post("/v1/ocr", files={"file": ("p.png", text_png())}, data={"engine": "openai"})
    assert response.status_code == 200 and response.headers["x-polyocr-failed-pages"] == "1"
    page = DocumentResult.model_validate_json(response.content).pages[0]
    assert page.status == "failed" and "POLYOCR_OPENAI_URL is not set" in page.errors[0]


def test_content_is_recognised_by_bytes_not_by_name(client: httpx.Client) -> None:
    jpeg = encode(text_image(), "JPEG")
    assert client.post("/v1/ocr", files={"file": ("notes.txt", jpeg, "text/plain")}).status_code == 200
    pdf = text_pdf(2)
    doc = DocumentResult.model_validate_json(client.post("/v1/ocr", files={"file": ("scan.bin", pdf)}).content)
    assert [p.page for p in doc.pages] == [1, 2] and "Page 2" in doc.pages[1].text
    message = _error(client.post("/v1/ocr", files={"file": ("page.png", b"\x00\x00\x01\x00 an icon")}), 415)
    assert "page.png" in message and "recognised by content" in message


def test_ocr_answers_a_searchable_pdf(client: httpx.Client) -> None:
    """format=pdf: an image comes back as a PDF of its page with the text layer; a PDF keeps its own
    page objects (content streams unchanged) with the layer added; the extracted text is the OCR's."""
    import hashlib

    import pikepdf

    from pdf_samples import normalise, pdf_text

    png = text_png()
    answer = client.post("/v1/ocr", files={"file": ("p.png", png)}, data={"format": "pdf", "task": "text"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/pdf" and answer.headers["x-polyocr-pages"] == "1"
    doc = DocumentResult.model_validate_json(client.post("/v1/ocr", files={"file": ("p.png", png)}).content)
    assert normalise(pdf_text(answer.content)) == normalise(doc.pages[0].text)

    scan = text_pdf(2)

    def streams(data: bytes) -> list[str]:
        with pikepdf.open(io.BytesIO(data)) as pdf:
            return [hashlib.sha256(page.Contents.read_bytes()).hexdigest() for page in pdf.pages]

    answer = client.post("/v1/ocr", files={"file": ("scan.pdf", scan)}, data={"format": "pdf"})
    assert answer.status_code == 200, answer.text
    with pikepdf.open(io.BytesIO(answer.content)) as pdf:
        assert len(pdf.pages) == 2
        kept = [hashlib.sha256(page.Contents[1].read_bytes()).hexdigest() for page in pdf.pages]
    assert kept == streams(scan)  # the original content stream, bracketed by polyocr's q/Q and layer
    assert "Page 2" in pdf_text(answer.content, 1)
    message = _error(client.get("/v1/jobs/nope/result", params={"format": "pdf"}), 400)
    assert "POST /v1/ocr with format=pdf" in message


@pytest.mark.parametrize(
    ("request_kwargs", "status", "needle"),
    [
        ({"files": {"file": ("empty.png", b"")}}, 400, "empty"),
        ({"files": {"file": ("bad.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)}}, 422, "bad.png"),
        ({"files": {"other": ("x.png", b"x")}}, 400, "'file'"),
        ({"content": b"raw bytes", "headers": {"content-type": "application/octet-stream"}}, 415, "multipart"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "not JSON"),
        ({"json": ["a list"]}, 400, "'file'"),
        ({"json": {"file": "@@@ not base64 @@@"}}, 400, "base64"),
        ({"files": {"file": ("p.png", text_png())}, "data": {"engine": "nosuch"}}, 400, "nosuch"),
        ({"files": {"file": ("p.png", text_png())}, "data": {"task": "poetry"}}, 400, "poetry"),
        ({"files": {"file": ("p.png", text_png())}, "data": {"format": "docx"}}, 400, "docx"),
        ({"files": {"file": ("p.png", text_png())}, "data": {"language": "eng;rm -rf"}}, 400, "language"),
    ],
)
def test_bad_input_gets_a_4xx_json_error(client: httpx.Client, request_kwargs: dict, status: int, needle: str) -> None:
    assert needle in _error(client.post("/v1/ocr", **request_kwargs), status)


def test_unknown_routes_and_methods_are_json_errors(client: httpx.Client) -> None:
    _error(client.get("/v1/nothing"), 404)
    _error(client.get("/v1/ocr"), 405)
    assert "job" in _error(client.get("/v1/jobs/unknown"), 404)
    assert client.get("/health").status_code == 200


def test_concurrent_clients_all_get_their_own_page(client: httpx.Client, server: str) -> None:
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot"]
    results: dict[str, str] = {}

    def one(word: str) -> None:
        with httpx.Client(base_url=server, timeout=60) as own:
            response = own.post(
                "/v1/ocr",
                files={"file": (f"{word}.png", text_png((f"word {word}",), (400, 80)))},
                data={"format": "txt"},
            )
            results[word] = f"{response.status_code} {response.text}"

    threads = [threading.Thread(target=one, args=(w,)) for w in words]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(results[w].startswith("200") and w in results[w] for w in words), results


def _chat(client: httpx.Client, image: bytes, text: str, **extra) -> httpx.Response:
    content = [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(image).decode()}},
        {"type": "text", "text": text},
    ]
    return client.post(
        "/v1/chat/completions",
        json={
            "model": "model",
            "messages": [{"role": "system", "content": "You are helpful."}, {"role": "user", "content": content}],
            **extra,
        },
    )


def test_chat_answers_dots_clients_in_dots_form(client: httpx.Client) -> None:
    png = text_png()
    layout = _chat(
        client,
        png,
        DOTS_IMAGE_MARKER + PROMPTS[PromptMode.LAYOUT_ALL],
        temperature=0.1,
        top_p=0.9,
        max_completion_tokens=32768,
    )
    assert layout.status_code == 200, layout.text
    body = layout.json()
    assert body["object"] == "chat.completion" and body["choices"][0]["finish_reason"] == "stop"
    elements = json.loads(body["choices"][0]["message"]["content"])
    assert elements and all(set(e) == {"bbox", "category", "text"} for e in elements)
    assert all(0 <= e["bbox"][0] < e["bbox"][2] <= 640 for e in elements)
    assert "quick brown fox" in " ".join(e["text"] for e in elements)

    only = json.loads(
        _chat(client, png, DOTS_IMAGE_MARKER + PROMPTS[PromptMode.LAYOUT_ONLY]).json()["choices"][0]["message"][
            "content"
        ]
    )
    assert only and all("text" not in e for e in only)
    text = _chat(client, png, DOTS_IMAGE_MARKER + PROMPTS[PromptMode.OCR]).json()["choices"][0]["message"]["content"]
    assert "lazy dog" in text and not text.startswith("[")

    # grounding: the second line's box, in the pixels of the image sent
    box = "[0, 60, 640, 110]"
    grounded = _chat(client, png, DOTS_IMAGE_MARKER + PROMPTS[PromptMode.GROUNDING_OCR] + box).json()
    answer = grounded["choices"][0]["message"]["content"]
    assert "lazy dog" in answer and "Invoice" not in answer

    free = _chat(client, png, "What does this page say?").json()["choices"][0]["message"]["content"]
    assert "Invoice 4217" in free


def test_chat_model_names_an_engine_or_falls_back_to_the_default(client: httpx.Client) -> None:
    png = text_png()
    content = [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(png).decode()}},
        {"type": "text", "text": PROMPTS[PromptMode.OCR]},
    ]
    response = client.post(
        "/v1/chat/completions", json={"model": "tesseract", "messages": [{"role": "user", "content": content}]}
    )
    assert response.json()["model"] == "tesseract" and response.json()["polyocr"]["engine"] == "tesseract"


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "user", "content": "no image here"}]}, "exactly one image"),
        (
            {
                "messages": [
                    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]}
                ]
            },
            "data: URL",
        ),
        (
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}],
                    }
                ]
            },
            "base64",
        ),
        ({"messages": [{"role": "user", "content": [{"type": "audio"}]}]}, "audio"),
        ({"stream": True, "messages": [{"role": "user", "content": "x"}]}, "stream"),
        ({"messages": [{"role": "assistant", "content": "x"}]}, "user"),
    ],
)
def test_chat_bad_requests(client: httpx.Client, body: dict, needle: str) -> None:
    assert needle in _error(client.post("/v1/chat/completions", json=body), 400)


def test_chat_refuses_multi_page_and_non_images(client: httpx.Client) -> None:
    pdf = base64.b64encode(text_pdf(2)).decode()
    response = client.post(
        "/v1/chat/completions",
        json={
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": f"data:application/pdf;base64,{pdf}"}}],
                }
            ]
        },
    )
    assert "one page" in _error(response, 422)
    text = base64.b64encode(b"plain text").decode()
    response = client.post(
        "/v1/chat/completions",
        json={
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": f"data:image/png;base64,{text}"}}],
                }
            ]
        },
    )
    _error(response, 415)


def test_jobs_run_and_report_progress(client: httpx.Client) -> None:
    submitted = client.post("/v1/jobs", files={"file": ("book.pdf", text_pdf(3))}, data={"language": "eng"})
    assert submitted.status_code == 202, submitted.text
    job = submitted.json()
    assert job["status"] in ("queued", "running") and job["page_count"] == 3
    status = wait_until(lambda: (s := client.get(job["url"]).json())["status"] == "done" and s, 60, 0.1, "job done")
    assert status["pages_done"] == 3 and status["progress"] == 1.0
    md = client.get(job["result_url"], params={"format": "md"})
    assert md.status_code == 200 and "Page 3" in md.text
    doc = DocumentResult.model_validate_json(client.get(job["result_url"]).content)
    assert [p.page for p in doc.pages] == [1, 2, 3]
    _error(client.get(job["result_url"], params={"format": "pdf"}), 400)


def test_job_refused_at_submission_when_input_is_bad(client: httpx.Client) -> None:
    assert "bad.png" in _error(client.post("/v1/jobs", files={"file": ("bad.png", b"\x89PNG\r\n\x1a\nxx")}), 422)
    _error(client.post("/v1/jobs", files={"file": ("x", b"hello")}), 415)


# ---------------------------------------------------------------------------- dots.mocr's prompt modes


def _ask(text: str):
    from polyocr.server.chat import parse_chat

    url = "data:image/png;base64," + base64.b64encode(text_png()).decode()
    image = {"type": "image_url", "image_url": {"url": url}}
    return parse_chat({"messages": [{"role": "user", "content": [image, {"type": "text", "text": text}]}]})


def test_every_dots_prompt_mode_is_recognised_from_the_prompts_table() -> None:
    """Each mode of prompts.py, as the authors' client sends it (prompt_text after the image marker),
    maps to the task prompts.MODE_TASKS gives and the answer prompts.MODE_OUTPUTS gives."""
    from polyocr.engines.dots.prompts import MODE_OUTPUTS, MODE_TASKS, prompt_text
    from polyocr.types import TaskKind

    for mode in PromptMode:
        ask = _ask(DOTS_IMAGE_MARKER + prompt_text(mode, box=[0, 60, 640, 110], size=(640, 200)))
        assert ask.answer == MODE_OUTPUTS[mode], mode
        if mode == PromptMode.GROUNDING_OCR:  # any engine answers a box as the text of its crop
            assert (ask.task, ask.region) == (TaskKind.TEXT, (0.0, 60.0, 640.0, 110.0))
        else:
            assert (ask.task, ask.region) == (MODE_TASKS[mode], None), mode
    # Not a mode: a paraphrase, or the SVG prompt with its viewBox left unfilled, gets Markdown.
    assert _ask("Parse this webpage.").answer == "markdown"
    assert _ask(PROMPTS[PromptMode.IMAGE_TO_SVG]).answer == "markdown"


def test_chat_answers_dots_mocr_prompts_in_dots_mocr_form(client: httpx.Client) -> None:
    from polyocr.engines.dots.layout import parse_scene_text
    from polyocr.engines.dots.prompts import prompt_text

    png = text_png()
    web = _chat(client, png, DOTS_IMAGE_MARKER + PROMPTS[PromptMode.WEB_PARSING])
    assert web.status_code == 200, web.text
    elements = json.loads(web.json()["choices"][0]["message"]["content"])
    assert elements and all(set(e) == {"bbox", "category", "text"} for e in elements)
    assert "quick brown fox" in " ".join(e["text"] for e in elements)

    scene = _chat(client, png, DOTS_IMAGE_MARKER + PROMPTS[PromptMode.SCENE_SPOTTING])
    assert scene.status_code == 200, scene.text
    # the authors' own reading of the answer (dots.mocr's parse_scene_text_output, as polyocr ports it)
    instances = parse_scene_text(scene.json()["choices"][0]["message"]["content"])
    assert instances and "lazy dog" in " ".join(text for _, text in instances)
    for points, _ in instances:
        xs, ys = points[0::2], points[1::2]
        assert 0 <= min(xs) < max(xs) <= 640 and 0 <= min(ys) < max(ys) <= 200
        assert (points[0], points[1]) == (min(xs), min(ys)) and (points[4], points[5]) == (max(xs), max(ys))

    # No engine of this server draws SVG: refused before any engine runs, with the fix.
    svg = _chat(client, png, DOTS_IMAGE_MARKER + prompt_text(PromptMode.IMAGE_TO_SVG, size=(640, 200)))
    message = _error(svg, 400)
    assert "image_to_svg" in message and "dots-mocr" in message and "tesseract" in message


def test_chat_svg_answer_is_the_drawn_svg() -> None:
    from polyocr.results import Block, PageResult, TextFormat
    from polyocr.server.chat import answer_text

    drawn = '<svg viewBox="0 0 10 10"><text>Hi</text></svg>'
    page = PageResult(
        page=1,
        markdown=drawn,
        text="Hi",
        blocks=[Block(bbox=(0, 0, 10, 10), category="Picture", text=drawn, format=TextFormat.HTML)],
    )
    assert answer_text(DocumentResult(source="x", pages=[page]), "svg") == drawn
    unparsed = PageResult(page=1, markdown="not an svg", text="not an svg")  # kept as the model wrote it
    assert answer_text(DocumentResult(source="x", pages=[unparsed]), "svg") == "not an svg"
