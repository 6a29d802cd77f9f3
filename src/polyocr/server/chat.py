"""The OpenAI-compatible chat endpoint's reading of requests and writing of answers.

Clients written for `vllm serve` send one user message with an image_url part (a data: URL) and a
text part holding the model's prompt. For dots.ocr that text begins with dots.ocr's image marker,
which is stripped; every prompt mode of dots.ocr and dots.mocr (engines/dots/prompts.py: its texts,
the task each answers, MODE_TASKS, and the form of its answer, MODE_OUTPUTS) is recognised and
answered in the form the model itself would give (layout JSON in the pixels of the image sent, plain
text, scene-text instances, SVG), so those clients work unchanged. Only an engine that draws SVG
(dots-mocr with generation.prompt_mode = "image_to_svg") answers image_to_svg; the route refuses
it for a chain without one. Any other prompt gets the page as Markdown. `model` picks an engine when it names one
(else the server's default chain answers); temperature, top_p and max_tokens are accepted and left
to the engines' own settings, since an engine is loaded once and shared by every request.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from polyocr.engines.dots.prompts import MODE_OUTPUTS, MODE_TASKS, PROMPTS, PromptMode
from polyocr.engines.openai_server import DOTS_IMAGE_MARKER
from polyocr.errors import ChatRequestError
from polyocr.results import Block, DocumentResult, PageStatus
from polyocr.types import TaskKind


@dataclass(frozen=True)
class ChatAsk:
    """What a chat request asks of polyocr: the image, the task, and the answer's form."""

    image: bytes
    task: TaskKind
    answer: str  # prompts.MODE_OUTPUTS' forms (layout, layout_only, text, scene, svg) | "markdown"
    region: tuple[float, float, float, float] | None
    model: str
    prompt: str


_DATA_URL = re.compile(
    r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?P<params>(;[\w-]+=[^;,]*)*)(?P<b64>;base64)?,", re.IGNORECASE
)
_BOX = re.compile(r"\[\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*,\s*(-?[\d.]+)\s*\]")


def decode_data_url(url: str) -> bytes:
    """The bytes of a base64 data: URL; other URLs are refused (this server fetches nothing)."""
    match = _DATA_URL.match(url)
    if match is None:
        scheme = url.split(":", 1)[0] if ":" in url else "a bare string"
        raise ChatRequestError(
            f"image_url must be a data: URL with base64 content; got {scheme!r} (this server does not fetch URLs)"
        )
    if not match.group("b64"):
        raise ChatRequestError("image_url data: URL must be base64-encoded (data:image/png;base64,...)")
    try:
        return base64.b64decode(url[match.end() :], validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ChatRequestError(f"image_url data: URL is not valid base64: {exc}") from None


def parse_chat(body: Any) -> ChatAsk:
    """Read a chat completion request: the last user message's one image and its text."""
    if not isinstance(body, dict):
        raise ChatRequestError("the request body must be a JSON object")
    if body.get("stream"):
        raise ChatRequestError("stream=true is not supported; send stream=false (the default)")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ChatRequestError("'messages' must be a non-empty list")
    user = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    if not user:
        raise ChatRequestError("no message with role 'user'")
    content = user[-1].get("content")
    parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not isinstance(parts, list):
        raise ChatRequestError("the user message's 'content' must be a string or a list of parts")
    images: list[bytes] = []
    texts: list[str] = []
    for part in parts:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "image_url":
            image_url = part.get("image_url")
            url = image_url.get("url") if isinstance(image_url, dict) else image_url
            if not isinstance(url, str):
                raise ChatRequestError("an image_url part needs image_url.url")
            images.append(decode_data_url(url))
        elif kind == "text":
            texts.append(str(part.get("text", "")))
        else:
            raise ChatRequestError(f"unsupported content part type {kind!r} (use 'image_url' and 'text')")
    if len(images) != 1:
        raise ChatRequestError(f"send exactly one image per request (got {len(images)}); one page per request")
    prompt = "".join(texts).replace(DOTS_IMAGE_MARKER, "").strip()
    task, answer, region = _read_prompt(prompt)
    model = body.get("model")
    return ChatAsk(images[0], task, answer, region, model if isinstance(model, str) else "", prompt)


def _prompt_pattern(mode: PromptMode) -> re.Pattern[str]:
    """A mode's prompt as sent: its text, with image_to_svg's {width} and {height} filled in and
    grounding's box after it (prompts.prompt_text)."""
    text = re.escape(PROMPTS[mode].strip())
    text = text.replace(re.escape("{width}"), r"\d+").replace(re.escape("{height}"), r"\d+")
    return re.compile(text + (r"(?P<rest>.*)" if mode == PromptMode.GROUNDING_OCR else ""), re.DOTALL)


# Every mode of prompts.py, dots.ocr's four and dots.mocr's three: the task it answers is
# prompts.MODE_TASKS', the answer's form prompts.MODE_OUTPUTS'.
_PROMPTS = [(mode, _prompt_pattern(mode)) for mode in PromptMode]


def prompt_mode(prompt: str) -> PromptMode | None:
    """The dots.ocr / dots.mocr prompt mode of a chat prompt (image marker removed, stripped), if any."""
    for mode, pattern in _PROMPTS:
        if pattern.fullmatch(prompt):
            return mode
    return None


def _read_prompt(prompt: str) -> tuple[TaskKind, str, tuple[float, float, float, float] | None]:
    mode = prompt_mode(prompt)
    if mode is None:
        return TaskKind.LAYOUT, "markdown", None
    if mode != PromptMode.GROUNDING_OCR:
        return MODE_TASKS[mode], MODE_OUTPUTS[mode], None
    # Grounding asks for one box's text: any engine answers it as the text of that crop.
    rest = prompt[len(PROMPTS[mode].strip()) :]
    box = _BOX.search(rest)
    if box is None:
        raise ChatRequestError("the grounding prompt needs a box [x1, y1, x2, y2] after 'Bounding Box:'")
    try:
        x1, y1, x2, y2 = (float(v) for v in box.groups())
    except ValueError:
        raise ChatRequestError(f"the grounding box {box.group(0)} is not four numbers") from None
    if x2 <= x1 or y2 <= y1:
        raise ChatRequestError(f"the grounding box {[x1, y1, x2, y2]} is empty")
    return TaskKind.TEXT, MODE_OUTPUTS[mode], (x1, y1, x2, y2)


def answer_text(doc: DocumentResult, answer: str) -> str:
    """The assistant message: what the model would have said for that prompt."""
    page = doc.pages[0]
    if answer in ("layout", "layout_only"):
        elements = []
        for block in page.blocks:
            element: dict[str, Any] = {
                "bbox": [round(v) for v in block.bbox] if block.bbox else None,
                "category": block.category,
            }
            if answer == "layout" and block.category != "Picture":
                element["text"] = block.text
            elements.append(element)
        return json.dumps(elements, ensure_ascii=False)
    if answer == "text":
        return page.text
    if answer == "scene":
        return _scene_text(page.blocks) or page.text
    if answer == "svg":
        drawn = [b.text for b in page.blocks if b.category == "Picture" and b.text.lstrip().startswith("<svg")]
        return drawn[0] if drawn else page.markdown or page.text
    return page.markdown or page.text


def _scene_text(blocks: list[Block]) -> str:
    """dots.mocr's scene-spotting answer: one "(x1, y1), (x2, y2), (x3, y3), (x4, y4) text" line per
    boxed block, the box's corners clockwise from the top left (dots_mocr/utils/layout_utils.py
    parse_scene_text_output reads them, format_scene_text_to_markdown writes them so; 23f3e56).
    Empty when no block has a box: the answer is then the page's text, as a model's answer with no
    instance is kept as written (post_process_scene_text)."""
    lines = []
    for block in blocks:
        if block.bbox is None or not block.text.strip():
            continue
        x1, y1, x2, y2 = (round(v) for v in block.bbox)
        text = " ".join(block.text.split())
        lines.append(f"({x1}, {y1}), ({x2}, {y1}), ({x2}, {y2}), ({x1}, {y2}) {text}")
    return "\n".join(lines)


def completion(doc: DocumentResult, ask: ChatAsk, model: str) -> dict[str, Any]:
    """An OpenAI chat.completion object; finish_reason 'length' when the engine hit its token limit."""
    page = doc.pages[0]
    generation = page.generation
    finish = "length" if generation is not None and generation.stop_reason == "max_tokens" else "stop"
    prompt_tokens = generation.prompt_tokens if generation else 0
    completion_tokens = generation.generated_tokens if generation else 0
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer_text(doc, ask.answer)},
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
        "polyocr": {
            "engine": page.engine,
            "status": page.status.value,
            "errors": page.errors if page.status != PageStatus.OK else [],
        },
    }
