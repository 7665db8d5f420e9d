"""What every language's caption grammar shares: the lexicon, the rendering context
(attributes, what to mention, which synonym) and small string helpers, among them the
background phrases that the alphabetic languages place alike."""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from atri.training.corpus.schema import ClipAttributes


@cache
def lexicon() -> dict[str, dict[str, Any]]:
    """lexicon.json: language -> table -> canonical value -> word. A list holds synonyms."""
    text = resources.files("atri.training.corpus").joinpath("lexicon.json").read_text("utf-8")
    return json.loads(text)


def pick(entry: Any, variant: int) -> Any:
    """One synonym: the same index for every table, so a variant is a stable choice."""
    return entry[variant % len(entry)] if isinstance(entry, list) else entry


@dataclass(frozen=True)
class Ctx:
    """One caption to render: a clip's attributes, the ones to mention, the synonym variant."""

    attrs: ClipAttributes
    mention: frozenset[str]
    words: dict[str, Any]  # this language's lexicon
    variant: int = 0

    def get(self, name: str) -> Any:
        """The attribute's value if the caption mentions it, else None."""
        return getattr(self.attrs, name) if name in self.mention else None

    def word(self, table: str, value: Any = None) -> Any:
        entry = self.words[table] if value is None else self.words[table][str(value)]
        return pick(entry, self.variant)

    def opt(self, table: str, name: str) -> str | None:
        """The word for attribute `name` from `table`, or None if it is not mentioned."""
        value = self.get(name)
        return None if value is None else self.word(table, value)

    @property
    def inst(self) -> dict[str, Any]:
        return self.word("instrument", self.attrs.instrument)

    @property
    def alone(self) -> bool:
        """Background 'none', mentioned: templates that say "alone" use this."""
        return self.get("background") == "none"


def words(*parts: str | None, sep: str = " ") -> str:
    return sep.join(p for p in parts if p)


def sentence(text: str, end: str = ".") -> str:
    return text[:1].upper() + text[1:] + end


def t0_sentence(c: Ctx, *head: str | None) -> str:
    """Template 0 in the alphabetic languages: HEAD (subject, verb, adverbs and notes in
    the language's order), the register phrase, then ", BACKGROUND" when the background is
    mentioned and not 'none' (which the template says as "alone")."""
    body = words(*head, c.opt("register_pp", "register"))
    bg = c.get("background")
    if bg and bg != "none":
        body += ", " + c.word("bg_end", bg)
    return sentence(body)


def background_first(c: Ctx, body: str) -> str:
    """Template 1's opening where the verb need not move: "BACKGROUND, BODY." """
    front = c.opt("bg_front", "background")
    return sentence(f"{front}, {body}" if front else body)


def background_while(c: Ctx, body: str) -> str:
    """Template 2's ending as a clause after a comma: "BODY, WHILE BACKGROUND." """
    bg = c.opt("bg_while", "background")
    return sentence(f"{body}, {bg}" if bg else body)


def tempo_beside_verb(c: Ctx, np: str | None) -> tuple[str | None, str | None]:
    """Template 1's tempo adverb as (before the verb, after it), in the alphabetic
    languages. A direction other than 'repeated' is said as a relative clause, which
    takes the tempo (neither slot); else it goes before the verb when notes are named and
    the tempo is not 'moderate' ("slowly plays three notes"), after it otherwise."""
    d, t = c.get("direction"), c.get("tempo")
    if not t or (d and d != "repeated"):
        return None, None
    t_adv = c.opt("tempo_adv", "tempo")
    return (t_adv, None) if np and t != "moderate" else (None, t_adv)


def is_phrase(word: str) -> bool:
    """Multi-word modifiers ("au tempo modéré") follow the single adjectives and take no
    conjunction; the lexicon's single adjectives are single words."""
    return " " in word


class Realizer(ABC):
    """A language's grammar: one method per template, each returning one sentence."""

    @abstractmethod
    def t0(self, c: Ctx) -> str: ...

    @abstractmethod
    def t1(self, c: Ctx) -> str: ...

    @abstractmethod
    def t2(self, c: Ctx) -> str: ...

    def render(self, template: int, c: Ctx) -> str:
        return (self.t0, self.t1, self.t2)[template](c)
