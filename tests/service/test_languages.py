"""Language names the API accepts, GET /languages, and detection among the 8 languages."""

from __future__ import annotations

import pytest

from atri.service.errors import UnsupportedLanguage
from atri.service.languages import detect, resolve
from atri.training.languages import LANGS, LANGUAGES


@pytest.mark.parametrize(
    ("tag", "code"),
    [
        # ISO 639-3, any case
        ("eng", "eng"), ("ZHO", "zho"), ("Cat", "cat"),
        # ISO 639-1
        ("en", "eng"), ("fr", "fra"), ("de", "deu"), ("es", "spa"), ("nl", "nld"),
        ("ca", "cat"), ("ja", "jpn"), ("zh", "zho"), ("ZH", "zho"),
        # ISO 639-2/B
        ("fre", "fra"), ("ger", "deu"), ("dut", "nld"), ("chi", "zho"),
        # NLLB / SONAR
        ("eng_Latn", "eng"), ("zho_Hans", "zho"), ("zho_Hant", "zho"), ("jpn_Jpan", "jpn"),
        ("CAT_LATN", "cat"), ("spa_Latn", "spa"),
        # BCP-47
        ("zh-CN", "zho"), ("zh-Hant-TW", "zho"), ("ca-ES", "cat"), ("ja-JP", "jpn"),
        ("en-us", "eng"), ("nl-BE", "nld"), ("de_DE", "deu"),
        (" fr ", "fra"),
    ],
)  # fmt: skip
def test_aliases_resolve_to_canonical_codes(tag: str, code: str) -> None:
    assert resolve(tag) == code


@pytest.mark.parametrize(
    "tag", ["", " ", "xx", "pt", "pt-BR", "english", "eng_Jpan", "zh-Latn", "en--US", "e", "zho_"]
)
def test_unknown_names_are_rejected_with_the_supported_codes(tag: str) -> None:
    with pytest.raises(UnsupportedLanguage) as info:
        resolve(tag)
    assert info.value.status == 422
    assert info.value.details["supported"] == list(LANGS)


def test_settings_accept_exactly_the_registrys_languages() -> None:
    from pydantic import ValidationError

    from atri.service.settings import Settings

    for code in LANGS:
        assert Settings(_env_file=None, fallback_lang=code).fallback_lang == code
    with pytest.raises(ValidationError, match="'en' is not one of"):
        Settings(_env_file=None, fallback_lang="en")


def test_every_listed_alias_resolves_to_its_language() -> None:
    from atri.service.languages import aliases

    for info in LANGUAGES.values():
        for alias in aliases(info):
            assert resolve(alias) == info.code, alias


def test_get_languages(client) -> None:
    response = client.get("/languages")
    assert response.status_code == 200
    body = response.json()
    assert [entry["code"] for entry in body] == list(LANGS)
    zho = next(entry for entry in body if entry["code"] == "zho")
    assert zho["name"] == "Chinese"
    assert {"zh", "zho_Hans", "zho_Hant", "chi", "zh-CN"} <= set(zho["aliases"])
    assert all(set(entry) == {"code", "name", "aliases"} for entry in body)


# Long, unambiguous sentences only: short Spanish/Catalan phrases and kanji-only strings
# are genuinely ambiguous (api.md), so no test asserts on them.
CLEAR = {
    "eng": "The violin plays a slow and gentle melody while the birds are singing outside.",
    "fra": "Une flûte joue doucement trois notes lentes pendant que les oiseaux chantent.",
    "deu": "Eine Geige spielt langsam eine sanfte Melodie, während draußen die Vögel singen.",
    "nld": "Een viool speelt langzaam een zachte melodie terwijl de vogels buiten zingen.",
    "jpn": "バイオリンがゆっくりと優しいメロディーを奏で、外では鳥がさえずっている。",
    "zho": "小提琴缓慢地演奏着一段温柔的旋律，窗外的鸟儿在歌唱，这是一个安静的早晨。",
}


@pytest.mark.parametrize("lang", sorted(CLEAR))
def test_detects_clear_sentences(lang: str) -> None:
    detection = detect(CLEAR[lang], threshold=0.5, fallback="eng")
    assert detection.lang == lang
    assert detection.candidate == lang
    assert not detection.fallback
    assert 0.5 <= detection.confidence <= 1.0


def test_falls_back_below_the_threshold() -> None:
    detection = detect(CLEAR["deu"], threshold=1.01, fallback="cat")
    assert detection.fallback
    assert detection.lang == "cat"
    assert detection.candidate == "deu"


def test_text_without_letters_falls_back() -> None:
    detection = detect("12345 !!!", threshold=0.5, fallback="spa")
    assert detection.fallback
    assert detection.lang == "spa"
