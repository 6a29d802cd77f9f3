"""Issue 20: the page decides the languages, mixed-script words, and the router's wrong-script retry.

Pages are drawn from the machine's fonts (polyocr.bench.mixed) and read by the real Tesseract."""

from __future__ import annotations

import pytest

from polyocr.bench.mixed import MIXED_LATIN_TERMS, MIXED_RUSSIAN, PURE_RUSSIAN, render_lines
from polyocr.documents import Page
from polyocr.engines.base import create_engine
from polyocr.langdetect import choose_languages, normalise_mixed
from polyocr.router import Router
from polyocr.scripts import CYRILLIC, LATIN, script_counts
from polyocr.types import EnginePlan, Task, TaskKind


@pytest.fixture(scope="module")
def engine():
    engine = create_engine("tesseract")
    engine.load(EnginePlan())
    yield engine
    engine.close()


def _page(lines):
    image, reference = render_lines(lines)
    return Page(image=image, number=1, source="rendered.png"), reference


def test_russian_page_with_latin_terms_read_with_rus_gets_the_latin_words(engine):
    page, _ = _page(MIXED_RUSSIAN)
    [result] = engine.recognize([page], Task(kind=TaskKind.TEXT, languages=("rus",)))
    missing = [term for term in MIXED_LATIN_TERMS if term not in result.text]
    assert len(missing) <= 2, missing
    assert result.languages.used == ["rus", "eng"] and result.languages.added == ["eng"]
    assert "Latin" in result.languages.reason and result.language == "rus+eng"


def test_lang_detect_off_reads_only_the_users_languages(engine):
    page, _ = _page(MIXED_RUSSIAN)
    [result] = engine.recognize([page], Task(kind=TaskKind.TEXT, languages=("rus",), lang_detect=False))
    assert result.languages.used == ["rus"] and result.languages.method == "none"
    assert sum(term in result.text for term in MIXED_LATIN_TERMS) < len(MIXED_LATIN_TERMS) // 2


def test_pure_russian_page_gets_no_english(engine):
    page, _ = _page(PURE_RUSSIAN)
    [result] = engine.recognize([page], Task(kind=TaskKind.TEXT, languages=("rus",)))
    assert result.languages.used == ["rus"] and result.languages.added == []
    assert result.languages.scripts == [CYRILLIC]


def test_a_language_whose_data_is_missing_is_never_added():
    choice = choose_languages(["eng"], (LATIN, CYRILLIC), available=["eng"], engine="t")
    assert choice.used == ["eng"] and "rus is not installed" in choice.reason


# Real words of the development set (mpman-ru, old_books_eng ground truth) with the look-alike
# letters OCR engines put in (Cyrillic о/е/а/с/р/Т/Е/Х in Latin words and Latin ones in Cyrillic).
CONFUSABLES = [
    ("Windоws", "Windows"),  # Cyrillic о
    ("MetаPost", "MetaPost"),  # Cyrillic а
    ("РostScript", "PostScript"),  # Cyrillic Р
    ("ТЕX", "ТЕХ"),  # two Cyrillic letters of three: the majority is Cyrillic
    ("cоnfig", "config"),
    ("прoграмма", "программа"),  # Latin o in a Russian word
    ("сиcтема", "система"),  # Latin c
    ("файлe", "файле"),  # Latin e
    ("Pисунок", "Рисунок"),  # Latin P
    ("ocнова", "основа"),  # tie (2 Latin, 4 Cyrillic): Cyrillic
]
UNCHANGED = [
    "TeX",  # all Latin
    "ТеХ",  # all Cyrillic: never touched, whatever it should have been
    "Windows",
    "программа",
    "Rжd",  # the Cyrillic ж has no Latin look-alike: not a confusion, left alone
    "fooбар",  # б has no look-alike
    "nfssfont.tex",
]


@pytest.mark.parametrize(("token", "expected"), CONFUSABLES)
def test_mixed_tokens_are_normalised(token, expected):
    assert normalise_mixed(f"слово {token} слово") == f"слово {expected} слово"


@pytest.mark.parametrize("token", UNCHANGED)
def test_single_script_and_unconvertible_tokens_are_left_alone(token):
    assert normalise_mixed(f"a {token} b") == f"a {token} b"


def test_tie_follows_the_neighbours():
    assert normalise_mixed("the Теxt here") == "the Text here"  # 2 Cyrillic, 2 Latin letters, Latin around
    assert normalise_mixed("это Тexа тут") == "это Теха тут"  # Latin e, x among Cyrillic words


def test_router_retries_a_wrong_script_answer_with_the_pages_languages():
    """A region task skips the engine's own detection, so Tesseract with eng reads the Russian text
    as Latin junk; the check (OSD: the page is Cyrillic) rejects it and the same engine is asked
    again with rus added before anything else. Before issue 20 the junk was accepted."""
    image, _ = render_lines(PURE_RUSSIAN)
    page = Page(image=image, number=1, source="pure.png")
    task = Task(kind=TaskKind.REGION, languages=("eng",), region=(0, 0, image.width, image.height))
    with Router(["tesseract"], task) as router:
        result = router.recognize_page(page)
    first, second = result.attempts
    assert first.outcome == "rejected" and first.error.startswith("wrong_script") and "Cyrillic" in first.error
    assert second.engine == "tesseract" and second.outcome == "ok"
    assert result.language == "eng+rus"
    counts = script_counts(result.text)
    assert counts[CYRILLIC] > counts[LATIN]


# Tesseract's sampled lines (eng+rus) of two development-set pages, as recorded for issue 20's rule.
STRAY_CYRILLIC_F030 = [  # old_books_eng/f030: one name misread in Cyrillic, 4.2% of the letters
    "12 HALF-HOURS WITH THR HICGHWAVMEN",
    "of the",
    "Highway-Men, Foot-Pads, Shop-Lifts,",
    "Great Britain, for above an Hundred Years",
    "ders, Unparalell’d Коббегез, Notorious Thefts,",
    "Benett о Mankind.",
    "Lhe lhieves New Canting-",
    "New Terms, Significant Phrafes, and Pro-",
    "ee ЖЕ",
]
LATIN_TERMS_P026 = [  # ru_borndigital_pdf/mpman-ru_p026: the fewest Latin terms of the Russian pages
    "пользовать факт, что 2(суффикс} — это сокращение для",
    "существующие до его исполнения переменные. начинаютциеся с этикеток х или у, так что OsJIOKM",
    "в разделе 10.1.",
    "разг pp, a.D;",
    "Декларации работают одинаковым образом для любого другого из оставшихся девяти типов:",
    "numeric 91, q2, q3;",
    "path р[]а[], pall 1];",
    "начально и никак не могут быть декларированы снова, но есть способ объявить, что новая",
]


def test_one_stray_cyrillic_word_adds_no_russian_but_recurring_latin_terms_add_english():
    """A misread is one word in one place however long it is; a script that is on the page recurs
    from line to line (langdetect.SCRIPT_MIN_LINES)."""
    from polyocr.langdetect import SCRIPT_MIN_SHARE, page_scripts, word_scripts

    stray = word_scripts(STRAY_CYRILLIC_F030)
    assert stray.letters[CYRILLIC] / sum(stray.letters.values()) > SCRIPT_MIN_SHARE  # the old rule's mistake
    assert page_scripts(stray) == (LATIN,)
    assert page_scripts(word_scripts(LATIN_TERMS_P026)) == (CYRILLIC, LATIN)
    assert page_scripts(word_scripts("\n".join(LATIN_TERMS_P026))) == (CYRILLIC, LATIN)  # a text's own lines
    assert page_scripts(word_scripts(" ".join(STRAY_CYRILLIC_F030))) == (LATIN,)  # one line: its main script


def test_the_english_page_with_a_stray_cyrillic_word_is_read_in_english_only(engine, eval_dir):
    from polyocr.documents import load_pages

    [page] = load_pages(eval_dir / "old_books_eng" / "f030.png")
    [result] = engine.recognize([page], Task(kind=TaskKind.TEXT, languages=("eng",)))
    assert result.languages.added == [] and result.languages.used == ["eng"], result.languages.reason
