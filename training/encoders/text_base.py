"""What every text encoder shares (text_encoder.py, e5_torch.py): the language check and
the hash of the weight files that names an encoder's version (text caches key on it)."""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

from atri.training.languages import LANGS


def check_lang(lang: str) -> None:
    if lang not in LANGS:
        raise ValueError(f"unsupported language {lang!r}; expected one of {LANGS}")


def hash_files(*paths: Path) -> str:
    """sha256 over (file name, content) of the given files, 16 hex chars.

    Memoised on (path, size, mtime), so a file rewritten in place is hashed again.
    """
    return _hash_stamped(tuple((p, p.stat().st_size, p.stat().st_mtime_ns) for p in paths))


@cache
def _hash_stamped(stamped: tuple[tuple[Path, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for path, _, _ in stamped:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()[:16]
