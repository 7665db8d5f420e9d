"""Stopping `atri train` cleanly: a wall-time budget (`--max-minutes`) or SIGTERM/SIGINT
(a cluster pre-empting the job) asks the run to stop at the next step boundary, where
every rank agrees, so that RUN_DIR/last can be saved and `--resume` continue."""

from __future__ import annotations

import signal
import time
from typing import Any

import torch
import torch.distributed as dist

from atri.training.distributed import Dist


class Stopper:
    """A stop request: the wall-time budget ran out, or SIGTERM/SIGINT arrived (a cluster
    pre-empting the job). Checked at step boundaries, agreed on by all ranks."""

    def __init__(self, max_minutes: float | None, started: float) -> None:
        """`started`: time.monotonic() at which the budget began (process start-up, model
        loading and feature extraction count: a cluster's wall-time limit counts them)."""
        self.deadline = None if max_minutes is None else started + 60 * max_minutes
        self.reason: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Stopper:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._on_signal)
            except ValueError:  # not the main thread: no signal handling
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.reason is not None:  # asked twice: stop now, without saving
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name

    def should_stop(self, d: Dist) -> bool:
        if self.reason is None and self.deadline is not None and time.monotonic() > self.deadline:
            self.reason = "time budget"
        flag = torch.tensor([self.reason is not None], dtype=torch.int32, device=d.device)
        if d.world > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        if flag.item() and self.reason is None:
            self.reason = "another rank stopped"
        return bool(flag.item())
