"""Helpers of bench/search.py: the load's queries, short and distinct, in every language
of the corpus, like what people type into a search box: 2 to 4 consecutive words of a
real caption, or 4 to 9 consecutive characters in Japanese and Chinese (written without
spaces). Each (lang, text) appears once, so a server that gets each query at most once
never answers from its query cache."""

from __future__ import annotations

import random
import urllib.parse

UNSPACED = {"jpn", "zho"}
PER_CAPTION = 2  # windows drawn from each caption


def windows(text: str, lang: str, rng: random.Random) -> list[str]:
    """Up to PER_CAPTION short windows of one caption."""
    if lang in UNSPACED:
        chars = text.replace(" ", "")
        lo, hi = 4, 9
        units, join = list(chars), ""
    else:
        units, join = text.split(), " "
        lo, hi = 2, 4
    if len(units) < lo:
        return []
    out = []
    for _ in range(PER_CAPTION):
        size = rng.randint(lo, min(hi, len(units)))
        start = rng.randint(0, len(units) - size)
        out.append(join.join(units[start : start + size]).strip(" ,.;:!?。、"))
    return [w for w in out if w]


def short_queries(captions: dict[str, list[str]], seed: int) -> list[tuple[str, str]]:
    """Distinct (lang, text) short queries from the captions, shuffled with `seed`."""
    rng = random.Random(seed)
    found = dict.fromkeys(
        (lang, window)
        for lang, texts in sorted(captions.items())
        for text in texts
        for window in windows(text, lang, rng)
    )
    queries = list(found)
    rng.shuffle(queries)
    return queries


def search_path(lang: str, text: str, k: int) -> str:
    return "/search?" + urllib.parse.urlencode({"q": text, "lang": lang, "k": k})
