"""POST /consistency: exact ranks over the whole index, checked against a naive loop over
the stored vectors, and the population variance / std of api.md."""

from __future__ import annotations

import numpy as np
import pytest

from atri.service.routes.consistency import clip_ranks, rank_spread
from atri.service.schemas import AtLeast, ConsistencyResponse


@pytest.fixture(scope="module")
def model(checkpoint_dir):
    from atri.training.encoders.checkpoint import load_checkpoint

    return load_checkpoint(checkpoint_dir)[0]


@pytest.fixture(scope="module")
def stored(index_dir):
    """(ids, (N, E) stored vectors) of the index."""
    from atri.index.store import IndexStore

    store = IndexStore.open(index_dir)
    try:
        ids = store.ids()
        return ids, np.stack([store.vector(i) for i in ids])
    finally:
        store.close()


def naive_ranks(query: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """rank of every clip: 1 + the number of clips scoring strictly higher (a loop)."""
    scores = vectors @ query
    return np.array([1 + sum(1 for t in scores if t > s) for s in scores])


def expected_ranks(model, stored, queries: dict[str, str]) -> dict[str, dict[str, int]]:
    ids, vectors = stored
    out: dict[str, dict[str, int]] = {i: {} for i in ids}
    for lang, text in queries.items():
        query = model.embed_text([text], lang).detach().numpy()[0]
        for clip_id, rank in zip(ids, naive_ranks(query, vectors), strict=True):
            out[clip_id][lang] = int(rank)
    return out


def check_response(body: dict, expected: dict[str, dict[str, int]], k: int) -> None:
    ConsistencyResponse.model_validate(body)
    langs = body["languages"]
    union = []
    for lang in langs:
        top = body["per_language"][lang]
        assert [r["rank"] for r in top] == list(range(1, k + 1))
        by_rank = sorted(expected, key=lambda i: expected[i][lang])
        assert {r["id"] for r in top} == set(by_rank[:k])
        union += [r["id"] for r in top if r["id"] not in union]
    assert sorted(c["id"] for c in body["clips"]) == sorted(union)
    for clip in body["clips"]:
        ranks = [expected[clip["id"]][lang] for lang in langs]
        assert clip["ranks"] == dict(zip(langs, ranks, strict=True))
        assert clip["rank_variance"] == pytest.approx(np.var(ranks))  # population
        assert clip["rank_std"] == pytest.approx(np.std(ranks))
    assert body["mean_rank_variance"] == pytest.approx(
        np.mean([c["rank_variance"] for c in body["clips"]])
    )
    assert body["mean_rank_std"] == pytest.approx(np.mean([c["rank_std"] for c in body["clips"]]))


def test_clip_captions_as_parallel_queries(client, model, stored, records, clip_ids) -> None:
    target = clip_ids[5]
    response = client.post("/consistency", json={"clip_id": target, "caption_index": 1, "k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    captions = records[target].captions
    assert body["languages"] == list(captions)
    assert body["queries"] == {lang: texts[1] for lang, texts in captions.items()}
    expected = expected_ranks(model, stored, body["queries"])
    check_response(body, expected, k=3)
    ranks = [expected[target][lang] for lang in body["languages"]]
    assert body["target"]["id"] == target
    assert body["target"]["ranks"] == dict(zip(body["languages"], ranks, strict=True))
    assert body["target"]["rank_variance"] == pytest.approx(np.var(ranks))
    assert body["target"]["rank_std"] == pytest.approx(np.std(ranks))


def test_target_outside_every_top_k_still_gets_its_ranks(client, model, stored, clip_ids):
    # k=1: the target is most likely not the top clip in every language; its ranks come
    # from the same exact pass either way.
    for target in clip_ids[:4]:
        body = client.post("/consistency", json={"clip_id": target, "k": 1}).json()
        expected = expected_ranks(model, stored, body["queries"])
        assert body["target"]["ranks"] == expected[target]
        check_response(body, expected, k=1)


def test_parallel_queries_with_aliases(client, model, stored) -> None:
    queries = {
        "en": "a flute over birdsong",
        "fr-FR": "une flûte sur des chants d'oiseaux",
        "zho_Hans": "鸟鸣声中的长笛",
    }
    body = client.post("/consistency", json={"queries": queries, "k": 4}).json()
    assert body["languages"] == ["eng", "fra", "zho"]
    assert body["target"] is None
    expected = expected_ranks(model, stored, body["queries"])
    check_response(body, expected, k=4)


@pytest.mark.parametrize(
    ("payload", "status", "code"),
    [
        ({}, 422, "validation_error"),
        ({"queries": {"eng": "x"}, "clip_id": "te-000000"}, 422, "validation_error"),
        ({"queries": {}}, 422, "validation_error"),
        ({"queries": {"eng": "  "}}, 422, "validation_error"),
        ({"queries": {"en": "a", "eng": "b"}}, 422, "invalid_input"),
        ({"queries": {"klingon": "a"}}, 422, "unsupported_language"),
        ({"clip_id": "nope"}, 404, "clip_not_found"),
        ({"clip_id": "te-000000", "caption_index": 50}, 422, "invalid_input"),
        ({"clip_id": "te-000000", "k": 0}, 422, "validation_error"),
        ({"clip_id": "te-000000", "k": 101}, 422, "validation_error"),
    ],
)
def test_bad_requests(client, payload, status, code) -> None:
    response = client.post("/consistency", json=payload)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_spread_is_population_variance() -> None:
    variance, std = rank_spread({"eng": 1, "fra": 2, "zho": 7})
    assert variance == pytest.approx(6.888888, rel=1e-5)  # api.md's example: 6.89
    assert std == pytest.approx(2.624669, rel=1e-5)


def test_ranks_beyond_a_depth_limit_are_lower_bounds() -> None:
    clip = clip_ranks("c", {"eng": 3, "fra": 250}, depth=100)
    assert clip.model_dump()["ranks"] == {"eng": 3, "fra": {"at_least": 100}}
    assert clip.rank_variance is None and clip.rank_std is None
    assert isinstance(clip.ranks["fra"], AtLeast)
    exact = clip_ranks("c", {"eng": 3, "fra": 250}, depth=None)
    assert exact.ranks == {"eng": 3, "fra": 250}
