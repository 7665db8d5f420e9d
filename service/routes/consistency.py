"""Rank consistency of one query across languages (POST /consistency): exact ranks over
the whole index under each language's version of the query, and their spread."""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
from fastapi import APIRouter

from atri.service.deps import EngineDep
from atri.service.engine import Engine, RankTable
from atri.service.errors import InvalidInput
from atri.service.languages import resolve
from atri.service.routes.common import elapsed_ms, errors
from atri.service.schemas import (
    AtLeast,
    ClipRanks,
    ConsistencyRequest,
    ConsistencyResponse,
    Rank,
    RankedClip,
)

router = APIRouter(tags=["consistency"])


def rank_spread(ranks: Mapping[str, Rank]) -> tuple[float | None, float | None]:
    """Population variance and standard deviation of a clip's ranks over languages
    (MRV's per-instance terms, metrics.md); None when a rank is only a lower bound."""
    if any(isinstance(r, AtLeast) for r in ranks.values()):
        return None, None
    values = np.array([float(r) for r in ranks.values()])  # type: ignore[arg-type]
    return float(values.var()), float(values.std())


def clip_ranks(clip_id: str, ranks: Mapping[str, int], depth: int | None) -> ClipRanks:
    shown: dict[str, Rank] = {
        lang: AtLeast(at_least=depth) if depth is not None and r > depth else r
        for lang, r in ranks.items()
    }
    variance, std = rank_spread(shown)
    return ClipRanks(id=clip_id, ranks=shown, rank_variance=variance, rank_std=std)


def parallel_queries(request: ConsistencyRequest, engine: Engine) -> dict[str, str]:
    """language -> query text, from the request or from the clip's j-th captions."""
    if request.queries is not None:
        queries: dict[str, str] = {}
        for tag, text in request.queries.items():
            lang = resolve(tag)
            if lang in queries:
                raise InvalidInput(f"language {lang} is given twice", {"lang": lang})
            queries[lang] = text
        return queries
    assert request.clip_id is not None
    record = engine.record(request.clip_id)
    j = request.caption_index
    queries = {lang: texts[j] for lang, texts in record.captions.items() if j < len(texts)}
    if not queries:
        raise InvalidInput(
            f"clip {request.clip_id!r} has no caption with index {j}",
            {"id": request.clip_id, "caption_index": j, "n_captions": record.n_captions()},
        )
    return queries


def summarise(table: RankTable, target: str | None) -> dict:
    """The per-clip spreads over the union of the top-k lists (best mean rank first), their
    means, and the target's."""
    union = dict.fromkeys(clip_id for top in table.top.values() for clip_id, _ in top)
    clips = [clip_ranks(clip_id, table.ranks[clip_id], table.depth) for clip_id in union]
    clips.sort(key=lambda c: (np.mean([_value(r) for r in c.ranks.values()]), c.id))
    variances = [c.rank_variance for c in clips if c.rank_variance is not None]
    stds = [c.rank_std for c in clips if c.rank_std is not None]
    return {
        "target": clip_ranks(target, table.ranks[target], table.depth) if target else None,
        "clips": clips,
        "mean_rank_variance": float(np.mean(variances)) if variances else None,
        "mean_rank_std": float(np.mean(stds)) if stds else None,
    }


def _value(rank: Rank) -> int:
    return rank.at_least if isinstance(rank, AtLeast) else rank


@router.post("/consistency", response_model=ConsistencyResponse, responses=errors(404, 422, 503))
def consistency(request: ConsistencyRequest, engine: EngineDep) -> ConsistencyResponse:
    """Give parallel `queries` (language -> text), or a `clip_id` whose stored captions
    (`caption_index`) serve as the parallel queries; then `target` reports that clip."""
    started = time.perf_counter()
    queries = parallel_queries(request, engine)
    with engine.heavy():
        vectors = {lang: engine.embed_texts([text], lang)[0] for lang, text in queries.items()}
        table = engine.rank_table(vectors, request.k, target=request.clip_id)
    return ConsistencyResponse(
        languages=table.languages,
        k=request.k,
        took_ms=elapsed_ms(started),
        queries=queries,
        per_language={
            lang: [
                RankedClip(rank=r, id=clip_id, score=round(score, 6))
                for r, (clip_id, score) in enumerate(top, start=1)
            ]
            for lang, top in table.top.items()
        },
        **summarise(table, request.clip_id),
    )
