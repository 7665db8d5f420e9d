"""`open_backend(settings)`: the index backend the settings name (docs/scaling.md), the
one place that chooses between the FAISS index directory (`IndexStore`, the default)
and Milvus collections (`MilvusStore`, filled from the index directory when absent)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Protocol

from atri.index.backend import IndexBackend
from atri.index.errors import BackendSettingsError

NO_INDEX = "no index given: pass --index DIR or set ATRI_INDEX_DIR"


BackendName = Literal["faiss", "milvus"]


class BackendSettings(Protocol):
    """What open_backend reads of the service's Settings."""

    @property
    def index_dir(self) -> Path | None: ...
    @property
    def backend(self) -> BackendName: ...
    @property
    def milvus_uri(self) -> str | None: ...
    @property
    def milvus_token(self) -> Any: ...  # a pydantic SecretStr or None
    @property
    def milvus_prefix(self) -> str: ...
    @property
    def milvus_depth(self) -> int: ...
    @property
    def request_timeout_s(self) -> float: ...


def index_dir_of(settings: BackendSettings) -> Path:
    """The index directory, resolved; BackendSettingsError when none is given."""
    if settings.index_dir is None:
        raise BackendSettingsError(NO_INDEX)
    return settings.index_dir.resolve()


def open_backend(settings: BackendSettings) -> IndexBackend:
    """The FAISS store of `settings.index_dir`, or the Milvus collections under
    `settings.milvus_prefix` (seeded from that directory when there are none)."""
    index_dir = index_dir_of(settings)
    if settings.backend == "faiss":
        from atri.index.store import IndexStore

        # a change waits for another process's lock (a rebuild publishing) as long as a
        # request may wait for anything, then answers 503
        return IndexStore.open(index_dir, lock_timeout_s=settings.request_timeout_s)
    if settings.backend != "milvus":
        raise BackendSettingsError(f"unknown index backend {settings.backend!r}")
    if not settings.milvus_uri:
        raise BackendSettingsError(
            "ATRI_BACKEND=milvus needs ATRI_MILVUS_URI (a *.db file or a server)")
    from atri.index.milvus_sync import open_or_seed

    token = settings.milvus_token.get_secret_value() if settings.milvus_token else None
    return open_or_seed(settings.milvus_uri, settings.milvus_prefix, token=token,
                        depth=settings.milvus_depth, seed=index_dir)
