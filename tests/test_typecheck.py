"""mypy over `atri.service` and `atri.index` (STYLE.md), with pyproject.toml's [tool.mypy].

mypy cannot follow setuptools' editable import hook, and the folders are not named after
their import names (`service/` is `atri.service`), so the test lays out the installed
package tree, as [tool.setuptools] package-dir maps it, as links, and checks it there.
Both the tree and mypy's cache live in pytest's cache folder, so a rerun takes seconds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKED = ("atri.service", "atri.index")


def package_dirs() -> dict[str, str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return config["tool"]["setuptools"]["package-dir"]


def link_tree(dest: Path) -> None:
    """`dest/atri/...` laid out as installed: each package a link to its folder (the top
    one a folder of links, since the others go inside it)."""
    shutil.rmtree(dest, ignore_errors=True)
    for name, folder in sorted(package_dirs().items(), key=lambda item: item[0].count(".")):
        source = ROOT / folder
        target = dest.joinpath(*name.split("."))
        if target.exists():  # inside a linked parent: must be that folder's own subfolder
            assert target.resolve() == source.resolve(), (name, folder)
        elif "." not in name:
            target.mkdir(parents=True)
            for entry in source.iterdir():
                (target / entry.name).symlink_to(entry)
        else:
            target.symlink_to(source, target_is_directory=True)


def test_mypy_passes_on_service_and_index(request, tmp_path) -> None:
    pytest.importorskip("mypy", reason="mypy is not installed (pip install -e '.[dev]')")
    cache = getattr(request.config, "cache", None)  # None under -p no:cacheprovider
    work = cache.mkdir("typecheck") if cache is not None else tmp_path
    tree = work / "tree"
    link_tree(tree)
    packages = [arg for name in CHECKED for arg in ("-p", name)]
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")]
        + ["--cache-dir", str(work / "cache"), *packages],
        cwd=ROOT,
        env={**os.environ, "MYPYPATH": str(tree)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    report = result.stdout + result.stderr
    # name the repository's files, the deepest packages first
    for name, folder in sorted(package_dirs().items(), key=lambda item: -item[0].count(".")):
        for base in (str(tree), os.path.relpath(tree, ROOT)):
            report = report.replace(f"{base}/{name.replace('.', '/')}/", f"{folder}/")
    assert result.returncode == 0, report
    assert "Success" in report, report
