"""Backpressure: heavy requests (audio upload + embedding, consistency passes) run at most
ATRI_MAX_HEAVY_REQUESTS at a time, and one that cannot start within
ATRI_REQUEST_TIMEOUT_S is answered 503 `busy` with the uniform body and Retry-After,
instead of queueing without limit. Saturated here with a limit of 1 and a 1 s timeout
on a real `atri serve`; bench/load.py measures the defaults under 32 clients."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from harness import wait_until

from atri.service.engine import Engine
from atri.service.errors import Busy

TIMEOUT_S = 1.0
SLACK_S = 5.0  # scheduling on a loaded 2-core machine


@pytest.fixture(scope="module")
def busy_server(index_dir, start_server, tmp_path_factory):
    env = {"ATRI_MAX_HEAVY_REQUESTS": "1", "ATRI_REQUEST_TIMEOUT_S": str(TIMEOUT_S)}
    log = tmp_path_factory.mktemp("busy") / "server.log"
    with start_server(index_dir, env=env, log=log) as server:
        yield server.url


def timed(call) -> tuple[httpx.Response, float]:
    t0 = time.perf_counter()
    response = call()
    return response, time.perf_counter() - t0


def upload(url: str, data: bytes) -> httpx.Response:
    return httpx.post(f"{url}/search/audio", files={"file": ("a.flac", data)}, timeout=120)


def assert_busy(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json() == {
        "error": {
            "code": "busy",
            "message": f"the service is busy: no slot became free within {TIMEOUT_S:g} s",
            "details": {"waited_s": TIMEOUT_S},
        }
    }
    assert int(response.headers["Retry-After"]) > 0


def test_concurrent_uploads_beyond_the_limit_are_refused_quickly(busy_server, make_audio) -> None:
    # a long clip is a slow request: embedding takes ~50 ms per second of audio here, so
    # ~1.5 s for each of these: longer than the 1 s wait
    clip = make_audio(30.0, 16000, "FLAC")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: timed(lambda: upload(busy_server, clip)), range(8)))
    statuses = [r.status_code for r, _ in results]
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 1 and statuses.count(503) >= 1, statuses
    for response, seconds in results:
        if response.status_code == 503:
            assert_busy(response)
            # refused after about the wait, not after the requests ahead of it finished
            assert TIMEOUT_S <= seconds < TIMEOUT_S + SLACK_S, seconds


def test_a_held_slot_refuses_consistency_and_text_search_but_not_health(
    busy_server, clip_ids, make_audio
) -> None:
    # holds the slot, and the model, for several seconds
    long_clip = make_audio(240.0, 16000, "FLAC")

    def refused_consistency() -> tuple[httpx.Response, float] | None:
        """A consistency pass: answered (200) until the upload holds the slot, refused
        (503) after the wait once it does."""
        assert not holder.done(), f"the upload ended first: {holder.result()[0].text}"
        response, seconds = timed(
            lambda: httpx.post(
                f"{busy_server}/consistency",
                json={"clip_id": clip_ids[0], "caption_index": 0, "k": 5},
                timeout=60,
            )
        )
        assert response.status_code in (200, 503), response.text
        return (response, seconds) if response.status_code == 503 else None

    with ThreadPoolExecutor(1) as pool:
        holder = pool.submit(timed, lambda: upload(busy_server, long_clip))
        # refused after a 1 s wait: by then the upload, decoded, is embedding
        refused, seconds = wait_until(
            refused_consistency, "the long upload to hold the heavy slot", timeout=60
        )
        search, _ = timed(
            lambda: httpx.get(
                f"{busy_server}/search",
                params={"q": f"an uncached query {time.time()}", "lang": "eng"},
                timeout=60,
            )
        )
        health, health_s = timed(lambda: httpx.get(f"{busy_server}/health", timeout=60))
        saturated = not holder.done()  # the upload still held the slot after all three
        held, _ = holder.result(timeout=120)
    assert held.status_code == 200, held.text
    assert saturated, "the upload ended before the requests it should have held off"
    assert_busy(refused)
    assert seconds < TIMEOUT_S + SLACK_S
    assert_busy(search)  # the model was busy embedding the long clip
    assert health.status_code == 200 and health_s < 1.0, health_s


def test_service_recovers_after_saturation(busy_server, make_audio) -> None:
    clip = make_audio(2.0, 16000, "FLAC")
    assert upload(busy_server, clip).status_code == 200
    response = httpx.get(
        f"{busy_server}/search", params={"q": "a piano", "lang": "eng", "k": 3}, timeout=60
    )
    assert response.status_code == 200 and len(response.json()["results"]) == 3


def test_at_most_the_limit_runs_at_once() -> None:
    engine = Engine(
        model=None, store=None, name="x", audio_dirs=[], upload_dir=None, max_heavy=2, wait_s=30
    )
    running, peak, lock = 0, 0, threading.Lock()

    def work(_: int) -> None:
        nonlocal running, peak
        with engine.heavy():
            with lock:
                running += 1
                peak = max(peak, running)
            time.sleep(0.02)  # the work done in the slot, so that slots overlap: no wait
            with lock:
                running -= 1

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(work, range(64)))
    assert peak == 2


def test_waiting_is_bounded_by_the_timeout() -> None:
    engine = Engine(
        model=None, store=None, name="x", audio_dirs=[], upload_dir=None, max_heavy=1, wait_s=0.2
    )
    with engine.heavy():
        t0 = time.perf_counter()
        with pytest.raises(Busy):
            with engine.heavy():
                pass
        assert 0.2 <= time.perf_counter() - t0 < 2.0
        t0 = time.perf_counter()
        with pytest.raises(Busy):
            with engine.changes(), engine.changes():  # admin changes: one at a time
                pass
        assert time.perf_counter() - t0 < 2.0
