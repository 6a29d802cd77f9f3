"""The result model every engine produces and every format renders.

Boxes are always in the original page's pixel coordinates (the page as loaded, after EXIF
orientation), whatever resolution an engine worked at. The JSON form carries a schema version so
stored results stay readable as the model grows.
"""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

SCHEMA_VERSION = "1.1"  # 1.1: PageResult.languages (the languages a page was read in, and why)

# Block categories: dots.ocr's layout classes (the published prompt's list), plus the granularities
# classical engines report.
LAYOUT_CATEGORIES = (
    "Caption",
    "Footnote",
    "Formula",
    "List-item",
    "Page-footer",
    "Page-header",
    "Picture",
    "Section-header",
    "Table",
    "Text",
    "Title",
)
CATEGORIES = (*LAYOUT_CATEGORIES, "Line", "Word")


class TextFormat(StrEnum):
    PLAIN = "plain"
    MARKDOWN = "markdown"
    HTML = "html"
    LATEX = "latex"


class PageStatus(StrEnum):
    OK = "ok"
    PARTIAL = "partial"  # usable but incomplete: truncated or looping output was cut back
    FAILED = "failed"


class Outcome(StrEnum):
    OK = "ok"
    REJECTED = "rejected"  # the engine answered but a check refused the output
    ERROR = "error"
    OOM = "oom"
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Block(_Model):
    bbox: tuple[float, float, float, float] | None = Field(
        default=None, description="[x1, y1, x2, y2] in original-page pixels"
    )
    category: str = "Text"
    text: str = ""
    confidence: float | None = Field(default=None, description="0..1 where the engine reports one")
    format: TextFormat = TextFormat.PLAIN
    children: list[Block] = Field(
        default_factory=list,
        description="finer units inside this block (a text block's lines, a line's words), same coordinates",
    )


class Generation(_Model):
    """What a generative engine reports about one page, for the router's checks."""

    stop_reason: str = Field(
        description="eos | max_tokens | loop (ended while its tail repeated) | stop_string | timeout | error"
    )
    prompt_tokens: int = 0
    generated_tokens: int = 0
    seconds: float | None = None
    nonfinite_logits: bool = False


class Attempt(_Model):
    engine: str
    settings: dict[str, Any] = Field(default_factory=dict)
    outcome: Outcome
    seconds: float = 0.0
    error: str | None = None


class LanguageChoice(_Model):
    """The languages a page was read in and why: the user's, plus what the page's scripts added."""

    requested: list[str] = Field(default_factory=list, description="the languages the task named")
    used: list[str] = Field(default_factory=list, description="the languages the engine was asked for")
    added: list[str] = Field(default_factory=list, description="languages added for scripts found on the page")
    scripts: list[str] = Field(default_factory=list, description="scripts detected on the page, most text first")
    method: str = Field(default="", description="how the scripts were detected (none: detection off)")
    reason: str = ""


class PageResult(_Model):
    page: int = Field(description="1-based page number within its source")
    source: str = ""
    width: int = 0
    height: int = 0
    status: PageStatus = PageStatus.OK
    engine: str | None = None
    language: str | None = None
    languages: LanguageChoice | None = None
    blocks: list[Block] = Field(default_factory=list)
    text: str = ""
    markdown: str = ""
    generation: Generation | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list)


class DocumentResult(_Model):
    schema_version: str = SCHEMA_VERSION
    source: str
    pages: list[PageResult] = Field(default_factory=list)
    errors: list[str] = Field(default_factory=list, description="input errors that produced no page")
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the input loaded and no page failed on every engine."""
        return not self.errors and all(p.status != PageStatus.FAILED for p in self.pages)

    @property
    def text(self) -> str:
        return "\n\n".join(p.text for p in self.pages if p.text)

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)

    @classmethod
    def from_json(cls, data: str | bytes) -> DocumentResult:
        return cls.model_validate_json(data)


def json_schema() -> dict[str, Any]:
    """The JSON schema of a serialized DocumentResult (what `polyocr schema` prints)."""
    schema = DocumentResult.model_json_schema()
    schema["$id"] = f"https://polyocr.dev/schema/document-result-{SCHEMA_VERSION}.json"
    schema["title"] = "polyocr DocumentResult"
    return schema


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, ensure_ascii=False)
