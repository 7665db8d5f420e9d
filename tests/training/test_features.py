"""Cached frozen-backbone features, around the real aisfx backbone and e5 text encoder
(calls counted, not mocked)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from atri.training.data import features
from atri.training.data.features import (
    AudioFeatureStore,
    audio_features,
    backbone_identity,
    caption_rows,
    text_features,
)
from atri.training.data.manifest import ClipRecord, read_manifest, write_manifest
from atri.training.encoders.model import ModelConfig, build_model

SR = 44100


def write_tone(path: Path, freq: float, seconds: float = 1.0) -> Path:
    t = np.arange(int(SR * seconds)) / SR
    sf.write(path, 0.3 * np.sin(2 * np.pi * freq * t).astype(np.float32), SR)
    return path


@pytest.fixture
def clips(tmp_path: Path) -> list[Path]:
    (tmp_path / "audio").mkdir()
    return [write_tone(tmp_path / "audio" / f"c{i}.wav", 220.0 * (i + 1)) for i in range(5)]


def test_miss_then_hit(model, counted, clips, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = audio_features(model, clips, cache, batch_size=2)
    assert counted == [2, 2, 1] and first.shape == (5, model.audio_dim)
    waves = [torch.from_numpy(sf.read(p, dtype="float32")[0]) for p in clips]
    direct = model.audio_backbone.embed(waves)  # (5, 512) what the cache must hold
    torch.testing.assert_close(first, direct, rtol=1e-5, atol=1e-5)

    again = audio_features(model, clips[::-1], cache)
    assert counted == [2, 2, 1]  # all hits: the backbone was not called
    assert torch.equal(again, first.flip(0))


def test_changed_file_is_recomputed(model, counted, clips, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = audio_features(model, clips, cache)
    write_tone(clips[2], 3000.0, seconds=1.5)  # new content, size and mtime
    second = audio_features(model, clips, cache)
    assert counted == [5, 1]  # only the edited clip
    assert torch.equal(second[[0, 1, 3, 4]], first[[0, 1, 3, 4]])
    assert not torch.allclose(second[2], first[2])


def test_same_size_touched_file_is_recomputed(model, counted, clips, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    audio_features(model, clips, cache)
    write_tone(clips[0], 2000.0)  # same length, so the same size: mtime tells
    st = clips[0].stat()
    os.utime(clips[0], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    audio_features(model, clips, cache)
    assert counted == [5, 1]


def test_parts_are_merged(model, counted, clips, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(features, "FLUSH_EVERY", 1)
    monkeypatch.setattr(features, "MAX_PARTS", 2)
    cache = tmp_path / "cache"
    first = audio_features(model, clips, cache, batch_size=1)
    store = AudioFeatureStore(cache, backbone_identity(model), model.audio_dim)
    assert len(list(store.folder.glob("part-*.npz"))) <= 2
    assert not list(store.folder.glob(".*.tmp"))  # no temp file left behind
    assert len(store.read()) == 5
    assert torch.equal(audio_features(model, clips, cache), first)
    assert counted == [1] * 5


def test_backbone_identity_separates_caches(model, tmp_path: Path) -> None:
    identity = backbone_identity(model)
    other = {**identity, "audio_weights_sha256": "0" * 64}
    a = AudioFeatureStore(tmp_path, identity, 512)
    b = AudioFeatureStore(tmp_path, other, 512)
    assert a.folder != b.folder and a.folder.parent == b.folder.parent


def test_trainable_backbone_is_not_cached(clips, tmp_path: Path) -> None:
    trainable = build_model(ModelConfig(audio_trainable=True))
    with pytest.raises(ValueError, match="trainable"):
        audio_features(trainable, clips, tmp_path)


def test_text_features_index_every_caption(model, tmp_path: Path) -> None:
    records = [
        ClipRecord("a", "a.wav", {"eng": ["a dog barks", "a dog is barking"],
                                  "fra": ["un chien aboie", "un chien aboie fort"]}),
        ClipRecord("b", "b.wav", {"eng": ["rain on a roof"]}),
    ]
    write_manifest(tmp_path / "m.jsonl", records)
    manifest = read_manifest(tmp_path / "m.jsonl", check_audio=False)
    langs = ("eng", "fra")
    rows, _ = caption_rows(manifest, langs)
    assert rows.shape == (2, 2, 2)
    assert (rows[1, 1] == -1).all() and rows[1, 0, 1] == -1  # absent slots
    feats = text_features(model.text_encoder, manifest, langs, tmp_path / "cache")
    assert feats.vectors.shape == (5, model.text_dim)
    for i, record in enumerate(records):
        for k, lang in enumerate(langs):
            for j, caption in enumerate(record.captions.get(lang, [])):
                expected = model.text_encoder.encode([caption], lang)[0]
                torch.testing.assert_close(feats.vectors[rows[i, k, j]], expected)
    assert list((tmp_path / "cache" / "text").iterdir())  # went through the text cache
