"""Mixtures for compositional captions (issue 11, item 3), planned from the seed in the
main process and rendered in workers (a pure function of the plan, so the samples do not
depend on the worker count).

- `mix-`: a real recording with another real recording of a different concept under it,
  RMS level drawn in PAIR_LEVEL_DB (the main clip's RMS over its own length against the
  background's over the mixture), captioned by lexicon.mixture_caption.
- `mel-`: a demo-corpus melody (rendered by render.Renderer with no background) with a
  real ambient recording MELODY_LEVEL_DB under it, captioned by the demo caption of the
  melody (background not mentioned) plus lexicon.with_background.

Both use only clips of their own split, so no recording crosses splits; melodies come
from the demo corpus's own split of melody space (melody.py), so a `mel-` test clip
never replays a melody the demo corpus trains on.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from atri.training.corpus.captions import N_TEMPLATES as DEMO_TEMPLATES
from atri.training.corpus.captions import N_VARIANTS, describe
from atri.training.corpus.melody import draw_melody
from atri.training.corpus.plan import MENTION_PROB, ClipPlan, random_attributes, render_params
from atri.training.corpus.render import PEAK_LIMIT, SAMPLE_RATE, Renderer
from atri.training.corpus.render import background_gain as rms_gain
from atri.training.corpus.schema import ATTRIBUTES
from atri.training.corpus.sfx import lexicon
from atri.training.corpus.sfx.audio import read_flac, to_int16, write_flac
from atri.training.corpus.sfx.records import Clip, n_captions, variants
from atri.training.languages import LANGS

PAIR_LEVEL_DB = (6.0, 15.0)
MELODY_LEVEL_DB = (6.0, 12.0)
PAIR_MIN_SECONDS = 3.0  # a short main sound still gets a background long enough to hear
# split -> (pair mixtures, melody mixtures); fewer when a split has too few sources
COUNTS = {"train": (300, 200), "val": (30, 20), "test": (30, 20)}
# Concepts that sound like a setting rather than an event: the backgrounds of `mel-` clips.
AMBIENT = ("rain", "wind", "stream", "waves", "birdsong", "fire_crackling", "crowd_cheer",
           "machinery", "insects", "applause", "bubbling", "frog_croak", "seagull",
           "bees_buzz", "water_drip", "underwater", "gears", "clock_tick", "mill")
SOUNDFONT = "fluidr3"  # the demo corpus's training soundfont


@dataclass(frozen=True)
class Mix:
    """A clip made by laying a real `background` recording under a foreground, level_db
    below it."""

    id: str
    split: str
    background: Clip
    level_db: float
    captions: dict[str, list[str]]


@dataclass(frozen=True, kw_only=True)
class PairMix(Mix):
    main: Clip  # a real recording of another concept

    def meta(self) -> dict[str, str | int | float | bool]:
        return {"kind": "pair", "concept": self.main.concept,
                "background_concept": self.background.concept, "main": self.main.id,
                "background": self.background.id, "level_db": round(self.level_db, 2),
                "licence": " + ".join(dict.fromkeys((self.main.licence, self.background.licence))),
                "attribution": " ".join(dict.fromkeys((self.main.attribution,
                                                       self.background.attribution)))}


@dataclass(frozen=True, kw_only=True)
class MelodyMix(Mix):
    plan: ClipPlan  # a demo-corpus melody, rendered with no background

    def meta(self) -> dict[str, str | int | float | bool]:
        attrs = {k: v for k, v in self.plan.attrs.as_dict().items() if k != "background"}
        return {"kind": "melody", **attrs, "melody": self.plan.melody.key,
                "background_concept": self.background.concept, "background": self.background.id,
                "level_db": round(self.level_db, 2), "soundfont": SOUNDFONT,
                "licence": self.background.licence, "attribution": self.background.attribution}


def audio_relpath(mix: Mix) -> str:
    return f"audio/mix/{mix.split}/{mix.id}.flac"


def plan_pairs(clips: list[Clip], split: str, n: int, rng: random.Random,
               is_instrument) -> list[PairMix]:
    pool = [c for c in clips if not is_instrument(c.concept)]
    if len({c.concept for c in pool}) < 2:
        return []
    mixes = []
    while len(mixes) < n:
        main, background = rng.choice(pool), rng.choice(pool)
        if main.concept == background.concept:
            continue
        level = rng.uniform(*PAIR_LEVEL_DB)
        pair = ((main.concept, main.attrs), (background.concept, background.attrs))
        chosen = variants(n_captions(split), rng,
                          lambda v, pair=pair: lexicon.mixture_caption(*pair, "eng", v))
        caps = {lang: [lexicon.mixture_caption(*pair, lang, v) for v in chosen] for lang in LANGS}
        mix_id = f"mix-{split}-{len(mixes):05d}"
        mixes.append(PairMix(id=mix_id, split=split, main=main, background=background,
                             level_db=level, captions=caps))
    return mixes


def _melody_captions(attrs, split: str, rng: random.Random, background: Clip) -> dict:
    """The demo grammar's caption of the melody (background left unsaid) + the real
    background phrase, with the same choices in every language (parallel lists)."""
    n = n_captions(split)
    plans = []
    for template in rng.sample(range(DEMO_TEMPLATES), min(n, DEMO_TEMPLATES)) * 2:
        extra = {a for a in ATTRIBUTES if a not in ("instrument", "background")
                 and (split != "train" or rng.random() < MENTION_PROB)}
        plans.append((template, frozenset({"instrument"} | extra), rng.randrange(N_VARIANTS)))
    plans = plans[:n]
    bg = (background.concept, background.attrs)
    return {lang: [lexicon.with_background(describe(attrs, lang, t, m, v), bg, lang, j)
                   for j, (t, m, v) in enumerate(plans)] for lang in LANGS}


def plan_melodies(clips: list[Clip], split: str, n: int, rng: random.Random) -> list[MelodyMix]:
    pool = [c for c in clips if c.concept in AMBIENT]
    mixes: list[MelodyMix] = []
    while pool and len(mixes) < n:
        attrs = replace(random_attributes(rng), background="none")
        melody = draw_melody(attrs.direction, attrs.n_notes, attrs.register, split, rng)
        if melody is None:
            continue
        background = rng.choice(pool)
        params = render_params(attrs, rng)
        level = rng.uniform(*MELODY_LEVEL_DB)
        mix_id = f"mel-{split}-{len(mixes):05d}"
        plan = ClipPlan(id=mix_id, split=split, attrs=attrs, melody=melody, soundfont=SOUNDFONT,
                        cluster="", captions={}, **{**params, "snr_db": level})
        caps = _melody_captions(attrs, split, rng, background)
        mixes.append(MelodyMix(id=mix_id, split=split, plan=plan, background=background,
                               level_db=level, captions=caps))
    return mixes


def plan_mixtures(clips_by_split: dict[str, list[Clip]], seed: int,
                  is_instrument) -> list[PairMix | MelodyMix]:
    out: list[PairMix | MelodyMix] = []
    for split, (n_pairs, n_melodies) in COUNTS.items():
        clips = sorted(clips_by_split.get(split, []), key=lambda c: c.key)
        rng = random.Random(f"{seed}:mix:{split}")
        out += plan_pairs(clips, split, n_pairs, rng, is_instrument)
        out += plan_melodies(clips, split, n_melodies, random.Random(f"{seed}:mel:{split}"))
    return out


def looped(wave: np.ndarray, n: int) -> np.ndarray:
    """`wave` repeated (or cut) to exactly n samples."""
    return np.resize(wave, n) if len(wave) else np.zeros(n, dtype=np.float32)


def limit(wave: np.ndarray) -> np.ndarray:
    peak = float(np.abs(wave).max()) if len(wave) else 0.0
    return wave * (PEAK_LIMIT / peak) if peak > PEAK_LIMIT else wave


def render_pair(mix: PairMix, out_dir: Path) -> np.ndarray:
    main = read_flac(out_dir / mix.main.audio)
    background = read_flac(out_dir / mix.background.audio)
    n = max(len(main), min(len(background), int(PAIR_MIN_SECONDS * SAMPLE_RATE)))
    bed = looped(background, n)
    wave = np.zeros(n, dtype=np.float32)
    wave[: len(main)] = main
    return limit(wave + bed * rms_gain(main, bed, mix.level_db))


def render_shard(args: tuple[list[PairMix | MelodyMix], str]) -> list[str]:
    """Worker entry: render and write one fixed shard of mixtures; returns their ids.
    A fresh synth per shard keeps melody rendering independent of the worker count."""
    mixes, out = args
    out_dir = Path(out)
    renderer = None
    try:
        for mix in mixes:
            if isinstance(mix, PairMix):
                wave = render_pair(mix, out_dir)
            else:
                renderer = renderer or Renderer(SOUNDFONT)
                melody = renderer.melody(mix.plan)
                bed = looped(read_flac(out_dir / mix.background.audio), len(melody))
                wave = limit(melody + bed * rms_gain(melody, bed, mix.level_db))
            write_flac(out_dir / audio_relpath(mix), to_int16(wave))
    finally:
        if renderer is not None:
            renderer.close()
    return [m.id for m in mixes]

