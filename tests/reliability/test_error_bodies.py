"""Error messages for people: a set of bad requests against the real server, and a
service whose index cannot load; no body shows an object repr, a memory address or a
path on the server (tests/error_leaks.py). The fuzz run checks every error it provokes
the same way (test_fuzz.py)."""

from __future__ import annotations

import json

import httpx
import pytest
from error_leaks import leaks
from harness import wait_until

from atri.service.errors import public_text, server_roots

TRUNCATED_WAV_HEADER = b"RIFF\xff\xff\xff\x7fWAVEfmt " + bytes(16) + b"data\xff\xff\xff\x7f"


def bad_requests(url: str, admin: dict, clip_id: str) -> dict[str, httpx.Response]:
    junk = {"file": ("junk.bin", b"not audio at all " * 100)}
    caps = {"captions": json.dumps({"eng": ["a caption"]})}
    post = httpx.post
    return {
        "undecodable upload": post(f"{url}/search/audio", files=junk, timeout=60),
        "undecodable clip": post(f"{url}/clips", files=junk, data=caps, headers=admin,
                                 timeout=60),
        "bare header": post(f"{url}/search/audio", timeout=60,
                            files={"file": ("h.wav", TRUNCATED_WAV_HEADER)}),
        "bad captions": post(f"{url}/clips", files=junk, headers=admin, timeout=60,
                             data={"captions": "{not json"}),
        "bad meta": post(f"{url}/clips", files=junk, headers=admin, timeout=60,
                         data={**caps, "meta": "[1]"}),
        "path id": post(f"{url}/clips", files=junk, headers=admin, timeout=60,
                        data={**caps, "id": "/tmp/../etc/passwd"}),
        "unknown clip": httpx.get(f"{url}/clips/nope", timeout=10),
        "unknown audio": httpx.get(f"{url}/audio/..%2F..%2Fetc%2Fpasswd", timeout=10),
        "bad range": httpx.get(f"{url}/audio/{clip_id}", headers={"Range": "bytes=x"},
                               timeout=10),
        "range beyond": httpx.get(f"{url}/audio/{clip_id}",
                                  headers={"Range": "bytes=999999999-"}, timeout=10),
        "unknown route": httpx.get(f"{url}/nowhere", timeout=10),
        "no token": post(f"{url}/clips", files=junk, data=caps, timeout=10),
        "bad json": post(f"{url}/search", content=b"{", timeout=10,
                         headers={"Content-Type": "application/json"}),
        "unknown lang": httpx.get(f"{url}/search", params={"q": "a", "lang": "xx"}, timeout=10),
    }  # fmt: skip


def test_error_bodies_show_no_internals(reliability_server, admin_headers, clip_ids) -> None:
    answers = bad_requests(reliability_server.url, admin_headers, clip_ids[0])
    for what, response in answers.items():
        assert 400 <= response.status_code < 500, (what, response.status_code, response.text)
        assert not leaks(response.text, reliability_server.index), (what, response.text)
    undecodable = answers["undecodable upload"].json()["error"]["message"]
    assert undecodable.startswith("junk.bin: no decoder can read this audio: libsndfile: ")
    assert "Error opening the upload: Format not recognised" in undecodable  # was a repr


def test_a_failed_load_says_why_without_server_paths(make_settings, tmp_path) -> None:
    from fastapi.testclient import TestClient

    from atri.service.app import create_app

    with TestClient(create_app(make_settings(tmp_path / "no-index-here"))) as client:
        wait_until(lambda: client.get("/health").json()["status"] != "loading",
                   "the load to fail or finish", 60)
        health = client.get("/health").text
        search = client.get("/search", params={"q": "a bell", "lang": "eng"})
    assert search.status_code == 503 and search.json()["error"]["code"] == "load_failed"
    assert "no-index-here" in search.text and not leaks(search.text, tmp_path), search.text
    assert "no-index-here" in health and not leaks(health, tmp_path), health


@pytest.mark.parametrize(
    ("text", "public"),
    [
        ("Error opening <_io.BytesIO object at 0x7f9d50f5b880>: x", "Error opening <object>: x"),
        ("/srv/idx/uploads/a.flac: bad", "a.flac: bad"),
        ("id '../etc/passwd' must match", "id '../etc/passwd' must match"),  # not a server path
        ("see https://errors.pydantic.dev/2.1/v/x", "see https://errors.pydantic.dev/2.1/v/x"),
    ],
)
def test_public_text(text, public) -> None:
    assert public_text(text, server_roots(("/srv/idx",))) == public
