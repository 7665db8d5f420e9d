"""Labels for any upload (api.md, audio-to-text): an index of captionless recordings built
with `--vocabulary default` and the default checkpoint labels an uploaded recording in
each of the 8 languages, with labels of that language; the other endpoints are not
disturbed by captions that belong to no clip."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from atri.training.languages import LANGS

CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff]")  # kana and ideographs


def labels(lang: str) -> set[str]:
    from atri.training.corpus.sfx.lexicon import vocabulary

    return {unicodedata.normalize("NFKC", t).strip() for t in vocabulary(lang)}


@pytest.fixture(scope="module")
def labelled(vocabulary_index, make_client, make_settings) -> Iterator[TestClient]:
    index, _ = vocabulary_index
    with make_client(make_settings(index)) as client:
        yield client


@pytest.mark.parametrize("lang", LANGS)
def test_an_upload_is_labelled_in_every_language(labelled, vocabulary_index, lang) -> None:
    _, sounds = vocabulary_index
    upload = ("recording.wav", sounds[0].read_bytes())  # the bell, as a user would send it
    response = labelled.post("/search/audio", files={"file": upload}, data={"lang": lang, "k": "5"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["lang"] == lang
    captions = body["captions"]
    assert len(captions) == 5 and [c["rank"] for c in captions] == [1, 2, 3, 4, 5]
    own = labels(lang)
    for caption in captions:
        assert caption["source"] == "vocabulary" and caption["clip_ids"] == []
        assert caption["text"] in own, caption
        # language-correct script: Japanese and Chinese labels are written in CJK
        assert bool(CJK.search(caption["text"])) == (lang in ("jpn", "zho")), caption
    assert body["similar_clips"][0]["id"] == "bell.wav"


def test_health_names_the_vocabulary(labelled) -> None:
    body = labelled.get("/health").json()
    vocabulary = body["vocabulary"]
    assert vocabulary["name"] == "default" and len(vocabulary["sha256"]) == 64
    assert set(vocabulary["labels"]) == set(LANGS)
    assert body["captions_indexed"] == sum(vocabulary["labels"].values())
    assert body["index_size"] == 3


def test_other_endpoints_ignore_captions_of_no_clip(labelled) -> None:
    clip = labelled.get("/clips/bell.wav")
    assert clip.status_code == 200 and clip.json()["captions"] == {}
    found = labelled.get("/search", params={"q": "a bell rings", "lang": "eng", "k": 3})
    assert found.status_code == 200, found.text
    ids = {hit["id"] for hit in found.json()["results"]}
    assert len(ids) == 3 and {"bell.wav", "noise.flac"} < ids  # sub/chirp.ogg: a slug id
    queries = {"eng": "a bell rings", "fra": "une cloche sonne"}
    consistency = labelled.post("/consistency", json={"queries": queries, "k": 3})
    assert consistency.status_code == 200, consistency.text
    assert len(consistency.json()["clips"]) == 3
