"""One clip of the real-recordings corpus: where it came from, what it is, and its
manifest record (parallel captions from the lexicon, provenance in `meta`)."""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from atri.training.corpus.sfx import lexicon
from atri.training.data.manifest import ClipRecord
from atri.training.languages import LANGS

# Captions per clip and language: training sees several phrasings, an evaluation clip two.
CAPTIONS_PER_CLIP = {"train": 4, "eval": 2}
# How the test splits' recordings draw their captions. "per-meaning": every recording of one
# concept and attributes carries the same captions, so the evaluator's rule (every clip that
# carries the query's string is relevant, spec metrics.md) counts a recording of the same
# meaning as a hit; "per-clip" (builder version 5): each recording draws its own, and
# another recording of the same sound under another phrasing counts as a miss. Train and
# val always draw per clip: training sees more phrasings, and the validation scores every
# checkpoint records stay reproducible.
EVAL_CAPTIONS = ("per-meaning", "per-clip")
SHARED_CAPTION_SPLITS = frozenset({"test", "test-xpkg", "test-zeroshot"})
VARIANT_WINDOW = 3  # variants tried per template when looking for distinct captions
# File-name words that say nothing about the sound (game prefixes, formats, takes).
_NAME_NOISE = {"default", "sfx", "snd", "sound", "sounds", "wav", "ogg", "wp", "fx", "the"}
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


@dataclass(frozen=True)
class Clip:
    """A decoded, kept recording. `key` (package/relpath) is unique; `audio` is the FLAC's
    path relative to the corpus directory."""

    key: str
    package: str
    relpath: str
    concept: str
    attrs: Mapping[str, str]
    group: str
    sha256: str
    seconds: float
    source_seconds: float | None
    audio: str
    licence: str = ""
    attribution: str = ""
    note: str = ""

    @property
    def id(self) -> str:
        return clip_id(self.package, self.relpath)


def slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-")[:limit].strip("-") or "x"


def clip_id(package: str, relpath: str) -> str:
    """Stable and readable: package slug, file-name slug, 8 hex of the full path (two
    files of one name in different folders differ there)."""
    digest = hashlib.sha256(f"{package}/{relpath}".encode()).hexdigest()[:8]
    return f"{slug(package, 24)}.{slug(PurePosixPath(relpath).stem)}.{digest}"


def filename_label(relpath: str) -> str:
    """English words cut from the file name, as a file-name-label ablation would train on:
    'default_sand_footstep.2.ogg' -> 'sand footstep', 'GlassHit1.wav' -> 'glass hit'."""
    stem = PurePosixPath(relpath).name.split(".")[0]
    words = re.split(r"[^A-Za-z]+", _CAMEL.sub(" ", stem))
    kept = [w.lower() for w in words if len(w) > 1 and w.lower() not in _NAME_NOISE]
    return " ".join(kept) or PurePosixPath(relpath).stem.lower()


def variants(n: int, rng: random.Random, english: Callable[[int], str]) -> list[int]:
    """n caption variants from a random start (different clips of one concept start at
    different phrasings), skipping a variant whose English caption repeats an earlier
    one while others are left, so a clip's captions differ where the lexicon allows.
    The same variants serve every language, so the lists stay parallel."""
    start = rng.randrange(lexicon.N_TEMPLATES * 4)
    window = range(start, start + lexicon.N_TEMPLATES * VARIANT_WINDOW)
    chosen: list[int] = []
    seen: set[str] = set()
    for v in window:
        text = english(v)
        if text not in seen:
            seen.add(text)
            chosen.append(v)
        if len(chosen) == n:
            return chosen
    return (chosen + [v for v in window if v not in chosen])[:n]


def captions(concept: str, attrs: Mapping[str, str], n: int, rng: random.Random) -> dict:
    chosen = variants(n, rng, lambda v: lexicon.caption(concept, attrs, "eng", v))
    return {lang: [lexicon.caption(concept, attrs, lang, v) for v in chosen] for lang in LANGS}


def n_captions(split: str) -> int:
    return CAPTIONS_PER_CLIP["train" if split == "train" else "eval"]


def attrs_text(attrs: Mapping[str, str]) -> str:
    return ";".join(f"{k}={v}" for k, v in sorted(attrs.items()))


def check_eval_captions(eval_captions: str) -> None:
    if eval_captions not in EVAL_CAPTIONS:
        raise ValueError(f"eval captions {eval_captions!r}: expected one of {EVAL_CAPTIONS}")


def caption_seed(clip: Clip, split: str, seed: int, eval_captions: str) -> str:
    """What a clip's captions are drawn from: its meaning in the test splits under
    "per-meaning", else its key (the only rule of builder version 5)."""
    check_eval_captions(eval_captions)
    if eval_captions == "per-meaning" and split in SHARED_CAPTION_SPLITS:
        return f"{seed}:captions:meaning:{clip.concept}:{attrs_text(clip.attrs)}"
    return f"{seed}:captions:{clip.key}"


def clip_record(
    clip: Clip, split: str, seed: int, eval_captions: str = "per-meaning"
) -> ClipRecord:
    rng = random.Random(caption_seed(clip, split, seed, eval_captions))
    meta: dict[str, str | int | float | bool] = {
        "package": clip.package,
        "path": clip.relpath,
        "licence": clip.licence,
        "attribution": clip.attribution,
        "concept": clip.concept,
        "attrs": attrs_text(clip.attrs),
        "group": clip.group,
        "sha256": clip.sha256,
        "filename_label": filename_label(clip.relpath),
        "seconds": clip.seconds,
        **{f"attr_{k}": v for k, v in sorted(clip.attrs.items())},
    }
    if clip.source_seconds is not None and clip.source_seconds > clip.seconds + 0.01:
        meta["cropped_from_seconds"] = round(clip.source_seconds, 3)  # a long loop's start
    if clip.note:
        meta["note"] = clip.note
    return ClipRecord(id=clip.id, audio=clip.audio,
                      captions=captions(clip.concept, clip.attrs, n_captions(split), rng),
                      meta=meta)
