"""Typed errors of the index. The service maps them to HTTP statuses in one handler
(UnknownClip -> 404, ClipExists -> 409); the others are server-side faults."""

from __future__ import annotations


class IndexStoreError(Exception):
    """Base class of every error raised by `atri.index`."""


class UnknownClip(IndexStoreError, LookupError):
    """No live clip has this id (never indexed, or deleted)."""

    def __init__(self, clip_id: str) -> None:
        super().__init__(f"unknown clip id {clip_id!r}")
        self.clip_id = clip_id


class ClipExists(IndexStoreError, ValueError):
    """A live clip already has this id."""

    def __init__(self, clip_id: str) -> None:
        super().__init__(f"clip id {clip_id!r} is already in the index")
        self.clip_id = clip_id


class IndexCorrupt(IndexStoreError):
    """The index directory or its live log is damaged; the message names the file."""


class IndexMismatch(IndexStoreError, ValueError):
    """Vectors or a model that do not fit the index (dimension, model identity), or an
    index directory changed underneath an open store (rebuilt by another process)."""


class IndexChanged(IndexMismatch):
    """Another process published a new version (a rebuild, a compaction) or wrote the
    live log since this store opened the index: reopen it before changing anything."""


class IndexBusy(IndexStoreError):
    """Another process holds the index lock (publishing a version) beyond the wait
    allowed."""


class UnmergedChanges(IndexStoreError):
    """A rebuild cannot carry the live changes of the version it replaces (the message
    says which and how to proceed)."""


class IndexNotFound(IndexStoreError, FileNotFoundError):
    """No published index version at this path."""


class BackendSettingsError(IndexStoreError, ValueError):
    """Settings that name no usable index backend (no index directory, Milvus without
    a URI); the message says which setting to give."""
