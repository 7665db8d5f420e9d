"""Fixtures of the training tests: the e5-small text encoder, a model of the default
architecture (aisfx + e5-small, fresh heads) and a count of the clips its real backbone
path is called on."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:  # the sonar tier's environment loads this file too: import lazily
    from atri.training.encoders.model import RetrievalModel
    from atri.training.encoders.text_encoder import TextEncoder


@pytest.fixture(scope="module")
def e5() -> TextEncoder:
    from atri.training.encoders.text_encoder import build_text_encoder

    return build_text_encoder("e5-small")


@pytest.fixture(scope="module")
def model() -> RetrievalModel:
    from atri.training.encoders.model import ModelConfig, build_model

    return build_model(ModelConfig())


@pytest.fixture
def counted(model: RetrievalModel, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Clips per call of the model's real backbone path."""
    calls: list[int] = []
    inner = model.audio_features

    def audio_features_counted(waves):
        calls.append(len(waves))
        return inner(waves)

    monkeypatch.setattr(model, "audio_features", audio_features_counted, raising=False)
    return calls


def _first_clips(corpus: Path, tag: str, sizes: dict[str, int]) -> dict[str, Path]:
    from atri.training.data.manifest import read_manifest, write_manifest

    out = {}
    for split, n in sizes.items():
        out[split] = corpus / f"{split}-{tag}.jsonl"
        write_manifest(out[split], read_manifest(corpus / f"{split}.jsonl").records[:n])
    return out


@pytest.fixture(scope="session")
def first_clips():  # noqa: ANN201 (returns the function below)
    """first_clips(corpus, tag, {split: n}): manifests `<split>-<tag>.jsonl` of the first n
    clips of each split, written beside the corpus's own (a manifest's audio paths are
    relative to its folder)."""
    return _first_clips
