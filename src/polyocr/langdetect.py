"""Which scripts a page's text is in, the languages to read it with, and mixed-script words.

Every layer shares this (engines, the router's checks, the benchmark), so the decision is made the
same way wherever it is made. The page's scripts come from a cheap first pass of some engine (the
Tesseract engine reads a sample of the page's lines with every candidate language) whose words are
classified here by Unicode script; benchmarks/mixed-script.md measured that against Tesseract's OSD.

The rule for languages: the user's languages always stay; a script found on the page that none of
them is written in adds that script's usual language (Latin text on a Cyrillic page adds eng,
Cyrillic text on a Latin page adds rus), unless that language's data is missing, which is said
once. Nothing is ever removed, so `--lang rus` on a pure-Russian page stays rus.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from polyocr.results import Block, LanguageChoice, PageResult
from polyocr.scripts import CYRILLIC, GREEK, LATIN, language_codes, script_of, scripts_for

log = logging.getLogger(__name__)

# The language added for a script that the user's languages do not cover.
SCRIPT_LANGUAGE = {LATIN: "eng", CYRILLIC: "rus", GREEK: "ell"}

# A word counts for a script when all its letters are of that script and it has at least this many
# letters (shorter runs are where a wrong-script look-alike lands: "o", "с", "ТЕ").
WORD_MIN_LETTERS = 3
# A script is on the page when its words hold at least SCRIPT_MIN_LETTERS letters and SCRIPT_MIN_SHARE
# of the letters of all classified words and, unless it is the main script (the most letters), are on
# at least SCRIPT_MIN_LINES of the lines read.
#
# Why lines as well as letters: a misread is one word in one place, and its length alone decides its
# share of letters; a script that is really on the page recurs from line to line. On the development
# set's English pages read eng+rus (benchmarks/mixed-script.md), the stray Cyrillic is one word on
# one line on 13 pages ("Коббегез" for a name on old_books_eng/f030: 4.2% of that short sample's
# letters, over the share; "СНАРТЕВ" for CHAPTER) and three words on two lines on one (h015, 2.4%);
# the Russian pages' Latin terms (MetaPost, xpart, numeric, path) are on 3 to 7 of the 10 sampled
# lines and 5 to 40% of the letters. Each English page fails one of the two tests and every Russian
# page passes both with room. Tesseract's word confidence was looked at and not used: it separates the
# English pages' strays, but on a hard page (mpman-ru p091) every real Latin term is read below 36.
SCRIPT_MIN_LETTERS, SCRIPT_MIN_SHARE, SCRIPT_MIN_LINES = 8, 0.03, 2

_WORD = re.compile(r"[^\W\d_]+")
_warned: set[tuple[str, str]] = set()


@dataclass
class ScriptTally:
    """What a first pass read, per script: the letters of the words written wholly in it, and on how
    many of the lines read such a word was."""

    letters: Counter[str] = field(default_factory=Counter)
    lines: Counter[str] = field(default_factory=Counter)


def word_scripts(source: str | Iterable[str], min_letters: int = WORD_MIN_LETTERS) -> ScriptTally:
    """Letters and lines per script, counting only words written wholly in one script. `source` is a
    text (its lines are the lines) or the lines an engine read, one string each."""
    lines = source.splitlines() if isinstance(source, str) else source
    tally = ScriptTally()
    for line in lines:
        seen: set[str] = set()
        for word in _WORD.findall(line):
            if len(word) < min_letters:
                continue
            scripts = {script_of(char) for char in word}
            if len(scripts) == 1 and None not in scripts:
                script: str = scripts.pop()  # type: ignore[assignment]
                tally.letters[script] += len(word)
                seen.add(script)
        tally.lines.update(seen)
    return tally


def page_scripts(tally: ScriptTally) -> tuple[str, ...]:
    """The scripts that are really on the page, most letters first, from a first pass's word_scripts."""
    letters = sum(tally.letters.values())
    return tuple(
        script
        for rank, (script, n) in enumerate(tally.letters.most_common())
        if n >= SCRIPT_MIN_LETTERS
        and letters
        and n / letters >= SCRIPT_MIN_SHARE
        # The main script needs no recurring: a text of one line (or a ground truth or layer whose
        # paragraphs are single lines) is still in its script; a stray misread is never the main one.
        and (rank == 0 or tally.lines[script] >= SCRIPT_MIN_LINES)
    )


def candidate_languages(requested: Sequence[str], available: Iterable[str] | None = None) -> list[str]:
    """The languages a first pass reads with: each script's usual language that is available (None:
    assume every one is), then the user's others. The order matters to Tesseract, which leans to
    its first language: with rus first, a sample of a Russian page read its Latin words as Cyrillic
    (mpman-ru p091: no Latin word found, against 85 letters of them with eng first)."""
    have = None if available is None else set(available)
    user = language_codes(requested)
    names = [lang for lang in SCRIPT_LANGUAGE.values() if lang in user or have is None or lang in have]
    return names + [lang for lang in user if lang not in names]


def choose_languages(
    requested: Sequence[str],
    found: Sequence[str],
    *,
    available: Iterable[str] | None = None,
    method: str = "",
    engine: str = "",
) -> LanguageChoice:
    """The languages to ask an engine for, and why: the user's, plus a language for each script found
    that they do not cover, if its data is available (a missing one is logged once per engine)."""
    user = language_codes(requested)
    covered = scripts_for(user) or frozenset()
    have = None if available is None else set(available)
    used = list(user)
    added: list[str] = []
    reasons: list[str] = []
    for script in [script for script in found if script not in covered]:
        language = SCRIPT_LANGUAGE.get(script)
        if language is None:
            reasons.append(f"{script} text found, no language to add for it")
            continue
        if have is not None and language not in have:
            reasons.append(f"{script} text found but {language} is not installed")
            if (engine, language) not in _warned:
                _warned.add((engine, language))
                log.warning(
                    "%s: %s text on a page but no %s data installed; reading without it", engine, script, language
                )
            continue
        if language not in used:
            used.append(language)
            added.append(language)
            reasons.append(f"{script} text found: added {language}")
    if not reasons:
        reasons.append("the page's scripts are those of the requested languages")
    return LanguageChoice(
        requested=user,
        used=used,
        added=added,
        scripts=list(found),
        method=method,
        reason="; ".join(reasons),
    )


def requested_only(requested: Sequence[str], why: str) -> LanguageChoice:
    """The record for a page read in the user's languages with no detection (turned off, or a region)."""
    user = language_codes(requested)
    return LanguageChoice(requested=user, used=user, method="none", reason=why)


# -- mixed-script words ----------------------------------------------------------------------------

# Cyrillic letters that look the same as a Latin letter in print (upper and lower case), as OCR
# engines confuse them. Only pairs that are the same glyph in common fonts: no к/k, п/n, и/u.
_CYRILLIC_TO_LATIN = {
    "А": "A",
    "В": "B",
    "Е": "E",
    "К": "K",
    "М": "M",
    "Н": "H",
    "О": "O",
    "Р": "P",
    "С": "C",
    "Т": "T",
    "Х": "X",
    "У": "Y",
    "І": "I",
    "Ј": "J",
    "Ѕ": "S",
    "а": "a",
    "е": "e",
    "о": "o",
    "р": "p",
    "с": "c",
    "у": "y",
    "х": "x",
    "і": "i",
    "ј": "j",
    "ѕ": "s",
}
_LATIN_TO_CYRILLIC = {latin: cyrillic for cyrillic, latin in _CYRILLIC_TO_LATIN.items() if cyrillic not in "ІЈЅіјѕ"}
_TO = {LATIN: _CYRILLIC_TO_LATIN, CYRILLIC: _LATIN_TO_CYRILLIC}
_TOKEN = re.compile(r"[^\W\d_]+")


def _letter_scripts(token: str) -> Counter[str]:
    return Counter(s for s in (script_of(c) for c in token) if s in (LATIN, CYRILLIC))


def _convert(token: str, target: str) -> str | None:
    """The token with every letter of the other script replaced by its look-alike in `target`; None
    when some letter has no look-alike (then the token is not a confusion and is left alone)."""
    table = _TO[target]
    out = []
    for char in token:
        script = script_of(char)
        if script == target or script not in (LATIN, CYRILLIC):
            out.append(char)
        elif char in table:
            out.append(table[char])
        else:
            return None
    return "".join(out)


def normalise_mixed(text: str) -> str:
    """Words mixing Cyrillic and Latin look-alikes ("Windоws" with a Cyrillic о, "ТЕX") rewritten in
    one script: the word's majority, or on a tie the majority of the other words of the text. A word
    in one script is never touched, nor one whose minority letters have no look-alike."""
    tokens = list(_TOKEN.finditer(text))
    mixed = [m for m in tokens if len(_letter_scripts(m.group())) == 2]
    if not mixed:
        return text
    context: Counter[str] = Counter()
    for m in tokens:
        scripts = _letter_scripts(m.group())
        if len(scripts) == 1:
            context[next(iter(scripts))] += 1
    pieces: list[str] = []
    last = 0
    for m in mixed:
        token = m.group()
        counts = _letter_scripts(token)
        latin, cyrillic = counts[LATIN], counts[CYRILLIC]
        if latin != cyrillic:
            targets = [LATIN if latin > cyrillic else CYRILLIC]
        elif context[LATIN] != context[CYRILLIC]:
            targets = [LATIN if context[LATIN] > context[CYRILLIC] else CYRILLIC]
        else:
            targets = []
        replacement = None
        for target in targets:
            replacement = _convert(token, target)
        pieces.append(text[last : m.start()])
        pieces.append(replacement if replacement is not None else token)
        last = m.end()
    pieces.append(text[last:])
    return "".join(pieces)


def _normalise_block(block: Block) -> None:
    block.text = normalise_mixed(block.text)
    for child in block.children:
        _normalise_block(child)


def normalise_page(result: PageResult) -> PageResult:
    """normalise_mixed over a result's text and every block's (in place); returns the result."""
    result.text = normalise_mixed(result.text)
    if result.markdown:
        result.markdown = normalise_mixed(result.markdown)
    for block in result.blocks:
        _normalise_block(block)
    return result
