"""`IndexStore`: what the service reads and changes (docs/index.md).

A store serves the version CURRENT names plus the replayed live log. Searches may run
from many threads at once: each reads one immutable snapshot (version + delta). Changes
(`add_clip`, `delete_clip`, `compact`) are serialised by a lock in this process and an
flock across processes, and are durable in live.log before they return.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from atri.index import faiss_util, layout, live
from atri.index.backend import CaptionHit, Hit, as_queries, check_paging, new_clip_vectors
from atri.index.compact import write_compacted
from atri.index.errors import IndexChanged, IndexCorrupt
from atri.index.version import Version, recall_warnings, search_index
from atri.training.data.manifest import ClipRecord

log = logging.getLogger(__name__)

SCORE_CHUNK = 65_536  # base vectors per step of an exact pass


@dataclass(frozen=True)
class Snapshot:
    """What one search sees: a version and the changes on top of it."""

    base: Version
    live: live.LiveState

    @cached_property
    def base_live(self) -> np.ndarray:
        """(N,) bool: base positions not deleted."""
        mask = np.ones(len(self.base.ids), dtype=bool)
        for clip_id in self.live.tombstones:
            mask[self.base.position[clip_id]] = False
        return mask

    @cached_property
    def ids(self) -> list[str]:
        """Live clip ids: the base's in order, then added ones (exact-score columns)."""
        kept = [i for i, alive in zip(self.base.ids, self.base_live, strict=True) if alive]
        return kept + list(self.live.ids)


@dataclass
class ExactRanks:
    """One exact pass over every live clip. ranks[q, j] = 1 + the number of clips that
    score strictly higher than clip ids[j] under query q (ties share a rank)."""

    ids: list[str]
    scores: np.ndarray  # (Q, N) float32
    ranks: np.ndarray  # (Q, N) int64
    topk: list[list[Hit]]

    @cached_property
    def column(self) -> dict[str, int]:
        return {clip_id: j for j, clip_id in enumerate(self.ids)}

    def rank(self, query: int, clip_id: str) -> int:
        return int(self.ranks[query, self.column[clip_id]])


class IndexStore:
    """See the module docstring; open with `IndexStore.open(root)`."""

    def __init__(
        self,
        root: Path,
        snapshot: Snapshot,
        log_: live.LiveLog,
        mmap: bool,
        lock_timeout_s: float | None = None,
    ) -> None:
        self.root, self.mmap, self.lock_timeout_s = root, mmap, lock_timeout_s
        self._snap = snapshot
        self._log = log_
        self._write_lock = threading.Lock()

    @classmethod
    def open(
        cls, root: str | Path, mmap: bool = False, lock_timeout_s: float | None = None
    ) -> IndexStore:
        """The current version, with live.log replayed. `mmap` maps the FAISS files
        instead of reading them (large indices). `lock_timeout_s`: how long a change waits
        for another process's lock (a rebuild publishing) before IndexBusy; None: no end."""
        faiss_util.configure()
        root = Path(root).resolve()
        number = layout.require_current(root)
        base = Version(layout.version_dir(root, number), number, mmap)
        log_path = root / layout.LIVE_LOG
        contents = live.read_log(log_path)
        state = live.LiveState(base.dim)
        if contents.base is not None and contents.base > number:
            raise IndexCorrupt(
                f"{log_path}: changes for version {contents.base}, but CURRENT is {number}"
            )
        if contents.base == number:
            state = live.replay(state, base, contents.entries, log_path)
        elif contents.entries:
            log.info("%s: stale log of version %s ignored", log_path, contents.base)
        log_ = live.LiveLog(log_path, number, base.dim, contents)
        store = cls(root, Snapshot(base, state), log_, mmap, lock_timeout_s)
        log.info(
            "index %s: version %d, %d clips (%d added, %d deleted since)",
            root,
            number,
            len(store),
            len(state.ids),
            len(state.tombstones),
        )
        for warning in recall_warnings(base.meta):
            log.warning("index %s: %s", root, warning)
        return store

    # --- reading ---------------------------------------------------------------------

    @property
    def version(self) -> int:
        return self._snap.base.number

    @property
    def meta(self) -> dict[str, Any]:
        return self._snap.base.meta

    def current_on_disk(self) -> int | None:
        """The version CURRENT names now: another than `version` once a rebuild or a
        compaction by another process published one (then `reopen`)."""
        return layout.current_version(self.root)

    def reopen(self) -> IndexStore:
        """A new store over what the directory holds now (this one keeps serving its
        version to whoever still reads it)."""
        return IndexStore.open(self.root, self.mmap, self.lock_timeout_s)

    @property
    def identity(self) -> dict[str, str]:
        """The model the vectors came from (RetrievalModel.identity() at build time)."""
        return dict(self.meta["model"])

    @property
    def dim(self) -> int:
        return self._snap.base.dim

    @property
    def languages(self) -> list[str]:
        snap = self._snap
        return sorted(set(snap.base.captions) | set(snap.live.captions))

    def __len__(self) -> int:
        snap = self._snap
        return len(snap.base.ids) - len(snap.live.tombstones) + len(snap.live.ids)

    def __contains__(self, clip_id: object) -> bool:
        return isinstance(clip_id, str) and live.is_live(self._snap.live, self._snap.base, clip_id)

    @property
    def captions_indexed(self) -> int:
        """Distinct (language, caption) pairs served: captions with at least one live
        clip, and vocabulary labels (which need none)."""
        snap = self._snap
        total = 0
        for lang in set(snap.base.captions) | set(snap.live.captions):
            ld = snap.live.lang(lang)
            in_base = len(snap.base.captions[lang]) if lang in snap.base.captions else 0
            total += in_base - len(ld.dead_rows) + len(ld.texts)
        return total

    def ids(self) -> list[str]:
        return list(self._snap.ids)

    def record(self, clip_id: str) -> ClipRecord | None:
        """The clip's manifest record (audio path absolute), None if not live."""
        snap = self._snap
        if clip_id in snap.live.records:
            return snap.live.records[clip_id]
        if clip_id in snap.base.position and clip_id not in snap.live.tombstones:
            return snap.base.record(snap.base.position[clip_id])
        return None

    def vector(self, clip_id: str) -> np.ndarray | None:
        """(E,) float32 stored vector of a live clip, None if not live."""
        snap = self._snap
        if clip_id in snap.live.records:
            return snap.live.matrix[snap.live.ids.index(clip_id)].copy()
        if clip_id in snap.base.position and clip_id not in snap.live.tombstones:
            return np.asarray(snap.base.vectors[snap.base.position[clip_id]], dtype=np.float32)
        return None

    def search(self, queries: np.ndarray, k: int, offset: int = 0) -> list[list[Hit]]:
        """Per query (Q, E), live clips ranked offset+1 .. offset+k by inner product."""
        check_paging(k, offset)
        q = as_queries(queries, self.dim)
        snap = self._snap
        want = offset + k
        tomb = snap.live.tombstones
        # Over-fetch by the number of tombstones: enough live hits survive the filter.
        base = snap.base
        base_hits = search_index(base.index, base.vectors, base.rerank, q, want + len(tomb))
        delta = _top(q @ snap.live.matrix.T, want)  # (Q, D) scores -> top rows
        out = []
        for hits, extra in zip(base_hits, delta, strict=True):
            merged = [(snap.base.ids[i], s) for i, s in hits if snap.base.ids[i] not in tomb]
            merged += [(snap.live.ids[i], s) for i, s in extra]
            merged.sort(key=lambda hit: -hit[1])
            out.append(merged[offset:want])
        return out

    def search_captions(self, queries: np.ndarray, lang: str, k: int) -> list[list[CaptionHit]]:
        """Per query (Q, E), the k best distinct captions in `lang` with their live clip
        ids ([] per query when the index has no captions in `lang`). A vocabulary label
        no live clip carries comes with no clip id."""
        q = as_queries(queries, self.dim)
        snap = self._snap
        ld = snap.live.lang(lang)
        index = snap.base.captions.get(lang)
        base_hits = (
            search_index(index.index, index.vectors, index.rerank, q, k + len(ld.dead_rows))
            if index is not None
            else [[] for _ in range(len(q))]
        )
        delta = _top(q @ ld.vectors.T, k)
        out = []
        for hits, extra in zip(base_hits, delta, strict=True):
            merged: list[CaptionHit] = []
            for row, score in hits:
                if index is None or row in ld.dead_rows:  # without an index, hits are []
                    continue
                text, clips = index.entry(row)
                live_clips = [c for c in clips if c not in snap.live.tombstones]
                merged.append((text, score, live_clips + list(ld.base_extra.get(row, ()))))
            merged += [(ld.texts[i], s, list(ld.clip_ids[i])) for i, s in extra]
            merged.sort(key=lambda hit: -hit[1])
            out.append(merged[:k])
        return out

    def exact_scores(self, queries: np.ndarray) -> tuple[list[str], np.ndarray]:
        """(ids, (Q, N) scores) of every live clip, from the stored vectors (base
        float16 upcast, then added clips), streamed so the base may be memmapped."""
        q = as_queries(queries, self.dim)
        snap = self._snap
        vectors = snap.base.vectors
        base = np.empty((len(q), len(vectors)), dtype=np.float32)
        for start in range(0, len(vectors), SCORE_CHUNK):
            chunk = np.asarray(vectors[start : start + SCORE_CHUNK], dtype=np.float32)
            base[:, start : start + len(chunk)] = q @ chunk.T  # (Q, c)
        scores = np.concatenate([base[:, snap.base_live], q @ snap.live.matrix.T], axis=1)
        return snap.ids, scores

    def ranks_and_topk(self, queries: np.ndarray, k: int) -> ExactRanks:
        """One exact pass: every live clip's rank under each query, and the top k."""
        ids, scores = self.exact_scores(queries)
        n = scores.shape[1]
        ranks = np.empty(scores.shape, dtype=np.int64)
        topk: list[list[Hit]] = []
        for qi, row in enumerate(scores):
            order = np.argsort(-row, kind="stable")  # best first, ties in column order
            ascending = row[order][::-1]
            ranks[qi] = 1 + n - np.searchsorted(ascending, row, side="right")
            topk.append([(ids[j], float(row[j])) for j in order[:k]])
        return ExactRanks(ids, scores, ranks, topk)

    # --- changing --------------------------------------------------------------------

    def add_clip(
        self,
        record: ClipRecord,
        audio_vec: np.ndarray,
        caption_vecs: dict[str, np.ndarray] | None = None,
    ) -> None:
        """Add a clip (audio vector (E,), caption_vecs[lang] (C, E) parallel to
        record.captions[lang]); durable in live.log before returning. A relative audio
        path is taken relative to the index directory. Raises ClipExists, IndexMismatch,
        ValueError."""
        vector, caps = new_clip_vectors(record, audio_vec, caption_vecs, self.dim)
        audio = Path(record.audio)
        record = ClipRecord(
            record.id,
            str(audio if audio.is_absolute() else (self.root / audio).resolve()),
            {lang: list(texts) for lang, texts in record.captions.items()},
            dict(record.meta),
        )
        with self._changing() as snap:
            state = live.apply_add(snap.live, snap.base, record, vector, caps)
            self._log.append(live.add_change(record, vector, caps))
            self._snap = Snapshot(snap.base, state)

    def delete_clip(self, clip_id: str) -> None:
        """Remove a clip and its captions; durable before returning. Raises UnknownClip."""
        with self._changing() as snap:
            state = live.apply_delete(snap.live, snap.base, clip_id)
            self._log.append({"op": "delete", "id": clip_id})
            self._snap = Snapshot(snap.base, state)

    def compact(self, on_step: layout.StepHook | None = None) -> int:
        """Fold the live changes into a new version, publish it, and start an empty log;
        returns the version now served (unchanged when there was nothing to fold).
        `on_step` (tests) is called at each of layout.PUBLISH_STEPS."""
        with self._changing() as snap:
            if snap.live.empty():
                return snap.base.number
            staged = layout.staging_dir(self.root)
            try:
                write_compacted(staged, snap.base, snap.live)
            except BaseException:
                shutil.rmtree(staged, ignore_errors=True)
                raise
            number = layout.publish(self.root, staged, on_step=on_step)
            # A crash here leaves a log for the older base: stale, ignored at open.
            self._log.reset(number)
            if on_step is not None:
                on_step("log-replaced")
            base = Version(layout.version_dir(self.root, number), number, self.mmap)
            self._snap = Snapshot(base, live.LiveState(base.dim))
            return number

    # --- helpers ---------------------------------------------------------------------

    @contextmanager
    def _changing(self) -> Iterator[Snapshot]:
        """One change at a time: a lock in this process, an flock across processes, and a
        check that CURRENT still names this store's version (else another process
        rebuilt or compacted the index and this store must be reopened)."""
        with self._write_lock, layout.locked(self.root, self.lock_timeout_s):
            current = layout.current_version(self.root)
            if current != self.version:
                raise IndexChanged(
                    f"{self.root}: version {current} is current, this store serves "
                    f"{self.version}; reopen the index"
                )
            yield self._snap

    def close(self) -> None:
        self._snap.base.close()


def _top(scores: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
    """(Q, D) scores -> per query the best min(k, D) (column, score), best first."""
    if scores.shape[1] == 0 or k <= 0:
        return [[] for _ in range(len(scores))]
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return [
        [(int(j), float(row[j])) for j in cols] for row, cols in zip(scores, order, strict=True)
    ]
