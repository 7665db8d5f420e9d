"""200 MB uploads against a real `atri serve`: streamed, one is refused at the size limit
while it arrives and never held in memory (the server's peak RSS says so); announced,
one is refused before its body. The service answers searches as before afterwards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from harness import wait_until

MB = 1 << 20
LIMIT = 20 * MB  # api.md's default, which the reliability server runs with


def peak_rss_growth(server, path: str, action) -> tuple[object, float]:
    """(action's result, growth of the server's peak RSS in MB while it handled the
    request to `path`): the peak is reset first (/proc/PID/clear_refs), so an earlier
    peak cannot hide this one, and read once the server has logged the request, which
    it does when it is done with it (service/metrics.py, ObserveRequests)."""
    pid = server.proc.pid
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    base = _status_kb(pid, "VmRSS")
    logged = access_lines(server.log, path)
    result = action()
    wait_until(lambda: access_lines(server.log, path) > logged,
               f"the server to log its answer to {path}", timeout=60)
    return result, (_status_kb(pid, "VmHWM") - base) / 1024


def access_lines(log: Path, path: str) -> int:
    """Access-log lines for `path` in the server's JSON log."""
    count = 0
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line still being written
        count += entry.get("logger") == "atri.service.access" and entry.get("path") == path
    return count


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@pytest.mark.parametrize("path", ["/search/audio", "/clips"])
def test_200_mb_upload_is_refused_while_streaming(
    path, reliability_server, admin_headers, raw_http, assert_unchanged
) -> None:
    auth = b"Authorization: %s\r\n" % admin_headers["Authorization"].encode()
    chunk = np.random.default_rng(1).bytes(256 * 1024)
    answer, growth = peak_rss_growth(
        reliability_server, path,
        lambda: raw_http.stream_upload(reliability_server.url, path, 200 * MB, chunk, auth),
    )
    assert answer.status == 413, answer.head[:300]
    assert LIMIT < answer.sent < 200 * MB  # refused on the way, not after the 200 MB
    print(f"{path}: sent {answer.sent / MB:.0f} MB, server peak RSS +{growth:.1f} MB")
    assert growth < 40, f"the server's peak RSS grew by {growth:.0f} MB"
    assert_unchanged()


def test_the_rss_meter_sees_an_accepted_upload(reliability_server, uploads, make_audio) -> None:
    """The control of the test above: 5 minutes of 16 kHz WAV (9.6 MB, under the limit)
    are read and decoded, and the meter sees the process grow by at least their size."""
    wav = make_audio(300.0)
    response, growth = peak_rss_growth(
        reliability_server, "/search/audio", lambda: uploads.search_audio(wav)
    )
    assert response.status_code == 200, response.text
    assert growth > len(wav) / MB, f"grew {growth:.1f} MB"


def test_200_mb_announced_is_refused_before_the_body(reliability_server, raw_http) -> None:
    head = raw_http.MULTIPART + b"Content-Length: %d\r\n" % (200 * MB)
    answer = raw_http.post(reliability_server.url, "/search/audio", head)
    assert answer.status == 413
    assert answer.json()["error"]["details"]["limit_bytes"] == LIMIT
