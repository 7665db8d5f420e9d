"""Carrying the live changes of a served version into the version a rebuild replaces it
with (docs/index.md, "Rebuilding a served index").

A service acknowledges a change once it is in `live.log` (api.md: durable once
acknowledged), so `atri index build` into a served directory must not drop the clips
added and deleted through it. A version records what it holds beyond its source (its
`Overlay`: clips added through live changes, source clips deleted through them), so
that uploads survive every later rebuild and compaction, not only the next one. Right
before publishing, under the index lock (no change can slip in between), the replaced
version's overlay with its log applied is carried into the rebuilt version and the
result is written as one complete version, the way a compaction writes one. A crash at
any later step of publishing then leaves a stale log whose changes are all in the new
version, which `IndexStore.open` ignores.

By clip id:
- added through the service (since the replaced version, or carried into it), and not
  in the new source: added, with its stored vectors, or re-embedded from its stored
  audio and captions when the new version's model differs;
- added through the service, and also in the new source: the source's clip serves (no
  duplicate) and it is a source clip from then on;
- a source clip deleted through the service (and not added again): deleted from the new
  version if its source holds it.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from atri.index import layout, live
from atri.index.compact import overlay_after, write_compacted
from atri.index.errors import IndexCorrupt, UnmergedChanges
from atri.index.version import Overlay, Version
from atri.training.data.manifest import ClipRecord

log = logging.getLogger(__name__)

# (record) -> (audio vector (E,), caption vectors {lang: (C, E)}) with the new model
Embed = Callable[[ClipRecord], tuple[np.ndarray, dict[str, np.ndarray]]]
DROP_FLAG = "--drop-live-changes"


@dataclass
class Carried:
    """What a rebuild carried from the version it replaced (meta.json "carried")."""

    from_version: int
    added: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    in_source: list[str] = field(default_factory=list)  # added, but the source holds them
    reembedded: bool = False

    def meta(self) -> dict[str, Any]:
        return {
            "from_version": self.from_version,
            "added": len(self.added),
            "deleted": len(self.deleted),
            "already_in_source": len(self.in_source),
            "reembedded": self.reembedded,
        }


def pending_changes(root: Path) -> int:
    """Live changes logged against the current version (0 when none or stale)."""
    contents = live.read_log(root / layout.LIVE_LOG)
    current = layout.current_version(root)
    return len(contents.entries) if current is not None and contents.base == current else 0


def merge_live_changes(
    root: Path, staged: Path, embed: Embed | None
) -> tuple[Path, Carried | None]:
    """Call under `layout.locked(root)`. `staged` holds the rebuilt version; returns the
    folder to publish (`staged` itself when nothing needs carrying, else a new staging
    folder holding the rebuilt version plus the carried changes, `staged` removed) and
    what was carried. `embed` re-embeds a carried clip when the models differ.
    Raises UnmergedChanges when a change cannot be carried, naming it."""
    current = layout.current_version(root)
    if current is None:
        return staged, None
    log_path = root / layout.LIVE_LOG
    contents = live.read_log(log_path)
    old = Version(layout.version_dir(root, current), current)
    try:
        state = live.LiveState(old.dim)
        if contents.base == current:
            state = live.replay(state, old, contents.entries, log_path)
        served = overlay_after(old.overlay, state)  # what the service holds beyond a source
        if served.empty():
            return staged, None
        logged = {e["record"]["id"]: e for e in contents.entries if e["op"] == "add"}
        new = Version(staged, 0)
        try:
            changed = new.meta.get("model") != old.meta.get("model") or new.dim != old.dim
            carried = Carried(current, reembedded=changed)
            delta = _translate(served, old, state, logged, new, carried, embed)
            if delta.empty():
                return staged, carried
            merged = layout.staging_dir(root)
            overlay = Overlay(tuple(carried.added), frozenset(carried.deleted))
            try:
                write_compacted(merged, new, delta, {"carried": carried.meta()}, overlay)
            except BaseException:
                shutil.rmtree(merged, ignore_errors=True)
                raise
        finally:
            new.close()
    finally:
        old.close()
    shutil.rmtree(staged, ignore_errors=True)
    return merged, carried


def _translate(
    served: Overlay,
    old: Version,
    state: live.LiveState,
    logged: dict[str, dict[str, Any]],
    new: Version,
    carried: Carried,
    embed: Embed | None,
) -> live.LiveState:
    """What the service holds beyond its source (`served`: the old version's overlay
    with its live changes applied) as changes to the new version."""
    delta = live.LiveState(new.dim)
    for clip_id in sorted(served.deleted):
        if clip_id in new.position:
            delta = live.apply_delete(delta, new, clip_id)
            carried.deleted.append(clip_id)
    for clip_id in served.added:
        if clip_id in new.position:
            carried.in_source.append(clip_id)
            continue
        if carried.reembedded:
            record = state.records.get(clip_id) or old.record(old.position[clip_id])
            vector, captions = _reembed(record, embed)
        elif clip_id in state.records:  # added since the old version: in its log
            record, entry = state.records[clip_id], logged[clip_id]
            vector = live.unpack(entry["audio"], new.dim)[0]
            captions = {lang: live.unpack(v, new.dim) for lang, v in entry["captions"].items()}
        else:  # carried into the old version by an earlier rebuild, or compacted into it
            record, vector, captions = _stored(old, clip_id)
        captions = {lang: _unit16(v) for lang, v in captions.items()}
        delta = live.apply_add(delta, new, record, _unit16(vector[None])[0], captions)
        carried.added.append(clip_id)
    return delta


def _stored(version: Version, clip_id: str) -> tuple[ClipRecord, np.ndarray, dict[str, np.ndarray]]:
    """A clip's record, audio vector and caption vectors as a version stores them."""
    position = version.position[clip_id]
    record = version.record(position)
    captions = {}
    for lang, texts in record.captions.items():
        index, vectors = version.captions[lang], []
        for text in texts:
            row = index.row_of(text)
            if row is None:
                raise IndexCorrupt(f"{version.path}: caption {text!r} of {clip_id!r} not indexed")
            vectors.append(np.asarray(index.vectors[row], np.float32))
        captions[lang] = np.stack(vectors)  # (C, E)
    return record, np.asarray(version.vectors[position], np.float32), captions


def _reembed(record: ClipRecord, embed: Embed | None) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    if embed is None:
        raise UnmergedChanges(
            f"clip {record.id!r} was added to the served version, whose model differs from "
            f"the rebuild's, and cannot be re-embedded here; rebuild with {DROP_FLAG} to "
            "drop the live changes knowingly"
        )
    try:
        return embed(record)
    except (OSError, ValueError) as exc:  # AudioDecodeError is a ValueError
        raise UnmergedChanges(
            f"clip {record.id!r} was added to the served version with another model and "
            f"must be re-embedded, but its audio cannot be read ({exc}); restore "
            f"{Path(record.audio).name}, or rebuild with {DROP_FLAG} to drop the live "
            "changes knowingly"
        ) from exc


def _unit16(vectors: np.ndarray) -> np.ndarray:
    """(N, E) float32 L2-normalised and rounded to float16, as versions store vectors."""
    v = np.asarray(vectors, dtype=np.float32).reshape(len(vectors), -1)
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    return (v / np.where(norms == 0, 1, norms)).astype(np.float16).astype(np.float32)
