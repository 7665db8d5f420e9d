"""A version published into the served directory by another writer (a compaction, a
rebuild with `build_index`): the service switches to it without a restart, admin changes
never answer 500 (a 503 naming what happened until it can serve the new version), the
changes acknowledged before the rebuild are carried into it, and a failed add leaves no
audio file behind."""

from __future__ import annotations

import json
import shutil

from harness import wait_until

from atri.index import layout, live
from atri.index.build import build_index
from atri.index.store import IndexStore

CAPTIONS = json.dumps({"eng": ["a clip uploaded before the rebuild"]})


def post(client, headers, make_audio, clip_id: str, seconds: float = 1.0):
    return client.post(
        "/clips",
        files={"file": ("a.wav", make_audio(seconds))},
        data={"captions": CAPTIONS, "id": clip_id},
        headers=headers,
    )


def wait_for_version(client, version: int, timeout: float = 30.0) -> dict:
    def served() -> dict | None:
        body = client.get("/health").json()
        return body if body["index_version"] == version else None

    return wait_until(served, f"the service to serve version {version}", timeout)


def test_a_rebuild_under_the_service_keeps_acknowledged_clips(
    index_copy, make_client, make_settings, admin_headers, make_audio, records, clip_ids
):
    settings = make_settings(index_copy, index_poll_s=0)  # only admin calls look
    with make_client(settings) as client:
        engine = client.app.state.load_state.engine
        assert post(client, admin_headers, make_audio, "before-1").status_code == 201
        assert client.delete(f"/clips/{clip_ids[0]}", headers=admin_headers).status_code == 204
        # a nightly rebuild from the source (here: the first 6 clips), same model
        source = [records[i] for i in clip_ids[:6]]
        meta = {key: engine.store.meta[key] for key in ("checkpoint", "source")}
        assert build_index(engine.model, source, index_copy, meta=meta) == 2
        assert client.get("/health").json()["index_version"] == 1  # not looked yet
        # the next admin calls switch to version 2, which holds the acknowledged changes
        assert post(client, admin_headers, make_audio, "after-1", 1.5).status_code == 201
        assert client.get("/health").json()["index_version"] == 2
        assert client.get("/clips/before-1").status_code == 200
        assert client.get(f"/clips/{clip_ids[0]}").status_code == 404  # stays deleted
        assert client.get(f"/clips/{clip_ids[7]}").status_code == 404  # not in the source
        assert client.delete("/clips/before-1", headers=admin_headers).status_code == 204
    store = IndexStore.open(index_copy)
    assert sorted(store.ids()) == sorted([*clip_ids[1:6], "after-1"])
    assert sorted(p.name for p in (index_copy / "uploads").iterdir()) == ["after-1.flac"]


def test_searches_switch_to_a_compacted_version_without_a_restart(
    index_copy, make_client, make_settings, admin_headers, make_audio
):
    with make_client(make_settings(index_copy, index_poll_s=0.1)) as client:
        assert post(client, admin_headers, make_audio, "x-1").status_code == 201
        before = client.get("/search", params={"q": "an uploaded clip", "lang": "eng", "k": 20})
        assert IndexStore.open(index_copy).compact() == 2  # another writer
        body = wait_for_version(client, 2)
        assert body["index_size"] == len(before.json()["results"]) == 13
        after = client.get("/search", params={"q": "an uploaded clip", "lang": "eng", "k": 20})
        assert [h["id"] for h in after.json()["results"]] == [
            h["id"] for h in before.json()["results"]
        ]
        assert client.delete("/clips/x-1", headers=admin_headers).status_code == 204
        assert client.get("/health").json()["index_size"] == 12


def test_a_version_of_another_model_is_not_served(
    index_copy, make_client, make_settings, admin_headers, make_audio
):
    with make_client(make_settings(index_copy, index_poll_s=0)) as client:
        staged = layout.staging_dir(index_copy)
        shutil.rmtree(staged)
        shutil.copytree(index_copy / "versions" / "1", staged)
        meta = json.loads((staged / "meta.json").read_text())
        meta["model"]["text_encoder"] = "another-encoder"
        (staged / "meta.json").write_text(json.dumps(meta))
        with layout.locked(index_copy):
            version = layout.publish(index_copy, staged)
            live.reset_log(index_copy / layout.LIVE_LOG, version, meta["dim"])
        response = post(client, admin_headers, make_audio, "refused-1")
        assert response.status_code == 503, response.text
        error = response.json()["error"]
        assert error["code"] == "index_changed" and response.headers["Retry-After"]
        assert "rebuilt (version 2) with another model" in error["message"]
        assert "text_encoder" in error["message"] and "restart" in error["message"]
        health = client.get("/health").json()
        assert health["index_version"] == 1 and error["message"] in health["warnings"]
        assert client.get("/search", params={"q": "a bell", "lang": "eng"}).status_code == 200
        assert not (index_copy / "uploads" / "refused-1.flac").exists()


def test_an_add_refused_while_another_writer_holds_the_lock_leaves_no_audio(
    index_copy, make_client, make_settings, admin_headers, make_audio
):
    with make_client(make_settings(index_copy, index_poll_s=0, request_timeout_s=1)) as client:
        with layout.locked(index_copy):  # a rebuild publishing its version
            response = post(client, admin_headers, make_audio, "busy-1")
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "index_busy"
        assert "publishing a new index version" in response.json()["error"]["message"]
        assert not list((index_copy / "uploads").glob("busy-1*"))
        assert client.get("/clips/busy-1").status_code == 404
        assert post(client, admin_headers, make_audio, "busy-1").status_code == 201
