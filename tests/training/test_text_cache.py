"""The text-embedding cache, around the real e5-small encoder (calls counted, not mocked)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from atri.training.data.text_cache import TextCacheError, cache_path, encode_cached
from atri.training.encoders.text_encoder import TextEncoder


class CountingEncoder:
    """The real encoder, recording what it was asked to encode."""

    def __init__(self, inner: TextEncoder, version: str | None = None) -> None:
        self.inner = inner
        self.name, self.dim, self.trainable = inner.name, inner.dim, inner.trainable
        self.version = version or inner.version
        self.calls: list[list[str]] = []

    def encode(self, texts: list[str], lang: str) -> torch.Tensor:
        self.calls.append(list(texts))
        return self.inner.encode(texts, lang)


@pytest.fixture
def counting(e5: TextEncoder) -> CountingEncoder:
    return CountingEncoder(e5)


CAPTIONS = ["a dog barks", "rain on a tin roof", "a slow piano melody", "church bells ring"]


def test_miss_then_hit(counting: CountingEncoder, e5: TextEncoder, tmp_path: Path) -> None:
    first = encode_cached(counting, CAPTIONS, "eng", tmp_path)
    assert counting.calls == [CAPTIONS]
    torch.testing.assert_close(first, e5.encode(CAPTIONS, "eng"))
    assert first.dtype == torch.float32 and first.shape == (4, 384)

    again = encode_cached(counting, CAPTIONS[::-1], "eng", tmp_path)
    assert len(counting.calls) == 1  # all hits: the encoder was not called
    assert torch.equal(again, first.flip(0))  # bit-identical, in the requested order


def test_only_misses_are_encoded_once(counting: CountingEncoder, tmp_path: Path) -> None:
    encode_cached(counting, CAPTIONS[:2], "eng", tmp_path)
    texts = [CAPTIONS[2], CAPTIONS[0], CAPTIONS[2], CAPTIONS[3], CAPTIONS[1]]
    out = encode_cached(counting, texts, "eng", tmp_path)
    assert counting.calls == [CAPTIONS[:2], [CAPTIONS[2], CAPTIONS[3]]]  # misses, de-duplicated
    assert torch.equal(out[0], out[2])
    whole = encode_cached(counting, CAPTIONS, "eng", tmp_path)
    assert len(counting.calls) == 2
    torch.testing.assert_close(whole[[2, 0, 2, 3, 1]], out)


def test_keys_separate_language_and_version(
    counting: CountingEncoder, e5: TextEncoder, tmp_path: Path
) -> None:
    encode_cached(counting, CAPTIONS, "eng", tmp_path)
    encode_cached(counting, CAPTIONS, "fra", tmp_path)  # same text, other language: miss
    assert len(counting.calls) == 2
    retrained = CountingEncoder(e5, version=e5.version + "-other")
    encode_cached(retrained, CAPTIONS, "eng", tmp_path)  # other weights: miss
    assert len(retrained.calls) == 1
    assert cache_path(tmp_path, retrained, "eng") != cache_path(tmp_path, counting, "eng")


def test_files_are_whole_and_no_temp_left(counting: CountingEncoder, tmp_path: Path) -> None:
    for start in range(len(CAPTIONS)):
        encode_cached(counting, CAPTIONS[start : start + 1], "deu", tmp_path)
    path = cache_path(tmp_path, counting, "deu")
    with np.load(path) as data:
        assert data["keys"].shape == (4, 32) and data["vectors"].shape == (4, 384)
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]
    assert sorted(p.name for p in path.parent.iterdir()) == ["deu.lock", "deu.npz", "meta.json"]


def test_failed_encode_leaves_cache_intact(e5: TextEncoder, tmp_path: Path) -> None:
    class FailingOnSecondCall(CountingEncoder):
        def encode(self, texts: list[str], lang: str) -> torch.Tensor:
            if self.calls:
                raise RuntimeError("encoder crashed")
            return super().encode(texts, lang)

    encoder = FailingOnSecondCall(e5)
    before = encode_cached(encoder, CAPTIONS[:2], "eng", tmp_path)
    with pytest.raises(RuntimeError, match="crashed"):
        encode_cached(encoder, CAPTIONS, "eng", tmp_path)
    assert torch.equal(encode_cached(encoder, CAPTIONS[:2], "eng", tmp_path), before)


def test_empty_request_does_not_encode(counting: CountingEncoder, tmp_path: Path) -> None:
    assert encode_cached(counting, [], "eng", tmp_path).shape == (0, 384)
    assert counting.calls == []


def test_corrupt_file_is_reported(counting: CountingEncoder, tmp_path: Path) -> None:
    path = cache_path(tmp_path, counting, "eng")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an npz")
    with pytest.raises(TextCacheError, match=re.escape(str(path))):
        encode_cached(counting, CAPTIONS, "eng", tmp_path)


def test_wrong_dim_is_reported(counting: CountingEncoder, tmp_path: Path) -> None:
    path = cache_path(tmp_path, counting, "eng")
    path.parent.mkdir(parents=True)
    np.savez(path, keys=np.zeros((1, 32), np.uint8), vectors=np.zeros((1, 8), np.float32))
    with pytest.raises(TextCacheError, match="expected"):
        encode_cached(counting, CAPTIONS, "eng", tmp_path)


def test_trainable_encoder_is_refused(counting: CountingEncoder, tmp_path: Path) -> None:
    counting.trainable = True
    with pytest.raises(ValueError, match="trainable"):
        encode_cached(counting, CAPTIONS, "eng", tmp_path)
    assert counting.calls == []
