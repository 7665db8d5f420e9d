"""What the demo corpus will contain, decided before any sound is rendered.

Every random choice (attributes, melodies, captions, levels) is made here, in one
process, from the corpus seed; rendering is then a pure function of the plan, which is
what makes the corpus identical whatever the number of workers.

Training clips draw attributes at random. Evaluation splits (val, test, test-unseen) are
built from
minimal-pair clusters: a grid over 1-3 attributes around a base clip, so every clip has
at least 5 siblings that differ from it in exactly one attribute, and every caption of
an evaluation clip names all attributes (so also every attribute that varies in its
cluster), which with unique attribute tuples per split makes caption strings unique.
`test-unseen` adds what `test` lacks for measuring generalisation: no attribute tuple of
a training clip, and captions in a template and words that training never uses.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable
from dataclasses import dataclass, replace

from atri.training.corpus.captions import N_TEMPLATES, N_VARIANTS, describe
from atri.training.corpus.captions_unseen import describe_unseen
from atri.training.corpus.melody import Melody, draw_melody
from atri.training.corpus.schema import ATTRIBUTES, ClipAttributes
from atri.training.languages import LANGS

CAPTIONS_PER_CLIP = 2
# Grid shapes of evaluation clusters: values per varied attribute. Each gives every
# clip sum(n - 1) >= 5 siblings differing in exactly one attribute.
CLUSTER_SHAPES: tuple[tuple[int, ...], ...] = ((6,), (4, 3), (3, 3, 2))
MELODY_ATTRIBUTES = ("direction", "n_notes", "register")
# Probability that a training caption mentions a non-instrument attribute.
MENTION_PROB = 0.65
NOTE_SECONDS = {"slow": (0.75, 0.85), "moderate": (0.48, 0.56), "fast": (0.28, 0.34)}
VELOCITY = {"soft": (35, 50), "loud": (100, 120)}
SNR_DB = (6.0, 12.0)  # background level under the melody (corpus.md: 6-12 dB)


@dataclass(frozen=True)
class ClipPlan:
    id: str
    split: str
    attrs: ClipAttributes
    melody: Melody
    soundfont: str
    velocity: int
    onset: float  # seconds before the first note
    note_seconds: float  # inter-onset interval
    snr_db: float
    bg_seed: int
    cluster: str
    captions: dict[str, list[str]]

    def meta(self) -> dict[str, str | int | float | bool]:
        return {
            **self.attrs.as_dict(),
            "melody": self.melody.key,
            "cluster": self.cluster,
            "soundfont": self.soundfont,
            "snr_db": round(self.snr_db, 2),
        }


def random_attributes(rng: random.Random) -> ClipAttributes:
    while True:
        values = {name: rng.choice(vals) for name, vals in ATTRIBUTES.items()}
        try:
            return ClipAttributes(**values)
        except ValueError:  # 'rising then falling' with 2 notes: draw again
            continue


def make_captions(
    attrs: ClipAttributes, rng: random.Random, full: bool
) -> dict[str, list[str]]:
    """CAPTIONS_PER_CLIP parallel captions per language: distinct templates, a synonym
    variant each, and for training captions a random subset of attributes (the
    instrument always). The same choices serve every language, so captions stay parallel."""
    templates = rng.sample(range(N_TEMPLATES), CAPTIONS_PER_CLIP)
    plans = []
    for template in templates:
        if full:
            mention = frozenset(ATTRIBUTES)
        else:
            extra = {a for a in ATTRIBUTES if a != "instrument" and rng.random() < MENTION_PROB}
            mention = frozenset({"instrument"} | extra)
        plans.append((template, mention, rng.randrange(N_VARIANTS)))  # variant: synonyms
    return {lang: [describe(attrs, lang, t, m, v) for t, m, v in plans] for lang in LANGS}


def render_params(attrs: ClipAttributes, rng: random.Random) -> dict:
    """How a clip with `attrs` is rendered: velocity, note onset and length, the
    background's SNR and seed (drawn from `rng`; the sfx mixtures draw them too)."""
    return {
        "velocity": rng.randint(*VELOCITY[attrs.loudness]),
        "onset": rng.uniform(0.2, 0.4),
        "note_seconds": rng.uniform(*NOTE_SECONDS[attrs.tempo]),
        "snr_db": rng.uniform(*SNR_DB),
        "bg_seed": rng.randrange(2**31),
    }


def plan_train(n: int, rng: random.Random, prefix: str) -> list[ClipPlan]:
    plans: list[ClipPlan] = []
    while len(plans) < n:
        attrs = random_attributes(rng)
        melody = draw_melody(attrs.direction, attrs.n_notes, attrs.register, "train", rng)
        if melody is None:
            continue
        clip_id = f"{prefix}-{len(plans):06d}"
        plans.append(
            ClipPlan(
                id=clip_id, split="train", attrs=attrs, melody=melody, soundfont="fluidr3",
                cluster="", captions=make_captions(attrs, rng, full=False),
                **render_params(attrs, rng),
            )
        )
    return plans


def _grid(rng: random.Random) -> tuple[ClipAttributes, dict[str, list]]:
    """A base clip and, per varied attribute, the values the cluster takes."""
    shape = rng.choice(CLUSTER_SHAPES)
    chosen: dict[str, list] = {}
    for n in shape:
        eligible = [a for a, vals in ATTRIBUTES.items() if len(vals) >= n and a not in chosen]
        name = rng.choice(eligible)
        chosen[name] = rng.sample(list(ATTRIBUTES[name]), n)
    return random_attributes(rng), chosen


def plan_cluster(
    rng: random.Random, split: str, used: set[ClipAttributes]
) -> list[tuple[ClipAttributes, Melody]] | None:
    """One minimal-pair cluster, or None when this draw is unusable (an invalid
    combination, an attribute tuple already in the split, or no melody available)."""
    base, grid = _grid(rng)
    members: list[tuple[ClipAttributes, Melody]] = []
    melodies: dict[tuple, Melody] = {}
    for combo in itertools.product(*grid.values()):
        try:
            attrs = replace(base, **dict(zip(grid, combo, strict=True)))
        except ValueError:
            return None
        if attrs in used:
            return None
        key = tuple(getattr(attrs, a) for a in MELODY_ATTRIBUTES)
        if key not in melodies:  # siblings that differ in sound, not notes, share a melody
            melody = draw_melody(attrs.direction, attrs.n_notes, attrs.register, split, rng)
            if melody is None:
                return None
            melodies[key] = melody
        members.append((attrs, melodies[key]))
    return members


def plan_eval(n: int, split: str, rng: random.Random, prefix: str) -> list[ClipPlan]:
    """At least n clips in whole clusters (a cluster is never cut, so n may be exceeded
    by less than one cluster)."""
    return _plan_clusters(
        n, split, rng, prefix, set(), lambda attrs: make_captions(attrs, rng, full=True), split
    )


def plan_unseen(
    n: int, rng: random.Random, prefix: str, seen: set[ClipAttributes]
) -> list[ClipPlan]:
    """The `test-unseen` split: clusters as in `test` (held-out melodies of the test
    bucket) whose attribute tuples are none of `seen` (the training clips'), each clip
    with one caption in the held-out template and words (captions_unseen.py)."""
    return _plan_clusters(
        n, "test-unseen", rng, prefix, set(seen),
        lambda attrs: {lang: [describe_unseen(attrs, lang)] for lang in LANGS}, "test",
    )


def _plan_clusters(
    n: int, split: str, rng: random.Random, prefix: str, used: set[ClipAttributes],
    captions: Callable[[ClipAttributes], dict[str, list[str]]], melody_home: str,
) -> list[ClipPlan]:
    """Whole minimal-pair clusters until there are at least n clips; `used` holds the
    attribute tuples no clip may have (it grows with the split's own)."""
    plans: list[ClipPlan] = []
    n_clusters = 0
    while len(plans) < n:
        members = plan_cluster(rng, melody_home, used)
        if members is None:
            continue
        cluster = f"{prefix}-c{n_clusters:04d}"
        n_clusters += 1
        for attrs, melody in members:
            used.add(attrs)
            plans.append(
                ClipPlan(
                    id=f"{prefix}-{len(plans):06d}", split=split, attrs=attrs, melody=melody,
                    soundfont="fluidr3", cluster=cluster, captions=captions(attrs),
                    **render_params(attrs, rng),
                )
            )
    return plans


def xfont_copy(plans: list[ClipPlan], prefix: str, soundfont: str,
               split: str = "test-xfont") -> list[ClipPlan]:
    """The same clips, captions and levels rendered with another soundfont: a test of
    robustness to other recordings of the same instruments."""
    return [
        replace(p, id=f"{prefix}-{p.id.split('-', 1)[1]}", split=split, soundfont=soundfont,
                cluster=p.cluster.replace(p.id.split("-", 1)[0], prefix, 1))
        for p in plans
    ]
