"""Character and word error rates, comparable across engines and pages.

Both texts are normalised first (Unicode NFC, every run of whitespace to one space, trimmed), so
line breaks, indentation and composed-vs-decomposed accents do not count as errors. Edit distances
come from rapidfuzz's Levenshtein (unit costs: insertion, deletion, substitution).

Counts are kept alongside rates so that aggregates can be micro-averaged (total edits over total
reference length), which weights a page by how much text it holds.

Empty references: with an empty reference there is nothing to divide by, so the rate is 0.0 when
the hypothesis is empty too and 1.0 otherwise (a page that should be blank but is not counts as
entirely wrong, rather than as an unbounded ratio). Aggregates add its edits (the hypothesis
length) to the numerator and nothing to the denominator. Rates of non-empty references are not
capped: a hypothesis with many insertions can score above 1.0.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

_WHITESPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def words(text: str) -> list[str]:
    normalized = normalize(text)
    return normalized.split(" ") if normalized else []


@dataclass(frozen=True)
class ErrorCount:
    """Edits needed to turn the hypothesis into the reference, and the reference's length."""

    errors: int
    total: int

    @property
    def rate(self) -> float:
        if self.total == 0:
            return 0.0 if self.errors == 0 else 1.0
        return self.errors / self.total

    def __add__(self, other: ErrorCount) -> ErrorCount:
        return ErrorCount(self.errors + other.errors, self.total + other.total)


def total(counts: Iterable[ErrorCount]) -> ErrorCount:
    """The micro-average of many counts: summed edits over summed reference lengths."""
    return sum(counts, ErrorCount(0, 0))


def char_errors(reference: str, hypothesis: str) -> ErrorCount:
    ref, hyp = normalize(reference), normalize(hypothesis)
    return ErrorCount(Levenshtein.distance(ref, hyp), len(ref))


def word_errors(reference: str, hypothesis: str) -> ErrorCount:
    ref, hyp = words(reference), words(hypothesis)
    return ErrorCount(Levenshtein.distance(ref, hyp), len(ref))


def bag_of_words_errors(reference: str, hypothesis: str) -> ErrorCount:
    """Word errors ignoring order: the words left unmatched when both texts are treated as bags.

    Unmatched reference and hypothesis words pair up as substitutions; the rest are deletions or
    insertions, so the count is the larger of the two unmatched totals. On a page read in another
    column order this stays near the recognition error while ordinary WER climbs.
    """
    ref, hyp = Counter(words(reference)), Counter(words(hypothesis))
    common = sum((ref & hyp).values())
    ref_total, hyp_total = sum(ref.values()), sum(hyp.values())
    return ErrorCount(max(ref_total - common, hyp_total - common), ref_total)


def cer(reference: str, hypothesis: str) -> float:
    return char_errors(reference, hypothesis).rate


def wer(reference: str, hypothesis: str) -> float:
    return word_errors(reference, hypothesis).rate


def bag_of_words_wer(reference: str, hypothesis: str) -> float:
    return bag_of_words_errors(reference, hypothesis).rate
