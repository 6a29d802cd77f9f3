"""An engine that sends pages to a server: any OpenAI-compatible one, or another polyocr.

Configuration (polyocr.config.OpenAIConfig): polyocr.toml's [openai] section (url, model, api_key,
concurrency, timeout, retries), overridden by environment variables:

    POLYOCR_OPENAI_URL          the server, e.g. http://127.0.0.1:8001 (a trailing /v1 is accepted)
    POLYOCR_OPENAI_MODEL        the served model name (vLLM's --served-model-name); for a polyocr
                                server, the engine chain it should use. Empty: the server's first
                                model, or a polyocr server's default chain.
    POLYOCR_OPENAI_API_KEY      bearer token, when the server wants one
    POLYOCR_OPENAI_CONCURRENCY  requests in flight at once per engine instance (default 4)
    POLYOCR_OPENAI_TIMEOUT      seconds to wait for one page (default 600; Task.timeout wins if set)
    POLYOCR_OPENAI_RETRIES      retries on connection errors, 429 and 5xx, with doubling backoff (3)

EnginePlan.model_path, when set, overrides POLYOCR_OPENAI_MODEL; EnginePlan.generation's
temperature and top_p are sent with each request; EnginePlan.max_pixels caps the image sent. Those
come from polyocr.toml's [engines.openai] like any engine's plan; batch_size there makes the router
hand over several pages per call, which this engine sends concurrently.

At load the server is health-checked: a polyocr server (GET /health says so) is spoken to through
polyocr's own POST /v1/ocr, so its engines' blocks and boxes come back whole; anything else must
list the model at GET /v1/models and gets chat completions in the model's prompt format. dots.ocr
and dots.mocr (recognised by the model's name or the path it was served from, DOTS_OCR_NAME) get their prompts after its
image marker, the page pre-resized to the size its processor would choose so that the boxes it
answers map straight back to the page; other models (Qwen-VL) get a short instruction and answer
text or Markdown. finish_reason becomes Generation.stop_reason (length -> max_tokens, stop -> eos)
for the router's checks.
"""

from __future__ import annotations

import base64
import io
import re
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, ClassVar

from PIL import Image

from polyocr.config import OPENAI_ENV, OpenAIConfig, openai_config
from polyocr.engines.base import Engine
from polyocr.errors import ConfigFileError, EngineError, EngineUnavailable
from polyocr.results import Block, DocumentResult, Generation, PageResult, PageStatus, TextFormat
from polyocr.types import Availability, EngineKind, EnginePlan, Task, TaskKind

if TYPE_CHECKING:
    import httpx

    from polyocr.documents import Page
    from polyocr.runtime.probe import Profile

# dots.ocr's clients put this before the prompt (without it vLLM inserts a newline there).
DOTS_IMAGE_MARKER = "<|img|><|imgpad|><|endofimg|>"
# The models that speak that protocol: dots.ocr, and dots.mocr (dots.ocr-1.5, and its dots.mocr-svg
# variant), whose client sends the same marker before the same four prompt texts on a page resized by
# the same smart_resize bounds (3,136 to 11,289,600 pixels, factor 28) and reads the same layout JSON
# (github.com/rednote-hilab/dots.mocr at 23f3e56: dots_mocr/model/inference.py inference_with_vllm,
# utils/prompts.py, utils/consts.py, parser.py). Named as served from the hub (rednote-hilab/dots.ocr,
# rednote-hilab/dots.mocr, their quantised copies) or from the directories the authors' download
# scripts write (weights/DotsOCR, weights/DotsMOCR: tools/download_model.py), or by model type
# (dots_ocr). Not every name with "dots" in it: dots-studio/dots.vlm1.inst is a general VLM that
# knows none of these prompts (huggingface.co/dots-studio/dots.vlm1.inst).
DOTS_OCR_NAME = re.compile(r"dots[._-]?m?ocr", re.IGNORECASE)
ENV_URL, ENV_MODEL, ENV_KEY = OPENAI_ENV["url"], OPENAI_ENV["model"], OPENAI_ENV["api_key"]
BACKOFF_SECONDS = 0.5
_FINISH = {"length": "max_tokens", "stop": "eos"}
_GENERIC_PROMPTS = {
    TaskKind.TEXT: "Read all the text in this image in reading order. Output only the text.",
    TaskKind.LAYOUT: "Convert this document page to Markdown, in reading order. Output only the Markdown.",
    TaskKind.REGION: "Read all the text in this image in reading order. Output only the text.",
}


class OpenAIServerEngine(Engine):
    name: ClassVar[str] = "openai"
    description: ClassVar[str] = "A vLLM (or other OpenAI-compatible) server, or another polyocr server"
    kind: ClassVar[EngineKind] = EngineKind.REMOTE
    takes_model_path: ClassVar[bool] = True  # the served model's name
    notes: ClassVar[str] = (
        f"set {ENV_URL} (and {ENV_MODEL}, {ENV_KEY}); `polyocr vllm-command MODEL` prints "
        "the vLLM command for this machine"
    )

    def __init__(self, model_path: str | None = None) -> None:
        super().__init__(model_path)
        self._client: httpx.Client | None = None
        self._slots = threading.BoundedSemaphore(1)
        self.url = ""
        self.model = ""
        self.protocol = ""  # "polyocr" | "chat"
        self.family = ""  # "dots" | "generic" (chat protocol only)
        self.concurrency = 1
        self.timeout = 600.0
        self.retries = 3
        self.backoff = BACKOFF_SECONDS
        self.generation: dict[str, Any] = {}
        self.max_pixels: int | None = None

    def _config(self) -> OpenAIConfig:
        try:
            return openai_config()
        except ConfigFileError as exc:
            raise EngineUnavailable(self.name, str(exc)) from exc

    def available(self, profile: Profile) -> Availability:
        url = self._config().url
        if not url:
            return Availability.no(
                f"{ENV_URL} is not set",
                f"start a server (`polyocr vllm-command MODEL --run` or `polyocr serve`) and "
                f"export {ENV_URL}=http://HOST:PORT",
            )
        try:
            import httpx  # noqa: F401
        except ImportError:
            return Availability.no("the httpx package is not installed", "pip install 'polyocr[serve]'")
        return Availability.yes(f"server {url}")

    def load(self, plan: EnginePlan) -> None:
        import httpx

        config = self._config()
        url = config.url.rstrip("/")
        if not url:
            raise EngineUnavailable(self.name, f"{ENV_URL} is not set", f"export {ENV_URL}=http://HOST:PORT")
        self.url = url.removesuffix("/v1")
        self.model = plan.model_path or self.model_path or config.model
        self.concurrency = config.concurrency
        self.timeout = config.timeout
        self.retries = config.retries
        self.generation = dict(plan.generation)
        self.max_pixels = plan.max_pixels
        self._slots = threading.BoundedSemaphore(self.concurrency)
        key = config.api_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(
            base_url=self.url, headers=headers, timeout=httpx.Timeout(self.timeout, connect=10.0)
        )
        try:
            self._handshake()
        except EngineError as exc:
            self.close()
            raise EngineUnavailable(self.name, exc.reason, f"check that the server at {self.url} is up") from None

    def _handshake(self) -> None:
        health = self._request("GET", "/health", timeout=30.0)
        if health.status_code == 200 and _json(health).get("service") == "polyocr":
            self.protocol = "polyocr"
            return
        listing = self._request("GET", "/v1/models", timeout=30.0)
        if listing.status_code != 200:
            raise EngineError(
                self.name, f"{self.url}/v1/models answered HTTP {listing.status_code}: {_message(listing)}"
            )
        models = [m for m in _json(listing).get("data", []) if isinstance(m, dict) and m.get("id")]
        if not models:
            raise EngineError(self.name, f"{self.url}/v1/models lists no model")
        chosen = next((m for m in models if self.model in (m["id"], m.get("root"))), None) if self.model else models[0]
        if chosen is None:
            served = ", ".join(m["id"] for m in models)
            raise EngineError(
                self.name, f"model {self.model!r} is not served at {self.url} (served: {served}); set {ENV_MODEL}"
            )
        self.model = chosen["id"]
        self.protocol = "chat"
        names = f"{chosen['id']} {chosen.get('root') or ''}".lower()
        self.family = "dots" if DOTS_OCR_NAME.search(names) else "generic"

    def recognize(self, pages: Sequence[Page], task: Task) -> list[PageResult]:
        if self._client is None:
            raise EngineError(self.name, "recognize() called before load()")
        if self.protocol == "chat" and self.family != "dots" and task.kind == TaskKind.LAYOUT_ONLY:
            raise EngineError(self.name, f"model {self.model!r} gives no boxes; task layout_only needs dots.ocr")
        one = self._polyocr_page if self.protocol == "polyocr" else self._chat_page
        if len(pages) == 1:
            return [one(pages[0], task)]
        with ThreadPoolExecutor(min(self.concurrency, len(pages)), thread_name_prefix="polyocr-openai") as pool:
            return list(pool.map(lambda page: one(page, task), pages))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _request(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> httpx.Response:
        """One HTTP call, retried with doubling backoff on connection errors, 429 and 5xx (except 504)."""
        import httpx

        assert self._client is not None
        delay = self.backoff
        error = ""
        for attempt in range(self.retries + 1):
            try:
                with self._slots:
                    response = self._client.request(method, path, timeout=timeout or self.timeout, **kwargs)
            except httpx.ConnectTimeout as exc:
                error = f"connection timed out: {exc}"
            except httpx.TimeoutException:
                raise EngineError(
                    self.name, f"{self.url}{path}: no answer within {timeout or self.timeout:g} s"
                ) from None
            except httpx.TransportError as exc:
                error = f"{type(exc).__name__}: {exc}"
            else:
                if (response.status_code < 500 and response.status_code != 429) or response.status_code == 504:
                    return response
                error = f"HTTP {response.status_code}: {_message(response)}"
            if attempt < self.retries:
                time.sleep(delay)
                delay *= 2
        raise EngineError(self.name, f"{self.url}{path} failed after {self.retries + 1} attempt(s): {error}")

    def _timeout(self, task: Task) -> float:
        return task.timeout or self.timeout

    def _polyocr_page(self, page: Page, task: Task) -> PageResult:
        """polyocr's own API; a region is cut out here (the API takes whole pages) and its boxes moved back."""
        image, kind, origin = page.image, task.kind, (0.0, 0.0)
        if task.kind == TaskKind.REGION and task.region is not None:
            x1, y1, x2, y2 = (round(v) for v in task.region)
            image, kind, origin = page.image.crop((x1, y1, x2, y2)), TaskKind.TEXT, (float(x1), float(y1))
        data = {"task": kind.value, "language": "+".join(task.languages), "format": "json"}
        if self.model:
            data["engine"] = self.model
        response = self._request(
            "POST",
            "/v1/ocr",
            files={"file": ("page.png", _png(image), "image/png")},
            data=data,
            timeout=self._timeout(task),
        )
        if response.status_code != 200:
            raise EngineError(
                self.name, f"{self.url}/v1/ocr answered HTTP {response.status_code}: {_message(response)}"
            )
        doc = DocumentResult.model_validate_json(response.content)
        if not doc.pages:
            raise EngineError(self.name, f"{self.url} returned no page: {'; '.join(doc.errors)}")
        result = doc.pages[0]
        if result.status == PageStatus.FAILED:
            raise EngineError(
                self.name, f"the polyocr server at {self.url} failed on the page: {'; '.join(result.errors)}"
            )
        dx, dy = origin
        blocks = [
            b.model_copy(update={"bbox": (b.bbox[0] + dx, b.bbox[1] + dy, b.bbox[2] + dx, b.bbox[3] + dy)})
            if b.bbox
            else b
            for b in result.blocks
        ]
        return result.model_copy(
            update={
                "page": page.number,
                "source": page.source,
                "attempts": [],
                "width": page.image.width,
                "height": page.image.height,
                "blocks": blocks,
            }
        )

    def _chat_page(self, page: Page, task: Task) -> PageResult:
        image = page.image
        region = task.region if task.kind == TaskKind.REGION else None
        if region is not None and self.family != "dots":
            x1, y1, x2, y2 = (round(v) for v in region)
            image = image.crop((x1, y1, x2, y2))
        sent = self._fit(image)
        prompt = self._prompt(task, region, sent.size, image.size)
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + _b64(_png(sent))}},
                        {"type": "text", "text": prompt},
                    ],
                }
            ],
            "max_tokens": task.max_new_tokens,
            "temperature": float(self.generation.get("temperature", 0.0)),
            "top_p": float(self.generation.get("top_p", 1.0)),
        }
        start = time.perf_counter()
        response = self._request("POST", "/v1/chat/completions", json=body, timeout=self._timeout(task))
        if response.status_code != 200:
            raise EngineError(
                self.name, f"{self.url}/v1/chat/completions answered HTTP {response.status_code}: {_message(response)}"
            )
        answer = _json(response)
        try:
            choice = answer["choices"][0]
            content = choice["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise EngineError(self.name, f"{self.url} answered without choices[0].message.content") from None
        usage = answer.get("usage") or {}
        generation = Generation(
            stop_reason=_FINISH.get(choice.get("finish_reason") or "", "error"),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            generated_tokens=int(usage.get("completion_tokens") or 0),
            seconds=time.perf_counter() - start,
        )
        result = PageResult(
            page=page.number,
            source=page.source,
            width=page.image.width,
            height=page.image.height,
            generation=generation,
        )
        self._read_answer(result, content, task, sent.size, page.image.size, region)
        return result

    def _fit(self, image: Image.Image) -> Image.Image:
        """dots.ocr: the size its processor would pick, so its boxes are in the pixels we sent."""
        if self.family != "dots":
            if self.max_pixels and image.width * image.height > self.max_pixels:
                scale = (self.max_pixels / (image.width * image.height)) ** 0.5
                return image.resize(
                    (max(1, int(image.width * scale)), max(1, int(image.height * scale))), Image.Resampling.BICUBIC
                )
            return image
        from polyocr.engines.dots.processor import MAX_PIXELS, smart_resize

        try:
            height, width = smart_resize(image.height, image.width, max_pixels=self.max_pixels or MAX_PIXELS)
        except ValueError as exc:
            raise EngineError(self.name, str(exc)) from None
        if (width, height) == image.size:
            return image
        return image.resize((width, height), Image.Resampling.BICUBIC)

    def _prompt(
        self,
        task: Task,
        region: tuple[float, float, float, float] | None,
        sent: tuple[int, int],
        original: tuple[int, int],
    ) -> str:
        if self.family != "dots":
            return _GENERIC_PROMPTS[task.kind]
        from polyocr.engines.dots.prompts import TASK_MODES, prompt_text

        box = None
        if region is not None:
            sx, sy = sent[0] / original[0], sent[1] / original[1]
            box = [round(region[0] * sx), round(region[1] * sy), round(region[2] * sx), round(region[3] * sy)]
        return DOTS_IMAGE_MARKER + prompt_text(TASK_MODES[task.kind], box)

    def _read_answer(
        self,
        result: PageResult,
        content: str,
        task: Task,
        sent: tuple[int, int],
        original: tuple[int, int],
        region: tuple[float, float, float, float] | None,
    ) -> None:
        if self.family == "dots" and task.kind in (TaskKind.LAYOUT, TaskKind.LAYOUT_ONLY):
            from polyocr.engines.dots.layout import page_text, parse_layout, to_blocks

            parsed = parse_layout(content)
            result.blocks = to_blocks(parsed.elements, sent, original, with_text=task.kind == TaskKind.LAYOUT)
            result.text = page_text(result.blocks)
            if parsed.partial:
                result.status = PageStatus.PARTIAL
                result.errors = list(parsed.problems)
            return
        text = content.strip()
        markdown = task.kind == TaskKind.LAYOUT
        result.blocks = [Block(bbox=region, text=text, format=TextFormat.MARKDOWN if markdown else TextFormat.PLAIN)]
        result.text = text
        if markdown:
            result.markdown = text


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _message(response: httpx.Response) -> str:
    """The server's own error message when it sent one (OpenAI/polyocr or FastAPI shape)."""
    data = _json(response)
    error = data.get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if data.get("detail"):
        return str(data["detail"])
    return response.text[:300] or response.reason_phrase
