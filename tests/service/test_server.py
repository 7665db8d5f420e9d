"""`atri serve` as a real uvicorn process on a loopback port: it answers, streams the
size limit, logs JSON, refuses an index of another model, and a change acknowledged
just before a kill -9 survives the restart."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import httpx
import pytest
from harness import wait_until

from atri.commands.serve import main as serve_main


def test_real_server_answers(live_server, clip_ids) -> None:
    health = httpx.get(f"{live_server.url}/health", timeout=10).json()
    assert health["status"] == "ok" and health["index_size"] == len(clip_ids)
    response = httpx.get(
        f"{live_server.url}/search", params={"q": "a piano", "lang": "eng", "k": 3}, timeout=30
    )
    assert response.status_code == 200
    hits = response.json()["results"]
    assert len(hits) == 3
    audio = httpx.get(
        f"{live_server.url}{hits[0]['audio_url']}", headers={"Range": "bytes=0-9"}, timeout=10
    )
    assert audio.status_code == 206 and len(audio.content) == 10
    assert httpx.get(f"{live_server.url}/nope", timeout=10).json()["error"]["code"] == "not_found"


def test_access_log_is_json(live_server) -> None:
    httpx.get(f"{live_server.url}/languages", timeout=10)

    def logged() -> list[dict] | None:
        entries = []
        for line in live_server.log.read_text().splitlines():
            try:
                entries.append(json.loads(line))
            except json.JSONDecodeError:
                pytest.fail(f"a log line is not JSON: {line!r}")
        return entries if any(e.get("path") == "/languages" for e in entries) else None

    entries = wait_until(logged, "the access line of GET /languages", 10, interval=0.1)
    access = next(e for e in entries if e.get("path") == "/languages")
    assert access["status"] == 200 and access["method"] == "GET"
    assert access["logger"] == "atri.service.access" and access["duration_ms"] >= 0
    assert any(e["logger"] == "atri.service.loading" and "ready" in e["message"] for e in entries)


def test_size_limit_is_enforced_while_streaming(live_server, raw_http) -> None:
    """A chunked upload with no Content-Length is answered 413 once it crosses the limit,
    long before the client would have finished sending."""
    limit = live_server.upload_limit
    answer = raw_http.stream_upload(live_server.url, "/search/audio", 50 * limit, b"x" * 65536)
    assert answer.status == 413, answer.head[:200]
    assert answer.sent < 10 * limit, f"sent {answer.sent} bytes before the 413"


def test_content_length_over_the_limit_is_refused_at_once(live_server, raw_http) -> None:
    head = raw_http.MULTIPART + b"Content-Length: %d\r\n" % (live_server.upload_limit * 100)
    answer = raw_http.post(live_server.url, "/search/audio", head)  # nothing of the body
    assert answer.status == 413
    assert b'"payload_too_large"' in answer.body


def test_missing_index_exits_2(tmp_path, capsys) -> None:
    assert serve_main(["--index", str(tmp_path / "none"), "--port", "1"]) == 2
    assert "no index here" in capsys.readouterr().err
    assert serve_main(["--bogus"]) == 2


def test_index_of_another_model_is_refused(index_dir, other_checkpoint_dir, tmp_path) -> None:
    log = tmp_path / "refused.log"
    code = "import sys; from atri.commands.serve import main; sys.exit(main(sys.argv[1:]))"
    with open(log, "w") as sink:
        proc = subprocess.run(
            [sys.executable, "-c", code, "--index", str(index_dir), "--port", "0",
             "--checkpoint", str(other_checkpoint_dir)],
            stdout=sink, stderr=sink, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
    text = log.read_text()
    assert proc.returncode == 2, text
    assert "built with another model" in text and "weights_sha256" in text


def test_change_survives_kill_9(
    index_copy, start_server, make_audio, admin_headers, tmp_path
) -> None:
    with start_server(index_copy) as server:
        response = httpx.post(
            f"{server.url}/clips",
            files={"file": ("a.wav", make_audio(1.0))},
            data={"id": "durable-1", "captions": json.dumps({"eng": ["a tone"]})},
            headers=admin_headers,
            timeout=60,
        )
        assert response.status_code == 201, response.text
        server.proc.send_signal(signal.SIGKILL)  # right after the acknowledgement
        server.proc.wait(timeout=10)
    log = tmp_path / "restarted.log"
    with start_server(index_copy, log=log) as server:
        clip = httpx.get(f"{server.url}/clips/durable-1", timeout=10)
        assert clip.status_code == 200
        assert clip.json()["captions"] == {"eng": ["a tone"]}
        assert httpx.get(f"{server.url}/audio/durable-1", timeout=10).status_code == 200
        server.proc.terminate()
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells
        assert server.proc.wait(timeout=30) in (0, -signal.SIGTERM)
    assert "shutting down" in log.read_text()


def test_port_in_use_exits_1(index_dir, tmp_path) -> None:
    code = "import sys; from atri.commands.serve import main; sys.exit(main(sys.argv[1:]))"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-c", code, "--index", str(index_dir), "--port", str(port)],
            capture_output=True, text=True, timeout=180, env={**os.environ, "OMP_NUM_THREADS": "1"},
        )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert f"cannot serve on 127.0.0.1:{port}" in proc.stderr
