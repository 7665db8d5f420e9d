"""Captions: exactly the mentioned attributes, parallel across languages, injective on
full attribute tuples, distinct word orders per template, and per-language grammar."""

from __future__ import annotations

import itertools
import os
import random
import re
from dataclasses import replace
from pathlib import Path

import pytest

from atri.training.corpus.captions import (
    N_TEMPLATES,
    N_VARIANTS,
    OPTIONAL,
    describe,
    instrument_table,
    sample_table,
)
from atri.training.corpus.captions_base import lexicon, pick
from atri.training.corpus.schema import ATTRIBUTES, ClipAttributes
from atri.training.languages import LANGS

REPO = Path(__file__).resolve().parents[3]
FULL = frozenset(ATTRIBUTES)
RTF = "rising then falling"


def attrs(**kw) -> ClipAttributes:
    base = dict(
        instrument="flute",
        register="low",
        direction="rising",
        tempo="slow",
        loudness="soft",
        n_notes=3,
        background="sea waves",
    )
    return ClipAttributes(**{**base, **kw})


def all_tuples(instruments=tuple(ATTRIBUTES["instrument"])) -> list[ClipAttributes]:
    out = []
    for inst, *rest in itertools.product(instruments, *(ATTRIBUTES[a] for a in OPTIONAL)):
        try:
            out.append(ClipAttributes(inst, *rest))
        except ValueError:  # 'rising then falling' with 2 notes
            pass
    return out


def alternatives(a: ClipAttributes, name: str) -> list[ClipAttributes]:
    """`a` with attribute `name` changed to each other valid value."""
    out = []
    for value in ATTRIBUTES[name]:
        if value != getattr(a, name):
            try:
                out.append(replace(a, **{name: value}))
            except ValueError:
                pass
    return out


def random_cases(n: int, seed: int) -> list[tuple[ClipAttributes, frozenset[str]]]:
    rng, tuples = random.Random(seed), all_tuples()
    return [
        (
            rng.choice(tuples),
            frozenset({"instrument", *(x for x in OPTIONAL if rng.random() < 0.5)}),
        )
        for _ in range(n)
    ]


# ---------------------------------------------------------------- API


@pytest.mark.parametrize(
    "lang, template, mention",
    [
        ("xxx", 0, FULL),
        ("eng", N_TEMPLATES, FULL),
        ("eng", -1, FULL),
        ("eng", 0, FULL - {"instrument"}),
        ("eng", 0, FULL | {"colour"}),
    ],
)
def test_rejects_bad_arguments(lang, template, mention):
    with pytest.raises(ValueError):
        describe(attrs(), lang, template, mention)


def test_every_language_and_template_renders_one_sentence():
    for lang, t, v in itertools.product(LANGS, range(N_TEMPLATES), range(N_VARIANTS)):
        text = describe(attrs(), lang, t, FULL, v)
        assert text.endswith("。" if lang in ("jpn", "zho") else "."), text
        assert "  " not in text and " ," not in text and ",," not in text and "None" not in text


# ---------------------------------------------------------------- what is mentioned


def mentioned(
    a: ClipAttributes, lang: str, t: int, mention: frozenset[str], v: int = 0
) -> set[str]:
    """Attributes the caption depends on: changing their value changes the string."""
    text = describe(a, lang, t, mention, v)
    return {
        name
        for name in ATTRIBUTES
        if any(describe(b, lang, t, mention, v) != text for b in alternatives(a, name))
    }


def test_caption_names_exactly_the_mentioned_attributes_in_every_language():
    for a, mention in random_cases(120, seed=1):
        for lang, t in itertools.product(LANGS, range(N_TEMPLATES)):
            assert mentioned(a, lang, t, mention) == mention, (lang, t, a, sorted(mention))


def test_every_value_change_of_a_mentioned_attribute_changes_the_caption():
    # stronger than above: no two values of a mentioned attribute render alike
    for a, mention in random_cases(40, seed=2):
        for lang, t, name in itertools.product(LANGS, range(N_TEMPLATES), mention):
            texts = [describe(b, lang, t, mention) for b in [a, *alternatives(a, name)]]
            assert len(set(texts)) == len(texts), (lang, t, name, texts)


def test_no_background_differs_from_a_background():
    for lang, t in itertools.product(LANGS, range(N_TEMPLATES)):
        quiet = describe(attrs(background="none"), lang, t, FULL)
        assert quiet != describe(attrs(background="sea waves"), lang, t, FULL)
        # "none" is said, not left out: it differs from the caption that omits background
        assert quiet != describe(attrs(background="none"), lang, t, FULL - {"background"})


def _number_words(lang: str) -> list[str]:
    return [pick(w, v) for w in lexicon()[lang]["number"].values() for v in range(N_VARIANTS)]


def _contains_word(text: str, word: str, lang: str) -> bool:
    if lang in ("jpn", "zho"):
        return word in text
    return re.search(rf"(?<!\w){re.escape(word)}(?!\w)", text, re.IGNORECASE) is not None


def test_note_count_spelled_out_only_when_mentioned():
    for lang, t, n in itertools.product(LANGS, range(N_TEMPLATES), (2, 3, 4, 5)):
        a = attrs(n_notes=n, direction="falling")
        full = describe(a, lang, t, FULL)
        word = lexicon()[lang]["number"][str(n)]
        assert _contains_word(full, word, lang), (lang, t, full)
        assert not re.search(r"\d", full), full
        partial = describe(a, lang, t, FULL - {"n_notes"})
        assert not any(_contains_word(partial, w, lang) for w in _number_words(lang)), partial


def test_instrument_word_always_present():
    for inst, lang, t, v in itertools.product(
        ATTRIBUTES["instrument"], LANGS, range(N_TEMPLATES), range(N_VARIANTS)
    ):
        noun = pick(lexicon()[lang]["instrument"][inst], v)["noun"]
        for mention in (frozenset({"instrument"}), FULL):
            text = describe(attrs(instrument=inst), lang, t, mention, v)
            assert noun.lower() in text.lower(), (noun, text)


# ---------------------------------------------------------------- injectivity


@pytest.mark.parametrize("lang", LANGS)
def test_full_captions_are_injective(lang):
    """Distinct tuples, distinct strings, across all templates at once (an evaluation clip
    carries two templates). Every non-instrument tuple for instruments of each grammatical
    class; the instruments themselves are covered by test_instruments_are_distinct."""
    tuples = all_tuples(("flute", "piano", "church organ", "choir", "steel drums", "harp"))
    seen: dict[str, tuple] = {}
    for t in range(N_TEMPLATES):
        for a in tuples:
            text = describe(a, lang, t, FULL)
            assert text not in seen, (text, seen[text], (t, a))
            seen[text] = (t, a)


@pytest.mark.slow  # ~12 s: every tuple, every variant
def test_full_captions_are_injective_exhaustively():
    tuples = all_tuples()
    for lang, v in itertools.product(LANGS, range(N_VARIANTS)):
        texts = [describe(a, lang, t, FULL, v) for t in range(N_TEMPLATES) for a in tuples]
        assert len(set(texts)) == len(texts), lang


def test_instruments_are_distinct():
    for lang, t, v in itertools.product(LANGS, range(N_TEMPLATES), range(N_VARIANTS)):
        for base in (attrs(), attrs(direction="repeated", n_notes=2, background="none")):
            texts = {
                describe(replace(base, instrument=i), lang, t, FULL, v)
                for i in ATTRIBUTES["instrument"]
            }
            assert len(texts) == len(ATTRIBUTES["instrument"])


# ---------------------------------------------------------------- word order


def attribute_order(a: ClipAttributes, lang: str, t: int) -> tuple[str, ...]:
    """Attributes sorted by where the caption first changes when each one changes."""
    text = describe(a, lang, t, FULL)
    where = {
        name: min(
            len(os.path.commonprefix([text, describe(b, lang, t, FULL)]))
            for b in alternatives(a, name)
        )
        for name in ATTRIBUTES
    }
    return tuple(sorted(where, key=lambda n: (where[n], n)))


@pytest.mark.parametrize("lang", LANGS)
def test_templates_have_different_word_orders(lang):
    for a in (attrs(), attrs(instrument="choir", direction=RTF, n_notes=4, background="applause")):
        orders = [attribute_order(a, lang, t) for t in range(N_TEMPLATES)]
        assert len(set(orders)) == N_TEMPLATES, orders


def test_parallel_captions_differ_in_order_from_english():
    # Japanese and Chinese are not English word order
    a = attrs()
    for lang in ("jpn", "zho"):
        assert attribute_order(a, lang, 0) != attribute_order(a, "eng", 0)


# ---------------------------------------------------------------- grammar, per language


def say(lang: str, t: int, mention=FULL, **kw) -> str:
    return describe(attrs(**kw), lang, t, mention)


def test_english():
    assert say("eng", 1, instrument="oboe").startswith("Over the sound of sea waves, an oboe plays")
    assert say("eng", 0, instrument="oboe", background="none").startswith("A lone oboe ")
    assert say("eng", 0, instrument="steel drums").startswith("Steel drums softly play ")
    assert say("eng", 0, instrument="choir").startswith("A choir softly sings ")
    assert "sung by a choir" in say("eng", 2, instrument="choir")
    assert "the same soft low note four times" in say("eng", 1, direction="repeated", n_notes=4)


def test_french_gender_and_contractions():
    assert say("fra", 0, instrument="flute", background="none").startswith("Une flûte seule joue ")
    assert say("fra", 0, instrument="piano", background="none").startswith("Un piano seul joue ")
    for inst, pp in [
        ("flute", "à la flûte"),
        ("piano", "au piano"),
        ("harp", "à la harpe"),
        ("church organ", "à l'orgue d'église"),
        ("oboe", "au hautbois"),
        ("choir", "chantées par un chœur"),
    ]:
        assert pp in say("fra", 2, instrument=inst), inst
    assert "trois notes lentes et ascendantes" in say("fra", 0)
    assert (
        "la même note aiguë jouée" in say("fra", 2, direction="repeated", register="high").lower()
    )
    assert "trois notes douces et graves qui montent lentement" in say("fra", 1)


def test_spanish_gender_and_number():
    assert say("spa", 0, instrument="flute", background="none").startswith("Una flauta sola toca ")
    assert say("spa", 0, instrument="piano", background="none").startswith("Un piano solo toca ")
    assert say("spa", 0, instrument="harp", background="none").startswith("Un arpa sola toca ")
    assert say("spa", 0, instrument="steel drums").startswith("Unos tambores metálicos tocan ")
    assert "notas lentas y ascendentes" in say("spa", 0)
    assert "la misma nota suave y aguda tres veces" in say(
        "spa", 1, direction="repeated", register="high"
    )
    assert "suben suave y lentamente" in say("spa", 2)


def test_catalan_gender_and_number():
    assert say("cat", 0, instrument="flute", background="none").startswith(
        "Una flauta tota sola toca "
    )
    assert say("cat", 0, instrument="piano", background="none").startswith("Un piano tot sol toca ")
    assert say("cat", 0, instrument="steel drums", background="none").startswith(
        "Uns steel drums tots sols toquen "
    )
    assert "dues notes" in say("cat", 0, n_notes=2)  # feminine "two"
    assert "dues vegades" in say("cat", 1, n_notes=2, direction="repeated")
    assert "notes agudes" in say("cat", 2, register="high")
    assert "la mateixa nota forta i aguda" in say(
        "cat", 1, direction="repeated", register="high", loudness="loud"
    )


def test_german_gender_and_case():
    assert say("deu", 0, instrument="flute").startswith("Eine Flöte spielt ")
    assert say("deu", 0, instrument="piano").startswith("Ein Klavier spielt ")
    assert say("deu", 0, instrument="choir").startswith("Ein Chor singt ")
    assert say("deu", 0, instrument="steel drums").startswith("Steeldrums spielen ")
    assert "Zu Vogelgezwitscher spielt eine Flöte" in say("deu", 1, background="birdsong")  # V2
    for inst, pp in [
        ("flute", "auf einer Flöte gespielte"),
        ("piano", "auf einem Klavier gespielte"),
        ("electric bass", "auf einem E-Bass gespielte"),
        ("choir", "von einem Chor gesungene"),
        ("steel drums", "auf Steeldrums gespielte"),
    ]:
        assert pp in say("deu", 2, instrument=inst), inst
    assert "dreimal denselben leisen, tiefen Ton" in say("deu", 1, direction="repeated")
    assert say("deu", 2, direction="repeated", register="high").startswith("Derselbe hohe, ")
    assert "Töne, die langsam ansteigen" in say("deu", 1)
    assert "steigen leise und langsam an," in say("deu", 2)


def test_dutch_de_het_and_inflection():
    assert "op de fluit gespeelde noten" in say("nld", 2, instrument="flute")
    assert "op het kerkorgel gespeelde noten" in say("nld", 2, instrument="church organ")
    assert "door een koor gezongen noten" in say(
        "nld", 2, instrument="choir"
    )  # strong participle: no -e
    assert say("nld", 0, instrument="choir").startswith("Een koor zingt ")
    assert "drie zachte, lage noten die langzaam stijgen" in say("nld", 1)
    assert "dezelfde zachte, lage noot" in say("nld", 1, direction="repeated")
    assert "drie langzame, stijgende noten" in say("nld", 0)


def test_japanese_counters_and_order():
    assert "音を三つ" in say("jpn", 0)
    assert "三つのやわらかな低い音" in say("jpn", 1)
    assert "同じやわらかな低い音を四回" in say("jpn", 1, direction="repeated", n_notes=4)
    assert say("jpn", 0, instrument="choir").endswith("歌う。背景には波の音が聞こえる。")
    assert say("jpn", 1).startswith("波の音をバックに、フルートが")
    for t in range(N_TEMPLATES):  # verb-final: the sentence ends in a verb, not a noun phrase
        assert re.search(r"(る|う|く|す)。", say("jpn", t, background="none"))


def test_chinese_measure_words_and_verbs():
    assert "两个" in say("zho", 0, n_notes=2) and "二个" not in say("zho", 0, n_notes=2)
    assert "吹了三次" in say("zho", 1, direction="repeated")
    assert "一串" in say("zho", 1, FULL - {"n_notes"})
    for inst, verb in [
        ("flute", "吹出"),
        ("violin", "拉出"),
        ("piano", "弹出"),
        ("marimba", "敲出"),
        ("choir", "唱出"),
    ]:
        assert verb in say("zho", 0, instrument=inst), inst
    assert say("zho", 1).startswith("在海浪声中，长笛")


# ---------------------------------------------------------------- docs


def test_docs_are_current():
    """docs/corpus.md embeds generated tables and examples; regenerate them when they change."""
    docs = (REPO / "docs" / "corpus.md").read_text("utf-8")
    table = sample_table()
    assert table == sample_table()
    for lang in LANGS:
        section = table.split(f"#### {lang}\n")[1].split("####")[0]
        assert len(re.findall(r"^\| \d+ \|", section, re.M)) == 30
    assert table in docs, "stale samples: atri corpus captions"
    assert instrument_table() in docs, "stale: atri corpus captions instruments"
    for lang, t in itertools.product(LANGS, range(N_TEMPLATES)):
        assert f"| {t} | {lang} | {describe(attrs(), lang, t, FULL)} |" in docs
