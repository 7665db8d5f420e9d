"""The sound-effect concept lexicon: what a person types for each of the corpus's
concepts, written natively in the 8 languages, and the caption templates built on it.

Data: lexicon_data/concepts.json (ids, groups, glosses, which attributes each concept
takes) and lexicon_data/<lang>.json (noun phrases "np" and clauses "vp" per concept,
adjective forms, material phrases, sentence frames). grammar.py holds agreement.

Templates (variant v uses template v % N_TEMPLATES; synonyms advance with v // N_TEMPLATES):
  0  noun phrase, as typed into a search box: "footsteps on snow", "verre brisé", "雷声"
  1  "You can hear NP." / "On entend NP." / "Zu hören ist NP." / "NPが聞こえる。"
  2  a clause: "Someone walks on snow." / "Jemand stapft durch den Schnee, leise."
  3  "sound of NP" / "bruit de NP" / "NP ist zu hören." / "これはNPです。"
For one (concept, attrs, variant) the 8 captions are translations of each other.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from atri.training.corpus.sfx import grammar as g
from atri.training.languages import LANGS

N_TEMPLATES = 4
ATTRIBUTE_VALUES: dict[str, tuple[str, ...]] = {
    "material": (
        "snow",
        "grass",
        "gravel",
        "sand",
        "wood",
        "metal",
        "stone",
        "water",
        "ice",
        "dirt",
        "mud",
        "glass",
        "leaves",
        "carpet",
        "tile",
        "concrete",
        "cloth",
        "plastic",
    ),
    "distance": ("near", "distant"),
    "size": ("small", "large"),
    "intensity": ("soft", "loud"),
}
ADJECTIVAL = ("size", "intensity")  # agree with the bracketed head noun
_SPEC = {"d": "distance", "s": "size", "i": "intensity"}


@dataclass(frozen=True)
class Concept:
    """A sound a person would name. `attributes` are the ones its captions may carry;
    `materials` the allowed material values and `material_kind` 'on' (a surface:
    footsteps on snow) or 'in' (a medium: digging in sand)."""

    id: str
    group: str
    gloss: str
    attributes: frozenset[str]
    materials: tuple[str, ...] = ()
    material_kind: str = ""


def _read(name: str) -> dict[str, Any]:
    path = resources.files("atri.training.corpus.sfx").joinpath("lexicon_data", name)
    try:
        return json.loads(path.read_text("utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"lexicon_data/{name}: line {e.lineno}: {e.msg}") from e


def _concept(cid: str, row: list[str], sets: dict[str, list[str]]) -> Concept:
    group, gloss, spec = row
    attrs, materials, kind = set(), (), ""
    for token in spec.split():
        if token.startswith("m:"):
            _, kind, name = token.split(":")
            if kind not in ("on", "in") or name not in sets:
                raise ValueError(f"lexicon_data/concepts.json: {cid}: bad material spec {token!r}")
            attrs.add("material")
            materials = tuple(sets[name])
        elif token in _SPEC:
            attrs.add(_SPEC[token])
        else:
            raise ValueError(f"lexicon_data/concepts.json: {cid}: unknown attribute code {token!r}")
    return Concept(cid, group, gloss, frozenset(attrs), materials, kind)


@cache
def _concepts() -> dict[str, Concept]:
    raw = _read("concepts.json")
    sets = raw["material_sets"]
    for name, values in sets.items():
        if bad := set(values) - set(ATTRIBUTE_VALUES["material"]):
            raise ValueError(
                f"lexicon_data/concepts.json: material set {name}: unknown {sorted(bad)}"
            )
    return {cid: _concept(cid, row, sets) for cid, row in raw["concepts"].items()}


def _check_entry(
    lang: str, concept: Concept, entry: dict[str, list[str]]
) -> dict[str, list[g.Phrase]]:
    where = f"lexicon_data/{lang}.json: {concept.id}"
    out = {}
    for field in ("np", "vp"):
        if not entry.get(field):
            raise ValueError(f"{where}: no {field!r} phrases")
        out[field] = [g.Phrase.parse(raw, lang, f"{where}.{field}") for raw in entry[field]]
    for p in out["np"]:
        if lang not in g.CJK and not p.tag:
            raise ValueError(f"{where}.np: {p.text!r} needs a gender/number tag")
        if {"size", "intensity"} & concept.attributes and not p.has_head:
            raise ValueError(f"{where}.np: {p.text!r} needs a [head] for size/intensity")
    for p in out["vp"]:
        if "size" in concept.attributes and not (p.has_head and (p.tag or lang in g.CJK)):
            raise ValueError(f"{where}.vp: {p.text!r} needs a tagged [head] for size")
        if "material" in concept.attributes and lang in g.CJK and not g.has_slot(p.text):
            raise ValueError(f"{where}.vp: {p.text!r} needs a {{m}} slot for the material")
    return out


@cache
def _lang(lang: str) -> tuple[dict[str, Any], dict[str, dict[str, list[g.Phrase]]]]:
    """A language's word tables and its checked phrases per concept (loaded once)."""
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}; expected one of {LANGS}")
    data = _read(f"{lang}.json")
    entries = data.pop("concepts")
    if missing := sorted(set(_concepts()) - set(entries)):
        raise ValueError(f"lexicon_data/{lang}.json: no entry for {missing}")
    if extra := sorted(set(entries) - set(_concepts())):
        raise ValueError(f"lexicon_data/{lang}.json: concepts not in concepts.json: {extra}")
    phrases = {cid: _check_entry(lang, c, entries[cid]) for cid, c in _concepts().items()}
    return data, phrases


CONCEPTS: dict[str, Concept] = _concepts()


def _validate(concept: str, attrs: Mapping[str, str]) -> Concept:
    if concept not in CONCEPTS:
        raise ValueError(f"unknown concept {concept!r}")
    c = CONCEPTS[concept]
    for name, value in attrs.items():
        if name not in ATTRIBUTE_VALUES:
            raise ValueError(f"{concept}: unknown attribute {name!r}")
        if value not in ATTRIBUTE_VALUES[name]:
            raise ValueError(f"{concept}: {name}={value!r} is not one of {ATTRIBUTE_VALUES[name]}")
        if name not in c.attributes:
            raise ValueError(f"{concept}: attribute {name!r} does not apply to this concept")
        if name == "material" and value not in c.materials:
            raise ValueError(
                f"{concept}: material={value!r} is not allowed (allowed: {c.materials})"
            )
    return c


def _pick(items: list[g.Phrase], variant: int) -> g.Phrase:
    return items[(variant // N_TEMPLATES) % len(items)]


def _material(lang: str, c: Concept, attrs: Mapping[str, str]) -> str | None:
    value = attrs.get("material")
    if value is None:
        return None
    return _lang(lang)[0]["material"][c.material_kind][value]


def _adjectives(lang: str, attrs: Mapping[str, str], tag: str) -> tuple[list[str], list[str]]:
    data = _lang(lang)[0]
    pre: list[str] = []
    post: list[str] = []
    for name in ADJECTIVAL:
        if name in attrs:
            form = g.agree(lang, data[name][attrs[name]], tag)
            side = pre if name in data["pre"] else post
            if form not in pre + post:  # jpn "大きな" says both large and loud
                side.append(form)
    return pre, post


def _np(
    lang: str, c: Concept, attrs: Mapping[str, str], variant: int, distance: bool = True
) -> tuple[str, g.Phrase, bool]:
    """The noun phrase with its attributes; returns (text, phrase, has a pre-nominal adjective)."""
    data = _lang(lang)[0]
    p = _pick(_lang(lang)[1][c.id]["np"], variant)
    pre, post = _adjectives(lang, attrs, p.tag)
    text = g.attach(lang, p.text, pre, post, data["and"])
    text = g.place_material(lang, text, _material(lang, c, attrs), clause=False)
    dist = attrs.get("distance") if distance else None
    if dist:
        form = data["np_distance"][dist]
        text = form + text if lang in g.CJK else f"{text} {form}"
    return _tidy(lang, text), p, bool(pre)


def _tidy(lang: str, text: str) -> str:
    text = " ".join(text.split())
    return g.fix_english_articles(text) if lang == "eng" else text


def _fill(lang: str, np: tuple[str, g.Phrase, bool], key: str = "np") -> dict[str, str]:
    """Frame slots for one noun phrase: bare, with article, after "de", and the copula."""
    text, p, pre = np
    data = _lang(lang)[0]
    plural = p.tag in g.PLURAL
    copula = data.get("copula", ["", ""])[1 if plural else 0]
    return {
        key: text,
        "a" + key: g.article(lang, p.tag, text, pre) + text,
        "de_" + key: g.elided_de(lang, text),
        "be": copula,
    }


def _clause(lang: str, c: Concept, attrs: Mapping[str, str], variant: int) -> str:
    data = _lang(lang)[0]
    p = _pick(_lang(lang)[1][c.id]["vp"], variant)
    pre, post = _adjectives(lang, {k: v for k, v in attrs.items() if k == "size"}, p.tag)
    text = g.attach(lang, p.text, pre, post, data["and"])
    text = g.place_material(lang, text, _material(lang, c, attrs), clause=True)
    loud = data["vp_intensity"][attrs["intensity"]] if "intensity" in attrs else None
    dist = data["vp_distance"][attrs["distance"]] if "distance" in attrs else None
    if lang == "jpn":  # 「遠くで犬が吠えている。音は大きい。」
        return _tidy(lang, (dist or "") + text + "。" + (loud + "。" if loud else ""))
    if lang == "zho":  # 「一只狗在叫，声音很响，从远处传来。」
        return "，".join(x for x in (text, loud, dist) if x) + "。"
    tail = [x for x in (loud, dist) if x]
    if tail and data["clause_tail"] == "comma":  # deu/nld: "Ein Hund bellt, laut und in der Ferne."
        text += ", " + f" {data['and']} ".join(tail)
    else:
        text = g.join(lang, text, *tail)
    return g.capitalize(_tidy(lang, text)) + "."


def caption(concept: str, attrs: Mapping[str, str], lang: str, variant: int) -> str:
    """One caption of `concept` with `attrs` in `lang`; see the module docstring."""
    c = _validate(concept, attrs)
    data = _lang(lang)[0]
    template = variant % N_TEMPLATES
    if template == 2:
        return _clause(lang, c, attrs, variant)
    np = _np(lang, c, attrs, variant)
    if template == 0:
        return np[0]
    if template == 3:  # "bruit de pluie", but not "bruit de bruit sourd": take another synonym
        skip = data["frames"].get("t3_skip", ())
        for k in range(len(_lang(lang)[1][concept]["np"])):
            np = _np(lang, c, attrs, variant + k * N_TEMPLATES)
            if np[0].split(" ", 1)[0] not in skip:
                break
        else:
            return np[0]
    text = data["frames"][f"t{template}"].format(**_fill(lang, np))
    return g.capitalize(text) if text.endswith(".") else text


def mixture_caption(
    main: tuple[str, Mapping[str, str]],
    background: tuple[str, Mapping[str, str]],
    lang: str,
    variant: int,
) -> str:
    """Two real recordings mixed: "footsteps on snow with wind in the background".
    The background's distance is not said: the phrase already puts it behind."""
    m, b = _validate(*main), _validate(*background)
    data = _lang(lang)[0]
    frames = data["mixture"]
    frame = frames[variant % len(frames)]
    main_np = _np(lang, m, main[1], variant)
    bg = _np(lang, b, background[1], variant, distance=False)
    return _tidy(lang, frame.format(main=main_np[0], **_fill(lang, bg, "bg")))


def with_background(
    sentence: str, background: tuple[str, Mapping[str, str]], lang: str, variant: int
) -> str:
    """A full sentence (a demo-corpus melody caption) with a real sound behind it."""
    b = _validate(*background)
    end = "。" if lang in g.CJK else "."
    if not sentence.endswith(end):
        raise ValueError(f"with_background: {lang} sentence must end with {end!r}: {sentence!r}")
    frames = _lang(lang)[0]["background"]
    frame = frames[variant % len(frames)]
    bg = _np(lang, b, background[1], variant, distance=False)
    body = sentence[: -len(end)]
    return body + frame.format(**_fill(lang, bg, "bg"))


def label(concept: str, lang: str) -> str:
    """The shortest natural name: the first noun phrase, without attributes."""
    _validate(concept, {})
    return _lang(lang)[1][concept]["np"][0].plain.strip()


def vocabulary(lang: str) -> list[str]:
    """Label-style captions for labelling uploads: every concept's label, then each
    material-taking concept with each of its materials ("footsteps on snow")."""
    out = [label(cid, lang) for cid in CONCEPTS]
    for cid, c in CONCEPTS.items():
        out += [caption(cid, {"material": m}, lang, 0) for m in c.materials]
    return list(dict.fromkeys(out))
