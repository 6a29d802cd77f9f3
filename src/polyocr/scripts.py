"""Writing systems, shared by every layer: which scripts a task's languages use, and which script a piece of text is in.

The router needs both directions: to keep an engine that cannot read Cyrillic away from Russian
pages, and to notice an engine that answered a Russian page in Chinese. Unicode character names
carry the script ("CYRILLIC SMALL LETTER A", "CJK UNIFIED IDEOGRAPH-4E00"), which is enough for
counting letters without a script database.
"""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable

LATIN, CYRILLIC, GREEK, ARABIC, HEBREW = "Latin", "Cyrillic", "Greek", "Arabic", "Hebrew"
HAN, KANA, HANGUL, KANNADA, DEVANAGARI = "Han", "Kana", "Hangul", "Kannada", "Devanagari"

# Every script named here: what an engine that reads any script (Tesseract with the traineddata,
# the multilingual VLMs) declares.
ANY_SCRIPT = frozenset({LATIN, CYRILLIC, GREEK, ARABIC, HEBREW, HAN, KANA, HANGUL, KANNADA, DEVANAGARI})

_LATIN_LANGUAGES = (
    "en",
    "eng",
    "de",
    "deu",
    "ger",
    "fr",
    "fra",
    "fre",
    "it",
    "ita",
    "es",
    "spa",
    "pt",
    "por",
    "nl",
    "nld",
    "dut",
    "pl",
    "pol",
    "cs",
    "ces",
    "cze",
    "sk",
    "slk",
    "sv",
    "swe",
    "fi",
    "fin",
    "da",
    "dan",
    "no",
    "nor",
    "tr",
    "tur",
    "ro",
    "ron",
    "hu",
    "hun",
    "hr",
    "hrv",
    "sl",
    "slv",
    "lt",
    "lit",
    "lv",
    "lav",
    "et",
    "est",
    "id",
    "ind",
    "vi",
    "vie",
    "la",
    "lat",
    "ca",
    "cat",
)
_CYRILLIC_LANGUAGES = (
    "ru",
    "rus",
    "uk",
    "ukr",
    "be",
    "bel",
    "bg",
    "bul",
    "sr",
    "srp",
    "mk",
    "mkd",
    "kk",
    "kaz",
    "chu",
)

# Language codes (ISO 639-1, 639-2/3 and Tesseract's names) to the scripts their text is written in.
LANGUAGE_SCRIPTS: dict[str, frozenset[str]] = {
    **dict.fromkeys(_LATIN_LANGUAGES, frozenset({LATIN})),
    **dict.fromkeys(_CYRILLIC_LANGUAGES, frozenset({CYRILLIC})),
    **dict.fromkeys(("zh", "zho", "chi", "chi_sim", "chi_tra"), frozenset({HAN})),
    **dict.fromkeys(("ja", "jpn"), frozenset({HAN, KANA})),
    **dict.fromkeys(("ko", "kor"), frozenset({HANGUL, HAN})),
    **dict.fromkeys(("el", "ell", "gre"), frozenset({GREEK})),
    **dict.fromkeys(("ar", "ara"), frozenset({ARABIC})),
    **dict.fromkeys(("he", "heb"), frozenset({HEBREW})),
    **dict.fromkeys(("kn", "kan"), frozenset({KANNADA})),
    **dict.fromkeys(("hi", "hin"), frozenset({DEVANAGARI})),
}

# First word of a Unicode character name -> script name used here.
_NAME_PREFIX = {
    "LATIN": LATIN,
    "CYRILLIC": CYRILLIC,
    "CJK": HAN,
    "HIRAGANA": KANA,
    "KATAKANA": KANA,
    "HANGUL": HANGUL,
    "GREEK": GREEK,
    "ARABIC": ARABIC,
    "HEBREW": HEBREW,
    "KANNADA": KANNADA,
    "DEVANAGARI": DEVANAGARI,
}


def language_codes(languages: Iterable[str]) -> list[str]:
    """("eng+rus", "de") -> ["eng", "rus", "de"]: the CLI joins with "+", the API passes a tuple."""
    return [code.strip().lower() for entry in languages for code in entry.split("+") if code.strip()]


def scripts_for(languages: Iterable[str]) -> frozenset[str] | None:
    """The scripts the languages are written in; None when any language is unknown here."""
    scripts: set[str] = set()
    for code in language_codes(languages):
        if code not in LANGUAGE_SCRIPTS:
            return None
        scripts |= LANGUAGE_SCRIPTS[code]
    return frozenset(scripts)


def script_of(char: str) -> str | None:
    """The script of a letter, or None for anything that is not a letter of a known script."""
    if not unicodedata.category(char).startswith("L"):
        return None
    name = unicodedata.name(char, "")
    return _NAME_PREFIX.get(name.split(" ", 1)[0])


def script_counts(text: str) -> Counter[str]:
    """Letters per script; letters of scripts not named here count as "other"."""
    counts: Counter[str] = Counter()
    for char in text:
        if char.isalpha():
            counts[script_of(char) or "other"] += 1
    return counts
