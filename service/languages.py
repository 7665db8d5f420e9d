"""The supported languages as the API names them (the registry: training/languages.py):
the aliases the API accepts (ISO 639-1, ISO 639-2/B, NLLB/SONAR codes, BCP-47 tags;
case-insensitive), and language detection among exactly these with lingua."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from atri.service.errors import UnsupportedLanguage
from atri.training.languages import LANGUAGES, LanguageInfo

if TYPE_CHECKING:
    from lingua import LanguageDetector


# primary language subtag (lower case) -> canonical code
_PRIMARY: dict[str, str] = {}
for _info in LANGUAGES.values():
    for _tag in (_info.code, _info.iso1, _info.iso2b):
        if _tag:
            _PRIMARY[_tag] = _info.code
_PRIMARY["cmn"] = "zho"  # Mandarin, the 639-3 individual language of most Chinese text

# a BCP-47 / NLLB tag: primary subtag, then optional script / region / variant subtags
_TAG = re.compile(r"[a-z]{2,3}(?:[-_][a-z0-9]{2,8})*")
_SCRIPT = re.compile(r"[a-z]{4}")


def aliases(info: LanguageInfo) -> list[str]:
    """The alternative names shown by GET /languages (all are accepted, with others)."""
    names = [info.iso1] + ([info.iso2b] if info.iso2b else []) + list(info.nllb)
    return names + list(info.regions)


def resolve(tag: str) -> str:
    """Any accepted name of a supported language -> its ISO 639-3 code.

    Raises UnsupportedLanguage for anything else, including a script that does not
    write the language (`eng_Jpan`)."""
    text = tag.strip().lower()
    if _TAG.fullmatch(text):
        primary, *subtags = re.split(r"[-_]", text)
        code = _PRIMARY.get(primary)
        if code is not None:
            scripts = {s.lower() for s in LANGUAGES[code].scripts}
            if all(s in scripts for s in subtags if _SCRIPT.fullmatch(s)):
                return code
    raise UnsupportedLanguage(tag, list(LANGUAGES))


@dataclass(frozen=True)
class Detection:
    """The outcome of detecting a query's language. `fallback` is set when the best
    candidate's confidence was below the threshold; `lang` is then the fallback language
    and `candidate` what the detector guessed."""

    lang: str
    confidence: float
    candidate: str
    fallback: bool


@lru_cache(maxsize=1)
def detector() -> LanguageDetector:
    """lingua restricted to the supported languages, models preloaded (~1 s, once)."""
    from lingua import Language, LanguageDetectorBuilder

    members = [getattr(Language, info.lingua) for info in LANGUAGES.values()]
    return LanguageDetectorBuilder.from_languages(*members).with_preloaded_language_models().build()


_TO_CODE = {info.lingua: info.code for info in LANGUAGES.values()}


def detect(text: str, threshold: float, fallback: str) -> Detection:
    """The language of `text` among the supported ones; below `threshold` confidence, `fallback`."""
    values = detector().compute_language_confidence_values(text)
    if not values:  # no letters at all (digits, punctuation)
        return Detection(lang=fallback, confidence=0.0, candidate=fallback, fallback=True)
    best = values[0]
    code = _TO_CODE[best.language.name]
    confidence = float(best.value)
    if confidence < threshold:
        return Detection(lang=fallback, confidence=confidence, candidate=code, fallback=True)
    return Detection(lang=code, confidence=confidence, candidate=code, fallback=False)
