"""Fetching and extracting the real-recordings corpus's packages, on fixture debs and
containers the tests write (nothing is downloaded)."""

from __future__ import annotations

import io
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from atri.training.corpus.sfx import extract
from atri.training.corpus.sfx.extract import (
    STAMP,
    ExtractError,
    deb_version,
    default_cache_dir,
    extract_package,
    fetch_deb,
    unpack_c4group,
    unpack_containers,
)
from atri.training.corpus.sfx.opensfx import CatError, iter_cat, slug, write_cat
from atri.training.corpus.sfx.packages import PACKAGES, Container, Package
from atri.training.corpus.sfx.rcc import COMPRESSED, RccError, iter_rcc, write_rcc


def sine_wav(freq: float = 440.0, seconds: float = 0.1, fmt: str = "WAV") -> bytes:
    t = np.arange(int(16000 * seconds)) / 16000
    buf = io.BytesIO()
    sf.write(buf, 0.3 * np.sin(2 * np.pi * freq * t), 16000, format=fmt)
    return buf.getvalue()


def test_registry_cites_every_package_licence() -> None:
    wanted = {
        "0ad-data",
        "openclonk-data",
        "ufoai-sound",
        "wesnoth-1.16-data",
        "scorched3d-data",
        "widelands-data",
        "minetest-data",
        "gcompris-qt-data",
        "openttd-opensfx",
        "lugaru-data",
        "warmux-data",
        "teeworlds-data",
        "lmms-common",
        "hydrogen-drumkits",
        "scratch",
        "qabcs-data",
        "ardentryst",
        # builder version 5
        "megaglest-data",
        "redeclipse-data",
        "supertuxkart-data",
        "torcs-data",
        "lincity-ng-data",
        "openarena-data",
        "hedgewars-data",
        "flightgear-data-base",
        "flare-game",
        "freedroidrpg-data",
        "warzone2100-data",
    }
    assert set(PACKAGES) == wanted
    for package in PACKAGES.values():
        assert package.licence and package.holders and package.name in package.attribution
    assert PACKAGES["openclonk-data"].debs == ("openclonk-data", "openclonk")
    kit = "usr/share/hydrogen/data/drumkits/Audiophob/kick.flac"
    assert PACKAGES["hydrogen-drumkits"].licence_for(kit).spdx == "CC0-1.0"
    assert PACKAGES["0ad-data"].licence_for("x/y.ogg").spdx == "CC-BY-SA-3.0"
    # scratch: the program is GPL-2, its Media/ (every sound) CC-BY-SA-3.0
    dog = "usr/share/scratch/Media/Sounds/Animal/Dog1.wav"
    assert PACKAGES["scratch"].licence_for(dog).spdx == "CC-BY-SA-3.0"
    sounds = "usr/share/games/ardentryst/Sounds/"
    hero, drink = sounds + "NYX/NYX_PAIN1.ogg", sounds + "drink.ogg"
    assert "Jordan Trudgett" in PACKAGES["ardentryst"].licence_for(hero).holders
    assert "freesound.org" in PACKAGES["ardentryst"].licence_for(drink).holders.lower()


def test_default_cache_dir() -> None:
    assert default_cache_dir({"XDG_CACHE_HOME": "/c"}) == Path("/c/atri/debs")
    assert default_cache_dir({"HOME": "/h"}) == Path("/h/.cache/atri/debs")


def test_deb_version_reads_the_file_name() -> None:
    assert deb_version(Path("wesnoth-1.16-data_1%3a1.16.9-1_all.deb")) == "1:1.16.9-1"
    with pytest.raises(ExtractError, match="name_version_arch"):
        deb_version(Path("odd.deb"))


def test_fetch_without_apt_names_the_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(extract.shutil, "which", lambda name: None)
    with pytest.raises(ExtractError, match="package lugaru-data: .*apt-get is not available"):
        fetch_deb("lugaru-data", tmp_path)


def test_fetch_failure_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "apt-get"
    fake.write_text("#!/bin/sh\necho 'E: Unable to locate package' >&2\nexit 100\n")
    fake.chmod(0o755)
    monkeypatch.setattr(extract.shutil, "which", lambda name: str(fake))
    with pytest.raises(
        ExtractError, match="package no-such-pkg: apt-get download failed .*Unable to locate"
    ):
        fetch_deb("no-such-pkg", tmp_path / "cache")


def test_fetch_uses_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    deb = tmp_path / "lugaru-data_1.2-6_all.deb"
    deb.write_bytes(b"x")
    (tmp_path / "lugaru-data-extra_1_all.deb").write_bytes(b"x")  # another package's name prefix
    monkeypatch.setattr(extract.shutil, "which", lambda name: None)
    assert fetch_deb("lugaru-data", tmp_path) == deb


def _zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("audio/attack/impact/arrow_wood_01.ogg", sine_wav(fmt="OGG"))
        archive.writestr("audio/ambient/rain.wav", sine_wav())
        archive.writestr("audio/groups/rain.xml", "<SoundGroup/>")
        archive.writestr("art/textures/skin.wav", sine_wav())  # outside audio/: left out


def _tree(tree: Path) -> None:
    games = tree / "usr/share/games"
    games.mkdir(parents=True)
    _zip(games / "public.zip")
    write_rcc(
        games / "farm.rcc",
        {
            "gcompris/animals/cow.wav": sine_wav(200),
            "gcompris/animals/logo.svg": b"<svg/>",
            "gcompris/rain.ogg": sine_wav(300, fmt="OGG"),
        },
    )
    write_cat(
        games / "sfx.cat",
        [
            ('"Ship horn". By A. License: CC0.', sine_wav(100)),
            ('"Lumber mill: Chainsaw". By B.', sine_wav(500)),
        ],
    )


FIXTURE = Package(
    "fixture-data",
    "CC0-1.0",
    "nobody",
    "Sounds from a fixture; Debian package fixture-data.",
    containers=(
        Container("zip", "usr/share/games/*.zip", "audio/"),
        Container("rcc", "usr/share/games/*.rcc"),
        Container("opensfx-cat", "usr/share/games/*.cat"),
    ),
)


def test_unpack_containers_beside_themselves(tmp_path: Path) -> None:
    _tree(tmp_path)
    counts = unpack_containers(FIXTURE, tmp_path)
    games = tmp_path / "usr/share/games"
    assert counts == {
        "usr/share/games/public.zip": 2,
        "usr/share/games/farm.rcc": 2,
        "usr/share/games/sfx.cat": 2,
    }
    assert (games / "public.zip.d/audio/attack/impact/arrow_wood_01.ogg").is_file()
    assert (
        not (games / "public.zip.d/art").exists()
        and not (games / "public.zip.d/audio/groups").exists()
    )
    assert not (games / "farm.rcc.d/gcompris/animals/logo.svg").exists()
    cow, rate = sf.read(games / "farm.rcc.d/gcompris/animals/cow.wav")
    assert rate == 16000 and len(cow) == 1600
    assert sorted(p.name for p in (games / "sfx.cat.d").glob("*.wav")) == [
        "00_ship_horn.wav",
        "01_lumber_mill_chainsaw.wav",
    ]
    assert "Lumber mill: Chainsaw" in (games / "sfx.cat.d/titles.tsv").read_text()
    assert not (games / "public.zip").exists()  # the unpacked container is removed


def test_rcc_round_trip_compressed_and_plain(tmp_path: Path) -> None:
    files = {"a/b/c.wav": sine_wav(), "top.txt": b"hello"}
    for compress in (True, False):
        write_rcc(tmp_path / "x.rcc", files, compress=compress)
        assert dict(iter_rcc(tmp_path / "x.rcc")) == files
    blob = (tmp_path / "x.rcc").read_bytes()
    (tmp_path / "bad.rcc").write_bytes(b"qrez" + blob[4:])
    with pytest.raises(RccError, match="bad.rcc: not a Qt resource file"):
        list(iter_rcc(tmp_path / "bad.rcc"))


def test_rcc_corrupt_entry_names_file_and_entry(tmp_path: Path) -> None:
    write_rcc(tmp_path / "x.rcc", {"snd/cow.wav": sine_wav()})
    blob = bytearray((tmp_path / "x.rcc").read_bytes())
    data = struct.unpack_from(">I", blob, 12)[0]
    blob[data + 10 : data + 20] = b"\0" * 10  # inside the zlib stream
    (tmp_path / "x.rcc").write_bytes(bytes(blob))
    with pytest.raises(RccError, match=r"x.rcc: entry snd/cow.wav: bad zlib data"):
        list(iter_rcc(tmp_path / "x.rcc"))
    assert COMPRESSED == 1


def test_cat_titles_and_errors(tmp_path: Path) -> None:
    write_cat(tmp_path / "a.cat", [('"Toyland: Bubble plop". By C.', sine_wav())])
    (sound,) = iter_cat(tmp_path / "a.cat")
    assert (sound.index, sound.title, sound.filename) == (
        0,
        "Toyland: Bubble plop",
        "00_toyland_bubble_plop.wav",
    )
    assert slug("Splat (rail builds)") == "splat_rail_builds"
    blob = (tmp_path / "a.cat").read_bytes()
    (tmp_path / "cut.cat").write_bytes(blob[:-100])
    with pytest.raises(CatError, match="cut.cat: entry 0 .*not a complete RIFF"):
        list(iter_cat(tmp_path / "cut.cat"))


def test_c4group_that_cannot_run_is_named(tmp_path: Path) -> None:
    group = tmp_path / "Sound.ocg"
    group.write_bytes(b"not a group")
    tool = tmp_path / "c4group"
    tool.write_bytes(b"\x7fELF garbage")  # not executable
    with pytest.raises(ExtractError, match=r"Sound.ocg: cannot run .*c4group"):
        unpack_c4group(group, tmp_path / "Sound.ocg.d", tool)
    assert not (tmp_path / "Sound.ocg.d").exists()


def _deb(tmp_path: Path, name: str, version: str) -> Path:
    src = tmp_path / "debsrc"
    shutil.rmtree(src, ignore_errors=True)
    _tree(src)
    (src / "DEBIAN").mkdir()
    (src / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
        "Maintainer: t <t@t>\nDescription: t\n"
    )
    cache = tmp_path / "debs"
    cache.mkdir(exist_ok=True)
    deb = cache / f"{name}_{version}_all.deb"
    subprocess.run(
        ["dpkg-deb", "-Zgzip", "-b", str(src), str(deb)], check=True, capture_output=True
    )
    return cache


@pytest.fixture
def extracted(tmp_path: Path) -> tuple[Path, Path, Path]:
    """FIXTURE 1.0-1 built as a .deb and extracted: (the deb cache, the root, its tree)."""
    if shutil.which("dpkg-deb") is None:
        pytest.skip("needs dpkg-deb")
    cache, root = _deb(tmp_path, "fixture-data", "1.0-1"), tmp_path / "root"
    return cache, root, extract_package(FIXTURE, root, cache)


def test_extract_package_is_atomic_and_idempotent(
    extracted: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, root, tree = extracted
    assert tree == root / "fixture-data"
    assert (tree / "usr/share/games/farm.rcc.d/gcompris/rain.ogg").is_file()
    assert '"fixture-data": "1.0-1"' in (tree / STAMP).read_text()
    assert [p.name for p in root.iterdir()] == ["fixture-data"]  # no temporary folder left

    def refuse(*args: object) -> None:
        raise AssertionError("extracted again although the stamp matches")

    monkeypatch.setattr(extract, "_dpkg_x", refuse)
    assert extract_package(FIXTURE, root, cache) == tree


def test_failed_extraction_keeps_the_old_tree(
    extracted: tuple[Path, Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, root, tree = extracted
    (cache / "fixture-data_1.0-1_all.deb").unlink()
    _deb(tmp_path, "fixture-data", "2.0-1")
    monkeypatch.setattr(
        extract,
        "unpack_rcc",
        lambda path, out: (_ for _ in ()).throw(ExtractError(f"{path}: boom")),
    )
    with pytest.raises(ExtractError, match="farm.rcc: boom"):
        extract_package(FIXTURE, root, cache)
    assert '"1.0-1"' in (tree / STAMP).read_text()
    assert [p.name for p in root.iterdir()] == ["fixture-data"]
