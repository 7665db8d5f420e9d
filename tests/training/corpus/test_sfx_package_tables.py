"""The committed tables of the packages added in builder version 5, on fixture trees laid out
like the real packages (a few files at their real paths, openarena's inside a real .pk3):
each file reaches the concept and attributes, or the exclusion reason, its table promises,
and the licence its package entry gives it. No package is downloaded."""

import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from atri.training.corpus.sfx import build
from atri.training.corpus.sfx.extract import unpack_containers
from atri.training.corpus.sfx.packages import PACKAGES
from atri.training.corpus.sfx.table import match_package

MG = "usr/share/games/megaglest/"
MGF = MG + "techs/megapack/factions/"
RE = "usr/share/games/redeclipse/data/"
STK = "usr/share/games/supertuxkart/data/"
TO = "usr/share/games/torcs/data/"
LC = "usr/share/games/lincity-ng/"
OA = "usr/share/games/openarena/baseoa/pak0.pk3.d/"
HW = "usr/share/games/hedgewars/Data/"
FG = "usr/share/games/flightgear/"
FL = "usr/share/games/flare/mods/"
FD = "usr/share/freedroidrpg/data/"
WZ = "usr/share/games/warzone2100/base.wz.d/"
# packages whose sounds the deb ships inside a zip: (the zip, the folder it unpacks to,
# a member outside the package's `members` prefix, which must stay packed)
ZIPPED = {
    "openarena-data": ("usr/share/games/openarena/baseoa/pak0.pk3", OA, "music/theme.ogg"),
    "warzone2100-data": ("usr/share/games/warzone2100/base.wz", WZ, "sequenceaudio/np1.ogg"),
}

# package -> {path: (concept, attrs) or ("-", exclusion reason)}
EXPECTED: dict[str, dict[str, tuple[str, str]]] = {
    "megaglest-data": {
        MGF + "persian/units/sheep/sounds/sheep3.wav": ("sheep_bleat", ""),
        MGF + "egypt/units/chicken/sounds/chicken_die2.wav": ("chicken_cluck", ""),
        MGF + "egypt/units/chicken/sounds/chicken_ack1.wav": ("-", "speech"),
        MGF + "norsemen/units/swordman/sounds/swordman_attack4.wav": ("sword_clash", ""),
        MGF + "norsemen/units/swordman/sounds/swordman_select2.wav": ("-", "speech"),
        MG + "techs/megapack/commondata/sounds/worker_harvest_wood2.wav": ("chopping_wood", ""),
        MG + "techs/megapack/commondata/sounds/catapult_walk1.wav": (
            "wheels_rolling", "material=wood"),
        MG + "techs/megapack/commondata/sounds/daemon_attack3.wav": ("-", "unclear"),
        MG + "tilesets/autumn/sounds/owl.ogg": ("owl_hoot", ""),
        MG + "tilesets/autumn/sounds/sunny_day.ogg": ("-", "unclear"),
        MG + "data/core/menu/sound/click_a.wav": ("-", "ui"),
    },
    "redeclipse-data": {
        RE + "sounds/ambience/creek.ogg": ("stream", ""),
        RE + "sounds/ambience/distant_cars.ogg": ("traffic", "distance=distant"),
        RE + "sounds/ambience/morph/stormbolts.ogg": ("thunder", ""),
        RE + "sounds/ambience/morph/machine3.ogg": ("-", "unclear"),
        RE + "sounds/player/concstep2.ogg": ("footsteps", "material=concrete"),
        RE + "sounds/voice/yes2.ogg": ("-", "speech"),
        RE + "sounds/weapons/shotgun/primary2.ogg": ("shotgun", ""),
        RE + "sounds/weapons/plasma/primary.ogg": ("-", "unclear"),
    },
    "supertuxkart-data": {
        STK + "sfx/thunder.ogg": ("thunder", ""),
        STK + "sfx/exotic-birds_2.ogg": ("birdsong", ""),
        STK + "sfx/plunger.ogg": ("-", "unclear"),
        STK + "tracks/black_forest/cow.ogg": ("cow_moo", ""),
        STK + "music/main_theme.ogg": ("-", "music"),
    },
    "torcs-data": {
        TO + "sound/ferrarif355.wav": ("car_engine", ""),
        TO + "sound/skid_metal.wav": ("metal_scrape", ""),
        TO + "sound/crash3.wav": ("car_crash", ""),
        TO + "sound/turbo1.wav": ("-", "unclear"),
        TO + "music/torcs1.ogg": ("-", "music"),
    },
    "lincity-ng-data": {
        LC + "sounds/TraficHigh2.wav": ("traffic", "intensity=loud"),
        LC + "sounds/RailTrain1.wav": ("train", ""),
        LC + "sounds/Farm2.wav": ("-", "unclear"),
        LC + "music/default/01 - pronobozo - lincity.ogg": ("-", "music"),
    },
    "openarena-data": {
        OA + "sound/player/footsteps/clank3.wav": ("footsteps", "material=metal"),
        OA + "sound/player/footsteps/splash1.wav": ("footsteps", "material=water"),
        OA + "sound/player/footsteps/energy2.wav": ("-", "unclear"),
        OA + "sound/world/fire1.wav": ("fire_crackling", ""),
    },
    "hedgewars-data": {
        HW + "Sounds/Kiss.ogg": ("kiss", ""),
        HW + "Sounds/Droplet2.ogg": ("water_drip", ""),
        HW + "Sounds/5G.ogg": ("-", "music"),
        HW + "Sounds/melonimpact.ogg": ("-", "unclear"),
        HW + "Sounds/voices/British/Ow1.ogg": ("-", "speech"),
    },
    "flightgear-data-base": {
        FG + "Sounds/thunder2.wav": ("thunder", ""),
        FG + "Sounds/mk-viii/pull-up.wav": ("-", "speech"),
        FG + "Aircraft/c172p/Sounds/tires-rolling-gravel.wav": (
            "wheels_rolling", "material=gravel"),
        FG + "Aircraft/c172p/Sounds/keys2.wav": ("keys_jingle", ""),
        FG + "Sounds/intro.mp3": ("-", "music"),
    },
    "flare-game": {
        FL + "fantasycore/soundfx/steps/step_leather3.ogg": ("footsteps", ""),
        FL + "fantasycore/soundfx/environment/raven_loop.ogg": ("crow_caw", ""),
        FL + "fantasycore/soundfx/npcs/male_merchant_02.ogg": ("-", "speech"),
    },
    "warzone2100-data": {
        WZ + "audio/sfx/weapons/mgbar2.ogg": ("machine_gun", ""),
        WZ + "audio/sfx/explons/lrgexpl.ogg": ("explosion", "size=large"),
        WZ + "audio/sfx/weapons/gaussgun.ogg": ("-", "unclear"),
        WZ + "audio/memressp/missmesg/mssn1.ogg": ("-", "speech"),
    },
    "freedroidrpg-data": {
        FD + "sound/effects/Glass_Break.ogg": ("glass_break", ""),
        FD + "sound/effects/bot_sounds/death_sound_123.ogg": ("-", "speech"),
        FD + "sound/effects/bullets/Phaser.ogg": ("-", "unclear"),
    },
}


def _write_audio(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    wave = (0.1 * np.sin(np.arange(2205) / 5.0)).astype(np.float32)
    if path.suffix == ".mp3":  # libsndfile may not write mp3; the table reads only the path
        path.write_bytes(b"ID3")
        return
    sf.write(path, wave, 22050, format="OGG" if path.suffix == ".ogg" else "WAV")


def _tree(root: Path, package: str) -> None:
    tree = root / package
    if package not in ZIPPED:
        for rel in EXPECTED[package]:
            _write_audio(tree / rel)
        return
    container, unpacked, outside = ZIPPED[package]  # unpacked beside itself by the builder
    (tree / container).parent.mkdir(parents=True)
    wav = tree / "tmp.wav"
    _write_audio(wav)
    with zipfile.ZipFile(tree / container, "w") as z:
        for rel in EXPECTED[package]:
            z.write(wav, rel.removeprefix(unpacked))
        z.write(wav, outside)
    wav.unlink()
    assert unpack_containers(PACKAGES[package], tree) == {container: len(EXPECTED[package])}


@pytest.mark.parametrize("package", sorted(EXPECTED))
def test_committed_table_maps_the_real_layout(package: str, tmp_path: Path) -> None:
    _tree(tmp_path, package)
    found = {}
    for source in match_package(package, tmp_path).sources:
        attrs = ";".join(f"{k}={v}" for k, v in source.attrs.items())
        said = (source.concept, attrs) if source.concept else ("-", source.excluded)
        found[source.relpath] = said
    assert found == EXPECTED[package]


def test_per_file_licences_and_builder_version() -> None:
    stk, rec = PACKAGES["supertuxkart-data"], PACKAGES["redeclipse-data"]
    assert stk.licence_for(STK + "sfx/thunder.ogg").spdx == "CC-BY-3.0"
    assert "Fritz" in stk.licence_for(STK + "sfx/airplane_jetEngine.ogg").holders
    assert stk.licence_for(STK + "sfx/plunger.ogg").spdx == "CC-BY-SA-3.0"
    # the more specific morph/* entry wins over ambience/*
    assert "Q009" in rec.licence_for(RE + "sounds/ambience/morph/rain.ogg").holders
    assert rec.licence_for(RE + "sounds/ambience/creek.ogg").holders.startswith("2005, Richard")
    assert rec.licence_for(RE + "sounds/player/pain2.ogg").spdx == "CC-BY-SA-3.0+"
    assert PACKAGES["hedgewars-data"].licence_for(HW + "Sounds/Droplet1.ogg").spdx == "CC-BY-SA-3.0"
    assert build.BUILDER_VERSION == 6
