"""Compaction: a version plus its live changes (tombstones removed, added clips and
captions appended) written as a new, complete version. Surviving base clips keep their
order and come first, added clips follow, so exact ranks and ties are unchanged. The
vectors are copied, never re-embedded; the FAISS indices are rebuilt and re-tuned (the
kind re-chosen by size unless the index was built with an explicit `--factory`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from atri.index.live import LangDelta, LiveState
from atri.index.version import CHUNK, CaptionSource, Overlay, Version, write_version
from atri.training.data.manifest import ClipRecord

# meta.json fields a new version inherits (the vocabulary's labels are carried as rows)
CARRIED = ("model", "checkpoint", "source", "vocabulary")


def _masked_rows(vectors: np.ndarray, keep: np.ndarray, extra: np.ndarray) -> Iterator[np.ndarray]:
    """Chunks of vectors[keep] (float32), then `extra`."""
    for start in range(0, len(vectors), CHUNK):
        mask = keep[start : start + CHUNK]
        if mask.any():
            yield np.asarray(vectors[start : start + CHUNK][mask], dtype=np.float32)
    if len(extra):
        yield extra


def surviving(base: Version, state: LiveState) -> np.ndarray:
    """(N,) bool: which of the base version's clips `state` has not deleted."""
    keep = np.ones(len(base.ids), dtype=bool)
    for clip_id in state.tombstones:
        keep[base.position[clip_id]] = False
    return keep


def clip_records(base: Version, state: LiveState) -> Iterator[ClipRecord]:
    """The clips of base + state in the compacted order: surviving base clips, then
    added ones."""
    for record in base.iter_records():
        if record.id not in state.tombstones:
            yield record
    for clip_id in state.ids:
        yield state.records[clip_id]


def clip_vectors(base: Version, state: LiveState) -> Iterator[np.ndarray]:
    """Chunks of the vectors of `clip_records`, in its order (float32)."""
    return _masked_rows(base.vectors, surviving(base, state), state.matrix)


def caption_source(base: Version, state: LiveState, lang: str) -> CaptionSource:
    """The captions of base + state in one language: surviving base rows with their
    live clip ids, then added texts, each with its vector."""
    ld: LangDelta = state.lang(lang)
    texts: list[str] = []
    clip_ids: list[list[str]] = []
    labels: set[str] = set()
    index = base.captions.get(lang)
    keep = np.zeros(len(index) if index is not None else 0, dtype=bool)
    if index is not None:
        for row, obj in enumerate(index.table):
            if row in ld.dead_rows:
                continue
            clips = [c for c in obj["clip_ids"] if c not in state.tombstones]
            clips += ld.base_extra.get(row, ())
            keep[row] = True
            texts.append(obj["text"])
            clip_ids.append(clips)
            if obj.get("vocabulary"):
                labels.add(obj["text"])
    texts += ld.texts
    clip_ids += [list(c) for c in ld.clip_ids]
    vectors = index.vectors if index is not None else np.zeros((0, state.dim), np.float16)
    return CaptionSource(texts, clip_ids, _masked_rows(vectors, keep, ld.vectors), labels)


def overlay_after(old: Overlay, state: LiveState) -> Overlay:
    """The overlay of base + state, for a base whose overlay is `old`: uploads stay
    uploads until deleted, and a deleted source clip stays deleted (unless added again,
    which makes it an upload)."""
    added = [i for i in old.added if i not in state.tombstones] + list(state.ids)
    deleted = set(old.deleted) | {
        t for t in state.tombstones if t not in old.added and t not in state.records
    }
    return Overlay(tuple(added), frozenset(deleted))


def write_compacted(
    out: Path,
    base: Version,
    state: LiveState,
    meta: dict[str, Any] | None = None,
    overlay: Overlay | None = None,
) -> dict[str, Any]:
    """Write base + state into the staging folder `out`; returns the new meta.json.
    `meta`: what to record of the new version's origin (default: `parent_version`);
    `overlay`: what it holds beyond its source (default: `overlay_after`)."""
    keep = surviving(base, state)
    ids = [i for i, alive in zip(base.ids, keep, strict=True) if alive] + list(state.ids)
    langs = sorted(set(base.captions) | set(state.captions))
    origin = meta if meta is not None else {"parent_version": base.number}
    inherited = {key: base.meta[key] for key in CARRIED if key in base.meta}
    (overlay if overlay is not None else overlay_after(base.overlay, state)).write(out)
    return write_version(
        out,
        dim=base.dim,
        ids=ids,
        records=clip_records(base, state),
        vectors=_masked_rows(base.vectors, keep, state.matrix),
        captions={lang: caption_source(base, state, lang) for lang in langs},
        factory=None if base.meta.get("factory_auto", True) else base.meta["factory"],
        meta={**inherited, **origin},
    )
