"""The index directory on disk and its crash-safe primitives (docs/index.md):

    INDEX_DIR/
      CURRENT              the served version number, switched atomically
      versions/<n>/        immutable, complete versions (version.py writes them)
      live.log             changes since the current version (live.py)
      .lock                flock'd by whoever changes CURRENT or live.log
      .work/               resumable build shards

A version is written under `versions/.tmp-*`, fsync'd, renamed to `versions/<n>` and
only then named in CURRENT (temp file + os.replace + directory fsync), so a crash at
any point leaves the previous version served.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from atri.index.errors import IndexBusy, IndexCorrupt, IndexNotFound
from atri.training.fileio import atomic_write_bytes, fsync_dir, fsync_tree, plain_mode

log = logging.getLogger(__name__)

CURRENT = "CURRENT"
VERSIONS = "versions"
LIVE_LOG = "live.log"
LOCK = ".lock"
WORK = ".work"
KEEP_VERSIONS = 2  # the current one and its predecessor (a reader may still map it)
# The steps of publishing a version, in order; `publish` and its callers report each to
# an `on_step` callback (tests stop and kill -9 the process there: the crash window).
PUBLISH_STEPS = ("version-written", "version-renamed", "current-switched", "log-replaced")
StepHook = Callable[[str], None]
LOCK_POLL_S = 0.05


def current_version(root: Path) -> int | None:
    """The version CURRENT names, None when nothing was published yet."""
    try:
        text = (root / CURRENT).read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    if not text.isdigit():
        raise IndexCorrupt(f"{root / CURRENT}: expected a version number, got {text[:40]!r}")
    return int(text)


def require_current(root: Path) -> int:
    version = current_version(root)
    if version is None:
        raise IndexNotFound(f"{root}: no index here (no {CURRENT} file); run `atri index build`")
    if not version_dir(root, version).is_dir():
        raise IndexCorrupt(f"{root / CURRENT} names version {version}, which does not exist")
    return version


def version_dir(root: Path, version: int) -> Path:
    return root / VERSIONS / str(version)


def published_versions(root: Path) -> list[int]:
    folder = root / VERSIONS
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit() and p.is_dir())


def staging_dir(root: Path) -> Path:
    """A fresh folder to write a version into before `publish`; its name carries the
    writer's pid, so that a later publish removes it only once that process is gone."""
    (root / VERSIONS).mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(dir=root / VERSIONS, prefix=f".tmp-{os.getpid()}-"))
    plain_mode(staged)  # published as the version folder: not 0700
    return staged


def _writer_alive(staged: Path) -> bool:
    pid = staged.name.split("-")[1] if staged.name.count("-") >= 2 else ""
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def locked(root: Path, timeout_s: float | None = None) -> Iterator[None]:
    """Exclusive flock on INDEX_DIR/.lock: one writer of CURRENT and live.log at a time,
    across processes. The kernel drops it when the holder dies, even by kill -9. With
    `timeout_s`, IndexBusy when another process holds it that long (a rebuild or a
    compaction writing its version), instead of waiting without end."""
    root.mkdir(parents=True, exist_ok=True)
    fd = os.open(root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        _flock(fd, root, timeout_s)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _flock(fd: int, root: Path, timeout_s: float | None) -> None:
    if timeout_s is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise IndexBusy(
                    f"{root.name}: another process (a rebuild or a compaction) has held the "
                    f"index lock for over {timeout_s:g} s while publishing a new version"
                ) from None
            time.sleep(LOCK_POLL_S)


def publish(root: Path, staged: Path, *, on_step: StepHook | None = None) -> int:
    """Rename a complete staged version to `versions/<n>` and make it current.

    Call while holding `locked(root)`. `on_step` (tests) is called after each of the
    first three PUBLISH_STEPS; the caller replaces the log and reports the fourth.
    """
    step = on_step or (lambda name: None)
    fsync_tree(staged)
    step("version-written")
    current = current_version(root) or 0
    _remove_unpublished(root, current)
    version = max([*published_versions(root), current]) + 1
    target = version_dir(root, version)
    os.rename(staged, target)
    fsync_dir(root / VERSIONS)
    step("version-renamed")
    atomic_write_bytes(root / CURRENT, f"{version}\n".encode("ascii"))
    step("current-switched")
    log.info("published %s as current version", target)
    prune(root)
    return version


def _remove_unpublished(root: Path, current: int) -> None:
    """Versions newer than CURRENT (a publisher crashed before its switch; no reader
    ever opened them) and staging folders of writers that are gone."""
    for v in published_versions(root):
        if v > current:
            log.warning("removing %s: never made current", version_dir(root, v))
            shutil.rmtree(version_dir(root, v))
    for path in (root / VERSIONS).iterdir():
        if path.name.startswith(".tmp-") and not _writer_alive(path):
            shutil.rmtree(path, ignore_errors=True)


def prune(root: Path, keep: int = KEEP_VERSIONS) -> None:
    """Remove versions older than the last `keep` (the current one included)."""
    current = current_version(root)
    if current is None:
        return
    old = [v for v in published_versions(root) if v < current]
    for v in old[: max(len(old) - (keep - 1), 0)]:
        shutil.rmtree(version_dir(root, v), ignore_errors=True)
