"""Atomic writes: a crash (SIGKILL) between the write and the rename leaves the old file
whole; an error leaves it too and cleans up; a directory swap interrupted between its two
renames is recovered."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from atri.training.fileio import (
    atomic_write,
    atomic_write_text,
    readable_dir,
    recover_dir,
    swap_dir,
    umask,
)

CRASH = """
import os, signal, sys
from atri.training.fileio import atomic_write

def write(f):
    f.write(b"new content, all of it written")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # after the write, before the rename

atomic_write(sys.argv[1], write)
"""


def test_a_crash_between_write_and_rename_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write_text(target, "old")
    done = subprocess.run([sys.executable, "-c", CRASH, str(target)], check=False)
    assert done.returncode == -signal.SIGKILL
    assert target.read_text() == "old"
    leftovers = [p.name for p in tmp_path.iterdir() if p != target]
    assert leftovers and all(n.startswith(".state.json.") and n.endswith(".tmp")
                             for n in leftovers)  # the new bytes never took the name
    atomic_write_text(target, "next")  # and the next write is not hindered by them
    assert target.read_text() == "next"


def test_an_error_mid_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "a.bin"
    atomic_write(target, lambda f: f.write(b"old"))

    def fail(f):
        f.write(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["a.bin"]


def test_swap_dir_replaces_and_recovers_an_interrupted_swap(tmp_path: Path) -> None:
    target, staged = tmp_path / "best", tmp_path / ".best.tmp"
    for folder, text in ((target, "old"), (staged, "new")):
        folder.mkdir()
        (folder / "w").write_text(text)
    swap_dir(staged, target)
    assert (target / "w").read_text() == "new" and not staged.exists()
    assert sorted(os.listdir(tmp_path)) == ["best"]
    # a crash between the two renames: the old one aside, the target missing
    os.rename(target, tmp_path / ".best.previous")
    assert (readable_dir(target) / "w").read_text() == "new"  # readers read it in place
    assert not target.exists()
    recover_dir(target)  # the next writer puts it back
    assert (target / "w").read_text() == "new"


@pytest.fixture
def set_umask():
    """Set the process umask for one test, and put the old one back."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"),
                         [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700), (0o002, 0o664, 0o775)],
                         ids=["umask-022", "umask-077", "umask-002"])
def test_written_files_and_index_versions_get_the_umask_mode(tmp_path, set_umask, model, mask,
                                                             file_mode, dir_mode):
    """tempfile makes files 0600 and folders 0700; what atri writes (manifests, metrics,
    checkpoints, index versions) must be as readable as anything else its user writes,
    e.g. by a service running as another user."""
    from atri.index.layout import staging_dir
    from atri.training.encoders.checkpoint import save_checkpoint

    set_umask(mask)
    assert umask() == mask
    atomic_write_text(tmp_path / "metrics.json", "{}")
    assert (tmp_path / "metrics.json").stat().st_mode & 0o777 == file_mode
    assert staging_dir(tmp_path / "index").stat().st_mode & 0o777 == dir_mode
    out = save_checkpoint(model, tmp_path / "ckpt", training_config={}, step=0, epoch=0,
                          metrics={})
    modes = {p.name: p.stat().st_mode & 0o777 for p in out.iterdir()}
    assert modes and set(modes.values()) == {file_mode}, modes
