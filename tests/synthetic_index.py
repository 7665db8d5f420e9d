"""Synthetic indexes for the index and service tests: a deterministic stand-in model
(fast, counts its calls) and index versions written without any audio. A module beside
conftest.py (pyproject: pythonpath = ["tests"]), since importlib mode cannot import a
conftest; tests/index reaches it through the `kit` fixture."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from atri.index import layout, live
from atri.index.build import distinct_captions
from atri.index.version import CaptionSource, write_version
from atri.training.data.manifest import ClipRecord

DIM = 16


def unit(rng: np.random.Generator, n: int, dim: int = DIM) -> np.ndarray:
    v = rng.standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def seeded_vector(key: bytes, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(key).digest()[:8], "little")
    return unit(np.random.default_rng(seed), 1, dim)[0]


class StubModel:
    """RetrievalModel's interface: audio vectors from a hash of the samples, caption
    vectors from a hash of the text; counts the clips and captions it embeds."""

    def __init__(self, dim: int = DIM) -> None:
        self.config = SimpleNamespace(embed_dim=dim)
        self.sample_rate = 8000
        self.audio_calls: list[int] = []
        self.text_calls: list[int] = []

    def eval(self) -> StubModel:
        return self

    def identity(self) -> dict[str, str]:
        return {
            "audio_backbone": "stub",
            "audio_weights_sha256": "0" * 64,
            "text_encoder": "stub-text",
            "text_encoder_version": "1",
        }

    def embed_audio(self, waves: list[torch.Tensor]) -> torch.Tensor:
        self.audio_calls.append(len(waves))
        dim = self.config.embed_dim
        return torch.from_numpy(np.stack([seeded_vector(w.numpy().tobytes(), dim) for w in waves]))

    def embed_text(self, texts: list[str], lang: str) -> torch.Tensor:
        self.text_calls.append(len(texts))
        dim = self.config.embed_dim
        return torch.from_numpy(np.stack([seeded_vector(t.encode(), dim) for t in texts]))


def synthetic_records(n: int, langs: tuple[str, ...] = ("eng", "fra")) -> list[ClipRecord]:
    """n clips; caption texts repeat across clips (every 3rd clip shares one) so the
    caption index has captions with several clips."""
    records = []
    for i in range(n):
        captions = {
            lang: [f"{lang} shared caption {i % 3}", f"{lang} own caption {i}"] for lang in langs
        }
        records.append(ClipRecord(f"c{i:04d}", f"/data/c{i:04d}.wav", captions, {"i": i}))
    return records


def caption_vector(text: str, dim: int = DIM) -> np.ndarray:
    return seeded_vector(text.encode(), dim)


def make_index(
    root: Path,
    n: int = 60,
    dim: int = DIM,
    langs: tuple[str, ...] = ("eng", "fra"),
    factory: str | None = None,
    seed: int = 0,
    vectors: np.ndarray | None = None,
) -> tuple[list[ClipRecord], np.ndarray]:
    """Publish a synthetic version at `root` (random unit vectors unless given); returns
    its records and (n, dim) vectors, float16-exact as stored."""
    records = synthetic_records(n, langs)
    if vectors is None:
        vectors = unit(np.random.default_rng(seed), n, dim)
    vectors = vectors.astype(np.float16).astype(np.float32)
    captions = {
        lang: CaptionSource(
            texts,
            clip_ids,
            [np.stack([caption_vector(t, dim) for t in texts])] if texts else [],
        )
        for lang, (texts, clip_ids) in distinct_captions(records).items()
    }
    staged = layout.staging_dir(root)
    write_version(
        staged,
        dim=dim,
        ids=[r.id for r in records],
        records=records,
        vectors=[vectors],
        captions=captions,
        factory=factory,
        meta={"model": StubModel(dim).identity()},
    )
    with layout.locked(root):
        version = layout.publish(root, staged)
        live.reset_log(root / layout.LIVE_LOG, version, dim)
    return records, vectors
