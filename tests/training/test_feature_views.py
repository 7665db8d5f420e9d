"""Augmented views cached as frozen-backbone features (training/data/feature_views.py), around
the real aisfx backbone (calls counted, not mocked) on two short clips."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from atri.training.data.audio_io import load_audio
from atri.training.data.augment import AugmentSpec, augment_view
from atri.training.data.feature_views import epoch_views, view_features, view_key
from atri.training.data.features import (
    AudioFeatureStore,
    audio_features,
    backbone_identity,
    clip_key,
)

SR = 44100


@pytest.fixture
def clips(tmp_path: Path) -> list[Path]:
    out = []
    rng = np.random.default_rng(0)
    for i, hz in enumerate((330.0, 880.0)):
        t = np.arange(SR) / SR
        wave = 0.3 * np.sin(2 * np.pi * hz * t) * np.exp(-2 * t) + 0.01 * rng.standard_normal(SR)
        sf.write(tmp_path / f"c{i}.wav", wave.astype(np.float32), SR)
        out.append(tmp_path / f"c{i}.wav")
    return out


def test_views_are_computed_once_and_read_back(model, counted, clips, tmp_path) -> None:
    cache = tmp_path / "cache"
    first = view_features(model, clips, 2, cache, batch_size=8)
    assert first.shape == (3, 2, model.audio_dim)
    assert sum(counted) == 6  # 2 clips x (clean + 2 views)
    store = AudioFeatureStore(cache, backbone_identity(model), model.audio_dim)
    rows = store.read()
    keys = [view_key(clip_key(p), v) for v in range(3) for p in clips]
    assert len(rows) == 6 and set(rows) == set(keys)

    again = view_features(model, clips, 2, cache)  # a second run: all hits
    assert sum(counted) == 6 and torch.equal(again, first)
    clean = audio_features(model, clips, cache)  # view 0 is the plain cache's entry
    assert sum(counted) == 6 and torch.equal(clean, first[0])
    more = view_features(model, clips, 3, cache)  # one more view: only it is computed
    assert sum(counted) == 8 and torch.equal(more[:3], first)


def test_a_view_holds_the_features_of_the_augmented_clip(model, counted, clips,
                                                         tmp_path) -> None:
    feats = view_features(model, clips, 2, tmp_path / "cache")
    for v in (1, 2):
        for i, path in enumerate(clips):
            wave = augment_view(load_audio(path, model.sample_rate), model.sample_rate, v)
            direct = model.audio_features([torch.from_numpy(wave)])[0]
            torch.testing.assert_close(feats[v, i], direct, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(feats[1], feats[0]) and not torch.allclose(feats[2], feats[1])


def test_another_spec_is_a_miss(model, counted, clips, tmp_path) -> None:
    cache = tmp_path / "cache"
    view_features(model, clips, 1, cache)
    other = dataclasses.replace(AugmentSpec(), version=AugmentSpec().version + 1)
    changed = view_features(model, clips, 1, cache, spec=other)
    assert counted == [4, 2]  # the clean clips were hits, the views of the new spec not
    assert view_key(b"k" * 32, 1, other) != view_key(b"k" * 32, 1)
    assert view_key(b"k" * 32, 0, other) == b"k" * 32
    assert changed.shape == (2, 2, model.audio_dim)


def test_epoch_views_are_seeded_and_cover_every_view() -> None:
    a = epoch_views(seed=1, epoch=0, n_clips=600, views=2)
    assert np.array_equal(a, epoch_views(1, 0, 600, 2))
    assert set(a.tolist()) == {0, 1, 2} and a.dtype == np.int64
    assert not np.array_equal(a, epoch_views(1, 1, 600, 2))  # a fresh draw every epoch
    assert not np.array_equal(a, epoch_views(2, 0, 600, 2))
    assert np.array_equal(epoch_views(-1, 0, 5, 2), epoch_views(-1, 0, 5, 2))


def test_live_audio_serves_the_same_views(model, clips) -> None:
    """A trainable backbone sees the views as waveforms: item clip + N * view."""
    from atri.training.batches import ClipWaves

    waves = ClipWaves(clips, model.sample_rate, max_samples=SR // 2, views=2)
    assert len(waves) == 6
    for v in range(3):
        for i, path in enumerate(clips):
            wave = load_audio(path, model.sample_rate)
            expected = wave if v == 0 else augment_view(wave, model.sample_rate, v)
            assert np.array_equal(waves[i + 2 * v].numpy(), expected[: SR // 2])
