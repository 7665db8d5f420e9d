"""The service on each index backend (FAISS `IndexStore`, Milvus `MilvusStore` on
milvus-lite), chosen by its settings: search and paging, consistency ranks (bounds past a
Milvus store's depth), and clips added and deleted through the admin API."""

from __future__ import annotations

from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("pymilvus")
pytest.importorskip("milvus_lite")

BACKENDS = ["faiss", "milvus"]
DEPTH = 6  # a Milvus store this shallow reports most ranks of a 60-clip index as bounds
TOKEN = "backend-test-token"


@pytest.fixture(params=BACKENDS)
def service(request, tmp_path, kit, make_client) -> Iterator[SimpleNamespace]:
    """A ready app over a 60-clip index whose clip i lies on its caption "eng own caption
    i" (the stub model embeds a text as its seeded vector), on one backend."""
    from atri.index.opener import open_backend
    from atri.service.engine import Engine
    from atri.service.settings import Settings

    root = tmp_path / "idx"
    vectors = np.stack([kit.caption_vector(f"eng own caption {i}") for i in range(60)])
    _, stored = kit.make_index(root, vectors=vectors)
    uri = str(tmp_path / "milvus.db")
    settings = Settings(
        index_dir=root,
        admin_token=TOKEN,
        backend=request.param,
        milvus_uri=uri,
        milvus_depth=DEPTH,
    )

    def load(settings: Settings) -> Engine:
        uploads = root / "uploads"
        store = open_backend(settings)  # the wiring under test: settings -> backend
        return Engine(
            kit.StubModel(),
            store,
            name="stub",
            audio_dirs=[uploads],
            upload_dir=uploads,
            max_heavy=2,
            wait_s=30,
        )

    with make_client(settings, load=load) as client:
        yield SimpleNamespace(name=request.param, client=client, stored=stored, kit=kit)
    if request.param == "milvus":
        from milvus_lite import server_manager_instance

        server_manager_instance.release_server(uri)  # its next client starts a new one


def test_service_search_and_paging(service):
    client = service.client
    body = client.get("/search", params={"q": "eng own caption 7", "lang": "eng", "k": 4}).json()
    ids = [r["id"] for r in body["results"]]
    assert ids[0] == "c0007" and body["results"][0]["score"] == pytest.approx(1.0, abs=1e-3)
    pages = [
        client.get("/search", params={"q": "eng own caption 7", "lang": "eng", "k": 2, "offset": o})
        for o in (0, 2)
    ]
    assert [r["id"] for p in pages for r in p.json()["results"]] == ids


def test_service_consistency_reports_bounds_past_depth(service):
    response = service.client.post(
        "/consistency", json={"clip_id": "c0007", "caption_index": 1, "k": 3}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    queries = body["queries"]
    assert queries == {"eng": "eng own caption 7", "fra": "fra own caption 7"}
    scores = {
        lang: service.stored @ service.kit.caption_vector(text) for lang, text in queries.items()
    }
    depth = DEPTH if service.name == "milvus" else None
    bounded = 0
    for clip in [*body["clips"], body["target"]]:
        j = int(clip["id"][1:])
        for lang, rank in clip["ranks"].items():
            exact = 1 + int(np.sum(scores[lang] > scores[lang][j]))
            if depth is None or exact <= depth:
                assert rank == exact, (clip["id"], lang)
            else:
                assert rank == {"at_least": depth}
                bounded += 1
        ints = [r for r in clip["ranks"].values() if isinstance(r, int)]
        if len(ints) == len(clip["ranks"]):
            assert clip["rank_variance"] == pytest.approx(np.var(ints))
        else:
            assert clip["rank_variance"] is None and clip["rank_std"] is None
    assert body["target"]["ranks"]["eng"] == 1
    assert (bounded > 0) == (service.name == "milvus")


def test_service_adds_and_deletes_clips(service, make_audio):
    client, headers = service.client, {"Authorization": f"Bearer {TOKEN}"}
    size = client.get("/health").json()["index_size"]
    audio = make_audio(1.0)
    captions = '{"eng": ["eng own caption 7", "eng a brand new caption"]}'
    added = client.post(
        "/clips",
        files={"file": ("a.wav", audio)},
        data={"captions": captions, "id": "up-1"},
        headers=headers,
    )
    assert added.status_code == 201, added.text
    assert client.get("/health").json()["index_size"] == size + 1
    assert client.get("/clips/up-1").json()["captions"]["eng"][1] == "eng a brand new caption"
    found = client.post("/search/audio", files={"file": ("q.wav", audio)}, data={"k": 100}).json()
    assert found["similar_clips"][0]["id"] == "up-1"
    listed = {c["text"]: c["clip_ids"] for c in found["captions"]}
    assert listed["eng a brand new caption"] == ["up-1"]
    assert sorted(listed["eng own caption 7"]) == ["c0007", "up-1"]

    assert client.delete("/clips/up-1", headers=headers).status_code == 204
    assert client.get("/clips/up-1").status_code == 404
    assert client.get("/health").json()["index_size"] == size
    found = client.post("/search/audio", files={"file": ("q.wav", audio)}, data={"k": 100}).json()
    assert all(c["id"] != "up-1" for c in found["similar_clips"])
    listed = {c["text"]: c["clip_ids"] for c in found["captions"]}
    assert "eng a brand new caption" not in listed and listed["eng own caption 7"] == ["c0007"]
