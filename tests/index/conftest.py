"""Index test fixtures: the stand-in model and the synthetic-index helpers of
tests/synthetic_index.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from synthetic_index import (
    DIM,
    StubModel,
    caption_vector,
    make_index,
    synthetic_records,
    unit,
)


@pytest.fixture
def stub_model() -> StubModel:
    return StubModel()


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """The synthetic-index helpers, as a fixture (what tests/index reads them through)."""
    return SimpleNamespace(
        DIM=DIM,
        StubModel=StubModel,
        make_index=make_index,
        records=synthetic_records,
        caption_vector=caption_vector,
        unit=unit,
    )
