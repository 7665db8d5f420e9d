"""Progress for long jobs: a tqdm bar on a terminal, plain periodic log lines otherwise
(CI logs and files stay readable)."""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, desc: str, unit: str = "it", log_every: float = 10.0) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.done = 0
        self.start = time.monotonic()
        self._last_log = self.start
        self._log_every = log_every
        self._bar = (
            tqdm(total=total, desc=desc, unit=unit, file=sys.stderr)
            if sys.stderr.isatty()
            else None
        )
        self._log = logging.getLogger("atri.progress")

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
            return
        now = time.monotonic()
        if now - self._last_log >= self._log_every or self.done >= self.total:
            self._last_log = now
            rate = self.done / max(now - self.start, 1e-9)
            self._log.info(
                "%s: %d/%d %s (%.1f %s/s)", self.desc, self.done, self.total, self.unit, rate,
                self.unit,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
