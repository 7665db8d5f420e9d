"""The loaded model and index behind the routes: text queries encoded on every core and
batched under load (service/encoding.py), audio embedding alone on the model, a bound
on concurrent heavy requests, admin changes one at a time (the index store takes
concurrent readers itself), and index errors translated into service errors. Routes
receive an `Engine` as a dependency.

Waiting for a heavy slot is bounded in time (`wait_s`) and in number (`max_waiting`):
every waiter holds a worker thread of the server's pool (40 in anyio), so unbounded
waiters starve every other route, /health included (docs/reliability.md)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from atri.index.backend import IndexBackend, rank_depth
from atri.index.errors import ClipExists, UnknownClip
from atri.index.version import recall_warnings
from atri.service.encoding import QueryEncoder, WaitBound
from atri.service.errors import Busy, ClipAlreadyExists, ClipNotFound
from atri.training.manifest import ClipRecord

QUERY_CACHE = 1024  # text embeddings kept, so paging through results re-embeds nothing


class Model(Protocol):
    """What the service needs of `atri.training.model.RetrievalModel`."""

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
        """Admin changes one at a time: check, write audio, add (or delete) as one step."""
        if not self._changes.acquire(timeout=self.wait_s):
            raise Busy(self.wait_s)
        try:
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
        """Known weaknesses of what is served (an index tuned short of its recall target),
        from the index's meta.json: a compaction's new version brings its own."""
        return recall_warnings(self.store.meta)

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

    # --- changes ---------------------------------------------------------------------------

    def add_clip(
        self, record: ClipRecord, audio_vec: np.ndarray, caption_vecs: dict[str, np.ndarray]
    ) -> None:
        """Durable once it returns (the store fsyncs its log)."""
        try:
            self.store.add_clip(record, audio_vec, caption_vecs)
        except ClipExists as exc:
            raise ClipAlreadyExists(record.id) from exc

    def delete_clip(self, clip_id: str) -> ClipRecord:
        record = self.record(clip_id)
        try:
            self.store.delete_clip(clip_id)
        except UnknownClip as exc:
            raise ClipNotFound(clip_id) from exc
        return record
