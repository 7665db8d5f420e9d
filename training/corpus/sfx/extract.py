"""Fetch the corpus's Debian packages and extract them into ROOT/<package>/<deb paths>,
with each container file unpacked beside itself into `<container path>.d/`.

Nothing is installed on the system: `apt-get download` fetches the .debs into a cache
folder and `dpkg-deb -x` extracts them. A package is extracted into a temporary folder
that is renamed into place at the end, with a stamp naming its deb versions, so an
interrupted run leaves no half tree and a second run with the same debs does nothing.
The unpacked container file itself is removed: 0ad's public.zip is 3 GB, of which the
corpus needs the 280 MB under audio/."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tempfile
import zipfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import unquote

from atri.training.corpus.sfx.opensfx import unpack_cat
from atri.training.corpus.sfx.packages import Container, Package, get_package, is_audio
from atri.training.corpus.sfx.rcc import iter_rcc
from atri.training.fileio import atomic_write_bytes, atomic_write_text, swap_dir

log = logging.getLogger(__name__)

STAMP = ".atri-extracted.json"
# Bump when what extraction produces changes, so old trees are re-extracted.
EXTRACT_FORMAT = 1
C4GROUP = "usr/bin/c4group"  # inside the `openclonk` deb


class ExtractError(RuntimeError):
    """Fetching or unpacking failed; the message names the package or file."""


def default_cache_dir(environ: Mapping[str, str]) -> Path:
    """$XDG_CACHE_HOME/atri/debs, else ~/.cache/atri/debs (the CLI passes os.environ)."""
    base = environ.get("XDG_CACHE_HOME") or str(
        Path(environ.get("HOME", "~")).expanduser() / ".cache"
    )
    return Path(base) / "atri" / "debs"


def deb_version(deb: Path) -> str:
    """The version in a .deb's file name (apt-get download names them name_version_arch)."""
    parts = deb.name[: -len(".deb")].split("_")
    if len(parts) != 3:
        raise ExtractError(f"{deb}: not a name_version_arch.deb file name")
    return unquote(parts[1])


def cached_deb(name: str, cache: Path) -> Path | None:
    """The newest-downloaded .deb of package `name` in `cache`, if any."""
    found = [p for p in cache.glob(f"{name}_*.deb") if p.name.split("_")[0] == name]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def fetch_deb(name: str, cache: Path) -> Path:
    """The .deb of `name`, downloaded with `apt-get download` unless already cached."""
    cache.mkdir(parents=True, exist_ok=True)
    if (deb := cached_deb(name, cache)) is not None:
        return deb
    apt = shutil.which("apt-get")
    if apt is None:
        raise ExtractError(
            f"package {name}: not in {cache} and apt-get is not available to download it "
            f"(download {name}'s .deb into {cache}, or pass --root with an extracted tree)"
        )
    log.info("downloading %s into %s", name, cache)
    done = subprocess.run([apt, "download", name], cwd=cache, capture_output=True, text=True)
    deb = cached_deb(name, cache)
    if done.returncode != 0 or deb is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise ExtractError(
            f"package {name}: apt-get download failed (exit {done.returncode}): {' '.join(tail)}"
        )
    return deb


def _dpkg_x(deb: Path, dest: Path) -> None:
    dpkg = shutil.which("dpkg-deb")
    if dpkg is None:
        raise ExtractError(f"{deb}: dpkg-deb is not available to extract it")
    done = subprocess.run([dpkg, "-x", str(deb), str(dest)], capture_output=True, text=True)
    if done.returncode != 0:
        raise ExtractError(f"{deb}: dpkg-deb -x failed: {done.stderr.strip()}")


def unpack_zip(path: Path, out: Path, members: str = "") -> int:
    """Extract the audio members of zip `path` whose name starts with `members`."""
    n = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            name = info.filename
            if info.is_dir() or not name.startswith(members) or not is_audio(name):
                continue
            target = _inside(out, name, path)
            atomic_write_bytes(target, archive.read(info))
            n += 1
    return n


def unpack_rcc(path: Path, out: Path) -> int:
    """Write the audio files of a Qt resource file under `out`."""
    n = 0
    for name, content in iter_rcc(path):
        if is_audio(name):
            atomic_write_bytes(_inside(out, name, path), content)
            n += 1
    return n


def unpack_c4group(path: Path, out: Path, c4group: Path) -> int:
    """Explode an OpenClonk group (and the groups nested in it: `-x` recurses) with the
    c4group binary, into `out`."""
    work = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}."))
    try:
        copy = work / path.name
        shutil.copyfile(path, copy)
        try:
            done = subprocess.run([str(c4group), str(copy), "-x"], capture_output=True, text=True)
        except OSError as err:
            raise ExtractError(f"{path}: cannot run {c4group}: {err}") from None
        if done.returncode != 0 or not copy.is_dir():
            said = (done.stderr or done.stdout).strip()[-300:]
            raise ExtractError(f"{path}: {c4group} -x failed (exit {done.returncode}): {said}")
        copy.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return sum(1 for p in out.rglob("*") if p.is_file() and is_audio(p.name))


def _inside(out: Path, name: str, source: Path) -> Path:
    """out/name, refusing names that climb out of `out` (a hostile archive)."""
    target = (out / name).resolve()
    if not target.is_relative_to(out.resolve()):
        raise ExtractError(f"{source}: member {name!r} points outside the archive's folder")
    return target


def _unpack(container: Container, path: Path, tools: Path | None) -> int:
    out = path.with_name(path.name + ".d")
    if container.kind == "zip":
        return unpack_zip(path, out, container.members)
    if container.kind == "rcc":
        return unpack_rcc(path, out)
    if container.kind == "opensfx-cat":
        return unpack_cat(path, out)
    if container.kind == "c4group":
        if tools is None:
            raise ExtractError(f"{path}: no c4group tool extracted (the `openclonk` deb)")
        return unpack_c4group(path, out, tools / C4GROUP)
    raise ExtractError(f"{path}: unknown container kind {container.kind!r}")


def unpack_containers(package: Package, tree: Path, tools: Path | None = None) -> dict[str, int]:
    """Unpack every container of `package` found in `tree` (= ROOT/<package>); return
    audio files written per container (relative path)."""
    counts: dict[str, int] = {}
    for container in package.containers:
        for path in sorted(tree.glob(container.pattern)):
            if not path.is_file():
                continue  # e.g. openclonk's Music.ocg ships as a plain folder
            rel = path.relative_to(tree).as_posix()
            counts[rel] = _unpack(container, path, tools)
            path.unlink()
            log.info("%s: %s -> %d audio files", package.name, rel, counts[rel])
    return counts


def _read_stamp(tree: Path) -> dict | None:
    try:
        return json.loads((tree / STAMP).read_text())
    except (OSError, ValueError):
        return None


def extract_package(package: Package | str, root: Path, cache: Path) -> Path:
    """ROOT/<package>, extracted from its deb (fetched if needed) with containers
    unpacked; does nothing when the stamp there names the same deb versions."""
    package = get_package(package) if isinstance(package, str) else package
    debs = {name: fetch_deb(name, cache) for name in package.debs}
    stamp = {"format": EXTRACT_FORMAT, "debs": {n: deb_version(d) for n, d in debs.items()}}
    final = root / package.name
    if _read_stamp(final) == stamp:
        return final
    root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=root, prefix=f".{package.name}.tmp-"))
    try:
        tree, tools = work / "tree", work / "tools"
        _dpkg_x(debs[package.name], tree)
        for name in package.tools:
            _dpkg_x(debs[name], tools)
        unpack_containers(package, tree, tools if package.tools else None)
        atomic_write_text(tree / STAMP, json.dumps(stamp, indent=1) + "\n")
        swap_dir(tree, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def extract_all(names: Iterable[str], root: Path, cache: Path) -> dict[str, Path]:
    """extract_package for each name, in order; the first failure raises."""
    return {name: extract_package(name, root, cache) for name in names}
