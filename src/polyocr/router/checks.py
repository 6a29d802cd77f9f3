"""Checks on what an engine returned for a page: each says why the output is unusable, or nothing.

An engine reports what happened; these checks turn that into a decision the router can act on.
Each check is a small function `(result, context) -> reason | None`, named for what it detects, so
an Attempt's reason reads "repeated_tail: the output ends with 3 word(s) repeated 40 times: ...". The thresholds are
set so that Tesseract's output on every page of the development set passes them all (that is a
test), while the failures seen from VLMs (loops until the token limit, unparsable layout JSON, an
answer in the wrong script, nothing at all) do not.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from PIL import Image

from polyocr.documents import Page
from polyocr.documents.textlayer import CHECK_MAX_SIDE
from polyocr.results import PageResult, PageStatus
from polyocr.scripts import script_counts, scripts_for
from polyocr.types import Task, TaskKind

# Below this many glyph-like marks a page counts as blank: empty output is then the right answer.
BLANK_PAGE_GLYPHS = 30
# A page with at least this many glyph-like marks is "visibly full of ink" ...
INKED_PAGE_GLYPHS = 400
# ... and output with fewer non-space characters than this share of them is implausibly short.
# Tesseract gives 0.43 to 0.66 characters per estimated glyph on the development set's pages it can
# read (tests/fixtures/outputs/tesseract-eval.jsonl), and still 0.11 of junk on a Chinese page.
MIN_CHARS_PER_GLYPH = 0.05
# Identical non-trivial lines in a row, or repeats of one line making up this share of the text.
LINE_RUN = 4
LINE_SHARE, LINE_SHARE_MIN_COUNT = 0.3, 8
# A unit of up to TAIL_MAX_UNIT words repeated at least TAIL_MIN_REPEATS times, covering at least
# TAIL_MIN_WORDS words, at the end of the output: the model got stuck and ran on. (Tesseract's test
# page phototest.tif really does end with one sentence four times.)
TAIL_MAX_UNIT, TAIL_MIN_REPEATS, TAIL_MIN_WORDS = 50, 6, 30
# Word n-grams occurring NGRAM_MIN_COUNT or more times and covering this share of a long output.
NGRAM, NGRAM_MIN_COUNT, NGRAM_SHARE, NGRAM_MIN_WORDS = 10, 5, 0.4, 80
# Layout elements with identical category and text, this many times and this share of the blocks.
BLOCK_REPEATS, BLOCK_SHARE = 4, 0.3
# Letters needed before the script of a text means anything, and the share that must be expected.
SCRIPT_MIN_LETTERS, SCRIPT_MIN_SHARE = 20, 0.3

_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W\d_]+")


@dataclass
class PageContext:
    """What the checks know besides the output: the page and the task, and costly measures of them."""

    page: Page
    task: Task
    # The page's scripts, most text first (langdetect.py): the router passes the Tesseract engine's
    # OSD and sampled first pass; None leaves the checks with the task's languages alone.
    detector: Callable[[Image.Image, Sequence[str]], tuple[str, ...]] | None = None

    @cached_property
    def glyphs(self) -> int:
        if self.page.glyphs is not None:
            return self.page.glyphs  # counted by the loader already (the text layer's ink check)
        return estimate_glyphs(self.page.image)

    @cached_property
    def scripts(self) -> tuple[str, ...]:
        """The scripts the page (or the task's region of it) is written in; () when unknown."""
        if self.detector is None or not self.task.lang_detect:
            return ()
        image = self.page.image
        if self.task.kind == TaskKind.REGION and self.task.region is not None:
            x1, y1, x2, y2 = (round(v) for v in self.task.region)
            image = image.crop((x1, y1, x2, y2))
        try:
            return self.detector(image, self.task.languages)
        except Exception:  # a detector that cannot run leaves the task's languages to judge by
            return ()

    def page_scripts(self, result: PageResult) -> tuple[str, ...]:
        """The page's scripts: those the engine detected itself on the whole page, else the detector's."""
        choice = result.languages
        if choice is not None and choice.method not in ("", "none") and self.task.kind != TaskKind.REGION:
            return tuple(choice.scripts)
        return self.scripts


Check = Callable[[PageResult, PageContext], "str | None"]


def estimate_glyphs(image: Image.Image, max_side: int = CHECK_MAX_SIDE) -> int:
    """About how many separate marks of ink a page holds: a cheap stand-in for a character count.

    The page is binarised (Otsu) at a bounded size, and every horizontal run of ink with no ink
    touching it from the row above is counted: that is the top of a connected mark (a letter, or
    one arm of an "m"), so it counts glyphs within a factor of about two, with numpy only.
    """
    gray = image.convert("L")
    scale = max_side / max(gray.size)
    if scale < 1:
        gray = gray.resize(
            (max(1, round(gray.width * scale)), max(1, round(gray.height * scale))), Image.Resampling.BOX
        )
    pixels = np.asarray(gray)
    dark = pixels < _otsu(pixels)
    if dark.mean() > 0.5:  # light text on a dark page
        dark = ~dark
    starts = dark & ~np.pad(dark, ((0, 0), (1, 0)))[:, :-1]
    above = np.zeros_like(dark)
    above[1:] = dark[:-1]
    near_above = above | np.pad(above, ((0, 0), (1, 0)))[:, :-1] | np.pad(above, ((0, 0), (0, 1)))[:, 1:]
    run_ids = np.cumsum(starts, axis=1)
    rows = np.nonzero(dark)[0]
    keys = rows.astype(np.int64) * (dark.shape[1] + 1) + run_ids[dark]
    touched = np.unique(keys[near_above[dark]]).size
    return int(starts.sum()) - touched


def _otsu(pixels: np.ndarray) -> int:
    """Otsu's threshold; a flat image gets 0, so nothing on it counts as ink."""
    hist = np.bincount(pixels.ravel(), minlength=256).astype(np.float64)
    total = hist.sum()
    levels = np.arange(256)
    weight = np.cumsum(hist)
    mean = np.cumsum(hist * levels)
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean[-1] * weight / total - mean) ** 2 / (weight * (total - weight))
    between = np.nan_to_num(between)
    if between.max() <= 0:
        return 0
    return int(np.argmax(between)) + 1


def _tokens(text: str) -> list[str]:
    """Words (letters only, lower-cased), with each Han or Kana character a word of its own."""
    return _TOKEN.findall(text.lower())


def _expects_text(task: Task) -> bool:
    return task.kind != TaskKind.LAYOUT_ONLY


def empty_output(result: PageResult, ctx: PageContext) -> str | None:
    if _expects_text(ctx.task):
        if result.text.strip():
            return None
        what = "no text"
    else:
        if result.blocks:
            return None
        what = "no layout blocks"
    if ctx.task.kind != TaskKind.REGION and ctx.glyphs < BLANK_PAGE_GLYPHS:
        return None  # a blank page: nothing is the right answer
    return f"{what} for a page with ink on it"


def token_limit(result: PageResult, ctx: PageContext) -> str | None:
    generation = result.generation
    if generation is None or generation.stop_reason != "max_tokens":
        return None
    return f"generation stopped at the token limit ({generation.generated_tokens} tokens) instead of ending"


def generation_loop(result: PageResult, ctx: PageContext) -> str | None:
    """The engine's loop stop ended the generation while its tail repeated (engines/vlm.py)."""
    generation = result.generation
    if generation is None or generation.stop_reason != "loop":
        return None
    return f"generation stopped after {generation.generated_tokens} tokens: its tail was repeating"


def nonfinite_logits(result: PageResult, ctx: PageContext) -> str | None:
    if result.generation is not None and result.generation.nonfinite_logits:
        return "the model produced NaN or infinite logits (numerical failure in this dtype/attention)"
    return None


def repeated_lines(result: PageResult, ctx: PageContext) -> str | None:
    lines = [" ".join(line.split()) for line in result.text.splitlines()]
    lines = [line for line in lines if len(line) >= 10 and any(c.isalpha() for c in line)]
    if not lines:
        return None
    run, longest, previous = 0, 0, None
    for line in lines:
        run = run + 1 if line == previous else 1
        longest = max(longest, run)
        previous = line
    if longest >= LINE_RUN:
        return f"a line repeats {longest} times in a row"
    line, count = Counter(lines).most_common(1)[0]
    if count >= LINE_SHARE_MIN_COUNT and count >= LINE_SHARE * len(lines):
        return f"one line makes up {count} of {len(lines)} lines: {line[:60]!r}"
    return None


def repeated_tail(result: PageResult, ctx: PageContext) -> str | None:
    words = _tokens(result.text)
    for unit in range(1, min(TAIL_MAX_UNIT, len(words) // TAIL_MIN_REPEATS) + 1):
        tail = words[-unit:]
        repeats = 1
        while (repeats + 1) * unit <= len(words) and words[-(repeats + 1) * unit : -repeats * unit] == tail:
            repeats += 1
        if repeats >= TAIL_MIN_REPEATS and repeats * unit >= TAIL_MIN_WORDS:
            return f"the output ends with {unit} word(s) repeated {repeats} times: {' '.join(tail)[:60]!r}"
    return None


def repeated_ngrams(result: PageResult, ctx: PageContext) -> str | None:
    words = _tokens(result.text)
    if len(words) < NGRAM_MIN_WORDS:
        return None
    grams = [tuple(words[i : i + NGRAM]) for i in range(len(words) - NGRAM + 1)]
    counts = Counter(grams)
    covered = np.zeros(len(words), dtype=bool)
    for i, gram in enumerate(grams):
        if counts[gram] >= NGRAM_MIN_COUNT:
            covered[i : i + NGRAM] = True
    share = covered.mean()
    if share >= NGRAM_SHARE:
        gram, count = counts.most_common(1)[0]
        example = " ".join(gram)[:60]
        return f"{share:.0%} of the words are in {NGRAM}-word runs seen {NGRAM_MIN_COUNT}+ times ({example!r} x{count})"
    return None


def repeated_blocks(result: PageResult, ctx: PageContext) -> str | None:
    blocks = [b for b in result.blocks if b.category not in ("Word", "Line")]
    keys: list[tuple[str, object]]
    if _expects_text(ctx.task):
        keys = [(b.category, " ".join(b.text.split())) for b in blocks if len(b.text.strip()) >= 4]
    else:
        keys = [(b.category, b.bbox) for b in blocks if b.bbox is not None]
    if not keys:
        return None
    key, count = Counter(keys).most_common(1)[0]
    if count >= BLOCK_REPEATS and count >= BLOCK_SHARE * len(keys):
        return f"one {key[0]} element repeats {count} times among {len(keys)} elements"
    return None


def layout_unparsed(result: PageResult, ctx: PageContext) -> str | None:
    """Layout was asked for and no element came back with a box: the structured answer did not
    parse (the dots engine then keeps the raw answer as the page's text, with no blocks, and says
    why in `errors`), or what came back is JSON that held no element."""
    if ctx.task.kind not in (TaskKind.LAYOUT, TaskKind.LAYOUT_ONLY):
        return None
    if any(block.bbox is not None for block in result.blocks):
        return None
    problems = [e for e in result.errors if "json" in e.lower() or "layout" in e.lower()]
    if problems:
        return f"no layout element could be read: {problems[0]}"
    text = result.text.strip()
    if text.lstrip("`json \n").startswith(("[", "{")):
        return f"the layout answer holds no element: {text[:60]!r}"
    return None


def engine_failed(result: PageResult, ctx: PageContext) -> str | None:
    if result.status != PageStatus.FAILED:
        return None
    return "the engine marked the page failed: " + ("; ".join(result.errors) or "no reason given")


def generation_timeout(result: PageResult, ctx: PageContext) -> str | None:
    generation = result.generation
    if generation is None or generation.stop_reason != "timeout":
        return None
    return f"generation stopped by the time limit after {generation.generated_tokens} tokens"


def wrong_script(result: PageResult, ctx: PageContext) -> str | None:
    """The output is mostly in a script the page is not in: judged against the page's detected main
    script where there is a detection (so `--lang eng` on a Russian page read as Latin junk is caught,
    and a Chinese answer to a Chinese page is not refused), else against the task's languages."""
    counts = script_counts(result.text)
    letters = sum(counts.values())
    if letters < SCRIPT_MIN_LETTERS:
        return None
    found = ", ".join(f"{script} {n / letters:.0%}" for script, n in counts.most_common(3))
    detected = ctx.page_scripts(result) if _expects_text(ctx.task) else ()
    if detected:
        share = counts[detected[0]] / letters
        if share >= SCRIPT_MIN_SHARE:
            return None
        return f"only {share:.0%} of the letters are {detected[0]}, the page's main script as detected (found {found})"
    expected = scripts_for(ctx.task.languages)
    if not expected:
        return None
    share = sum(counts[s] for s in expected) / letters
    if share >= SCRIPT_MIN_SHARE:
        return None
    return (
        f"only {share:.0%} of the letters are {'/'.join(sorted(expected))} as "
        f"{'+'.join(ctx.task.languages)} needs (found {found})"
    )


def too_little_text(result: PageResult, ctx: PageContext) -> str | None:
    if ctx.task.kind not in (TaskKind.TEXT, TaskKind.LAYOUT) or not result.text.strip():
        return None  # empty output is empty_output's to report
    glyphs = ctx.glyphs
    chars = sum(1 for c in result.text if not c.isspace())
    if glyphs >= INKED_PAGE_GLYPHS and chars < MIN_CHARS_PER_GLYPH * glyphs:
        return f"{chars} characters for a page with about {glyphs} marks of ink"
    return None


CHECKS: tuple[Check, ...] = (
    engine_failed,
    empty_output,
    generation_timeout,
    nonfinite_logits,
    token_limit,
    generation_loop,
    layout_unparsed,
    repeated_lines,
    repeated_tail,
    repeated_ngrams,
    repeated_blocks,
    wrong_script,
    too_little_text,
)

# Checks whose failure a retry with repetition controls may cure.
LOOP_CHECKS = frozenset(
    {"token_limit", "generation_loop", "repeated_lines", "repeated_tail", "repeated_ngrams", "repeated_blocks"}
)
# Checks that leave the output worth keeping when no engine does better: it is only incomplete.
SOFT_CHECKS = frozenset({"too_little_text"})


@dataclass(frozen=True)
class Failure:
    check: str
    reason: str

    def __str__(self) -> str:
        return f"{self.check}: {self.reason}"


def run_checks(result: PageResult, ctx: PageContext, checks: tuple[Check, ...] = CHECKS) -> list[Failure]:
    """Every check that fails, in order; an empty list means the output is accepted."""
    failures = []
    for check in checks:
        reason = check(result, ctx)
        if reason is not None:
            failures.append(Failure(check.__name__, reason))
    return failures
