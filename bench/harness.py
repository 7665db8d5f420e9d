"""What the tests and the benchmarks share to run a server and wait for it: a library for
both (pytest puts bench/ on the path, pyproject.toml), not a benchmark itself.

`wait_until` polls an observable condition until a deadline, the one way either waits
for something to happen. `Server` starts a command that serves HTTP on 127.0.0.1, waits
(bounded) until `/health` answers 200, and always stops it: SIGTERM to its process
group, then SIGKILL after a grace period. `atri_serve` is the command that serves an
index.
"""

from __future__ import annotations

import ctypes
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TypeVar

T = TypeVar("T")

HOST = "127.0.0.1"  # servers started here listen on loopback only


def wait_until(
    condition: Callable[[], T], what: str, timeout: float, interval: float = 0.05
) -> T:
    """Call `condition` every `interval` s until it returns something truthy, and return
    that; TimeoutError naming `what` once `timeout` s have passed. An exception from
    `condition` ends the wait at once (say, the awaited process exited)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


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


def atri_serve(index: Path, port: int, *extra: str) -> list[str]:
    """`atri serve` of `index` on HOST:`port`, run by this interpreter."""
    return [sys.executable, "-m", "atri", "serve", "--index", str(index), "--host", HOST,
            "--port", str(port), *extra]  # fmt: skip


def _libc_prctl() -> Callable[..., int] | None:
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):  # not Linux
        return None


# Resolved here, in the parent: between fork and exec the child only calls it (loading a
# library there could deadlock on a lock another thread of the parent held).
_PRCTL = _libc_prctl()


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the process that started it dies, whatever
    kills it (Linux prctl PR_SET_PDEATHSIG)."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)


class Server:
    """A server subprocess; use as a context manager. Its stdout and stderr go to `log`."""

    def __init__(self, name: str, cmd: Sequence[str], port: int, env: dict, log: Path) -> None:
        self.name, self.cmd, self.port, self.env, self.log = name, list(cmd), port, env, log
        self.proc: subprocess.Popen | None = None
        self._sink: IO[bytes] | None = None
        self.ready_s: float | None = None
        self.threads: int | None = None  # what the caller told it to use, for its report
        self._started = 0.0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> Server:
        self._sink = open(self.log, "wb")
        self._started = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd,
            env=self.env,
            stdout=self._sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait_ready(self, timeout: float) -> float:
        """Seconds from the start until /health answered 200; RuntimeError (with the
        log's tail) if the process exits or `timeout` s from the start pass first."""
        proc = self.proc
        assert proc is not None

        def ready() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {proc.returncode}:\n{self.tail()}")
            try:
                status, _ = get(self.port, "/health", timeout=2.0)
            except OSError:
                return False
            return status == 200

        left = timeout - (time.monotonic() - self._started)
        try:
            wait_until(ready, f"{self.name} to answer /health", max(left, 0.0), interval=0.2)
        except TimeoutError as exc:
            raise RuntimeError(f"{exc}:\n{self.tail()}") from exc
        self.ready_s = time.monotonic() - self._started
        return self.ready_s

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
            text = self.log.read_text(encoding="utf-8", errors="replace")
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
        if self._sink is not None:
            self._sink.close()
            self._sink = None
