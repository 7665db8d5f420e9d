"""Captions of the `test-unseen` split: a template and synonyms no training caption uses.

The training and the other evaluation captions are sentences from three templates
(captions.py) with the synonyms of lexicon.json. A model that learned to match those
word orders and words can do well on `test` without understanding a description it
has never seen phrased that way. `test-unseen` captions are a terse list ("Flute, a
three-note figure: ascending, unhurried, quiet, deep; bird calls around it.") in
every language, whose words for direction, tempo, loudness, register and background
come from lexicon_unseen.json and appear in no phrase of lexicon.json (`check_held_out`
asserts it; the instrument and the number of notes keep their usual nouns).
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from atri.training.corpus.captions_base import lexicon, pick
from atri.training.corpus.schema import ATTRIBUTES, ClipAttributes
from atri.training.languages import LANGS

# The attributes whose words are held out: none of them occurs in the training lexicon.
HELD_OUT: tuple[str, ...] = ("direction", "tempo", "loudness", "register", "background")


@cache
def unseen_lexicon() -> dict[str, dict[str, Any]]:
    """lexicon_unseen.json: language -> {pattern, attribute -> canonical value -> words}."""
    text = resources.files("atri.training.corpus").joinpath("lexicon_unseen.json")
    return json.loads(text.read_text("utf-8"))


def describe_unseen(attrs: ClipAttributes, lang: str) -> str:
    """The one `test-unseen` caption of `attrs` in `lang`; it names every attribute."""
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}; expected one of {LANGS}")
    words = unseen_lexicon()[lang]
    noun = pick(lexicon()[lang]["instrument"][attrs.instrument], 0)["noun"]
    slots = {"instrument": noun[:1].upper() + noun[1:]}
    for name in ATTRIBUTES:
        if name != "instrument":
            slots[name] = words[name][str(getattr(attrs, name))]
    return words["pattern"].format(**slots)


def _phrases(entry: Any) -> list[str]:
    """Every string inside a lexicon entry (strings, lists, dicts of them)."""
    if isinstance(entry, str):
        return [entry]
    if isinstance(entry, dict | list):
        values = entry.values() if isinstance(entry, dict) else entry
        return [s for v in values for s in _phrases(v)]
    return []  # flags such as "pl": true


def check_held_out() -> None:
    """Raise AssertionError if a held-out phrase occurs in any phrase of the training
    lexicon of its language (case-insensitive substring), or if a language's unseen
    lexicon lacks a value: the split would then not be what its name says."""
    for lang in LANGS:
        train = [p.lower() for p in _phrases(lexicon()[lang])]
        words = unseen_lexicon()[lang]
        for name, values in ATTRIBUTES.items():
            if name == "instrument":
                continue
            missing = [v for v in values if str(v) not in words[name]]
            if missing:
                raise AssertionError(f"lexicon_unseen.json {lang}/{name}: no words for {missing}")
            if name not in HELD_OUT:
                continue
            for value in values:
                phrase = words[name][str(value)].lower()
                clash = next((t for t in train if phrase in t), None)
                if clash is not None:
                    raise AssertionError(
                        f"lexicon_unseen.json {lang}/{name}={value}: {phrase!r} occurs in "
                        f"the training lexicon ({clash!r})"
                    )
