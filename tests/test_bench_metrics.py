"""CER, WER and bag-of-words WER against cases worked out by hand."""

from __future__ import annotations

import pytest

from polyocr.bench.metrics import (
    ErrorCount,
    bag_of_words_errors,
    bag_of_words_wer,
    cer,
    char_errors,
    normalize,
    total,
    wer,
    word_errors,
)


def test_normalize_collapses_whitespace_and_composes_unicode():
    assert normalize("  a\tb\n\n c  ") == "a b c"
    assert normalize("cafe\u0301") == "café"  # e + combining acute -> one code point
    assert normalize("\u00a0x\u2003y\u00a0") == "x y"  # no-break and em spaces are whitespace too


def test_cer_classic_example():
    # kitten -> sitting: k->s, e->i, +g = 3 edits over 6 reference characters
    assert char_errors("kitten", "sitting") == ErrorCount(3, 6)
    assert cer("kitten", "sitting") == pytest.approx(0.5)


def test_cer_ignores_layout_whitespace_and_unicode_composition():
    assert cer("Café au lait\nbien chaud", "Cafe\u0301  au lait bien   chaud") == 0.0


def test_cer_counts_cyrillic_letters_as_single_characters():
    # "Привет мир" is 10 characters; one Cyrillic letter substituted, one '!' inserted
    assert char_errors("Привет мир", "Привет мiр!") == ErrorCount(2, 10)
    # a Latin look-alike is an error: 'о' (Cyrillic) vs 'o' (Latin)
    assert cer("кот", "кoт") == pytest.approx(1 / 3)


def test_wer_uses_word_edit_distance():
    assert word_errors("the cat sat on the mat", "the cat sit on mat") == ErrorCount(2, 6)
    assert wer("the cat sat", "cat the sat") == pytest.approx(2 / 3)


def test_bag_of_words_ignores_order_but_not_counts():
    assert bag_of_words_wer("the cat sat", "cat the sat") == 0.0
    # bags {a:2, b:1} vs {a:1, b:2}: one a and one b unmatched -> one substitution
    assert bag_of_words_errors("a a b", "a b b") == ErrorCount(1, 3)
    # two extra words are insertions
    assert bag_of_words_errors("a b", "a b c d") == ErrorCount(2, 2)
    # a missing word is a deletion
    assert bag_of_words_errors("a b c", "c a") == ErrorCount(1, 3)


def test_empty_reference_rates_are_zero_or_one():
    assert cer("", "") == 0.0
    assert cer("  \n ", "") == 0.0
    assert cer("", "noise") == 1.0
    assert char_errors("", "noise") == ErrorCount(5, 0)
    assert wer("", "two words") == 1.0
    assert bag_of_words_wer("", "") == 0.0


def test_empty_hypothesis_is_total_failure():
    assert cer("abc", "") == 1.0
    assert wer("one two", "") == 1.0
    assert bag_of_words_wer("one two", "") == 1.0


def test_rates_are_not_capped_for_insertions():
    assert cer("ab", "abcdef") == pytest.approx(2.0)


def test_total_is_a_micro_average():
    counts = [ErrorCount(1, 10), ErrorCount(3, 10), ErrorCount(5, 0)]  # the last: an empty reference
    assert total(counts) == ErrorCount(9, 20)
    assert total(counts).rate == pytest.approx(0.45)
    assert total([]) == ErrorCount(0, 0)
    assert total([]).rate == 0.0
