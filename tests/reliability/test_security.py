"""Safe access: /audio/{id} serves nothing outside the configured audio folders, the
admin token is checked in constant time, every request body has a size limit, and CORS
is off unless configured. (Safe loading, no unpickling of user files: test_unpickling.py.)"""

from __future__ import annotations

import hmac
import json
import shutil
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from atri.service.app import create_app

# --- /audio/{id} stays inside the audio folders ---------------------------------------------


@pytest.fixture(scope="module")
def escape_client(index_dir, make_settings, make_client, make_audio, tmp_path_factory):
    """The index, plus records whose audio lies outside the one allowed folder in every
    way a path can get there; served with ATRI_AUDIO_DIRS = that folder."""
    from atri.index.store import IndexStore
    from atri.training.data.manifest import ClipRecord

    tmp = tmp_path_factory.mktemp("escape")
    allowed, outside = tmp / "allowed", tmp / "outside"
    allowed.mkdir()
    outside.mkdir()
    secret = outside / "secret.flac"
    flac = make_audio(0.5, 16000, "FLAC")
    secret.write_bytes(b"SECRET" + flac)
    (allowed / "inside.flac").write_bytes(flac)
    (allowed / "link-out.flac").symlink_to(secret)
    (allowed / "link-in.flac").symlink_to(allowed / "inside.flac")
    (allowed / "dir-out").symlink_to(outside, target_is_directory=True)
    paths = {
        "inside": allowed / "inside.flac",
        "link-in": allowed / "link-in.flac",
        "absolute-out": secret,
        "dotdot-out": Path(f"{allowed}/../outside/secret.flac"),
        "link-out": allowed / "link-out.flac",
        "dir-link-out": allowed / "dir-out" / "secret.flac",
        "etc-passwd": Path("/etc/passwd"),
        "missing-in": allowed / "gone.flac",
    }
    root = Path(shutil.copytree(index_dir, tmp / "idx"))
    store = IndexStore.open(root)
    try:
        vector = np.ones(store.dim, dtype=np.float32) / np.sqrt(store.dim)
        for clip_id, path in paths.items():
            store.add_clip(ClipRecord(clip_id, str(path), {}, {}), vector, {})
    finally:
        store.close()
    with make_client(make_settings(root, audio_dirs=[allowed])) as client:
        yield client


@pytest.mark.parametrize(
    ("clip_id", "status"),
    [("inside", 200), ("link-in", 200), ("absolute-out", 404), ("dotdot-out", 404),
     ("link-out", 404), ("dir-link-out", 404), ("etc-passwd", 404), ("missing-in", 404)],
)  # fmt: skip
def test_audio_outside_the_allowed_folders_is_not_served(escape_client, clip_id, status) -> None:
    response = escape_client.get(f"/audio/{clip_id}")
    assert response.status_code == status, response.text
    assert b"SECRET" not in response.content and b"root:" not in response.content
    if status == 404:
        assert response.json()["error"]["code"] == "not_found"
    ranged = escape_client.get(f"/audio/{clip_id}", headers={"Range": "bytes=0-5"})
    assert ranged.status_code == (206 if status == 200 else 404)
    assert b"SECRET" not in ranged.content


# --- the admin token ----------------------------------------------------------------------------


def no_engine(settings):
    raise RuntimeError("no model is loaded in this test")


@pytest.fixture(scope="module")
def stub_client(index_dir, make_settings):
    """An app whose engine never loads: the admin check, body limits and CORS come
    first, without a model."""
    app = create_app(make_settings(index_dir), load=no_engine)
    with TestClient(app) as client:
        assert app.state.load_state.done.wait(timeout=30)
        yield client


@pytest.fixture
def spy_compare(monkeypatch) -> list[tuple[bytes, bytes]]:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return calls


def test_admin_token_401_403_and_constant_time(stub_client, admin_headers, spy_compare) -> None:
    token = admin_headers["Authorization"].removeprefix("Bearer ")
    calls = {
        "none": stub_client.delete("/clips/x"),
        "empty": stub_client.delete("/clips/x", headers={"Authorization": "Bearer "}),
        "basic": stub_client.delete("/clips/x", headers={"Authorization": f"Basic {token}"}),
        "wrong": stub_client.delete("/clips/x", headers={"Authorization": "Bearer nope"}),
        "same-length": stub_client.delete(
            "/clips/x", headers={"Authorization": "Bearer " + "x" * len(token)}
        ),
        "prefix": stub_client.delete("/clips/x", headers={"Authorization": f"Bearer {token[:-1]}"}),
        "right": stub_client.delete("/clips/x", headers=admin_headers),
    }
    for name in ("none", "empty", "basic"):
        assert calls[name].status_code == 401, name
        assert calls[name].json()["error"]["code"] == "unauthorized"
        assert calls[name].headers["WWW-Authenticate"] == "Bearer"
    for name in ("wrong", "same-length", "prefix"):
        assert calls[name].status_code == 403, name
        assert calls[name].json()["error"]["code"] == "forbidden"
    assert calls["right"].status_code == 503  # past the check; the engine is not loaded
    compared = [a for a, b in spy_compare if b == token.encode()]
    assert compared == [b"nope", b"x" * len(token), token[:-1].encode(), token.encode()]
    posted = stub_client.post("/clips", files={"file": ("a.wav", b"x")}, data={"captions": "{}"})
    assert posted.status_code == 401


# --- every body has a size limit ------------------------------------------------------------


def test_huge_json_body_is_refused_not_parsed(reliability_server, raw_http) -> None:
    url = reliability_server.url
    many = ('{"q": "x", "k": [' + ",".join(["[]"] * 7_000_000) + "]}").encode()  # 21 MB
    long = json.dumps({"q": "a" * 5_000_000, "lang": "eng"}).encode()
    for body in (many, long):
        t0 = time.perf_counter()
        head = b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        pieces = (body[i : i + (1 << 16)] for i in range(0, len(body), 1 << 16))
        answer = raw_http.post(url, "/search", head, pieces)
        assert answer.status == 413, answer.body
        assert answer.json()["error"]["details"]["limit_bytes"] == 1 << 20
        assert answer.sent < len(body) and time.perf_counter() - t0 < 10

    def chunked():  # no Content-Length: refused while it streams
        yield b'7\r\n{"q": "\r\n'
        for _ in range(1024):  # 64 MB
            yield b"%x\r\n%s\r\n" % (1 << 16, b"a" * (1 << 16))

    head = b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    answer = raw_http.post(url, "/consistency", head, chunked())
    assert answer.status == 413 and answer.json()["error"]["code"] == "payload_too_large"
    assert answer.sent < 16 << 20  # the limit, plus what the sockets' buffers held


def test_json_bodies_under_the_limit_are_validated(reliability_server) -> None:
    url = reliability_server.url
    long_query = httpx.post(f"{url}/search", json={"q": "a" * 500_000, "lang": "eng"}, timeout=60)
    assert long_query.status_code == 422
    deep = "[" * 100_000 + "]" * 100_000  # nested beyond the parser's recursion limit
    nested = httpx.post(
        f"{url}/search", content=deep, headers={"content-type": "application/json"}, timeout=60
    )
    assert nested.status_code == 422 and nested.json()["error"]["code"] == "validation_error"
    many_errors = {"queries": {f"x{i}": "" for i in range(20_000)}, "k": 5}
    response = httpx.post(f"{url}/consistency", json=many_errors, timeout=60)
    assert response.status_code == 422
    details = response.json()["error"]["details"]
    assert details["n_errors"] == 20_000 and len(details["errors"]) == 20  # a bounded answer
    form_field = httpx.post(
        f"{url}/search/audio", files={"file": ("a.wav", b"x")}, data={"lang": "e" * (2 << 20)},
        timeout=60,
    )  # fmt: skip
    assert form_field.status_code == 422  # a form field over Starlette's 1 MB part limit


# --- CORS ---------------------------------------------------------------------------------


def test_cors_is_off_by_default(reliability_server) -> None:
    origin = {"Origin": "https://elsewhere.example"}
    response = httpx.get(f"{reliability_server.url}/languages", headers=origin, timeout=10)
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    preflight = httpx.options(
        f"{reliability_server.url}/search",
        headers={**origin, "Access-Control-Request-Method": "POST"},
        timeout=10,
    )
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_when_configured(index_dir, make_settings) -> None:
    allowed = "https://app.example"
    app = create_app(make_settings(index_dir, cors_origins=[allowed]), load=no_engine)
    with TestClient(app) as client:
        ok = client.get("/languages", headers={"Origin": allowed})
        assert ok.headers["access-control-allow-origin"] == allowed
        other = client.get("/languages", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        preflight = client.options(
            "/search",
            headers={"Origin": allowed, "Access-Control-Request-Method": "POST",
                     "Access-Control-Request-Headers": "content-type"},
        )  # fmt: skip
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == allowed
        assert "POST" in preflight.headers["access-control-allow-methods"]
        error = client.get("/search", params={"q": "x"}, headers={"Origin": allowed})
        assert error.status_code == 503  # errors carry the header too
        assert error.headers["access-control-allow-origin"] == allowed
