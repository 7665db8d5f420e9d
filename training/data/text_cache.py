"""On-disk cache of frozen text-encoder embeddings, so each caption is encoded once.

KCL re-reads every caption on each of its K folds; with a frozen text tower those
vectors never change, so they are computed on the first pass and read back after.

Layout (one file per encoder and language, so a write replaces one file atomically):

    <cache_dir>/<name>@<version>/meta.json   {"name", "version", "dim", "format"}
    <cache_dir>/<name>@<version>/<lang>.npz  keys (N, 32) uint8 = sha256(text utf-8)
                                             vectors (N, dim) float32

A writer merges its new rows under an exclusive `flock` on `<lang>.lock` (so parallel
writers do not drop each other's rows), writes a temp file in the same directory and
`os.replace`s it, so readers see the old file or the new one, never a partial one.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from atri.training.encoders.text_encoder import TextEncoder
from atri.training.fileio import atomic_write

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
KEY_BYTES = 32  # sha256 digest


class TextCacheError(RuntimeError):
    """A cache file exists but does not match what this encoder would have written."""


def text_key(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def cache_path(cache_dir: Path, encoder: TextEncoder, lang: str) -> Path:
    """The shard file for (encoder name + version, language)."""
    slug = re.sub(r"[^A-Za-z0-9._+@-]", "_", f"{encoder.name}@{encoder.version}")
    return Path(cache_dir) / slug / f"{lang}.npz"


def encode_cached(
    encoder: TextEncoder, texts: list[str], lang: str, cache_dir: Path
) -> torch.Tensor:
    """`encoder.encode(texts, lang)` (N, D) float32, encoding only texts not cached yet.

    Misses are de-duplicated and encoded in one call; the result keeps `texts`' order.
    Only frozen encoders may be cached: a trainable one's vectors go stale as it trains.
    """
    if encoder.trainable:
        raise ValueError(
            f"text encoder {encoder.name!r} is trainable; its vectors cannot be cached"
        )
    path = cache_path(cache_dir, encoder, lang)
    keys = [text_key(t) for t in texts]
    found = read_rows(path, encoder.dim)
    missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in found}
    if missing:
        log.info("text cache %s: encoding %d of %d texts", path, len(missing), len(texts))
        new = encoder.encode(list(missing.values()), lang).detach().float().cpu().numpy()
        if new.shape != (len(missing), encoder.dim):
            raise ValueError(
                f"encoder returned {new.shape}, expected ({len(missing)}, {encoder.dim})"
            )
        new_rows = dict(zip(missing, new, strict=True))
        _write_meta(path.parent, encoder)
        with _locked(path.with_suffix(".lock")):
            # re-read under the lock: another writer may have added rows meanwhile
            merged = {**read_rows(path, encoder.dim), **new_rows}
            _write_rows(path, merged, encoder.dim)
        found.update(new_rows)
    out = np.empty((len(texts), encoder.dim), dtype=np.float32)  # (N, D)
    for i, key in enumerate(keys):
        out[i] = found[key]
    return torch.from_numpy(out)


def read_rows(path: Path, dim: int) -> dict[bytes, np.ndarray]:
    """The vectors one cache file (`cache_path`) holds, by text key (`text_key`); {} when
    there is no file. TextCacheError names a file this code did not write."""
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as data:
            keys, vectors = data["keys"], data["vectors"]
    except (OSError, ValueError, KeyError) as exc:
        raise TextCacheError(f"unreadable text cache {path}: {exc}") from exc
    if (
        keys.dtype != np.uint8
        or vectors.dtype != np.float32
        or keys.shape != (len(keys), KEY_BYTES)
        or vectors.shape != (len(keys), dim)
    ):
        raise TextCacheError(
            f"text cache {path} holds keys {keys.shape} {keys.dtype}, vectors "
            f"{vectors.shape} {vectors.dtype}; expected (N, {KEY_BYTES}) uint8, (N, {dim}) float32"
        )
    return {k.tobytes(): v for k, v in zip(keys, vectors, strict=True)}


def _write_rows(path: Path, rows: dict[bytes, np.ndarray], dim: int) -> None:
    keys = np.frombuffer(b"".join(rows), dtype=np.uint8).reshape(len(rows), KEY_BYTES)
    vectors = np.stack(list(rows.values())).astype(np.float32).reshape(len(rows), dim)
    atomic_write(path, lambda f: np.savez(f, keys=keys, vectors=vectors))


def _write_meta(folder: Path, encoder: TextEncoder) -> None:
    meta = {
        "name": encoder.name,
        "version": encoder.version,
        "dim": encoder.dim,
        "format": FORMAT_VERSION,
    }
    path = folder / "meta.json"
    if path.exists():
        if json.loads(path.read_text()) != meta:
            raise TextCacheError(f"{path} describes another encoder than {meta}")
        return
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(json.dumps(meta, indent=2).encode()))


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    with lock_path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
