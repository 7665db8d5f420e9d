"""Text-to-audio search (GET/POST /search) and GET /search/similar over a real index."""

from __future__ import annotations

import numpy as np
import pytest

from atri.training.languages import LANGS

RESULT_KEYS = {"rank", "id", "score", "audio_url", "caption", "meta"}


def test_get_search_answers_the_documented_shape(client, records) -> None:
    response = client.get("/search", params={"q": "a piano plays soft notes", "lang": "eng"})
    assert response.status_code == 200
    body = response.json()
    assert {"query", "lang", "k", "took_ms", "results"} <= set(body)
    assert body["query"] == "a piano plays soft notes"
    assert body["lang"] == "eng" and body["k"] == 10 and body["offset"] == 0
    assert body["lang_detected"] is False and body["lang_confidence"] is None
    assert body["took_ms"] >= 0
    results = body["results"]
    assert len(results) == 10
    assert [r["rank"] for r in results] == list(range(1, 11))
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)
    assert len({r["id"] for r in results}) == 10
    for r in results:
        assert set(r) == RESULT_KEYS
        assert r["audio_url"] == f"/audio/{r['id']}"
        record = records[r["id"]]
        assert r["caption"] == record.captions["eng"][0]  # first caption, query language
        assert r["meta"] == record.meta


def test_scores_are_the_inner_products_of_the_embeddings(client, index_dir, checkpoint_dir):
    """The service embeds the query with the index's model and ranks by inner product."""
    from atri.index.store import IndexStore
    from atri.training.encoders.checkpoint import load_checkpoint

    q = "a cello plays three slow low notes"
    model, _ = load_checkpoint(checkpoint_dir)
    query = model.embed_text([q], "eng").detach().numpy()  # (1, E)
    store = IndexStore.open(index_dir)
    try:
        ids, scores = store.exact_scores(query)
    finally:
        store.close()
    expected = sorted(zip(ids, scores[0], strict=True), key=lambda p: -p[1])[:5]
    body = client.get("/search", params={"q": q, "lang": "eng", "k": 5}).json()
    got = [(r["id"], r["score"]) for r in body["results"]]
    assert [i for i, _ in got] == [i for i, _ in expected]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in expected], atol=1e-3)


def test_post_search_equals_get(client) -> None:
    q = {"q": "une flûte joue des notes rapides", "lang": "fra", "k": 7}
    got = client.get("/search", params=q).json()
    posted = client.post("/search", json=q).json()
    assert posted["results"] == got["results"]
    assert posted["lang"] == "fra" and posted["k"] == 7


def test_offset_pages_through_the_results(client) -> None:
    q = {"q": "strings and birdsong", "lang": "eng"}
    whole = client.get("/search", params={**q, "k": 9}).json()["results"]
    first = client.get("/search", params={**q, "k": 4, "offset": 0}).json()["results"]
    second = client.get("/search", params={**q, "k": 5, "offset": 4}).json()
    assert second["offset"] == 4
    assert [r["rank"] for r in second["results"]] == [5, 6, 7, 8, 9]
    assert [r["id"] for r in first + second["results"]] == [r["id"] for r in whole]


def test_offset_past_the_end_gives_no_results(client, clip_ids) -> None:
    body = client.get("/search", params={"q": "flute", "lang": "eng", "offset": len(clip_ids)})
    assert body.status_code == 200
    assert body.json()["results"] == []


@pytest.mark.parametrize(("alias", "code"), [("zh-CN", "zho"), ("ja", "jpn"), ("ger", "deu")])
def test_language_aliases_answer_with_the_canonical_code(client, records, alias, code) -> None:
    body = client.get("/search", params={"q": "piano", "lang": alias, "k": 3}).json()
    assert body["lang"] == code
    for r in body["results"]:
        assert r["caption"] == records[r["id"]].captions[code][0]


def test_switching_language_switches_the_captions(client) -> None:
    eng = client.get("/search", params={"q": "piano", "lang": "eng", "k": 3}).json()
    deu = client.get("/search", params={"q": "piano", "lang": "deu", "k": 3}).json()
    assert [r["caption"] for r in eng["results"]] != [r["caption"] for r in deu["results"]]


def test_query_is_nfkc_normalised(client) -> None:
    body = client.get("/search", params={"q": "  ｆｌｕｔｅ　ｍｅｌｏｄｙ ", "lang": "en"}).json()
    assert body["query"] == "flute melody"
    plain = client.get("/search", params={"q": "flute melody", "lang": "en"}).json()
    assert [r["id"] for r in body["results"]] == [r["id"] for r in plain["results"]]


def test_language_is_detected_when_omitted(client, records) -> None:
    q = "Eine Geige spielt langsam eine sanfte Melodie, während draußen die Vögel singen."
    body = client.get("/search", params={"q": q, "k": 3}).json()
    assert body["lang"] == "deu"
    assert body["lang_detected"] is True
    assert body["lang_fallback"] is False
    assert body["lang_candidate"] == "deu"
    assert 0.5 <= body["lang_confidence"] <= 1
    assert body["results"][0]["caption"] == records[body["results"][0]["id"]].captions["deu"][0]


def test_uncertain_detection_falls_back_and_says_so(index_dir, make_client, make_settings):
    settings = make_settings(index_dir, lang_confidence_threshold=1.0, fallback_lang="nld")
    with make_client(settings) as c:
        body = c.post("/search", json={"q": "une flûte et des oiseaux qui chantent"}).json()
    assert body["lang"] == "nld"
    assert body["lang_detected"] is True
    assert body["lang_fallback"] is True
    assert body["lang_candidate"] in LANGS
    assert body["lang_confidence"] < 1.0


def test_similar_leaves_the_clip_out(client, clip_ids, index_dir) -> None:
    from atri.index.store import IndexStore

    target = clip_ids[3]
    body = client.get("/search/similar", params={"id": target, "k": 5, "lang": "fr"}).json()
    assert body["id"] == target and body["lang"] == "fra" and body["k"] == 5
    ids = [r["id"] for r in body["results"]]
    assert target not in ids and len(ids) == 5
    store = IndexStore.open(index_dir)
    try:
        all_ids, scores = store.exact_scores(store.vector(target)[None])
    finally:
        store.close()
    expected = [
        i
        for i, _ in sorted(zip(all_ids, scores[0], strict=True), key=lambda p: -p[1])
        if i != target
    ]
    assert ids == expected[:5]


def test_similar_needs_an_id(client) -> None:
    assert client.get("/search/similar").status_code == 422


def test_concurrent_searches_agree_with_sequential_ones(client) -> None:
    from concurrent.futures import ThreadPoolExecutor

    queries = [f"{word} notes" for word in ("piano", "flute", "soft", "fast", "low", "high")]

    def run(q: str) -> list[str]:
        body = client.get("/search", params={"q": q, "lang": "eng", "k": 5}).json()
        return [r["id"] for r in body["results"]]

    sequential = [run(q) for q in queries]
    with ThreadPoolExecutor(max_workers=6) as pool:
        concurrent = list(pool.map(run, queries * 3))
    assert concurrent == sequential * 3
