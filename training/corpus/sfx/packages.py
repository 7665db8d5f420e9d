"""The Debian packages the real-recordings corpus is built from: one frozen entry per
package, keyed by its Debian name. Licences and holders are cited from each package's
usr/share/doc/<package>/copyright (Debian 12); where that file gives some sounds another
licence than the package's default, `licences` lists them by path (first match wins).

Never add the packages reserved for evaluation (../shared/spec/corpus.md): sonic-pi-samples,
sound-theme-freedesktop, lomiri-sounds, tuxpaint*, desktop UI sound themes."""

from __future__ import annotations

from dataclasses import dataclass, field
from fnmatch import fnmatchcase

# How a container file is unpacked (extract.py has one function per kind).
CONTAINER_KINDS = ("zip", "c4group", "rcc", "opensfx-cat")

# What counts as a clip: every such file under ROOT/<package> must match a table row.
# .wv (WavPack, teeworlds) is kept as is; ffmpeg decodes it.
AUDIO_EXTENSIONS = (".ogg", ".wav", ".flac", ".mp3", ".wv", ".opus")


def is_audio(name: str) -> bool:
    return name.lower().endswith(AUDIO_EXTENSIONS)


@dataclass(frozen=True)
class Container:
    """Files matching `pattern` (a glob over deb paths) are unpacked into `<path>.d/`.
    `members` restricts a zip to members under that prefix (0ad's public.zip holds 3 GB
    of which only audio/ is wanted)."""

    kind: str
    pattern: str
    members: str = ""


@dataclass(frozen=True)
class Licence:
    """The licence of the files matching `pattern` (glob over the path relative to the
    package's extracted root), with their holders as the copyright file names them."""

    pattern: str
    spdx: str
    holders: str


@dataclass(frozen=True)
class Package:
    name: str
    licence: str  # SPDX-ish id of the package's sounds by default
    holders: str  # copyright holders, as the copyright file names them
    attribution: str  # the line a corpus user must reproduce
    tools: tuple[str, ...] = ()  # debs needed only to unpack (never part of the corpus)
    containers: tuple[Container, ...] = ()
    licences: tuple[Licence, ...] = field(default=())

    @property
    def debs(self) -> tuple[str, ...]:
        return (self.name, *self.tools)

    def licence_for(self, relpath: str) -> Licence:
        """The licence of one file (posix path relative to ROOT/<package>)."""
        for entry in self.licences:
            if fnmatchcase(relpath, entry.pattern):
                return entry
        return Licence("*", self.licence, self.holders)


def _attr(game: str, holders: str, licence: str, name: str) -> str:
    return f"Sounds from {game}, (c) {holders}, {licence}; Debian package {name}."


_HYDROGEN_KITS = "usr/share/hydrogen/data/drumkits/"
_GLEN = "Glen MacArthur"

# gcompris-qt-data's copyright file gives these sounds their own licence (source paths
# src/...; inside the unpacked .rcc files they sit under gcompris/src/...).
_GCOMPRIS_FILES = (
    ("core/resource/sounds/win.wav", "CC-BY-3.0", "2014 Gabriel Araujo"),
    (
        "core/resource/intro.ogg",
        "GPL-3+",
        "Ludovic Grossard, 2005 - based on a theme by Djilali Sebihi",
    ),
    (
        "activities/align4-2players/resource/slide.wav",
        "CC0-1.0 AND CC-BY-3.0",
        "jberkuta14, kwahmah_02",
    ),
    ("activities/canal_lock/resource/water_fill.wav", "CC-BY-3.0", "inchadney"),
    ("activities/canal_lock/resource/door_*.wav", "CC0-1.0", "lolamadeus"),
    ("activities/canal_lock/resource/lock.wav", "CC-BY-3.0", "MAJ061785"),
    ("activities/guessnumber/resource/helicopter.wav", "CC-BY-3.0", "fridobeck"),
    ("activities/instruments/resource/drum_kit.ogg", "CC-sampling-plus-1.0", "ocea"),
    ("activities/instruments/resource/*.ogg", "GPL-3+", "Sylvain Dechy"),
    ("activities/memory/resource/card_flip.wav", "CC-BY-3.0", "f4ngy"),
    ("activities/memory-sound/resource/*_LA.ogg", "LAL-1.2", "Lionel Allorge"),
    ("activities/memory-sound/resource/*_LA_cut.ogg", "LAL-1.2", "Lionel Allorge"),
    ("activities/money/resource/money2.wav", "CC0-1.0", "keweldog"),
    ("activities/money/resource/money1.wav", "CC0-1.0", "florian_reinke"),
    ("activities/redraw/resource/eraser.wav", "CC0-1.0", "esperri"),
    ("activities/redraw/resource/brush.wav", "CC0-1.0", "acrober"),
    ("activities/reversecount/resource/icy_walk.wav", "CC-BY-3.0", "tim.kahn"),
    ("activities/scalesboard/resource/metal_hit.wav", "CC-BY-3.0", "jorickhoofd"),
    ("activities/target/resource/arrow.wav", "CC-BY-3.0 AND CC0-1.0", "gezortenplotz"),
    ("activities/traffic/resource/car.wav", "CC-BY-3.0", "henrique85n"),
    *(
        (f"activities/{a}/resource/*", "CC-BY-SA-4.0", "2015-2017 Timothée Giet")
        for a in ("mining", "nine_men_morris", "tic_tac_toe")
    ),
    *(
        (f"activities/{a}/resource/*", "GPL-3", "2000, 2008 Bruno Coudoin and others")
        for a in ("chronos", "explore_farm_animals", "gnumch-equality", "melody", "watercycle")
    ),
)
_GCOMPRIS = tuple(
    Licence(f"*/gcompris/src/{glob}", spdx, who) for glob, spdx, who in _GCOMPRIS_FILES
)

_TRUDGETT = "2007-2009 Jordan Trudgett <jordan_trudgett@hotmail.com>"
_ARDENTRYST_SOUNDS = (
    "Kendra Pietruszewski; Amy Dunwoodie; Freesound.org users (Anton, acclivity, adcbicycle, aust, "
    "Connum, decembered, Erdie, ERH, FreqMan, Halion, HerbertBoland, inchadney, laurent, Leady, "
    "luffy, martian, redjim, reinsamba, Robinhood76, sagetyrtle, Stickinthemud, themfish, "
    "Wolfsinger, zebraphone); www.digifishmusic.com"
)

_ENTRIES = (
    Package(
        "0ad-data",
        "CC-BY-SA-3.0",
        "2010 Wildfire Games",
        _attr("0 A.D.", "2010 Wildfire Games", "CC-BY-SA-3.0", "0ad-data"),
        containers=(Container("zip", "usr/share/games/0ad/mods/public/public.zip", "audio/"),),
    ),
    Package(
        # The copyright file: game content is "licensed under the Creative Commons Attribution
        # 3.0 license or the Creative Commons CC0 (public domain) license"; CC-BY-3.0's
        # terms satisfy both, so that is what a corpus user must follow.
        "openclonk-data",
        "CC-BY-3.0",
        "2001-2009 RedWolf Design GmbH; 2009-2016 The OpenClonk Team and contributors",
        _attr(
            "OpenClonk",
            "RedWolf Design GmbH and the OpenClonk Team",
            "CC-BY-3.0 / CC0-1.0 (game content)",
            "openclonk-data",
        ),
        tools=("openclonk",),
        containers=tuple(
            Container("c4group", f"usr/share/games/openclonk/*.{ext}")
            for ext in ("ocg", "ocd", "ocf")
        ),
    ),
    Package(
        "gcompris-qt-data",
        "GPL-3+",
        "2014-2018 GCompris Developers <gcompris-devel@kde.org> and contributors",
        _attr("GCompris", "the GCompris Developers", "GPL-3+", "gcompris-qt-data"),
        containers=(Container("rcc", "usr/share/gcompris-qt/rcc/*.rcc"),),
        licences=_GCOMPRIS,
    ),
    Package(
        "openttd-opensfx",
        "CC-BY-SA-3.0",
        "Various authors (per sound: opensfx.cat.d/titles.tsv, from the .cat's own credits)",
        _attr("OpenSFX for OpenTTD", "various authors", "CC-BY-SA-3.0", "openttd-opensfx"),
        containers=(Container("opensfx-cat", "usr/share/games/openttd/baseset/opensfx/*.cat"),),
    ),
    Package(
        "ufoai-sound",
        "GPL-2+ AND CC-BY-3.0 AND CC-BY-SA-3.0 AND GPL-2 AND LicenseRef-public-domain",
        "2002-2014 The UFO:AI Team and the authors listed per file in the copyright file",
        _attr(
            "UFO: Alien Invasion",
            "The UFO:AI Team and contributors",
            "GPL-2+/CC-BY-3.0/CC-BY-SA-3.0 per file",
            "ufoai-sound",
        ),
        containers=(Container("zip", "usr/share/games/ufoai/base/*.pk3", "sound/"),),
    ),
    Package(
        "wesnoth-1.16-data",
        "GPL-2+",
        "2003-2009 David White <dave@whitevine.net> and the Wesnoth contributors",
        _attr(
            "Battle for Wesnoth",
            "David White and the Wesnoth contributors",
            "GPL-2+",
            "wesnoth-1.16-data",
        ),
    ),
    Package(
        "scorched3d-data",
        "GPL-2+",
        "2001-2014 Gavin Camp <gcamp@scorched3d.co.uk>",
        _attr("Scorched3D", "2001-2014 Gavin Camp", "GPL-2+", "scorched3d-data"),
        licences=(Licence("*/globalmods/apoc/*", "CC-BY-SA-3.0", "Apocalypse mod team"),),
    ),
    Package(
        "widelands-data",
        "GPL-2+",
        "2002-2019 the Widelands Development Team",
        _attr("Widelands", "the Widelands Development Team", "GPL-2+", "widelands-data"),
        licences=(
            Licence("*/music/ingame_2[456].ogg", "CC-BY-SA-3.0", "the Widelands Development Team"),
        ),
    ),
    Package(
        "minetest-data",
        "CC-BY-SA-3.0",
        "2010-2016 celeron55, Perttu Ahola; Kahrl; erlehmann; BlockMen; Fernando Zapata; PilzAdam; "
        "paramat; sofar; Vanessa Ezekowitz and the Minetest contributors",
        _attr(
            "Minetest",
            "Perttu Ahola (celeron55) and the Minetest contributors",
            "CC-BY-SA-3.0",
            "minetest-data",
        ),
        licences=(
            Licence(
                "*/doors_glass_door_open.ogg", "CC-BY-3.0", "the Minetest contributors (doors mod)"
            ),
            Licence("*/mods/doors/sounds/*", "CC-BY-3.0", "the Minetest contributors (doors mod)"),
        ),
    ),
    Package(
        "lugaru-data",
        "CC-BY-SA-3.0",
        "2003, 2010 Wolfire Games <http://www.wolfire.com>",
        _attr("Lugaru", "2003, 2010 Wolfire Games", "CC-BY-SA-3.0", "lugaru-data"),
    ),
    Package(
        "warmux-data",
        "GPL-2+",
        "2001-2011 the WarMUX team and contributors (data/authors.xml)",
        _attr("WarMUX", "the WarMUX team and contributors", "GPL-2+", "warmux-data"),
    ),
    Package(
        "teeworlds-data",
        "CC-BY-SA-3.0",
        "Magnus Auvinen and contributors",
        _attr("Teeworlds", "Magnus Auvinen and contributors", "CC-BY-SA-3.0", "teeworlds-data"),
    ),
    Package(
        # The copyright file: "Files: Help/* Media/* Projects ... License: CC-BY-SA-3.0"; the
        # program is GPL-2, but every sound is under usr/share/scratch/Media/Sounds/.
        "scratch",
        "CC-BY-SA-3.0",
        "2011 Massachusetts Institute of Technology",
        _attr("Scratch 1.4", "2011 Massachusetts Institute of Technology", "CC-BY-SA-3.0",
              "scratch"),
    ),
    Package(
        "qabcs-data",
        "GPL-3+",
        "2019-2020 DanSoft <dik@inbox.ru>",
        _attr("qABCs", "2019-2020 DanSoft", "GPL-3+", "qabcs-data"),
    ),
    Package(
        # Sounds/* have their own holders; the heroes' voices and steps (Sounds/NYX, Sounds/PYR)
        # are Jordan Trudgett's, like the music.
        "ardentryst",
        "CC-BY-SA-3.0",
        _ARDENTRYST_SOUNDS,
        _attr("Ardentryst", "Jordan Trudgett, Kendra Pietruszewski, Amy Dunwoodie and "
              "freesound.org users", "CC-BY-SA-3.0", "ardentryst"),
        licences=tuple(
            Licence(f"usr/share/games/ardentryst/{folder}/*", "CC-BY-SA-3.0", _TRUDGETT)
            for folder in ("Sounds/NYX", "Sounds/PYR", "Music")
        ),
    ),
    Package(
        "lmms-common",
        "GPL-2+",
        "2004-2014 Tobias Doerffel and the LMMS developers",
        _attr("LMMS", "Tobias Doerffel and the LMMS developers", "GPL-2+", "lmms-common"),
    ),
    Package(
        "hydrogen-drumkits",
        "GPL-2",
        "the drum kits' authors (per kit in the copyright file)",
        _attr(
            "Hydrogen drum kits",
            "their authors",
            "GPL-2/GPL-2+/CC-BY-3.0/CC-BY-SA-3.0/CC0 per kit",
            "hydrogen-drumkits",
        ),
        licences=tuple(
            Licence(_HYDROGEN_KITS + kit + "/*", spdx, holders)
            for kit, spdx, holders in (
                ("ElectricEmpireKit", "GPL-2+", "Artemiy Pavlov (Artemio) <artemio@artemio.net>"),
                ("HardElectro1", "GPL-2+", "Artemiy Pavlov (Artemio) <artemio@artemio.net>"),
                ("VariBreaks", "GPL-2+", "Artemiy Pavlov (Artemio) <artemio@artemio.net>"),
                ("Millo*", "GPL-2", "Emiliano Grilli (Emillo) <emillo@emillo.net>"),
                (
                    "ColomboAcousticDrumkit",
                    "GPL-2+ with composition exception",
                    "2006, Marcos Guglielmetti <marcospcmusica@gmail.com>",
                ),
                ("circAfrique*", "CC-BY-SA-3.0", "Jim Harney"),
                ("BJA_Pacific", "CC-BY-SA-3.0-US", "Luc Tunguay"),
                ("Gimme A Hand 1.0", "GPL-2", _GLEN),
                ("The Black Pearl 1.0", "GPL-2", _GLEN),
                ("rumpf_kit_z01_h2", "CC-BY-3.0", "Emanuel Rumpf <em-rumpf@gmx.de>"),
                (
                    "belofilms_GuitarStrums",
                    "CC-BY-3.0",
                    "Gabriel Verdugo Soto <belo@belofilms.com>",
                ),
                ("Audiophob", "CC0-1.0", "soundcloud.com/audiophobdubstep"),
                ("ForzeeStereo", "GPL-2", "Vladimir Sadovnikov, Alexander Belokurov"),
            )
        ),
    ),
)

PACKAGES: dict[str, Package] = {p.name: p for p in _ENTRIES}


def get_package(name: str) -> Package:
    try:
        return PACKAGES[name]
    except KeyError:
        raise KeyError(
            f"unknown sfx package {name!r}; known: {', '.join(sorted(PACKAGES))}"
        ) from None
