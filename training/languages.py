"""The supported languages, defined once: every part (manifests, corpora, text encoders,
the service's settings, GET /languages and the web page) reads this registry. Adding a
language is one entry here (plus its captions in a corpus and its grammar)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LanguageInfo:
    code: str  # ISO 639-3, the canonical name everywhere (manifests, API, checkpoints)
    name: str  # in English
    iso1: str  # ISO 639-1
    iso2b: str | None  # ISO 639-2/B where it differs from 639-3
    scripts: tuple[str, ...]  # ISO 15924 scripts a BCP-47 / NLLB tag may name
    nllb: tuple[str, ...]  # NLLB / SONAR codes; the first is the one our captions use
    regions: tuple[str, ...]  # common BCP-47 region tags, shown as aliases
    lingua: str  # lingua's `Language` member (service language detection)


LANGUAGES: dict[str, LanguageInfo] = {
    info.code: info
    for info in (
        LanguageInfo("eng", "English", "en", None, ("Latn",), ("eng_Latn",),
                     ("en-US", "en-GB"), "ENGLISH"),
        LanguageInfo("fra", "French", "fr", "fre", ("Latn",), ("fra_Latn",),
                     ("fr-FR", "fr-CA"), "FRENCH"),
        LanguageInfo("deu", "German", "de", "ger", ("Latn",), ("deu_Latn",),
                     ("de-DE", "de-AT", "de-CH"), "GERMAN"),
        LanguageInfo("spa", "Spanish", "es", None, ("Latn",), ("spa_Latn",),
                     ("es-ES", "es-MX"), "SPANISH"),
        LanguageInfo("nld", "Dutch", "nl", "dut", ("Latn",), ("nld_Latn",),
                     ("nl-NL", "nl-BE"), "DUTCH"),
        LanguageInfo("cat", "Catalan", "ca", None, ("Latn",), ("cat_Latn",), ("ca-ES",),
                     "CATALAN"),
        LanguageInfo("jpn", "Japanese", "ja", None, ("Jpan", "Hira", "Kana", "Hrkt"),
                     ("jpn_Jpan",), ("ja-JP",), "JAPANESE"),
        # our Chinese captions are simplified, hence zho_Hans first
        LanguageInfo("zho", "Chinese", "zh", "chi", ("Hans", "Hant", "Hani"),
                     ("zho_Hans", "zho_Hant"), ("zh-CN", "zh-TW", "zh-HK", "zh-Hans", "zh-Hant"),
                     "CHINESE"),
    )
}  # fmt: skip

LANGS: tuple[str, ...] = tuple(LANGUAGES)  # the canonical order of every per-language list
ENGLISH = "eng"  # the anchor language of cacl and mlclap-mixture (sampling.py)


def names(codes: tuple[str, ...] = LANGS) -> str:
    """"English, French ... and Chinese": the languages' names as a phrase."""
    words = [LANGUAGES[code].name for code in codes]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
