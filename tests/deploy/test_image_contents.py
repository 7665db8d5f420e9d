"""What the image installs: .dockerignore keeps every source file the Dockerfile copies
and drops local state, and the wheel built from those sources ships every one of them
(modules, the web page, the corpus lexicon, the default checkpoint)."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOCKERIGNORE = REPO / ".dockerignore"
# installed package -> source folder (pyproject's package-dir)
PACKAGE_DIRS = {
    "atri": "src/atri",
    "atri/training": "training",
    "atri/index": "index",
    "atri/service": "service",
}


def _dockerignore_regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def dockerignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a match on a parent folder counts."""
    lines = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()]
    excluded = False
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    for line in lines:
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        regex = _dockerignore_regex(line.lstrip("!").strip("/"))
        if any(regex.fullmatch(p) for p in prefixes):
            excluded = not negate
    return excluded


def copied_sources(dockerfile) -> list[str]:
    source = next(s for s in dockerfile.stages if s.name == "source")
    return [w.rstrip("/") for i in source.instructions if i.keyword == "COPY"
            for w in i.args.split()[:-1]]  # fmt: skip


def source_files(dockerfile) -> list[Path]:
    files = []
    for src in copied_sources(dockerfile):
        path = REPO / src
        candidates = [path] if path.is_file() else sorted(path.rglob("*"))
        files += [p for p in candidates if p.is_file() and "__pycache__" not in p.parts
                  and not p.name.startswith(".")]  # fmt: skip
    return files


def test_dockerignore_keeps_sources_and_drops_local_state(dockerfile) -> None:
    for path in source_files(dockerfile):
        assert not dockerignored(path.relative_to(REPO).as_posix()), path
    for local in (".venv/bin/python", "data/corpus-small/test.jsonl", ".git/HEAD",
                  "training/__pycache__/model.cpython-311.pyc", "bench/results/index.json",
                  "atri.egg-info/PKG-INFO", ".env"):  # fmt: skip
        assert dockerignored(local), f"{local} would be sent to the daemon"


def test_wheel_ships_every_source_file(dockerfile, tmp_path: Path) -> None:
    """The image runs `pip install /src`: every module, the web page, the corpus lexicon
    and the default checkpoint (package data) must land in the wheel."""
    tree = tmp_path / "src"
    for src in copied_sources(dockerfile):
        path = REPO / src
        if path.is_file():
            tree.mkdir(exist_ok=True)
            shutil.copy2(path, tree / src)
        else:
            shutil.copytree(path, tree / src, ignore=shutil.ignore_patterns("__pycache__"))
    # Offline with the environment's setuptools when it is new enough for pyproject.toml
    # (torch depends on it); else pip fetches the build requirements.
    setuptools_major = int(importlib.metadata.version("setuptools").split(".")[0])
    offline = ["--no-index", "--no-build-isolation"] if setuptools_major >= 69 else []
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", *offline,
         "--wheel-dir", str(tmp_path / "dist"), str(tree)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("atri-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for path in source_files(dockerfile):
        rel = path.relative_to(REPO).as_posix()
        for package, folder in PACKAGE_DIRS.items():
            if rel.startswith(folder + "/"):
                expected.add(package + rel[len(folder) :])
    missing = sorted(expected - shipped)
    assert not missing, f"not in the wheel (pyproject packages / package-data): {missing}"
