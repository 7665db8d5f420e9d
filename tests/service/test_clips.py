"""GET /clips/{id}, and the admin endpoints POST /clips and DELETE /clips/{id}: the
bearer token (401/403, 404 when disabled), 201/409/204, and durability."""

from __future__ import annotations

import json

import pytest

CAPTIONS = {
    "eng": ["A high whistle over a low hum.", "A whistle and a hum."],
    "fr": ["Un sifflement aigu sur un bourdonnement grave.", "Un sifflement et un bourdonnement."],
}


def test_get_clip_returns_the_record(client, records, clip_ids) -> None:
    target = clip_ids[0]
    response = client.get(f"/clips/{target}")
    assert response.status_code == 200
    body = response.json()
    assert body == {
        "id": target,
        "audio_url": f"/audio/{target}",
        "captions": records[target].captions,
        "meta": records[target].meta,
    }


@pytest.fixture(scope="module")
def admin_index(index_dir, tmp_path_factory):
    """A private copy of the index for this module's changes."""
    import shutil

    return shutil.copytree(index_dir, tmp_path_factory.mktemp("admin") / "idx")


@pytest.fixture(scope="module")
def admin(admin_index, make_client, make_settings):
    """A service over the private copy, admin enabled. Tests add distinct ids and check
    sizes relative to their start."""
    with make_client(make_settings(admin_index)) as c:
        yield c


def post_clip(client, headers, audio: bytes, **fields):
    data = {"captions": json.dumps(CAPTIONS)}
    data.update({k: v for k, v in fields.items() if v is not None})
    return client.post("/clips", files={"file": ("new.wav", audio)}, data=data, headers=headers)


def test_admin_is_disabled_without_a_token(index_dir, make_client, make_settings, make_audio):
    with make_client(make_settings(index_dir, admin_token=None)) as c:
        for response in (
            post_clip(c, {"Authorization": "Bearer anything"}, make_audio(1.0), id="x1"),
            c.delete("/clips/te-000000", headers={"Authorization": "Bearer anything"}),
        ):
            assert response.status_code == 404
            assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401),
        ({"Authorization": "Bearer "}, 401),
        ({"Authorization": "Bearer wrong-token"}, 403),
        ({"Authorization": "Bearer test-admin-token-but-longer"}, 403),
    ],
)
def test_admin_needs_the_right_bearer_token(client, make_audio, headers, status) -> None:
    response = post_clip(client, headers, make_audio(1.0), id="never-added")
    assert response.status_code == status
    assert response.json()["error"]["code"] == {401: "unauthorized", 403: "forbidden"}[status]
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.delete("/clips/te-000000", headers=headers).status_code == status
    assert client.get("/clips/never-added").status_code == 404
    assert client.get("/clips/te-000000").status_code == 200


def test_add_search_delete_a_clip(admin, admin_headers, audio_samples, admin_index) -> None:
    size = admin.get("/health").json()["index_size"]
    response = post_clip(
        admin, admin_headers, audio_samples["webm"], id="whistle-1", meta=json.dumps({"src": "mic"})
    )
    assert response.status_code == 201, response.text
    assert response.headers["location"] == "/clips/whistle-1"
    body = response.json()
    assert body["id"] == "whistle-1"
    assert body["captions"] == {"eng": CAPTIONS["eng"], "fra": CAPTIONS["fr"]}  # canonical codes
    assert body["meta"] == {"src": "mic"}
    assert admin.get("/clips/whistle-1").json() == body
    assert admin.get("/health").json()["index_size"] == size + 1

    # its audio is served, as FLAC
    audio = admin.get("/audio/whistle-1")
    assert audio.status_code == 200 and audio.headers["content-type"] == "audio/flac"
    # it is found by its own audio, and its captions join the caption index (k=100 lists
    # every English caption of this small index)
    query = {"file": ("q.webm", audio_samples["webm"])}
    found = admin.post("/search/audio", files=query, data={"k": 100}).json()
    assert found["similar_clips"][0]["id"] == "whistle-1"
    listed = {c["text"]: c["clip_ids"] for c in found["captions"]}
    assert all(listed[text] == ["whistle-1"] for text in CAPTIONS["eng"])

    # durable: a store opened afresh (a restarted service) holds it
    from atri.index.store import IndexStore

    store = IndexStore.open(admin_index)
    try:
        assert store.record("whistle-1").captions["fra"] == CAPTIONS["fr"]
    finally:
        store.close()

    # the same id again: 409
    again = post_clip(admin, admin_headers, audio_samples["wav"], id="whistle-1")
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "clip_exists"

    # delete: 204, then gone everywhere
    deleted = admin.delete("/clips/whistle-1", headers=admin_headers)
    assert deleted.status_code == 204 and deleted.content == b""
    assert admin.get("/clips/whistle-1").status_code == 404
    assert admin.get("/audio/whistle-1").status_code == 404
    assert admin.get("/health").json()["index_size"] == size
    assert not (admin_index / "uploads" / "whistle-1.flac").exists()
    assert admin.delete("/clips/whistle-1", headers=admin_headers).status_code == 404
    found = admin.post("/search/audio", files=query, data={"k": 100}).json()
    assert all(c["id"] != "whistle-1" for c in found["similar_clips"])
    assert not {c["text"] for c in found["captions"]} & set(CAPTIONS["eng"])


def test_id_defaults_to_the_audio_hash(admin, admin_headers, make_audio) -> None:
    response = post_clip(admin, admin_headers, make_audio(1.0))
    assert response.status_code == 201
    clip_id = response.json()["id"]
    assert clip_id.startswith("up-")
    assert post_clip(admin, admin_headers, make_audio(1.0)).status_code == 409


def test_deleting_a_corpus_clip_keeps_its_audio(admin, admin_headers, records, clip_ids):
    from pathlib import Path

    target = clip_ids[1]
    assert admin.delete(f"/clips/{target}", headers=admin_headers).status_code == 204
    assert Path(records[target].audio).is_file()
    assert admin.get(f"/clips/{target}").status_code == 404


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"captions": "not json"}, "invalid_input"),
        ({"captions": json.dumps({"eng": "not a list"})}, "invalid_input"),
        ({"captions": json.dumps({"eng": []})}, "invalid_input"),
        ({"captions": json.dumps({"eng": [""]})}, "invalid_input"),
        ({"captions": json.dumps({"eng": ["a", "b"], "fra": ["c"]})}, "invalid_input"),
        ({"captions": json.dumps({"en": ["a"], "eng": ["b"]})}, "invalid_input"),
        ({"captions": json.dumps({"xx": ["a"]})}, "unsupported_language"),
        ({"id": "has space"}, "invalid_input"),
        ({"id": "-leading-dash"}, "invalid_input"),
        ({"meta": "[1, 2]"}, "invalid_input"),
        ({"meta": json.dumps({"nested": {"a": 1}})}, "invalid_input"),
    ],
)
def test_bad_fields_are_422(admin, admin_headers, make_audio, fields, code) -> None:
    data = {"captions": json.dumps(CAPTIONS), "id": "bad-1", **fields}
    response = admin.post(
        "/clips", files={"file": ("a.wav", make_audio(1.0))}, data=data, headers=admin_headers
    )
    assert response.status_code == 422, response.text
    assert response.json()["error"]["code"] == code
    assert admin.get("/clips/bad-1").status_code == 404


def test_missing_captions_field_is_422(admin, admin_headers, make_audio) -> None:
    response = admin.post(
        "/clips", files={"file": ("a.wav", make_audio(1.0))}, headers=admin_headers
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "validation_error"


def test_bad_audio_is_415_and_adds_nothing(admin, admin_headers) -> None:
    size = admin.get("/health").json()["index_size"]
    response = post_clip(admin, admin_headers, b"definitely not audio" * 50, id="junk")
    assert response.status_code == 415
    assert admin.get("/clips/junk").status_code == 404
    assert admin.get("/health").json()["index_size"] == size


def test_clip_without_captions(admin, admin_headers, make_audio) -> None:
    """`captions: {}` is meant (docs/service.md): an audio-only clip, found by its audio
    through text and audio search, adding nothing to the caption index."""
    before = admin.get("/health").json()
    response = admin.post(
        "/clips",
        files={"file": ("a.wav", make_audio(2.0))},
        data={"captions": "{}", "id": "bare"},
        headers=admin_headers,
    )
    assert response.status_code == 201
    assert response.json()["captions"] == {}
    assert admin.get("/clips/bare").json()["captions"] == {}
    after = admin.get("/health").json()
    assert after["index_size"] == before["index_size"] + 1
    assert after["captions_indexed"] == before["captions_indexed"]
    hits = admin.get("/search/similar", params={"id": "bare", "k": 3})
    assert hits.status_code == 200
    ranked = admin.get("/search", params={"q": "a steady tone", "lang": "eng", "k": 100})
    assert "bare" in [h["id"] for h in ranked.json()["results"]]
    found = admin.post("/search/audio", files={"file": ("q.wav", make_audio(2.0))})
    assert found.json()["similar_clips"][0]["id"] == "bare"  # the same tone


META = json.dumps({"note": "é" * 2100}, ensure_ascii=False)  # 2 bytes a character
LIMITS = [
    # (field values, the limit named, found)
    ({"captions": json.dumps({"eng": ["x" * 1001]})}, "ATRI_MAX_CAPTION_CHARS", 1001),
    ({"captions": json.dumps({"eng": [f"c{i}" for i in range(33)]})},
     "ATRI_MAX_CAPTIONS_PER_LANGUAGE", 33),
    ({"captions": json.dumps({t: ["x"] for t in
      ["eng", "fra", "deu", "spa", "nld", "cat", "jpn", "zho", "en"]})},
     "ATRI_MAX_CAPTION_LANGUAGES", 9),
    ({"meta": META}, "ATRI_MAX_META_BYTES", len(META.encode())),
    ({"id": "a" * 129}, "ATRI_MAX_ID_CHARS", 129),
]  # fmt: skip


@pytest.mark.parametrize(("fields", "limit", "found"), LIMITS, ids=[x[1] for x in LIMITS])
def test_inputs_over_a_limit_are_422_naming_it(admin, admin_headers, make_audio, fields, limit,
                                               found) -> None:  # fmt: skip
    response = post_clip(admin, admin_headers, make_audio(1.0), **{"id": "limited", **fields})
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_input" and f"({limit})" in error["message"]
    assert error["details"]["limit"] == limit and error["details"]["found"] == found
    assert admin.get("/clips/limited").status_code == 404


def test_a_maximal_caption_is_accepted(admin, admin_headers, make_audio) -> None:
    """The bound on embedding time is the limit: a caption of exactly the limit's length
    is embedded and indexed (its time: docs/reliability.md)."""
    from atri.service.settings import Settings

    longest = ("a bell rings over a steady hum " * 40)[: Settings().max_caption_chars]
    response = post_clip(admin, admin_headers, make_audio(1.0), id="longest",
                         captions=json.dumps({"eng": [longest]}))  # fmt: skip
    assert response.status_code == 201, response.text
    assert admin.get("/clips/longest").json()["captions"] == {"eng": [longest]}


def test_limits_are_settings(monkeypatch) -> None:
    from atri.service.settings import Settings

    monkeypatch.setenv("ATRI_MAX_CAPTION_CHARS", "200")
    monkeypatch.setenv("ATRI_MAX_META_BYTES", "100")
    settings = Settings()
    assert (settings.max_caption_chars, settings.max_meta_bytes) == (200, 100)
    monkeypatch.setenv("ATRI_MAX_ID_CHARS", "129")  # beyond what the manifest allows
    with pytest.raises(ValueError, match="max_id_chars"):
        Settings()
