"""Which captions each training strategy sees, epoch by epoch (shared spec metrics.md);
strategies.py says which draw below each strategy uses.

Every draw is a pure function of (strategy, caption table, seed, epoch): all DDP ranks
compute the same plan and each takes its own slice of every global batch, and a resumed
run redraws exactly the epoch it stopped in. A plan lists M items in batch order; item m
is clip `clip[m]`, caption index `caption[m]` (the same j in every language, since
caption lists are parallel, manifest.md) and the languages `lang[m]` (indices into
`CaptionTable.langs`, -1 for an absent slot):

    mlclap          lang (M, 1): one language drawn uniformly among those the clip has,
                    and j drawn uniformly among its captions (ATRI Sec. 3.1, Eq. 4-5)
    mlclap-mixture  lang (M, 1): ML-CLAP's released "mixture LE": every English caption
                    of every clip, plus each non-English caption with probability p
                    (0.1); a clip can fill several rows of one batch
    cacl            lang (M, 2): [English, a non-English language drawn uniformly among
                    those the clip has], one j for both (ATRI Sec. 4.2)
    kcl, kcl-bal.   lang (M, K): caption j in all K languages, -1 where the clip lacks
                    the language (the loss masks those slots, ATRI Sec. 4.1)

Clips missing languages (metrics.md): mlclap and cacl draw only among the languages a
clip has. Our choices where the papers are silent: cacl cannot form a triplet for a clip
without English or without any other language and leaves it out (`cacl_eligible`);
mlclap-mixture anchors a clip without English on all captions of one language drawn
uniformly among its own each epoch, so every clip appears at least once per epoch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from atri.training.data.manifest import Manifest, ManifestError
from atri.training.languages import ENGLISH

MIXTURE_PROB = 0.1  # ML-CLAP's released code


@dataclass(frozen=True)
class CaptionTable:
    """Which captions each clip of a manifest has, in the training languages."""

    langs: tuple[str, ...]  # the K training languages; lang indices refer to this order
    n_captions: np.ndarray  # (N,) int64, captions per language of clip i (C_i)
    has: np.ndarray  # (N, K) bool, clip i has captions in language k

    @classmethod
    def from_manifest(cls, manifest: Manifest, langs: Sequence[str]) -> CaptionTable:
        """Raise ManifestError naming the clips without a caption in any of `langs`."""
        langs = tuple(langs)
        has = np.array([[lang in r.captions for lang in langs] for r in manifest], dtype=bool)
        has = has.reshape(len(manifest), len(langs))
        lacking = [r.id for r, row in zip(manifest, has, strict=True) if not row.any()]
        if lacking:
            shown = ", ".join(lacking[:10]) + (" ..." if len(lacking) > 10 else "")
            raise ManifestError(
                f"{manifest.path}: {len(lacking)} clip(s) have no caption in the training "
                f"languages {list(langs)}: {shown}"
            )
        n_captions = np.array([r.n_captions() for r in manifest], dtype=np.int64)
        return cls(langs=langs, n_captions=n_captions, has=has)

    def __len__(self) -> int:
        return len(self.n_captions)

    def lang_index(self, lang: str) -> int:
        if lang not in self.langs:
            raise ValueError(f"language {lang!r} is not among the training languages {self.langs}")
        return self.langs.index(lang)


@dataclass(frozen=True)
class EpochPlan:
    """The items of one epoch in batch order; see the module docstring."""

    clip: np.ndarray  # (M,) int64 clip index
    caption: np.ndarray  # (M,) int64 caption index j
    lang: np.ndarray  # (M, L) int64 language index, -1 = absent slot

    def __len__(self) -> int:
        return len(self.clip)

    @property
    def present(self) -> np.ndarray:
        return self.lang >= 0  # (M, L)

    def slice(self, start: int, stop: int) -> EpochPlan:
        return EpochPlan(self.clip[start:stop], self.caption[start:stop], self.lang[start:stop])

    def n_batches(self, batch_size: int) -> int:
        """Full batches only: DDP gathers equal shards, and a 1-item batch has no negative."""
        return len(self) // batch_size

    def exposure(self, batch_size: int) -> tuple[int, int]:
        """(audio items, captions) the epoch's full batches train on: a study compares
        arms by optimiser steps, audio passes and caption updates."""
        used = self.n_batches(batch_size) * batch_size
        return used, int(self.present[:used].sum())

    def batch(self, index: int, batch_size: int) -> EpochPlan:
        return self.slice(index * batch_size, (index + 1) * batch_size)


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """One independent stream per (seed, epoch)."""
    return np.random.default_rng(np.random.SeedSequence([seed, epoch]))


def _pick(allowed: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Per row, the index of a column drawn uniformly among the True ones of `allowed`
    (M, K), using uniforms u (M,) in [0, 1). Every row must have a True."""
    counts = allowed.sum(axis=1)  # (M,)
    nth = np.minimum((u * counts).astype(np.int64), counts - 1)  # (M,) which True to take
    rank = np.cumsum(allowed, axis=1) - 1  # (M, K) rank of each True among its row's
    return np.argmax(allowed & (rank == nth[:, None]), axis=1)


def _draw_j(table: CaptionTable, clips: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    u = rng.random(len(clips))
    return np.minimum((u * table.n_captions[clips]).astype(np.int64), table.n_captions[clips] - 1)


def _shuffled(
    clips: np.ndarray, caption: np.ndarray, lang: np.ndarray, rng: np.random.Generator
) -> EpochPlan:
    order = rng.permutation(len(clips))
    return EpochPlan(clips[order], caption[order], lang[order].reshape(len(clips), -1))


def draw_mlclap(table: CaptionTable, rng: np.random.Generator) -> EpochPlan:
    clips = np.arange(len(table))
    lang = _pick(table.has, rng.random(len(table)))  # (N,)
    return _shuffled(clips, _draw_j(table, clips, rng), lang[:, None], rng)


def cacl_eligible(table: CaptionTable) -> np.ndarray:
    """(N,) bool: clips with English and at least one other language."""
    eng = table.lang_index(ENGLISH)
    others = np.delete(table.has, eng, axis=1)  # (N, K-1)
    return table.has[:, eng] & others.any(axis=1)


def draw_cacl(table: CaptionTable, rng: np.random.Generator) -> EpochPlan:
    eng = table.lang_index(ENGLISH)
    clips = np.flatnonzero(cacl_eligible(table))
    if len(clips) == 0:
        raise ValueError("cacl: no clip has both English and another language")
    allowed = table.has[clips].copy()  # (M, K)
    allowed[:, eng] = False
    other = _pick(allowed, rng.random(len(clips)))  # (M,)
    lang = np.stack([np.full(len(clips), eng), other], axis=1)  # (M, 2)
    return _shuffled(clips, _draw_j(table, clips, rng), lang, rng)


def draw_kcl(table: CaptionTable, rng: np.random.Generator) -> EpochPlan:
    clips = np.arange(len(table))
    k = len(table.langs)
    lang = np.where(table.has, np.arange(k)[None, :], -1)  # (N, K)
    return _shuffled(clips, _draw_j(table, clips, rng), lang, rng)


def draw_mixture(table: CaptionTable, rng: np.random.Generator, prob: float) -> EpochPlan:
    n, k = table.has.shape
    eng = table.langs.index(ENGLISH) if ENGLISH in table.langs else None
    anchor = np.full(n, -1)  # (N,) the language every caption of which is kept
    if eng is not None:
        anchor[table.has[:, eng]] = eng
    no_anchor = anchor < 0
    anchor[no_anchor] = _pick(table.has[no_anchor], rng.random(int(no_anchor.sum())))
    # one candidate per (clip, language, j): the anchor's always, the others with prob
    clip_ix, lang_ix = np.nonzero(table.has)  # (P,), (P,) in clip-major order
    reps = table.n_captions[clip_ix]  # (P,)
    clips = np.repeat(clip_ix, reps)
    langs = np.repeat(lang_ix, reps)
    caption = np.arange(reps.sum()) - np.repeat(np.cumsum(reps) - reps, reps)  # j per row
    keep = (langs == anchor[clips]) | (rng.random(len(clips)) < prob)
    return _shuffled(clips[keep], caption[keep], langs[keep][:, None], rng)
