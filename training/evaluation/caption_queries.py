"""The text-to-audio queries of one language (shared spec metrics.md).

Within one language a caption string may stand on several clips (real recordings of one
concept all captioned "a dog barks"). Such a string is ONE query whose relevant clips are
all the clips that carry it; scoring each (clip, caption) slot as its own query with only
its clip relevant would count a perfect model wrong on every other carrier. Without
caption strings every present slot is its own query, which is also what the rule gives
when no string repeats.

A query is embedded by its first present slot in row-major order (identical strings have
identical embeddings up to batching noise). Most queries have one relevant clip and a few
may have hundreds, so relevance is stored flat (CSR): query q's relevant clips are
`clips[indptr[q]:indptr[q + 1]]`, ascending; `pair[i, j]` points at clip i's own entry
under the query of slot (i, j), which is where the slot's rank (for MRV) is read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Queries:
    first: np.ndarray  # (Q,) int64, flat slot i * C + j whose embedding is query q
    indptr: np.ndarray  # (Q + 1,) int64
    clips: np.ndarray  # (P,) int64, relevant clips, query-major
    pair: np.ndarray  # (N, C) int64, index into `clips` of slot (i, j)'s clip; -1 if absent

    def __len__(self) -> int:
        return len(self.first)

    @property
    def n_relevant(self) -> np.ndarray:
        """(Q,) number of relevant clips of each query."""
        return np.diff(self.indptr)

    def relevance(self, n_clips: int) -> np.ndarray:
        """(Q, n_clips) bool: query q's relevant clips, dense (for small galleries)."""
        out = np.zeros((len(self), n_clips), dtype=bool)
        out[np.repeat(np.arange(len(self)), self.n_relevant), self.clips] = True
        return out

    def n_multi_relevant(self) -> int:
        """How many queries have more than one relevant clip (metrics.md asks for it)."""
        return int((self.n_relevant > 1).sum())

    def blocks(self, budget: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(queries (b,), their pairs (b, r)) over all queries, grouped by their number r
        of relevant clips so that no block pads, with b * r <= budget (b >= 1)."""
        n_relevant = self.n_relevant
        for r in np.unique(n_relevant):
            members = np.flatnonzero(n_relevant == r)
            step = max(1, budget // int(r))
            for start in range(0, len(members), step):
                chunk = members[start : start + step]  # (b,)
                yield chunk, self.indptr[chunk][:, None] + np.arange(r)[None, :]  # (b, r)


def t2a_queries(present: np.ndarray, captions: Sequence[Sequence[str]] | None = None) -> Queries:
    """The queries of one language. present (N, C) bool; captions[i][j] the string of
    slot (i, j) (each present slot needs one), None = every slot its own query."""
    n, c = present.shape
    query_of: dict[str | tuple[int, int], int] = {}
    first: list[int] = []
    carriers: list[dict[int, None]] = []  # insertion-ordered sets of clips
    slot_query = np.full((n, c), -1, dtype=np.int64)
    for i, j in zip(*np.nonzero(present), strict=True):  # row-major
        i, j = int(i), int(j)
        key = (i, j) if captions is None else _caption(captions, i, j)
        q = query_of.get(key)
        if q is None:
            q = query_of[key] = len(first)
            first.append(i * c + j)
            carriers.append({})
        carriers[q][i] = None
        slot_query[i, j] = q
    members = [sorted(clips) for clips in carriers]
    indptr = np.zeros(len(members) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum([len(m) for m in members])
    at = {(q, clip): int(indptr[q]) + k for q, m in enumerate(members) for k, clip in enumerate(m)}
    pair = np.full((n, c), -1, dtype=np.int64)
    for i, j in zip(*np.nonzero(present), strict=True):
        pair[i, j] = at[int(slot_query[i, j]), int(i)]
    clips = np.array([clip for m in members for clip in m], dtype=np.int64)
    return Queries(np.array(first, dtype=np.int64), indptr, clips, pair)


def _caption(captions: Sequence[Sequence[str]], i: int, j: int) -> str:
    """The string of present slot (i, j); a missing one is a caller's bug worth naming."""
    if i >= len(captions) or j >= len(captions[i]):
        raise ValueError(f"caption slot ({i}, {j}) is present but has no caption string")
    return captions[i][j]
