import itertools
from dataclasses import replace

import pytest

from atri.training.corpus import captions_unseen
from atri.training.corpus.captions_unseen import (
    HELD_OUT,
    check_held_out,
    describe_unseen,
    unseen_lexicon,
)
from atri.training.corpus.schema import ATTRIBUTES, ClipAttributes
from atri.training.languages import LANGS

BASE = ClipAttributes("flute", "low", "rising", "slow", "soft", 3, "birdsong")


def test_held_out_words_are_absent_from_the_training_lexicon():
    check_held_out()  # raises on a clash or a missing value


def test_check_held_out_catches_a_training_word(monkeypatch):
    table = {lang: dict(words) for lang, words in unseen_lexicon().items()}
    table["fra"]["tempo"] = {**table["fra"]["tempo"], "slow": "lentement"}
    monkeypatch.setattr(captions_unseen, "unseen_lexicon", lambda: table)
    with pytest.raises(AssertionError, match="fra/tempo=slow: 'lentement'"):
        check_held_out()


@pytest.mark.parametrize("lang", LANGS)
def test_every_attribute_value_changes_the_caption(lang):
    """Injective over every tuple: each test-unseen caption fits exactly one clip."""
    tuples = []
    for values in itertools.product(*(ATTRIBUTES[a] for a in ATTRIBUTES if a != "instrument")):
        try:
            tuples.append(ClipAttributes("piano", *values))
        except ValueError:
            continue
    tuples += [replace(BASE, instrument=i) for i in ATTRIBUTES["instrument"]]
    texts = [describe_unseen(a, lang) for a in tuples]
    assert len(set(texts)) == len(set(tuples))


@pytest.mark.parametrize("lang", LANGS)
def test_caption_names_every_attribute_with_its_held_out_words(lang):
    text = describe_unseen(BASE, lang)
    for name in HELD_OUT:
        assert unseen_lexicon()[lang][name][str(getattr(BASE, name))] in text


def test_english_reads_as_a_list():
    assert describe_unseen(BASE, "eng") == (
        "Flute, a three-note figure: ascending, unhurried, quiet, deep; bird calls around it."
    )


def test_unknown_language_is_named():
    with pytest.raises(ValueError, match="unknown language 'xx'"):
        describe_unseen(BASE, "xx")
