"""A bounded HTTP load, for bench/search.py (its servers: harness.py).

`run_load` sends GET requests from `clients` threads over keep-alive connections until
`seconds` have passed or the given request paths are used up, whichever comes first;
every request has a socket timeout, so the load always stops by itself.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from harness import HOST  # loads only ever target servers this process started


@dataclass
class Load:
    """What one bounded load run saw. Latencies are client-side, request sent to body
    read; `server_ms` is the service's own `took_ms` when its answer has one."""

    clients: int
    latencies_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    exceptions: int = 0  # requests that got no answer (timeout, reset)
    errors: list[str] = field(default_factory=list)  # the first few failures, for the report
    elapsed_s: float = 0.0
    exhausted: bool = False  # the request paths ran out before the time was up

    def add_answer(self, status: int, ms: float, body: bytes) -> None:
        """One answered request (the caller holds the run's lock)."""
        self.statuses[status] += 1
        if status == 200:
            self.latencies_ms.append(ms)
            took = json.loads(body).get("took_ms")
            if took is not None:
                self.server_ms.append(float(took))
        elif len(self.errors) < 10:
            self.errors.append(f"{status}: {body[:200]!r}")

    def add_failure(self, exc: Exception) -> None:
        """A request that got no answer (the caller holds the run's lock)."""
        self.exceptions += 1
        if len(self.errors) < 10:
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def extend(self, other: Load) -> None:
        self.latencies_ms += other.latencies_ms
        self.server_ms += other.server_ms
        self.statuses += other.statuses
        self.exceptions += other.exceptions
        self.errors += other.errors
        self.elapsed_s += other.elapsed_s
        self.exhausted |= other.exhausted

    def summary(self) -> dict:
        ok = len(self.latencies_ms)
        out = {
            "clients": self.clients,
            "requests_ok": ok,
            "requests_failed": sum(self.statuses.values()) - ok + self.exceptions,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "seconds": round(self.elapsed_s, 2),
            "qps": round(ok / self.elapsed_s, 2) if self.elapsed_s else None,
            "paths_exhausted": self.exhausted,
            **percentiles(self.latencies_ms),
        }
        if self.server_ms:
            out["server_took_ms_p50"] = round(float(np.median(self.server_ms)), 2)
        if self.errors:
            out["first_errors"] = self.errors[:3]
        return out


def percentiles(values: Sequence[float]) -> dict[str, float | None]:
    if not values:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    p50, p95, p99 = np.percentile(np.asarray(values), [50, 95, 99])
    return {
        "p50_ms": round(float(p50), 2),
        "p95_ms": round(float(p95), 2),
        "p99_ms": round(float(p99), 2),
    }


class _Paths:
    """Hands out each request path once, across threads."""

    def __init__(self, paths: Sequence[str]) -> None:
        self._paths, self._next, self._lock = paths, 0, threading.Lock()

    def take(self) -> str | None:
        with self._lock:
            if self._next >= len(self._paths):
                return None
            self._next += 1
            return self._paths[self._next - 1]

    @property
    def used(self) -> int:
        return self._next


def run_load(
    port: int, paths: Sequence[str], *, clients: int, seconds: float, timeout: float = 30.0
) -> tuple[Load, int]:
    """GET each of `paths` at most once from `clients` threads until `seconds` pass or
    the paths run out. Returns the result and how many paths were used."""
    load = Load(clients)
    source = _Paths(paths)
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
        try:
            while time.perf_counter() < deadline:
                path = source.take()
                if path is None:
                    load.exhausted = True
                    return
                start = time.perf_counter()
                try:
                    conn.request("GET", path)
                    response = conn.getresponse()
                    body = response.read()
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()  # reconnects on the next request
                    with lock:
                        load.add_failure(exc)
                    continue
                ms = (time.perf_counter() - start) * 1000
                with lock:
                    load.add_answer(response.status, ms, body)
        finally:
            conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:  # every request ends within `timeout`; the margin is for safety
        t.join(timeout=max(0.0, deadline - time.perf_counter()) + timeout + 5)
    load.elapsed_s = time.perf_counter() - started
    return load, source.used
