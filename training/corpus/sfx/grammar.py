"""Phrase-level grammar of the sound-effect lexicon: agreement of adjectives with the
noun they modify, indefinite articles, material slots and the trailing modifiers of a
clause, per language. The lexicon (lexicon.py) builds captions from these pieces.

A phrase in lexicon_data is "text|tag". The tag gives the gender and number of the
noun in [brackets] (or of the whole noun phrase when nothing is bracketed):
  eng  s (countable singular), p (plural), u (uncountable)
  fra spa cat  m f (singular), mp fp (plural), mu fu (uncountable: "du", no article in spa/cat)
  deu  m f n (singular), p (plural), mu fu nu (uncountable: no article)
  nld  c (de-word) n (het-word), p (plural), cu nu (uncountable)
Size and intensity adjectives attach to the bracketed noun; "{m}" marks where a
material phrase goes (else it follows the noun phrase, or precedes it in jpn/zho).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

CJK = frozenset({"jpn", "zho"})
TAGS: dict[str, frozenset[str]] = {
    "eng": frozenset({"s", "p", "u"}),
    "fra": frozenset({"m", "f", "mp", "fp", "mu", "fu"}),
    "spa": frozenset({"m", "f", "mp", "fp", "mu", "fu"}),
    "cat": frozenset({"m", "f", "mp", "fp", "mu", "fu"}),
    "deu": frozenset({"m", "f", "n", "p", "mu", "fu", "nu"}),
    "nld": frozenset({"c", "n", "p", "cu", "nu"}),
    "jpn": frozenset(),
    "zho": frozenset(),
}
PLURAL = frozenset({"p", "mp", "fp"})
# French words in h- that elide ("de l'hélicoptère"); the others are h aspiré ("le hibou")
H_MUET = frozenset({"hélicoptère", "horloge", "harmonica", "hélice", "herbe", "huile", "hélices"})
# Spanish feminine nouns in stressed a- take "un" ("un arpa", "un hacha")
STRESSED_A = frozenset({"arpa", "hacha", "águila", "agua", "aula"})
_HEAD = re.compile(r"\[([^\]]+)\]")
_SLOT = re.compile(r"\{(?:([^{}:]*):)?m(?::([^{}]*))?\}")


@dataclass(frozen=True)
class Phrase:
    """One noun phrase or clause of the lexicon, with its agreement tag ('' if none)."""

    text: str
    tag: str

    @classmethod
    def parse(cls, raw: str, lang: str, where: str) -> Phrase:
        text, _, tag = raw.partition("|")
        if tag and tag not in TAGS[lang]:
            raise ValueError(f"{where}: tag {tag!r} of {raw!r} is not one of {sorted(TAGS[lang])}")
        if text.count("[") != text.count("]") or text.count("[") > 1:
            raise ValueError(f"{where}: {raw!r} must bracket at most one head noun")
        return cls(text, tag)

    @property
    def has_head(self) -> bool:
        return "[" in self.text

    @property
    def plain(self) -> str:
        """The text without markers, as it reads with no attribute."""
        return _SLOT.sub("", _HEAD.sub(r"\1", self.text))


def agree(lang: str, forms: Any, tag: str) -> str:
    """The form of an adjective that agrees with a noun of gender/number `tag`.

    forms: eng/jpn/zho a string; fra/spa/cat {m, f, mp, fp}; nld [base, inflected];
    deu a stem taking the nominative ending of "ein"/no article (er, e, es; plural e)."""
    if lang in ("fra", "spa", "cat"):
        return forms[tag[:1] + ("p" if tag in PLURAL else "")]
    if lang == "deu":
        return forms + {"m": "er", "f": "e", "n": "es", "p": "e"}[tag[:1]]
    if lang == "nld":
        # het-words without a definite article keep the bare form: "een luid geluid"
        return forms[0] if tag in ("n", "nu") else forms[1]
    return forms


def join(lang: str, *parts: str) -> str:
    sep = "" if lang in CJK else " "
    return sep.join(p for p in parts if p)


def attach(lang: str, text: str, pre: list[str], post: list[str], conj: str) -> str:
    """Put adjectives before/after the bracketed head, then drop the brackets."""
    m = _HEAD.search(text)
    if m is None:
        if pre or post:
            raise ValueError(f"{text!r} names no head noun for an adjective")
        return text
    if len(post) > 1:
        post = [", ".join(post[:-1]) + f" {conj} " + post[-1]]
    head = join(lang, *pre, m.group(1), *post)
    return text[: m.start()] + head + text[m.end() :]


def has_slot(text: str) -> bool:
    return _SLOT.search(text) is not None


def place_material(lang: str, text: str, material: str | None, clause: bool) -> str:
    """Fill the material slot, or append the phrase (prefix it in jpn/zho noun phrases).

    A slot is "{m}", or in jpn/zho "{m:を}" / "{在:m}": the particles around the place
    ("雪の上を歩く足音", "有人在雪地上走路") vanish with it when no material is given."""
    if has_slot(text):
        return _SLOT.sub(
            lambda m: f"{m.group(1) or ''}{material}{m.group(2) or ''}" if material else "", text
        )
    if not material:
        return text
    if lang in CJK:
        if clause:
            raise ValueError(f"{text!r}: a {lang} clause with a material needs a {{m}} slot")
        return material + ("の" if lang == "jpn" else "的") + text
    return f"{text} {material}"


def starts_with_vowel(lang: str, text: str) -> bool:
    word = text.split(" ", 1)[0].lower().strip("'")
    if not word:
        return False
    if lang == "eng":
        if word.startswith(("uni", "use", "eu", "one", "ukulele")):
            return False
        return word[0] in "aeiou" or word in ("hour", "honest")
    if lang == "fra":
        return word[0] in "aeiouyàâéèêëîïôöûù" or word in H_MUET
    return word[0] in "aeiouàèéíòóúh"


def article(lang: str, tag: str, text: str, pre_adjective: bool) -> str:
    """The indefinite (or partitive) article for a noun phrase, ready to prefix."""
    if lang == "eng":
        return ("an " if starts_with_vowel(lang, text) else "a ") if tag == "s" else ""
    if lang == "fra":
        if tag in PLURAL:
            return "de " if pre_adjective else "des "  # "de gros chiens", "des chiens"
        if tag in ("mu", "fu"):
            if starts_with_vowel(lang, text):
                return "de l'"
            return "du " if tag == "mu" else "de la "
        return {"m": "un ", "f": "une "}[tag]
    if lang in ("spa", "cat"):
        if tag == "f" and lang == "spa" and text.split(" ", 1)[0] in STRESSED_A:
            return "un "
        return {"m": "un ", "f": "una "}.get(tag, "")
    if lang == "deu":
        return {"m": "ein ", "n": "ein ", "f": "eine "}.get(tag, "")
    if lang == "nld":
        return "een " if tag in ("c", "n") else ""
    return ""


def fix_english_articles(text: str) -> str:
    """a/an before the word that follows, once adjectives have been inserted."""

    def repl(m: re.Match[str]) -> str:
        an = starts_with_vowel("eng", m.group(2))
        art = "an" if an else "a"
        return (art.capitalize() if m.group(1)[0].isupper() else art) + " " + m.group(2)

    return re.sub(r"\b([Aa]n?) (\w+)", repl, text)


def capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]


def elided_de(lang: str, text: str) -> str:
    """French/Catalan "de" before a noun phrase: "bruit d'explosion", "so de pluja"."""
    if lang in ("fra", "cat") and starts_with_vowel(lang, text):
        return "d'" + text
    return "de " + text
