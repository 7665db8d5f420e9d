"""The index backend: what the service reads and changes, whichever engine holds the
vectors (docs/scaling.md). `IndexStore` (FAISS, one machine, the default) satisfies it as
it is; `atri.index.milvus.MilvusStore` (a Milvus server or milvus-lite) is the other.

Ranks: `ranks_and_topk` answers the rank of a clip, r = 1 + the number of clips scoring
strictly higher. FAISS makes one exact pass over every stored vector (`ExactRanks`,
exhaustive); a backend that can only look `depth` results deep per query returns
`DepthRanks`, whose ranks beyond `depth` are the lower bound `depth + 1` (the service
shows them as `{"at_least": depth}`, api.md)."""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from atri.index.errors import IndexMismatch
from atri.training.data.manifest import ID_PATTERN, ClipRecord

Hit = tuple[str, float]  # (clip id, score)
CaptionHit = tuple[str, float, list[str]]  # (caption, score, clip ids)


class Ranks(Protocol):
    """Ranks of clips under Q queries from one pass, and each query's top k."""

    @property
    def topk(self) -> list[list[Hit]]: ...
    @property
    def column(self) -> Container[str]:
        """The clips `rank` answers for (every live clip at the time of the pass)."""
        ...

    def rank(self, query: int, clip_id: str) -> int: ...


class IndexBackend(Protocol):
    """What the service needs of an index (`IndexStore` is the reference)."""

    @property
    def meta(self) -> dict[str, Any]: ...
    @property
    def identity(self) -> dict[str, str]: ...
    @property
    def dim(self) -> int: ...
    @property
    def languages(self) -> list[str]: ...
    @property
    def captions_indexed(self) -> int: ...
    def __len__(self) -> int: ...
    def ids(self) -> list[str]: ...
    def record(self, clip_id: str) -> ClipRecord | None: ...
    def vector(self, clip_id: str) -> np.ndarray | None: ...
    def search(self, queries: np.ndarray, k: int, offset: int = 0) -> list[list[Hit]]: ...
    def search_captions(self, queries: np.ndarray, lang: str, k: int) -> list[list[CaptionHit]]: ...
    def ranks_and_topk(self, queries: np.ndarray, k: int) -> Ranks: ...
    def add_clip(
        self,
        record: ClipRecord,
        audio_vec: np.ndarray,
        caption_vecs: dict[str, np.ndarray] | None = None,
    ) -> None: ...
    def delete_clip(self, clip_id: str) -> None: ...
    def close(self) -> None: ...


def rank_depth(ranks: Ranks) -> int | None:
    """The depth beyond which `ranks` holds only lower bounds; None when exhaustive."""
    return ranks.depth if isinstance(ranks, DepthRanks) else None


@dataclass
class DepthRanks:
    """Ranks from the `depth` best results of each query. A clip among them has its
    exact rank, counted in that list. A clip outside it scores at most the list's last
    score: if equally, its rank is still exact; if lower, it is given as `depth + 1`, a
    lower bound. A list shorter than `depth` holds every clip: all its ranks are exact."""

    depth: int
    queries: np.ndarray  # (Q, E) float32
    hits: list[list[Hit]]  # per query its `depth` best, best first
    k: int
    vector: Callable[[str], np.ndarray | None]  # a live clip's stored vector, else None
    _scores: list[dict[str, float]] = field(init=False, repr=False)
    _ascending: list[np.ndarray] = field(init=False, repr=False)
    _fetched: dict[str, np.ndarray | None] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._scores = [dict(hits) for hits in self.hits]
        self._ascending = [np.sort(np.array([s for _, s in hits])) for hits in self.hits]

    @property
    def topk(self) -> list[list[Hit]]:
        return [hits[: self.k] for hits in self.hits]

    @property
    def column(self) -> Container[str]:
        return self

    def __contains__(self, clip_id: object) -> bool:
        """In a list, or live in the backend."""
        if not isinstance(clip_id, str):
            return False
        return any(clip_id in s for s in self._scores) or self._vector(clip_id) is not None

    def rank(self, query: int, clip_id: str) -> int:
        score = self._scores[query].get(clip_id)
        if score is None:
            vec = self._vector(clip_id)
            if vec is None:
                raise KeyError(clip_id)
            score = float(self.queries[query] @ vec)
        ascending = self._ascending[query]
        full = len(ascending) >= self.depth
        if full and clip_id not in self._scores[query] and score < ascending[0]:
            return self.depth + 1
        return 1 + len(ascending) - int(np.searchsorted(ascending, score, side="right"))

    def _vector(self, clip_id: str) -> np.ndarray | None:
        if clip_id not in self._fetched:
            self._fetched[clip_id] = self.vector(clip_id)
        return self._fetched[clip_id]


def check_paging(k: int, offset: int) -> None:
    if k < 1 or offset < 0:
        raise ValueError(f"k must be >= 1 and offset >= 0, got k={k}, offset={offset}")


def as_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    """(Q, E) float32 contiguous; one (E,) query becomes (1, E)."""
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None]
    if q.ndim != 2 or q.shape[1] != dim:
        raise IndexMismatch(f"queries of shape {q.shape}, index dimension {dim}")
    return np.ascontiguousarray(q)


def stored_vectors(value: np.ndarray, rows: int, dim: int, name: str) -> np.ndarray:
    """(rows, E) float32, L2-normalised and rounded to float16 as IndexStore stores them."""
    v = np.asarray(value, dtype=np.float32)
    if v.ndim == 1:
        v = v[None]
    if v.shape != (rows, dim):
        raise IndexMismatch(f"{name}: shape {np.shape(value)}, expected ({rows}, {dim})")
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    if not np.all(np.isfinite(v)) or np.any(norms == 0):
        raise ValueError(f"{name}: vectors must be finite and non-zero")
    return (v / norms).astype(np.float16).astype(np.float32)


def new_clip_vectors(
    record: ClipRecord,
    audio_vec: np.ndarray,
    caption_vecs: dict[str, np.ndarray] | None,
    dim: int,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The checked arguments of `add_clip`, as both backends store them: the audio vector
    (E,) and per language the caption vectors (C, E), via stored_vectors. Raises
    ValueError (id, languages) or IndexMismatch (shapes)."""
    if not ID_PATTERN.fullmatch(record.id):
        raise ValueError(f"clip id {record.id!r} must match {ID_PATTERN.pattern}")
    caption_vecs = caption_vecs or {}
    if set(caption_vecs) != set(record.captions):
        raise ValueError(
            f"caption vectors for {sorted(caption_vecs)}, captions in {sorted(record.captions)}"
        )
    vector = stored_vectors(audio_vec, 1, dim, "audio_vec")[0]
    caps = {
        lang: stored_vectors(caption_vecs[lang], len(texts), dim, f"caption_vecs[{lang!r}]")
        for lang, texts in record.captions.items()
    }
    return vector, caps


def distinct(texts: Sequence[str]) -> list[tuple[int, str]]:
    """(first position, text) of each distinct string, in order."""
    seen: dict[str, int] = {}
    for j, text in enumerate(texts):
        seen.setdefault(text, j)
    return [(j, text) for text, j in seen.items()]
