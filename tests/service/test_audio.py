"""GET /audio/{id}: the file with its content type, HTTP range requests (206/416), and only
files below the configured audio directories."""

from __future__ import annotations

from pathlib import Path

import pytest

from atri.service.routes.audio import allowed


@pytest.fixture(scope="module")
def clip(records, clip_ids) -> tuple[str, bytes]:
    clip_id = clip_ids[0]
    return clip_id, Path(records[clip_id].audio).read_bytes()


def test_whole_file_with_content_type(client, clip) -> None:
    clip_id, data = clip
    response = client.get(f"/audio/{clip_id}")
    assert response.status_code == 200
    assert response.headers["content-type"] == "audio/flac"
    assert response.headers["accept-ranges"] == "bytes"
    assert int(response.headers["content-length"]) == len(data)
    assert response.content == data


@pytest.mark.parametrize(
    ("header", "start", "end"),
    [("bytes=0-99", 0, 99), ("bytes=100-", 100, None), ("bytes=-50", -50, None)],
)
def test_range_requests_answer_206(client, clip, header, start, end) -> None:
    clip_id, data = clip
    response = client.get(f"/audio/{clip_id}", headers={"Range": header})
    assert response.status_code == 206
    first = start if start >= 0 else len(data) + start
    last = end if end is not None else len(data) - 1
    assert response.content == data[first : last + 1]
    assert response.headers["content-range"] == f"bytes {first}-{last}/{len(data)}"
    assert response.headers["content-type"] == "audio/flac"


def test_unsatisfiable_range_is_a_uniform_416(client, clip) -> None:
    clip_id, data = clip
    response = client.get(f"/audio/{clip_id}", headers={"Range": f"bytes={len(data) + 10}-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(data)}"
    error = response.json()["error"]
    assert error["code"] == "range_not_satisfiable"
    assert error["details"]["size"] == len(data)


def test_malformed_range_is_a_uniform_400(client, clip) -> None:
    clip_id, _ = clip
    response = client.get(f"/audio/{clip_id}", headers={"Range": "pages=1-2"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_range"


def test_audio_outside_the_audio_dirs_is_not_served(
    index_dir, make_client, make_settings, tmp_path
):
    # serve the same index, but allow only an unrelated folder
    settings = make_settings(index_dir, audio_dirs=[tmp_path])
    with make_client(settings) as c:
        clip_id = c.get("/search", params={"q": "piano", "lang": "eng", "k": 1}).json()
        clip_id = clip_id["results"][0]["id"]
        response = c.get(f"/audio/{clip_id}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
        assert c.get(f"/clips/{clip_id}").status_code == 200  # the record itself is fine


def test_allowed_resolves_symlinks_and_dot_dots(tmp_path) -> None:
    root = tmp_path / "corpus"
    (root / "audio").mkdir(parents=True)
    inside = root / "audio" / "a.flac"
    inside.write_bytes(b"x")
    secret = tmp_path / "secret.flac"
    secret.write_bytes(b"y")
    link = root / "audio" / "link.flac"
    link.symlink_to(secret)
    roots = [root.resolve()]
    assert allowed(inside, roots)
    assert not allowed(root / "audio" / ".." / ".." / "secret.flac", roots)
    assert not allowed(link, roots)
    assert not allowed(secret, roots)
