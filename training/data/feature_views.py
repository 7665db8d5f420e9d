"""Augmented views of training clips as cached frozen-backbone features.

With `augment_views = V > 0` every training clip has V + 1 views: view 0 the clean clip,
views 1..V `augment.augment_view` of it. Each view's features are computed once and kept
in the backbone's ordinary feature store (features.py), beside the clean ones:

    view 0   key = clip_key(path)   (the existing cache entry: old caches stay valid)
    view v   key = sha256(clip_key(path), v, spec hash)

so a second run, or a run with more views, computes only what is missing, and a change of
the augmentation spec (or of its version) is a miss rather than a stale hit. Each epoch
each clip trains on one of its V + 1 views, drawn by `epoch_views` from the run's seed and
the epoch alone (all DDP ranks and a resumed run draw the same). Validation and
evaluation always read the clean clip.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from atri.training.data.audio_io import load_audio
from atri.training.data.augment import DEFAULT_SPEC, AugmentSpec, augment_view
from atri.training.data.features import AUDIO_BATCH, clip_key, fill, frozen_store
from atri.training.encoders.model import RetrievalModel


def view_key(clip: bytes, view: int, spec: AugmentSpec = DEFAULT_SPEC) -> bytes:
    """Cache key of view `view` of the clip whose clip_key is `clip` (32 bytes, as the
    store's format wants); view 0 is the clip's own key."""
    if view == 0:
        return clip
    return hashlib.sha256(clip + f"\0view\0{view}\0{spec.hash()}".encode()).digest()


def view_wave(path: Path, sample_rate: int, view: int,
              spec: AugmentSpec = DEFAULT_SPEC) -> np.ndarray:
    """(T,) float32 view `view` of the clip at `path`, at `sample_rate`."""
    wave = load_audio(path, sample_rate)
    return wave if view == 0 else augment_view(wave, sample_rate, view, spec)


def view_features(
    model: RetrievalModel,
    paths: Sequence[Path],
    views: int,
    cache_dir: Path,
    spec: AugmentSpec = DEFAULT_SPEC,
    batch_size: int = AUDIO_BATCH,
) -> torch.Tensor:
    """(V + 1, N, audio_dim) float32 features of views 0..V of the clips at `paths`,
    computing and caching only the views not cached yet."""
    store = frozen_store(model, cache_dir)
    clips = [clip_key(p) for p in paths]
    keys = [[view_key(c, v, spec) for c in clips] for v in range(views + 1)]  # (V+1, N)
    found = store.read()
    missing: dict[bytes, tuple[Path, int]] = {}
    for i, path in enumerate(paths):  # clip-major: a clip's views share one decoding
        for v in range(views + 1):
            if keys[v][i] not in found:
                missing.setdefault(keys[v][i], (Path(path), v))
    sr = model.sample_rate
    decoded: dict[Path, np.ndarray] = {}  # the latest clip: its views follow each other

    def load(path: Path, view: int) -> torch.Tensor:
        if path not in decoded:
            decoded.clear()
            decoded[path] = load_audio(path, sr)
        wave = decoded[path]
        return torch.from_numpy(wave.copy() if view == 0 else augment_view(wave, sr, view, spec))

    fill(model, store, found,
         [(k, functools.partial(load, p, v)) for k, (p, v) in missing.items()], batch_size)
    out = np.stack([np.stack([found[k] for k in row]) for row in keys])
    return torch.from_numpy(out.reshape(views + 1, len(paths), model.audio_dim))


def epoch_views(seed: int, epoch: int, n_clips: int, views: int) -> np.ndarray:
    """(N,) int64: the view (0..views, uniformly) each clip trains on in `epoch`; a pure
    function of (seed, epoch), drawn apart from the strategy's plan so that views = 0
    leaves every other draw of the run as it was."""
    rng = np.random.default_rng([seed % 2**32, epoch, 0x76696577])  # "view"
    return rng.integers(0, views + 1, size=n_clips).astype(np.int64)
