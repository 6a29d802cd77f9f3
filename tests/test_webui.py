"""The web page in a real browser: Debian's headless Chromium driven by Playwright, against the real
server on loopback with the Tesseract engine (and RapidOCR for the compare view).

Screenshots go to a temporary folder (printed with -s), or to $POLYOCR_UI_SCREENSHOTS when set:
`POLYOCR_UI_SCREENSHOTS=docs/img python -m pytest tests/test_webui.py` refreshes the README's.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from polyocr.config import ServerSettings
from polyocr.formats import FORMATS, render
from polyocr.results import DocumentResult
from polyocr.server.ui import compare_texts, page_view
from test_server_support import running_server, text_pdf, wait_until

pytest.importorskip("tesserocr")
playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).is_file():
    pytest.skip("Debian's chromium is not installed (make install adds it)", allow_module_level=True)

TIMEOUT_MS = 60_000
IMAGE_LOADED = "() => (img => img?.complete && img.naturalWidth > 0)(document.querySelector('#page-wrap img'))"


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("POLYOCR_UI_SCREENSHOTS") or tmp_path_factory.mktemp("webui-screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nweb page screenshots in {folder}")
    return folder


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = ServerSettings(
        engine="tesseract", languages=("eng",), job_dir=tmp_path_factory.mktemp("jobs"), warm_up=False
    )
    with running_server(settings) as url:
        yield url


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.ui_allowed = ()  # console messages a test expects (see the Markdown test)

    def console(message) -> None:
        if "Content Security Policy" in message.text and not any(a in message.text for a in page.ui_allowed):
            errors.append(message.text)

    page.on("console", console)
    yield page
    context.close()
    assert not errors, f"JavaScript errors or refused content on the page: {errors}"


def _open(page, url: str) -> None:
    page.goto(f"{url}/")
    page.wait_for_selector("#engine option", state="attached")


def _job_ids(page) -> list[str]:
    query = page.evaluate("location.search")
    return dict(p.split("=", 1) for p in query.lstrip("?").split("&"))["jobs"].replace("%2C", ",").split(",")


def _drawn_boxes(page, scope: str = "#page-wrap") -> list[tuple[float, float, float, float, str]]:
    return page.eval_on_selector_all(
        f"{scope} svg rect",
        "rects => rects.map(r => [+r.getAttribute('x'), +r.getAttribute('y'), +r.getAttribute('width'),"
        " +r.getAttribute('height'), r.dataset.category])",
    )


def _expected_boxes(doc: DocumentResult, number: int) -> list[tuple[float, float, float, float, str]]:
    blocks = doc.pages[number - 1].blocks
    return [(b.bbox[0], b.bbox[1], b.bbox[2] - b.bbox[0], b.bbox[3] - b.bbox[1], b.category) for b in blocks if b.bbox]


def _same_boxes(drawn, expected) -> bool:
    return len(drawn) == len(expected) and all(
        d[4] == e[4] and all(abs(a - b) < 1e-6 for a, b in zip(d[:4], e[:4], strict=True))
        for d, e in zip(drawn, expected, strict=True)
    )


def _words(text: str) -> str:
    return " ".join(text.split())


def test_upload_watch_look_download_and_come_back(server: str, page, eval_dir: Path, shots: Path, tmp_path: Path):
    pdf = tmp_path / "three-pages.pdf"
    pdf.write_bytes(text_pdf(3))
    _open(page, server)
    # Only engines that run here are offered; the others are listed with their reason.
    offered = page.eval_on_selector_all("#engine option", "options => options.map(o => o.value)")
    engines = httpx.get(f"{server}/v1/engines", timeout=60).json()["engines"]
    assert offered == ["", *[e["name"] for e in engines if e["available"]], "__chain"]
    page.click("#unavailable summary")
    for engine in (e for e in engines if not e["available"]):
        assert f"{engine['name']}: {engine['reason']}" in page.inner_text("#unavailable-list")
    page.click("#unavailable summary")
    page.set_input_files("#files", [str(eval_dir / "tesseract_test" / "phototest.tif"), str(pdf)])
    assert page.locator("#chosen li").count() == 2
    page.click("#submit")
    page.wait_for_selector("#page-wrap svg rect")  # the first document's page, drawn
    page.wait_for_function(
        "() => document.querySelectorAll('.job .state').length == 2 && "
        "[...document.querySelectorAll('.job .state')].every(e => e.textContent.startsWith('done'))"
    )
    photo_id, pdf_id = _job_ids(page)

    # The result as the API has it (read through the UI's endpoint, which keeps the upload).
    view = httpx.get(f"{server}/ui/api/jobs/{photo_id}/view", timeout=30).json()
    doc = DocumentResult.model_validate(view["result"])
    first = doc.pages[0]
    assert first.engine == "tesseract" and first.blocks

    # Every box with a bbox is drawn where the JSON says, over an image of the page's own size.
    assert _same_boxes(_drawn_boxes(page), _expected_boxes(doc, 1))
    assert page.get_attribute("#page-wrap svg", "viewBox") == f"0 0 {first.width} {first.height}"
    page.wait_for_function(IMAGE_LOADED)
    natural = page.evaluate(
        "[document.querySelector('#page-wrap img').naturalWidth,"
        " document.querySelector('#page-wrap img').naturalHeight]"
    )
    assert natural == [first.width, first.height]

    # The text is shown: the plain text in full, the Markdown rendered.
    assert _words(page.inner_text("#txt")) == _words(first.text)
    assert "quick brown dog" in page.inner_text("#md")
    assert page.locator("#strip button").count() == 1 and "tesseract" in page.inner_text("#strip")
    assert "tesseract" in page.inner_text("#attempts") and "ok" in page.inner_text("#attempts")

    # Hover shows a block's text, category, confidence and engine; click ties box and text together.
    box = page.locator("#page-wrap svg rect").first
    box.hover()
    tip = page.inner_text(".tip")
    block = first.blocks[0]
    assert block.category in tip and "tesseract" in tip and "confidence" in tip and block.text.split()[0] in tip
    box.click()
    assert page.locator('#txt [data-block="0"].selected').count() == 1
    assert page.locator('#md [data-block="0"].selected').count() == 1
    assert block.category in page.inner_text("#block-info")
    page.click("#block-info")  # and back: from the text to its box, by keyboard
    page.evaluate("document.querySelectorAll('.selected').forEach(e => e.classList.remove('selected'))")
    page.focus('#txt [data-block="0"]')
    page.keyboard.press("Enter")
    assert page.get_attribute('#page-wrap svg rect[data-block="0"]', "class").split().count("selected") == 1
    page.evaluate("document.querySelectorAll('.selected').forEach(e => e.classList.remove('selected'))")
    page.focus('#page-wrap svg rect[data-block="0"]')
    page.keyboard.press("Enter")
    assert page.locator('#txt [data-block="0"].selected').count() == 1
    page.mouse.move(0, 0)
    page.evaluate("document.activeElement.blur()")  # no tooltip in the picture
    page.screenshot(path=str(shots / "webui-page.png"), full_page=True)

    # Every format the server offers downloads, with the content the API renders.
    for fmt in FORMATS:
        with page.expect_download() as info:
            page.click(f'#downloads button[data-format="{fmt}"]')
        download = info.value
        assert download.suggested_filename == f"phototest.{fmt}"
        body = Path(download.path()).read_text(encoding="utf-8")
        if fmt == "json":
            assert DocumentResult.from_json(body) == doc
        else:
            assert body == render(doc, fmt)

    # The 3-page PDF: one strip entry per page with its engine; each page's own text.
    page.click(f'.job[data-job="{pdf_id}"] button')
    page.wait_for_selector('#strip button[data-page="3"]:not([disabled])')
    assert page.locator("#strip button.ok").count() == 3
    page.click('#strip button[data-page="3"]')
    page.wait_for_function("() => document.querySelector('#txt').innerText.includes('Page 3')")
    page.wait_for_selector('#page-wrap svg[aria-label$="page 3"]', state="attached")
    page.wait_for_function(IMAGE_LOADED)
    pdf_doc = DocumentResult.from_json(httpx.get(f"{server}/v1/jobs/{pdf_id}/result", timeout=30).content)
    assert _same_boxes(_drawn_boxes(page), _expected_boxes(pdf_doc, 3))
    assert "page=3" in page.url and f"job={pdf_id}" in page.url

    # Leave and come back: the URL alone brings the same job and page back.
    url = page.url
    page.goto("about:blank")
    page.goto(url)
    page.wait_for_function("() => document.querySelector('#txt')?.innerText.includes('Page 3')")
    page.wait_for_function(IMAGE_LOADED)  # drawn from the cache: the API's fetch above deleted the upload
    assert page.locator(".job").count() == 2
    assert page.locator('#strip button[aria-current="page"]').get_attribute("data-page") == "3"
    page.screenshot(path=str(shots / "webui-pdf.png"), full_page=True)

    # On a phone's width the page still shows its panes one under the other.
    page.set_viewport_size({"width": 390, "height": 844})
    widths = page.eval_on_selector_all(".panes > .pane", "panes => panes.map(p => p.getBoundingClientRect().width)")
    assert all(w <= 390 for w in widths)
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=str(shots / "webui-phone.png"))


def test_compare_two_engines_on_one_page(server: str, page, eval_dir: Path, shots: Path):
    pytest.importorskip("rapidocr")
    _open(page, server)
    page.set_input_files("#files", str(eval_dir / "tesseract_test" / "eurotext.tif"))
    page.click("#submit")
    page.wait_for_selector("#page-wrap svg rect")
    page.click("#tab-compare")
    assert "view=compare" in page.url
    page.select_option("#engine-a", "tesseract")
    page.select_option("#engine-b", "rapidocr")
    page.click("#compare-run")
    page.wait_for_selector("#compare-cer", timeout=120_000)
    cer = float(page.get_attribute("#compare-cer", "data-cer"))
    assert 0.0 <= cer < 0.5  # the same printed page: the two engines mostly agree
    assert "CER of rapidocr against tesseract" in page.inner_text("#compare-cer")
    figures = page.locator("#compare-out figure")
    assert figures.count() == 2
    assert page.locator('#compare-out figure[data-engine="tesseract"] rect').count() >= 1
    b_boxes = page.locator('#compare-out figure[data-engine="rapidocr"] rect')
    assert b_boxes.count() >= 1 and "b-set" in b_boxes.first.get_attribute("class")
    assert page.locator("#compare-out .diff").inner_text().strip()
    page.screenshot(path=str(shots / "webui-compare.png"), full_page=True)


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    settings = ServerSettings(
        engine="tesseract",
        languages=("eng",),
        job_dir=tmp_path_factory.mktemp("strict-jobs"),
        warm_up=False,
        api_key="s3cret-key",
        max_pages=2,
        max_request_bytes=300_000,
    )
    with running_server(settings) as url:
        yield url


def _alert(page, status: int) -> str:
    return page.inner_text(f'#alerts .alert[data-status="{status}"]')


def test_key_limits_and_bad_files_read_as_messages(strict_server: str, page, tmp_path: Path, shots: Path):
    page.goto(f"{strict_server}/")
    page.wait_for_selector("#key-dialog[open]")  # the server wants a key: the page asks first
    page.fill("#key-input", "wrong")
    page.click('#key-form button[value="save"]')
    assert "API key needed" in _alert(page, 401) and "missing or wrong API key" in _alert(page, 401)
    page.click("#key-button")
    page.fill("#key-input", "s3cret-key")
    page.click('#key-form button[value="save"]')
    page.wait_for_selector("#engine option", state="attached")
    assert page.evaluate("sessionStorage.getItem('polyocr-api-key')") == "s3cret-key"
    assert page.evaluate("localStorage.length") == 0

    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture of text\n")
    # Dropped files land in the list like picked ones.
    page.evaluate(
        """() => {
            const data = new DataTransfer();
            data.items.add(new File(['dropped'], 'dropped.txt', { type: 'text/plain' }));
            document.querySelector('#drop').dispatchEvent(new DragEvent('drop', { dataTransfer: data, bubbles: true }));
        }"""
    )
    assert page.inner_text("#chosen").startswith("dropped.txt")
    long_pdf = tmp_path / "long.pdf"
    long_pdf.write_bytes(text_pdf(3))
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * (300_000 - 200))  # under the cap, the request over it
    page.set_input_files("#files", [str(notes), str(long_pdf), str(big)])
    page.click("#submit")
    page.wait_for_selector(".job.failed >> nth=2")
    assert "Not a supported file" in _alert(page, 415) and "notes.txt" in _alert(page, 415)
    too_many, too_large = page.locator('#alerts .alert[data-status="413"]').all_inner_texts()
    assert "Too many pages" in too_many and "long.pdf" in too_many and "3 pages, over the limit of 2" in too_many
    assert "big.png" in too_large and "over the limit of 300,000 bytes" in too_large
    assert page.locator(".job.failed").count() == 3
    page.screenshot(path=str(shots / "webui-errors.png"), full_page=True)


def test_markdown_renders_tables_and_formulas_and_drops_scripts(server: str, page) -> None:
    _open(page, server)
    # DOMPurify's parse of the hostile <img> below makes Chromium report the inline handler that the
    # page's Content-Security-Policy refused: the second wall at work, expected here only.
    page.ui_allowed = ("inline event handler",)
    html = page.evaluate(
        """async () => {
            const { renderMarkdown } = await import('/ui/static/render.js');
            const source = '| a | b |\\n| --- | --- |\\n| 1 | 2 |\\n\\n$$\\\\frac{x^2}{2}$$ and $a_i$\\n\\n'
                + '<img src=x onerror="window.hacked=1"><script>window.hacked=1</script>';
            const box = document.createElement('div');
            box.innerHTML = renderMarkdown(source);
            document.body.append(box);
            return {
                cells: box.querySelectorAll('table td').length,
                math: [...box.querySelectorAll('math')].map(m => m.getAttribute('display') || 'inline'),
                frac: box.querySelectorAll('math mfrac').length,
                scripts: box.querySelectorAll('script').length,
                onerror: box.querySelector('img')?.hasAttribute('onerror') ?? false,
            };
        }"""
    )
    assert html == {"cells": 2, "math": ["block", "inline"], "frac": 1, "scripts": 0, "onerror": False}
    assert page.evaluate("window.hacked === undefined")


def test_a_full_queue_reads_as_busy(browser, tmp_path: Path, eval_dir: Path):
    settings = ServerSettings(engine="tesseract", languages=("eng",), job_dir=tmp_path, warm_up=False)
    settings.max_queued_jobs = 0
    with running_server(settings) as url:
        context = browser.new_context()
        page = context.new_page()
        page.set_default_timeout(TIMEOUT_MS)
        _open(page, url)
        page.set_input_files("#files", str(eval_dir / "tesseract_test" / "phototest.tif"))
        page.click("#submit")
        page.wait_for_selector('#alerts .alert[data-status="429"]')
        assert "The server is busy" in _alert(page, 429) and "Try again in 5 s" in _alert(page, 429)
        context.close()


# -- the UI's endpoints and helpers without a browser --------------------------------------------


def test_dpi_of_a_request_sets_the_page_size_and_the_page_image(tmp_path: Path) -> None:
    settings = ServerSettings(engine="tesseract", languages=("eng",), job_dir=tmp_path, warm_up=False)
    with running_server(settings) as url:
        refused = httpx.post(f"{url}/v1/jobs", files={"file": ("a.pdf", text_pdf(1))}, data={"dpi": "5000"})
        assert refused.status_code == 400 and "invalid dpi" in refused.json()["error"]["message"]
        # keep_pages: the page's image is kept as the job runs (the upload is deleted when it finishes)
        keep = {"keep_pages": "1"}
        job = httpx.post(f"{url}/v1/jobs", files={"file": ("a.pdf", text_pdf(1))}, data={"dpi": "144", **keep}).json()
        assert job["params"]["dpi"] == 144.0 and job["params"]["keep_pages"] is True

        def finished() -> dict | None:
            state = httpx.get(f"{url}/ui/api/jobs/{job['id']}", timeout=10).json()
            return state if state["status"] == "done" else None

        state = wait_until(finished, 60, 0.1, "the job")
        assert state["pages"][0]["engine"] == "tesseract" and state["pages"][0]["attempts"][0]["outcome"] == "ok"
        doc = DocumentResult.model_validate(httpx.get(f"{url}/ui/api/jobs/{job['id']}/view").json()["result"])
        assert (doc.pages[0].width, doc.pages[0].height) == (1280, 500)  # 640x250 points at 144 DPI
        image = httpx.get(f"{url}/ui/api/jobs/{job['id']}/pages/1")
        assert image.headers["content-type"] == "image/png"
        with Image.open(io.BytesIO(image.content)) as png:
            assert png.size == (1280, 500)
        assert httpx.get(f"{url}/ui/api/jobs/{job['id']}/pages/2").status_code == 404
        # A multi-page TIFF: each frame is its own page image.
        frames = [Image.new("RGB", (300 + 100 * n, 200), "white") for n in range(2)]
        buffer = io.BytesIO()
        frames[0].save(buffer, format="TIFF", save_all=True, append_images=frames[1:])
        tiff = httpx.post(f"{url}/v1/jobs", files={"file": ("two.tif", buffer.getvalue())}, data=keep).json()
        assert tiff["page_count"] == 2
        wait_until(lambda: httpx.get(f"{url}/ui/api/jobs/{tiff['id']}").json()["status"] == "done", 60, 0.1, "tiff")
        with Image.open(io.BytesIO(httpx.get(f"{url}/ui/api/jobs/{tiff['id']}/pages/2").content)) as second:
            assert second.size == (400, 200)
        # The upload is gone once the job finished; the kept page image stays. Without keep_pages: 410.
        assert httpx.get(f"{url}/v1/jobs/{job['id']}/result").status_code == 200
        assert httpx.get(f"{url}/ui/api/jobs/{job['id']}/pages/1").content == image.content
        bare = httpx.post(f"{url}/v1/jobs", files={"file": ("b.pdf", text_pdf(1))}).json()
        wait_until(lambda: httpx.get(f"{url}/ui/api/jobs/{bare['id']}").json()["status"] == "done", 60, 0.1, "bare")
        gone = httpx.get(f"{url}/ui/api/jobs/{bare['id']}/pages/1")
        assert gone.status_code == 410 and "keep_pages" in gone.json()["error"]["message"]


def test_a_running_job_reports_its_finished_pages(tmp_path: Path) -> None:
    settings = ServerSettings(engine="tesseract", languages=("eng",), job_dir=tmp_path, warm_up=False)
    with running_server(settings) as url:
        job = httpx.post(f"{url}/v1/jobs", files={"file": ("book.pdf", text_pdf(6))}).json()

        def running_with_a_page() -> dict | None:
            state = httpx.get(f"{url}/ui/api/jobs/{job['id']}", timeout=10).json()
            return state if state["status"] == "running" and state["pages_done"] >= 1 else None

        state = wait_until(running_with_a_page, 60, 0.02, "the first page")
        assert len(state["pages"]) >= state["pages_done"] >= 1
        assert state["pages"][0]["page"] == 1 and state["pages"][0]["engine"] == "tesseract"
        assert state["pages"][0]["attempts"][0]["engine"] == "tesseract"
        done = wait_until(
            lambda: (s := httpx.get(f"{url}/ui/api/jobs/{job['id']}", timeout=10).json())["status"] == "done" and s,
            60,
            0.1,
            "the job",
        )
        assert [p["page"] for p in done["pages"]] == list(range(1, 7))


def test_ui_endpoints_answer_401_without_the_key_but_info(tmp_path: Path) -> None:
    settings = ServerSettings(engine="tesseract", job_dir=tmp_path, warm_up=False, api_key="key-9f3e2a")
    with running_server(settings) as url:
        info = httpx.get(f"{url}/ui/api/info").json()
        assert info["auth"] is True and info["formats"] == list(FORMATS) and "key-9f3e2a" not in json.dumps(info)
        for path in ("/ui/api/jobs/" + "0" * 32, "/ui/api/jobs/" + "0" * 32 + "/pages/1"):
            assert httpx.get(f"{url}{path}").status_code == 401
        assert httpx.post(f"{url}/ui/api/compare", json={"a": "x", "b": "y"}).status_code == 401
        missing = httpx.get(f"{url}/ui/api/jobs/{'0' * 32}", headers={"Authorization": "Bearer key-9f3e2a"})
        assert missing.status_code == 404 and "no job" in missing.json()["error"]["message"]
        index = httpx.get(f"{url}/")
        assert "<script" in index.text and "http://" not in index.text and "https://" not in index.text
        assert "script-src 'self'" in index.headers["content-security-policy"]


def test_compare_texts_counts_b_against_a_and_diffs_words() -> None:
    result = compare_texts("the quick brown fox", "the quick brawn fox jumps")
    assert result["reference_chars"] == len("the quick brown fox")
    assert result["errors"] == 1 + len(" jumps")
    ops = [op for op, _ in result["diff"]]
    assert ("delete", "brown") in [tuple(d) for d in result["diff"]] and "insert" in ops
    assert "".join(t for op, t in result["diff"] if op != "insert") == "the quick brown fox"
    assert "".join(t for op, t in result["diff"] if op != "delete") == "the quick brawn fox jumps"
    composed, decomposed = "cão", "ca\u0303o"  # one text in NFC, the other in NFD: no difference
    assert compare_texts(composed, decomposed)["diff"] == [["equal", composed]]


def test_page_view_ties_blocks_to_text_only_when_the_page_is_made_of_them() -> None:
    from polyocr.results import Block, PageResult

    blocks = [Block(bbox=(0, 0, 10, 10), category="Title", text="Hello"), Block(bbox=(0, 20, 10, 30), text="World")]
    made = PageResult(page=1, blocks=blocks, text="Hello\n\nWorld", markdown="# Hello\n\nWorld")
    assert page_view(made) == {"markdown": ["# Hello", "World"], "text": ["Hello", "World"]}
    other = PageResult(page=1, blocks=blocks, text="Hello World as the engine wrote it", markdown="Hello")
    assert page_view(other) == {"markdown": None, "text": None}
