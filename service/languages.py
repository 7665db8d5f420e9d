"""The 8 supported languages: canonical ISO 639-3 codes, English names, the aliases the
API accepts (ISO 639-1, ISO 639-2/B, NLLB/SONAR codes, BCP-47 tags; case-insensitive),
and language detection among exactly these 8 with lingua."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from atri.service.errors import UnsupportedLanguage
from atri.training.corpus.schema import LANGS

if TYPE_CHECKING:
    from lingua import LanguageDetector


@dataclass(frozen=True)
class LanguageInfo:
    code: str  # ISO 639-3, the canonical name everywhere in the API
    name: str
    iso1: str  # ISO 639-1
    iso2b: str | None  # ISO 639-2/B where it differs from 639-3
    scripts: tuple[str, ...]  # ISO 15924 scripts a BCP-47 / NLLB tag may name
    nllb: tuple[str, ...]  # NLLB / SONAR codes
    regions: tuple[str, ...]  # common BCP-47 region tags, shown as aliases
    lingua: str  # lingua's `Language` member


LANGUAGES: dict[str, LanguageInfo] = {
    info.code: info
    for info in (
        LanguageInfo(
            "eng", "English", "en", None, ("Latn",), ("eng_Latn",), ("en-US", "en-GB"), "ENGLISH"
        ),
        LanguageInfo(
            "fra", "French", "fr", "fre", ("Latn",), ("fra_Latn",), ("fr-FR", "fr-CA"), "FRENCH"
        ),
        LanguageInfo(
            "deu",
            "German",
            "de",
            "ger",
            ("Latn",),
            ("deu_Latn",),
            ("de-DE", "de-AT", "de-CH"),
            "GERMAN",
        ),
        LanguageInfo(
            "spa", "Spanish", "es", None, ("Latn",), ("spa_Latn",), ("es-ES", "es-MX"), "SPANISH"
        ),
        LanguageInfo(
            "nld", "Dutch", "nl", "dut", ("Latn",), ("nld_Latn",), ("nl-NL", "nl-BE"), "DUTCH"
        ),
        LanguageInfo("cat", "Catalan", "ca", None, ("Latn",), ("cat_Latn",), ("ca-ES",), "CATALAN"),
        LanguageInfo(
            "jpn",
            "Japanese",
            "ja",
            None,
            ("Jpan", "Hira", "Kana", "Hrkt"),
            ("jpn_Jpan",),
            ("ja-JP",),
            "JAPANESE",
        ),
        LanguageInfo(
            "zho",
            "Chinese",
            "zh",
            "chi",
            ("Hans", "Hant", "Hani"),
            ("zho_Hans", "zho_Hant"),
            ("zh-CN", "zh-TW", "zh-HK", "zh-Hans", "zh-Hant"),
            "CHINESE",
        ),
    )
}
assert tuple(LANGUAGES) == LANGS, "service languages must follow the corpus schema"

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
    """lingua restricted to the 8 supported languages, models preloaded (~1 s, once)."""
    from lingua import Language, LanguageDetectorBuilder

    members = [getattr(Language, info.lingua) for info in LANGUAGES.values()]
    return LanguageDetectorBuilder.from_languages(*members).with_preloaded_language_models().build()


_TO_CODE = {info.lingua: info.code for info in LANGUAGES.values()}


def detect(text: str, threshold: float, fallback: str) -> Detection:
    """The language of `text` among the 8; below `threshold` confidence, `fallback`."""
    values = detector().compute_language_confidence_values(text)
    if not values:  # no letters at all (digits, punctuation)
        return Detection(lang=fallback, confidence=0.0, candidate=fallback, fallback=True)
    best = values[0]
    code = _TO_CODE[best.language.name]
    confidence = float(best.value)
    if confidence < threshold:
        return Detection(lang=fallback, confidence=confidence, candidate=code, fallback=True)
    return Detection(lang=code, confidence=confidence, candidate=code, fallback=False)
