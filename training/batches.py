"""What the trainer reads: batches cut from a strategy's epoch plan (sampling.py), made of
cached frozen features (features.py) or, when a backbone trains, of live audio decoded in
DataLoader workers and caption strings; and the validation set with its metrics."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from atri.training.data.feature_views import epoch_views, view_features, view_wave
from atri.training.data.features import (
    EVAL_BATCH,
    audio_features,
    caption_rows,
    text_features,
    wave_batches,
)
from atri.training.data.manifest import Manifest, ManifestError, read_manifest, require_captions
from atri.training.encoders.model import RetrievalModel
from atri.training.evaluation.metrics import evaluate_embeddings
from atri.training.objectives.prototypes import Prototypes
from atri.training.objectives.sampling import CaptionTable, EpochPlan
from atri.training.objectives.strategies import get_strategy

log = logging.getLogger(__name__)

T = TypeVar("T")



@dataclass
class LocalBatch:
    """One rank's slice (b items) of a global batch (B items), ready for StepLoss."""

    audio: torch.Tensor | list[torch.Tensor]  # (b, audio_dim) cached, or b live waveforms
    text: torch.Tensor | list[tuple[str, list[str]]]  # (P, text_dim) cached, or (lang, texts)
    slots: torch.Tensor  # (P, 2) int64 (row, slot) of each text above, in that order
    present_local: torch.Tensor  # (b, L) bool
    present: torch.Tensor  # (B, L) bool, the global batch (KCL's mask)
    clip_ids: torch.Tensor  # (B,) int64, the global batch (mixture's duplicate mask)
    local_clips: list[int]
    # (B, L) int64, the global batch: equal for captions that are no negatives of each
    # other's clips (equal strings; with TrainConfig.mask_same, clips of one group), -1
    # absent or never masked; None unless the run masks (mask_duplicate_captions, mask_same)
    text_ids: torch.Tensor | None = None
    multi_positive: bool = False  # TrainConfig.multi_positive: text_ids pairs are positives
    # (P,) int64 prototype group of each text row's clip (TrainConfig.prototype_key), -1
    # none; None unless the run has a prototype loss
    text_groups: torch.Tensor | None = None

    def to(self, device: torch.device) -> LocalBatch:
        def move(x):
            return x.to(device) if isinstance(x, torch.Tensor) else x

        return LocalBatch(
            audio=move(self.audio), text=move(self.text), slots=move(self.slots),
            present_local=move(self.present_local), present=move(self.present),
            clip_ids=move(self.clip_ids), local_clips=self.local_clips,
            text_ids=move(self.text_ids), multi_positive=self.multi_positive,
            text_groups=move(self.text_groups),
        )


class ClipWaves(torch.utils.data.Dataset):
    """Item clip + N * view: that view (0 = clean, feature_views.py) of clip `clip`'s
    waveform at `sample_rate`, cut to its first `max_samples` samples."""

    def __init__(self, paths: Sequence[Path], sample_rate: int, max_samples: int,
                 views: int = 0) -> None:
        self.paths, self.sample_rate, self.max_samples = list(paths), sample_rate, max_samples
        self.views = views

    def __len__(self) -> int:
        return len(self.paths) * (self.views + 1)

    def __getitem__(self, i: int) -> torch.Tensor:
        clip, view = i % len(self.paths), i // len(self.paths)
        return torch.from_numpy(view_wave(self.paths[clip], self.sample_rate, view)
                                [: self.max_samples])


def _first_on_rank0(main: bool, barrier: Callable[[], None], compute: Callable[[], T]) -> T:
    """Rank 0 computes (and caches); then the others read the cache it wrote."""
    out = compute() if main else None
    barrier()
    return compute() if not main else out  # type: ignore[return-value]


@dataclass
class Captions:
    """Every caption of a manifest in the training languages: rows (N, K, C) into the flat
    list `texts` (language-major), `row_lang` (T,) their languages, and their frozen
    features `vectors` (T, text_dim), or None when the text tower trains."""

    langs: tuple[str, ...]
    rows: np.ndarray
    texts: list[str]
    row_lang: np.ndarray
    vectors: torch.Tensor | None

    @functools.cached_property
    def text_ids(self) -> np.ndarray:
        """(T,) int64: the same number for the same string (in any language)."""
        return np.unique(np.asarray(self.texts, dtype=object).astype(str),
                         return_inverse=True)[1].astype(np.int64).reshape(-1)

    @classmethod
    def load(cls, model: RetrievalModel, manifest: Manifest, langs: Sequence[str],
             cache_dir: Path) -> Captions:
        rows, per_lang = caption_rows(manifest, langs)
        row_lang = np.repeat(np.arange(len(langs)), [len(t) for t in per_lang])
        vectors = None
        if not model.config.text_trains:
            vectors = text_features(model.text_encoder, manifest, langs, cache_dir).vectors
        return cls(tuple(langs), rows, [t for ts in per_lang for t in ts], row_lang, vectors)

    def select(self, rows: np.ndarray) -> tuple[torch.Tensor | list, np.ndarray]:
        """Text input for caption rows (P,): cached features, or (lang, texts) groups and
        the order (P,) in which the groups list the rows."""
        if self.vectors is not None:
            return self.vectors[torch.from_numpy(rows)], np.arange(len(rows))
        order = np.argsort(self.row_lang[rows], kind="stable")
        groups = [
            (self.langs[k], [self.texts[r] for r in rows[order][self.row_lang[rows[order]] == k]])
            for k in np.unique(self.row_lang[rows])
        ]
        return groups, order


class TrainData:
    """The training manifest as the loop needs it: caption table, audio and captions.
    With `augment_views` V > 0 each clip has V + 1 audio views and every epoch each clip
    trains on one of them (feature_views.py)."""

    augment_views = 0  # class defaults: bench/_train_step.py builds one without __init__
    seed = 0
    mask_duplicates = False
    multi_positive = False
    groups: np.ndarray | None = None
    prototypes: Prototypes | None = None

    def __init__(self, config, options, model: RetrievalModel, main: bool,
                 barrier: Callable[[], None]) -> None:
        manifest = read_manifest(config.train)
        require_captions(manifest)
        self.table = CaptionTable.from_manifest(manifest, config.langs)
        if warning := get_strategy(config.strategy).left_out(self.table):
            log.warning("%s", warning)
        paths = [manifest.audio_path(r) for r in manifest]
        cache = Path(options.cache_dir)
        self.augment_views, self.seed = config.augment_views, config.seed
        # (N, audio_dim) when cached, (V + 1, N, audio_dim) with V augmented views
        self.audio: torch.Tensor | None = None
        self.waves = ClipWaves(paths, model.sample_rate,
                            int(config.max_audio_seconds * model.sample_rate), self.augment_views)
        self.workers = options.workers
        self.mask_duplicates = config.mask_duplicate_captions
        self.multi_positive = config.multi_positive
        self.groups = clip_groups(manifest, config.mask_same) if config.mask_same else None
        if self.groups is not None and (self.groups < 0).all():
            key = config.mask_same.split("+")[0]
            raise ManifestError(f"{manifest.path}: no clip has a meta {key!r} value, so "
                                f"mask_same {config.mask_same!r} would mask nothing")
        if not model.config.audio_trains:
            views = self.augment_views
            self.audio = _first_on_rank0(main, barrier, lambda: view_features(
                model, paths, views, cache) if views else audio_features(model, paths, cache))
        self.captions = _first_on_rank0(main, barrier,
                                        lambda: Captions.load(model, manifest, config.langs, cache))
        self.prototypes = self._prototypes(config, manifest) if config.prototype_weight else None

    def _prototypes(self, config, manifest) -> Prototypes:
        """The prototype loss's clip groups and clean cached features (view 0)."""
        groups = clip_groups(manifest, config.prototype_key)
        if (groups < 0).all():
            key = config.prototype_key.split("+")[0]
            raise ManifestError(f"{manifest.path}: no clip has a meta {key!r} value, so "
                                f"prototype_key {config.prototype_key!r} groups nothing")
        assert self.audio is not None  # TrainConfig.check: a frozen audio tower
        features = self.audio[0] if self.augment_views else self.audio  # (N, audio_dim)
        return Prototypes(features, torch.from_numpy(groups), config.prototype_weight)

    def batches(self, plan: EpochPlan, start: int, batch_size: int, rank: int,
                world: int, epoch: int = 0) -> Iterator[tuple[int, LocalBatch]]:
        """(batch index, this rank's LocalBatch) for the batches of `plan` (of `epoch`,
        which draws the audio views) from `start`."""
        local = batch_size // world
        indices = range(start, plan.n_batches(batch_size))
        parts = [plan.batch(i, batch_size).slice(rank * local, (rank + 1) * local)
                 for i in indices]
        n = len(self.table)
        view = (epoch_views(self.seed, epoch, n, self.augment_views) if self.augment_views
                else np.zeros(n, dtype=np.int64))  # (N,)
        if self.audio is not None and not self.augment_views:
            audio: Iterator = (self.audio[torch.from_numpy(p.clip)] for p in parts)
        elif self.audio is not None:
            audio = (self.audio[torch.from_numpy(view[p.clip]), torch.from_numpy(p.clip)]
                     for p in parts)  # (b, audio_dim)
        else:
            audio = iter(torch.utils.data.DataLoader(
                self.waves, batch_sampler=[(p.clip + n * view[p.clip]).tolist() for p in parts],
                num_workers=self.workers, collate_fn=list,
            ))
        for i, part, batch_audio in zip(indices, parts, audio, strict=True):
            whole = plan.batch(i, batch_size)
            present = part.present  # (b, L)
            r, s = np.nonzero(present)
            rows = self.captions.rows[part.clip[r], part.lang[r, s], part.caption[r]]  # (P,)
            text, order = self.captions.select(rows)
            slots = torch.from_numpy(np.stack([r, s], axis=1)[order])  # (P, 2)
            text_groups = (None if self.prototypes is None else
                           self.prototypes.groups[torch.from_numpy(part.clip[r[order]])])
            yield i, LocalBatch(
                audio=batch_audio, text=text, slots=slots,
                present_local=torch.from_numpy(present),
                present=torch.from_numpy(whole.present),
                clip_ids=torch.from_numpy(whole.clip), local_clips=part.clip.tolist(),
                text_ids=(self._text_ids(whole)
                          if self.mask_duplicates or self.groups is not None else None),
                multi_positive=self.multi_positive, text_groups=text_groups,
            )

    def _text_ids(self, whole) -> torch.Tensor:
        """(B, L) identity of each caption slot of a global batch (LocalBatch.text_ids):
        its string's with mask_duplicates, its clip group's with mask_same, -1 absent
        or never masked."""
        ids = np.full(whole.present.shape, -1, dtype=np.int64)
        r, s = np.nonzero(whole.present)
        if self.mask_duplicates:
            rows = self.captions.rows[whole.clip[r], whole.lang[r, s], whole.caption[r]]
            ids[r, s] = self.captions.text_ids[rows]
        if self.groups is not None:  # ids past every string id: a group matches only itself
            group = self.groups[whole.clip[r]]  # (P,)
            grouped = group >= 0
            ids[r[grouped], s[grouped]] = len(self.captions.texts) + group[grouped]
        return torch.from_numpy(ids)


def clip_groups(manifest, keys: str) -> np.ndarray:
    """(N,) int64 group of each clip by its meta values under `keys` ("concept", or
    "concept+attrs": equal values, one group), -1 where the first key has no value."""
    names = keys.split("+")
    index: dict[tuple[str, ...], int] = {}
    out = []
    for record in manifest:
        if record.meta.get(names[0]) in (None, ""):
            out.append(-1)
            continue
        value = tuple(str(record.meta.get(k, "")) for k in names)
        out.append(index.setdefault(value, len(index)))
    return np.array(out, dtype=np.int64)


class ValData:
    """The validation manifest: its clips' audio and captions in the training languages
    it has, embedded each epoch by `evaluate`."""

    def __init__(self, config, options, model: RetrievalModel) -> None:
        manifest = read_manifest(config.val)
        require_captions(manifest)
        self.langs = [lang for lang in config.langs if any(lang in r.captions for r in manifest)]
        if not self.langs:
            raise ManifestError(f"{manifest.path}: no caption in the training languages "
                                f"{list(config.langs)}")
        self.paths = [manifest.audio_path(r) for r in manifest]
        cache = Path(options.cache_dir)
        self.audio = None if model.config.audio_trains else audio_features(
            model, self.paths, cache)
        self.captions = Captions.load(model, manifest, self.langs, cache)
        self.strings = {lang: [r.captions.get(lang, []) for r in manifest] for lang in self.langs}

    @torch.no_grad()
    def evaluate(self, model: RetrievalModel) -> dict[str, Any]:
        """metrics.evaluate_embeddings of the model's current embeddings."""
        model.eval()
        if self.audio is not None:
            audio = torch.cat([model.project_audio(a) for a in self.audio.split(EVAL_BATCH)])
        else:
            audio = torch.cat([model.embed_audio(w)
                               for w in wave_batches(self.paths, model.sample_rate)])
        caps = self.captions
        if caps.vectors is not None:
            text = torch.cat([model.project_text(t) for t in caps.vectors.split(EVAL_BATCH)])
        else:
            text = torch.cat([
                model.embed_text(caps.texts[a:b], caps.langs[caps.row_lang[a]])
                for a, b in _lang_chunks(caps.row_lang, EVAL_BATCH)
            ])
        text = text.float().cpu()  # (T, E)
        texts, present = {}, {}
        for k, lang in enumerate(self.langs):
            rows = caps.rows[:, k, :]  # (N, C)
            present[lang] = rows >= 0
            out = np.zeros((*rows.shape, text.shape[1]), dtype=np.float32)  # (N, C, E)
            out[present[lang]] = text[torch.from_numpy(rows[present[lang]])].numpy()
            texts[lang] = out
        return evaluate_embeddings(audio.float().cpu().numpy(), texts, present, self.langs,
                                   captions=self.strings)


def _lang_chunks(row_lang: np.ndarray, size: int) -> list[tuple[int, int]]:
    """(start, stop) of chunks of at most `size` consecutive rows of one language."""
    chunks = []
    for k in np.unique(row_lang):
        first, last = np.flatnonzero(row_lang == k)[[0, -1]]
        chunks.extend((a, min(a + size, last + 1)) for a in range(first, last + 1, size))
    return chunks
