"""Atomic writes, the one implementation every writer uses (checkpoints, index versions,
uploads, corpus audio, feature and text caches, trainer state, manifests, reports): write
a temporary file in the same folder, fsync it, rename it over the target, fsync the
folder. A reader (or a restart) then sees the old content or the new, never half. Whole
directories (checkpoints, run state) are swapped in by `swap_dir`. And a file's SHA-256,
read a block at a time, by which manifests and weights are named."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)


def umask() -> int:
    """The process's file-creation mask, read where Linux shows it (/proc/self/status)
    rather than set and restored: another thread creating a file in between would get
    the wrong mode."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def plain_mode(path: str | os.PathLike) -> None:
    """Give a file or folder the mode open() or mkdir() would have: 0666 or 0777 less the
    umask. tempfile makes them private (0600, 0700), and a checkpoint, index or corpus
    must be as readable as anything else its user writes (a service running as another
    user reads them)."""
    full = 0o777 if Path(path).is_dir() else 0o666
    os.chmod(path, full & ~umask())


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a closed file's content to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(path: str | os.PathLike) -> None:
    """fsync every file and directory below `path` (before it is renamed into place)."""
    for folder, _, files in os.walk(path):
        for name in files:
            fsync_file(Path(folder) / name)
        fsync_dir(folder)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename inside `folder` durable (POSIX: the directory entry is data too)."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; once the block succeeds, it is fsynced and
    renamed over `path`. On any error the temporary file is removed. The file gets the
    mode open() would give it (tempfile makes it 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    plain_mode(tmp)
    try:
        yield Path(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> None:
    """Call `write(f)` on a binary file that replaces `path` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _aside(path: Path) -> Path:
    return path.parent / f".{path.name}.previous"


def swap_dir(staged: str | os.PathLike, target: str | os.PathLike) -> None:
    """Rename the complete (fsynced) directory `staged` to `target`, replacing it. POSIX
    cannot rename a directory over a non-empty one, so the old one is renamed aside first;
    `recover_dir` puts it back if a crash falls between the two renames."""
    staged, target = Path(staged), Path(target)
    recover_dir(target)
    aside = _aside(target)
    if aside.exists():
        shutil.rmtree(aside)  # a finished swap's leftover (recover_dir ran before)
    if target.exists():
        os.rename(target, aside)
    os.rename(staged, target)
    fsync_dir(target.parent)
    shutil.rmtree(aside, ignore_errors=True)


def recover_dir(path: str | os.PathLike) -> None:
    """Writers only: put back a directory left renamed aside by an interrupted swap_dir."""
    path = Path(path)
    aside = _aside(path)
    if not path.exists() and aside.is_dir():
        log.warning("restoring %s from %s (a save was interrupted)", path, aside)
        os.rename(aside, path)


def readable_dir(path: str | os.PathLike) -> Path:
    """Readers never rename (a live swap may be between its two renames): when `path` is
    missing, they read the renamed-aside previous directory in place."""
    path = Path(path)
    aside = _aside(path)
    if not path.exists() and aside.is_dir():
        log.warning("%s is missing; reading %s (a save is running or was interrupted)",
                    path, aside)
        return aside
    return path


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()
