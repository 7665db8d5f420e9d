"""open_backend: the settings choose the backend, and settings that name none are a
BackendSettingsError naming the setting to give (the service's wiring over each backend,
with its real Settings: test_backends_service.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from atri.index.errors import BackendSettingsError
from atri.index.opener import open_backend
from atri.index.store import IndexStore


def settings(**given) -> SimpleNamespace:
    """The fields open_backend reads, at the service's defaults."""
    defaults = {"index_dir": None, "backend": "faiss", "milvus_uri": None,
                "milvus_token": None, "milvus_prefix": "atri", "milvus_depth": 16,
                "request_timeout_s": 30.0}
    return SimpleNamespace(**{**defaults, **given})


def test_faiss_is_the_index_directory(tmp_path: Path, kit) -> None:
    records, vectors = kit.make_index(tmp_path / "idx", n=8)
    store = open_backend(settings(index_dir=tmp_path / "idx"))
    assert isinstance(store, IndexStore)
    assert [hits[0][0] for hits in store.search(vectors[:3], k=1)] == [r.id for r in records[:3]]


@pytest.mark.parametrize(
    ("given", "message"),
    [({}, "no index given: pass --index DIR or set ATRI_INDEX_DIR"),
     ({"index_dir": Path("/nonexistent"), "backend": "milvus"}, "needs ATRI_MILVUS_URI")],
)  # fmt: skip
def test_settings_without_a_backend_are_refused(given: dict, message: str) -> None:
    with pytest.raises(BackendSettingsError, match=message):
        open_backend(settings(**given))

