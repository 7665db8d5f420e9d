"""The General MIDI soundfonts the demo corpus renders with, and which of them may train.

Every split renders with FluidR3 GM except `test-xfont` (TimGM6mb, the cross-soundfont
test). `atri corpus build --train-soundfonts a,b,...` renders each training clip with a
soundfont drawn per clip from the list, so a model hears other recordings and syntheses of
the same instruments; val and test stay FluidR3, so scores stay comparable.
`--val-soundfont NAME` adds val-xfont, the val clips in a soundfont no training clip uses.
The soundfonts reserved for measuring transfer (shared spec corpus.md) are refused by name.

`freepats` is a General MIDI patch set of its own recordings (GUS patches, which TiMidity++
plays, not FluidSynth). It lacks some of the corpus's instruments and backgrounds: a clip
is drawn among the listed soundfonts that have its instrument and background, and stays
FluidR3 when none does.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace

from atri.training.corpus.plan import ClipPlan


@dataclass(frozen=True)
class Soundfont:
    path: str
    package: str  # the Debian package that ships it
    licence: str
    # Load samples only when a preset is selected: the same samples, but opening a
    # compressed .sf3 drops from ~10 s to ~0.1 s (measured), which every shard pays.
    lazy: bool = False
    engine: str = "fluidsynth"  # or "timidity": `path` is then a TiMidity++ config
    # the corpus's instruments and backgrounds it has no program for (schema.py names)
    lacks: frozenset[str] = frozenset()


SOUNDFONTS: dict[str, Soundfont] = {
    "fluidr3": Soundfont("/usr/share/sounds/sf2/FluidR3_GM.sf2", "fluid-soundfont-gm", "MIT"),
    "timgm6mb": Soundfont("/usr/share/sounds/sf2/TimGM6mb.sf2", "timgm6mb-soundfont", "GPL-2"),
    "musescore": Soundfont("/usr/share/sounds/sf3/MuseScore_General_Full.sf3",
                           "musescore-general-soundfont", "MIT", lazy=True),
    "fluidr3mono": Soundfont("/usr/share/sounds/sf3/FluidR3Mono_GM.sf3",
                             "fluidr3mono-gm-soundfont", "MIT", lazy=True),
    # samples of an OPL3 FM chip: synthetic timbres, the farthest from the other fonts
    "opl3": Soundfont("/usr/share/sounds/sf2/OPL-3_FM_128M.sf2", "opl3-soundfont",
                      "CC-BY-SA-4.0", lazy=True),
    # recordings unrelated to FluidR3's; GPL-2+ with an exception for compositions
    "freepats": Soundfont("/etc/timidity/freepats.cfg", "freepats", "GPL-2+", engine="timidity",
                          lacks=frozenset({"vibraphone", "marimba", "choir", "birdsong",
                                           "telephone ringing", "applause"})),
}
DEFAULT_TRAIN_SOUNDFONTS: tuple[str, ...] = ("fluidr3",)
TRAIN_SOUNDFONTS: tuple[str, ...] = ("fluidr3", "musescore", "fluidr3mono", "opl3", "freepats")
# Names a user may try that must never train, with the reason the error gives.
REFUSED: dict[str, str] = {
    "timgm6mb": "reserved for evaluation: it renders the test-xfont split (shared spec "
                "corpus.md)",
    "csound": "reserved for evaluation (csound-soundfont, shared spec corpus.md)",
    "gs": "fluid-soundfont-gs ships only GS variation sound effects (banks 1-8), none of "
          "the corpus's General MIDI instruments, backgrounds or drum kit",
}


def check_train_soundfonts(names: Sequence[str]) -> tuple[str, ...]:
    """The names as a tuple, or ValueError naming what is wrong with them."""
    names = tuple(names)
    if not names:
        raise ValueError("--train-soundfonts: name at least one soundfont")
    if len(set(names)) != len(names):
        raise ValueError(f"--train-soundfonts: {list(names)} names a soundfont twice")
    for name in names:
        _check_name("--train-soundfonts", name, TRAIN_SOUNDFONTS)
    return names


def _check_name(option: str, name: str, choices: Sequence[str]) -> None:
    """ValueError naming `option` if `name` is refused or not among `choices`."""
    if name in REFUSED:
        raise ValueError(f"{option}: {name!r} is refused: {REFUSED[name]}")
    if name not in choices:
        raise ValueError(f"{option}: unknown soundfont {name!r}; "
                         f"choose among {', '.join(choices)}")


def check_val_soundfont(name: str, train_soundfonts: Sequence[str]) -> str:
    """`name` if it can render the val-xfont split, or ValueError saying why not: it must
    be a soundfont no training clip heard, or validation would not measure transfer."""
    if name in train_soundfonts:
        raise ValueError(f"--val-soundfont: {name!r} also renders training clips "
                         f"(--train-soundfonts {','.join(train_soundfonts)}); a validation "
                         "soundfont must be one the model never hears")
    if name in SOUNDFONTS and SOUNDFONTS[name].lacks:  # named before "unknown" below
        raise ValueError(f"--val-soundfont: {name!r} lacks "
                         f"{', '.join(sorted(SOUNDFONTS[name].lacks))}, which val clips play")
    # fluidr3 renders val itself; a partial soundfont could not render every val clip
    _check_name("--val-soundfont", name,
                [n for n in TRAIN_SOUNDFONTS[1:] if not SOUNDFONTS[n].lacks])
    return name


def covers(name: str, plan: ClipPlan) -> bool:
    """Whether soundfont `name` has the clip's instrument and background."""
    lacks = SOUNDFONTS[name].lacks
    return plan.attrs.instrument not in lacks and plan.attrs.background not in lacks


def assign_train_soundfonts(plans: list[ClipPlan], names: Sequence[str],
                            seed: int) -> list[ClipPlan]:
    """Each training clip rendered with a soundfont drawn uniformly from those of `names`
    that have its instrument and background (FluidR3 when none does), from a stream of its
    own: the clips' attributes, melodies and captions stay those of the FluidR3-only
    corpus, and the default list leaves the plans untouched."""
    names = check_train_soundfonts(names)
    if names == DEFAULT_TRAIN_SOUNDFONTS:
        return plans
    rng = random.Random(f"{seed}:train-soundfont")
    assigned = []
    for p in plans:
        # complete soundfonts keep the full list, so the draws of lists without a partial
        # one are those of earlier builds
        choices = [n for n in names if covers(n, p)]
        assigned.append(replace(p, soundfont=rng.choice(choices) if choices else "fluidr3"))
    return assigned
