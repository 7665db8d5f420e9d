"""The loaded model and index behind the routes: text queries encoded on every core and
batched under load (service/encoding.py), audio embedding alone on the model, a bound
on concurrent heavy requests, admin changes one at a time (the index store takes
concurrent readers itself), and index errors translated into service errors. Routes
receive an `Engine` as a dependency.

A rebuild or compaction by another process publishes a new version of the index
directory (docs/index.md); `refresh` switches to it without a restart: searches already
running finish on the store they started with, admin changes run on the new one.

Waiting for a heavy slot is bounded in time (`wait_s`) and in number (`max_waiting`):
every waiter holds a worker thread of the server's pool (40 in anyio), so unbounded
waiters starve every other route, /health included (docs/reliability.md)."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np
import torch

from atri.index.backend import IndexBackend, rank_depth
from atri.index.errors import ClipExists, IndexBusy, IndexChanged, IndexStoreError, UnknownClip
from atri.index.version import recall_warnings
from atri.service.encoding import QueryEncoder, WaitBound
from atri.service.errors import (
    Busy,
    ClipAlreadyExists,
    ClipNotFound,
    IndexBusyError,
    IndexChangedError,
)
from atri.training.data.manifest import ClipRecord

log = logging.getLogger(__name__)
T = TypeVar("T")

QUERY_CACHE = 1024  # text embeddings kept, so paging through results re-embeds nothing


class Model(Protocol):
    """What the service needs of `atri.training.encoders.model.RetrievalModel`."""

    sample_rate: int

    def embed_audio(self, waves: list[torch.Tensor]) -> torch.Tensor: ...
    def embed_text(self, texts: list[str], lang: str) -> torch.Tensor: ...
    def identity(self) -> dict[str, str]: ...


@dataclass(frozen=True)
class RankTable:
    """One exact pass of Q parallel queries over the whole index."""

    languages: list[str]
    top: dict[str, list[tuple[str, float]]]  # per language: top-k (id, score)
    ranks: dict[str, dict[str, int]]  # clip id -> language -> rank (1 + # strictly higher)
    depth: int | None = None  # set when ranks beyond `depth` are only lower bounds


class Engine:
    """Model + index, shared by all request threads."""

    def __init__(
        self,
        model: Model,
        store: IndexBackend,
        *,
        name: str,
        audio_dirs: Sequence[Path],
        upload_dir: Path,
        max_heavy: int,
        wait_s: float,
        max_waiting: int | None = None,
        encode_workers: int = 1,
        max_batch: int = 32,
    ) -> None:
        """`max_waiting`: requests that may wait for a heavy slot or the encoder at once
        (None: any); `encode_workers`: text encoder calls at once (1 unless the encoder
        takes concurrent calls); `max_batch`: texts per encoder call."""
        self.model = model
        self.store = store
        self.name = name
        self.audio_dirs = [Path(d).resolve() for d in audio_dirs]
        self.upload_dir = upload_dir
        self.wait_s = wait_s
        self.max_waiting = max_waiting
        self._bound = WaitBound(max_waiting)
        self.encoder = QueryEncoder(
            self._embed_text,
            workers=encode_workers,
            bound=self._bound,
            wait_s=wait_s,
            max_batch=max_batch,
        )
        self._heavy = threading.BoundedSemaphore(max_heavy)
        self._changes = threading.Lock()
        self._cache: OrderedDict[tuple[str, str], np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._reopen_lock = threading.Lock()
        self.stale: str | None = None  # why a newer version on disk is not served
        self._refused: int | None = None  # that version, checked again only when forced

    # --- limits ----------------------------------------------------------------------------

    @property
    def waiting(self) -> int:
        """Requests waiting now for a heavy slot or for the encoder."""
        return self._bound.count

    @contextmanager
    def heavy(self) -> Iterator[None]:
        """A slot for a heavy request (audio embedding, an exact pass). Busy at once when
        `max_waiting` requests already wait, else Busy after `wait_s`."""
        self._acquire(self._heavy)
        try:
            yield
        finally:
            self._heavy.release()

    def _acquire(self, lock: threading.BoundedSemaphore) -> None:
        """Take `lock`; waiting for it counts against `max_waiting` (heavy slots and the
        encoder share one count: both hold a server worker thread while they wait)."""
        if lock.acquire(blocking=False):
            return
        with self._bound.waiting():
            acquired = lock.acquire(timeout=self.wait_s)
        if not acquired:
            raise Busy(self.wait_s)

    @contextmanager
    def changes(self) -> Iterator[None]:
        """Admin changes one at a time: check, write audio, add (or delete) as one step,
        on the newest published version."""
        if not self._changes.acquire(timeout=self.wait_s):
            raise Busy(self.wait_s)
        try:
            self.refresh()
            yield
        finally:
            self._changes.release()

    def _embed_text(self, texts: list[str], lang: str) -> np.ndarray:
        """(N, E) float32; called by the encoder's workers, several at once."""
        with torch.inference_mode():
            return self.model.embed_text(texts, lang).float().cpu().numpy()

    # --- embedding -------------------------------------------------------------------------

    @property
    def sample_rate(self) -> int:
        return int(self.model.sample_rate)

    def embed_texts(self, texts: Sequence[str], lang: str) -> np.ndarray:
        """(N, E) float32; recent queries come from a small cache (paging re-embeds
        nothing). The cache is shared by all request threads, hence its lock."""
        with self._cache_lock:
            found = {t: self._cache[(lang, t)] for t in texts if (lang, t) in self._cache}
            for text in found:
                self._cache.move_to_end((lang, text))
        missing = [t for t in dict.fromkeys(texts) if t not in found]
        if missing:
            vecs = self.encoder.embed(missing, lang)  # (M, E)
            computed = dict(zip(missing, vecs, strict=True))
            found.update(computed)
            with self._cache_lock:
                for text, vec in computed.items():
                    self._cache[(lang, text)] = vec
                while len(self._cache) > QUERY_CACHE:
                    self._cache.popitem(last=False)
        return np.stack([found[t] for t in texts]).astype(np.float32)  # (N, E)

    def embed_audio(self, wave: np.ndarray) -> np.ndarray:
        """(E,) float32 of one mono clip at `sample_rate`."""
        with self.encoder.exclusive(), torch.inference_mode():
            vec = self.model.embed_audio([torch.from_numpy(wave)])  # (1, E)
        return vec[0].float().cpu().numpy()

    # --- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.store)

    @property
    def captions_indexed(self) -> int:
        return int(self.store.captions_indexed)

    @property
    def vocabulary(self) -> dict[str, Any] | None:
        """The label vocabulary the index was built with (meta.json, index/vocabulary.py),
        None without one."""
        found = self.store.meta.get("vocabulary")
        return dict(found) if found else None

    @property
    def warnings(self) -> list[str]:
        """Known weaknesses of what is served: an index tuned short of its recall target
        (from the index's meta.json; a compaction's new version brings its own), and a
        newer version that is not served (`stale`)."""
        return recall_warnings(self.store.meta) + ([self.stale] if self.stale else [])

    def record(self, clip_id: str) -> ClipRecord:
        record = self.store.record(clip_id)
        if record is None:
            raise ClipNotFound(clip_id)
        return record

    def records(self, clip_ids: Sequence[str]) -> dict[str, ClipRecord]:
        found = {clip_id: self.store.record(clip_id) for clip_id in clip_ids}
        return {clip_id: r for clip_id, r in found.items() if r is not None}

    def search(self, query: np.ndarray, k: int, offset: int = 0) -> list[tuple[str, float]]:
        return self.store.search(query[None], k, offset)[0]

    def similar(self, clip_id: str, k: int) -> list[tuple[str, float]]:
        """The k clips nearest to an indexed clip, the clip itself left out."""
        vec = self.store.vector(clip_id)
        if vec is None:
            raise ClipNotFound(clip_id)
        hits = self.store.search(vec[None], k + 1)[0]
        return [(i, s) for i, s in hits if i != clip_id][:k]

    def search_captions(
        self, query: np.ndarray, lang: str, k: int
    ) -> list[tuple[str, float, list[str]]]:
        return self.store.search_captions(query[None], lang, k)[0]

    def rank_table(
        self, queries: Mapping[str, np.ndarray], k: int, target: str | None = None
    ) -> RankTable:
        """Exact ranks over the whole index of every clip in the union of the per-language
        top-k lists (and of `target`), under each language's query, from one exact pass
        over the stored vectors: r = 1 + the number of clips scoring strictly higher."""
        languages = list(queries)
        matrix = np.stack([queries[lang] for lang in languages])  # (Q, E)
        exact = self.store.ranks_and_topk(matrix, k)
        top = dict(zip(languages, exact.topk, strict=True))
        wanted = dict.fromkeys(clip_id for hits in exact.topk for clip_id, _ in hits)
        if target is not None:
            if target not in exact.column:
                raise ClipNotFound(target)
            wanted[target] = None
        ranks = {
            clip_id: {lang: exact.rank(q, clip_id) for q, lang in enumerate(languages)}
            for clip_id in wanted
        }
        return RankTable(languages, top, ranks, depth=rank_depth(exact))

    # --- versions --------------------------------------------------------------------------

    @property
    def version(self) -> int | None:
        """The index version served (None for a backend without versions)."""
        return getattr(self.store, "version", None)

    def refresh(self, force: bool = False) -> bool:
        """Serve the version CURRENT names if another process published a newer one
        (`force`: reopen even the same version, whose log another process wrote);
        whether it switched. A version built with another model is not served (its
        vectors would not match this model's queries): `stale` says so, admin changes
        answer 503 and searches stay on the old version until a restart."""
        on_disk = getattr(self.store, "current_on_disk", None)
        if on_disk is None:
            return False
        with self._reopen_lock:
            store = self.store
            current = on_disk()
            if current is None or (current in (self.version, self._refused) and not force):
                return False
            try:
                new = store.reopen()  # type: ignore[attr-defined]
            except IndexStoreError as exc:
                log.error("index version %s cannot be opened: %s", current, exc)
                self.stale = f"index version {current} was published but cannot be opened"
                self._refused = current
                return False
            changed = model_changes(store.meta, new.meta)
            if changed:
                new.close()
                self.stale = (
                    f"the index was rebuilt (version {current}) with another model "
                    f"({'; '.join(changed)}); restart the service to serve it"
                )
                log.error("not serving index version %s: %s", current, self.stale)
                self._refused = current  # not reopened every poll
                return False
            self.store, self.stale, self._refused = new, None, None
        log.info("serving index version %s (%d clips), published by another process",
                 current, len(new))  # fmt: skip
        return True

    # --- changes ---------------------------------------------------------------------------

    def _change(self, change: Callable[[IndexBackend], T]) -> T:
        """Run an admin change on the current store; when another process published a
        new version meanwhile, switch to it and run the change once more there."""
        for attempt in range(2):
            try:
                return change(self.store)
            except IndexBusy as exc:
                raise IndexBusyError(
                    "another process (a rebuild or a compaction) is publishing a new index "
                    "version; retry shortly"
                ) from exc
            except IndexChanged as exc:
                if attempt == 0 and self.refresh(force=True):
                    continue
                raise IndexChangedError(
                    self.stale
                    or "the index was changed by another process and the service cannot "
                    "switch to it; retry, or restart the service"
                ) from exc
        raise AssertionError("unreachable")

    def add_clip(
        self, record: ClipRecord, audio_vec: np.ndarray, caption_vecs: dict[str, np.ndarray]
    ) -> None:
        """Durable once it returns (the store fsyncs its log)."""
        try:
            self._change(lambda store: store.add_clip(record, audio_vec, caption_vecs))
        except ClipExists as exc:
            raise ClipAlreadyExists(record.id) from exc

    def delete_clip(self, clip_id: str) -> ClipRecord:
        def delete(store: IndexBackend) -> ClipRecord:
            record = store.record(clip_id)
            if record is None:
                raise ClipNotFound(clip_id)
            try:
                store.delete_clip(clip_id)
            except UnknownClip as exc:
                raise ClipNotFound(clip_id) from exc
            return record

        return self._change(delete)


def model_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between the models two versions' meta.json name: the identity
    (backbone weights, text encoder) and the checkpoint's weights hash (the heads)."""
    before, after = old.get("model") or {}, new.get("model") or {}
    changes = [
        f"{key}: {before.get(key)!r} -> {after.get(key)!r}"
        for key in sorted(set(before) | set(after))
        if before.get(key) != after.get(key)
    ]

    def weights(meta: Mapping[str, Any]) -> Any:
        entry = meta.get("checkpoint")
        return (
            ((entry or {}).get("info") or {}).get("weights_sha256")
            if isinstance(entry, dict)
            else None
        )

    if weights(old) and weights(new) and weights(old) != weights(new):
        changes.append("checkpoint weights_sha256 differs")
    return changes
