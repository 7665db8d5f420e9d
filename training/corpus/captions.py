"""Parallel captions for the demo corpus, written natively in each of the 8 languages
from a clip's attributes (shared spec corpus.md; parallel lists per manifest.md).

`describe(attrs, lang, template, mention)` renders one sentence that names exactly the
attributes in `mention` (always the instrument). For the same arguments the 8 languages
say the same thing, each in its own word order and grammar, so `captions[L][j]` is a
translation of `captions["eng"][j]`. With every attribute mentioned, distinct clips get
distinct captions for each (language, template, variant). Background "none" is said as
"alone" in template 0 and "with no background noise" in templates 1 and 2.
See docs/corpus.md, section Captions.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from atri.training.corpus.captions_base import Ctx, Realizer, lexicon
from atri.training.corpus.captions_cjk import Chinese, Japanese
from atri.training.corpus.captions_germanic import Dutch, English, German
from atri.training.corpus.captions_romance import Catalan, French, Spanish
from atri.training.corpus.schema import ATTRIBUTES, ClipAttributes
from atri.training.languages import LANGS

N_TEMPLATES = 3
# variant v picks synonym v % len(synonyms) in every table; beyond this they cycle
N_VARIANTS = 2
OPTIONAL: tuple[str, ...] = tuple(a for a in ATTRIBUTES if a != "instrument")

_GRAMMARS: dict[str, Realizer] = {
    "eng": English(),
    "fra": French(),
    "deu": German(),
    "spa": Spanish(),
    "nld": Dutch(),
    "cat": Catalan(),
    "jpn": Japanese(),
    "zho": Chinese(),
}
assert tuple(_GRAMMARS) == LANGS


def describe(
    attrs: ClipAttributes, lang: str, template: int, mention: Iterable[str], variant: int = 0
) -> str:
    """One caption of `attrs` in `lang`, naming exactly the attributes in `mention`.

    template: 0 .. N_TEMPLATES-1, a word order (the same plan in every language).
    variant: which synonyms to use; the same variant means the same thing in every language.
    """
    if lang not in _GRAMMARS:
        raise ValueError(f"unknown language {lang!r}; expected one of {LANGS}")
    if not 0 <= template < N_TEMPLATES:
        raise ValueError(f"template must be in 0..{N_TEMPLATES - 1}, got {template}")
    mention = frozenset(mention)
    if "instrument" not in mention:
        raise ValueError("a caption always mentions the instrument")
    if unknown := mention - ATTRIBUTES.keys():
        raise ValueError(f"unknown attributes {sorted(unknown)}; expected {list(ATTRIBUTES)}")
    ctx = Ctx(attrs, mention, lexicon()[lang], variant)
    return _GRAMMARS[lang].render(template, ctx)


def _random_attributes(rng: random.Random) -> ClipAttributes:
    while True:
        try:
            return ClipAttributes(**{k: rng.choice(v) for k, v in ATTRIBUTES.items()})
        except ValueError:  # 'rising then falling' with 2 notes
            continue


def _attribute_cell(attrs: ClipAttributes, mention: frozenset[str]) -> str:
    cells = []
    for name, value in attrs.as_dict().items():
        text = (
            f"{value} notes"
            if name == "n_notes"
            else f"bg: {value}"
            if name == "background"
            else str(value)
        )
        cells.append(text if name in mention else f"[{text}]")
    return ", ".join(cells)


def sample_table(n: int = 30, seed: int = 0) -> str:
    """Markdown: n sample captions per language, the same clips in every language, with
    their canonical English attributes; [brackets] mark attributes the caption omits."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        attrs = _random_attributes(rng)
        full = i % 3 != 2  # two thirds full (as in evaluation), one third partial
        extra = {a for a in OPTIONAL if full or rng.random() < 0.5}
        rows.append(
            (attrs, i % N_TEMPLATES, frozenset({"instrument", *extra}), rng.randrange(N_VARIANTS))
        )
    out = []
    for lang in LANGS:
        out += [f"#### {lang}", "", "| # | attributes | t | v | caption |", "|---|---|---|---|---|"]
        for i, (attrs, t, mention, v) in enumerate(rows, 1):
            caption = describe(attrs, lang, t, mention, v)
            out.append(f"| {i} | {_attribute_cell(attrs, mention)} | {t} | {v} | {caption} |")
        out.append("")
    return "\n".join(out)


def instrument_table() -> str:
    """Markdown: each instrument's name per language, every synonym (variant) listed."""
    out = ["| instrument | " + " | ".join(LANGS) + " |", "|---" * (len(LANGS) + 1) + "|"]
    for inst in ATTRIBUTES["instrument"]:
        cells = []
        for lang in LANGS:
            entry = lexicon()[lang]["instrument"][inst]
            cells.append(
                " / ".join(e["noun"] for e in (entry if isinstance(entry, list) else [entry]))
            )
        out.append(f"| {inst} | " + " | ".join(cells) + " |")
    return "\n".join(out)
