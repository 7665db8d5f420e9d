"""Helpers of bench/search.py (and bench/load.py, its `Server`): server subprocesses on
loopback and a bounded HTTP load.

`Server` starts a command that serves HTTP on 127.0.0.1, waits (bounded) until
`/health` answers 200, and always stops it: SIGTERM, then SIGKILL after a grace period.
`run_load` sends GET requests from `clients` threads over keep-alive connections until
`seconds` have passed or the given request paths are used up, whichever comes first;
every request has a socket timeout, so the load always stops by itself.
"""

from __future__ import annotations

import ctypes
import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

HOST = "127.0.0.1"  # loads only ever target servers this process started, on loopback


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the benchmark process dies, whatever kills
    it (Linux prctl PR_SET_PDEATHSIG; elsewhere a no-op)."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Server:
    """A server subprocess; use as a context manager. Its stderr/stdout go to `log`."""

    def __init__(self, name: str, cmd: Sequence[str], port: int, env: dict, log: Path) -> None:
        self.name, self.cmd, self.port, self.env, self.log_path = name, list(cmd), port, env, log
        self.proc: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None
        self.ready_s: float | None = None
        self.threads: int | None = None  # what the caller told it to use, for its report
        self._started = 0.0

    def __enter__(self) -> Server:
        self._log = open(self.log_path, "wb")
        self._started = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float) -> float:
        """Seconds from the start until /health answered 200; RuntimeError (with the
        log's tail) if the process exits or `timeout` passes first."""
        assert self.proc is not None
        start = self._started
        while time.monotonic() - start < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}"
                )
            try:
                status, _ = get(self.port, "/health", timeout=2.0)
            except OSError:
                status = 0
            if status == 200:
                self.ready_s = time.monotonic() - start
                return self.ready_s
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.tail()}")

    def rss_mb(self) -> float | None:
        """The server's resident memory now (Linux), MB."""
        return self._status_mb("VmRSS:")

    def peak_rss_mb(self) -> float | None:
        """The server's peak resident memory so far (Linux's VmHWM), MB."""
        return self._status_mb("VmHWM:")

    def _status_mb(self, field: str) -> float | None:
        try:
            status = Path(f"/proc/{self.proc.pid}/status").read_text() if self.proc else ""
        except OSError:
            return None
        for line in status.splitlines():
            if line.startswith(field):
                return round(int(line.split()[1]) / 1024, 1)
        return None

    def tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM to the process group, SIGKILL if it is still there after `grace` s."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=grace)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            self._log = None


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
