"""The language registry: one entry per language, names that identify it uniquely."""

from __future__ import annotations

from atri.training.languages import ENGLISH, LANGS, LANGUAGES, names


def test_each_name_of_a_language_is_its_own() -> None:
    tags = [t for i in LANGUAGES.values() for t in (i.code, i.iso1, i.iso2b, *i.nllb) if t]
    assert len(tags) == len(set(tags))
    assert ENGLISH in LANGS and LANGS == tuple(LANGUAGES)


def test_nllb_codes_name_the_language_and_one_of_its_scripts() -> None:
    for info in LANGUAGES.values():
        for tag in info.nllb:
            code, script = tag.split("_")
            assert code == info.code and script in info.scripts, tag


def test_names_phrase() -> None:
    assert names(("eng",)) == "English"
    assert names(("eng", "fra", "zho")) == "English, French and Chinese"
    assert names().count(",") == len(LANGS) - 2
