"""Pieces several routes share: result shaping and the error responses for OpenAPI."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from fastapi import Response
from pydantic import BaseModel

from atri.service.engine import Engine
from atri.service.schemas import ErrorResponse, SearchHit


def audio_url(clip_id: str) -> str:
    return f"/audio/{clip_id}"


def json_response(model: BaseModel) -> Response:
    """`model` as FastAPI would send it (pydantic's JSON, by alias), built in the sync
    endpoint's own thread: a returned model would be validated again and serialised in a
    second thread-pool hop, which costs a hot route like /search measurably
    (docs/benchmarks.md). The route keeps `response_model` for the OpenAPI schema."""
    return Response(model.model_dump_json(by_alias=True), media_type="application/json")


def elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


def search_hits(
    engine: Engine, pairs: Sequence[tuple[str, float]], lang: str, first_rank: int = 1
) -> list[SearchHit]:
    """(id, score) pairs -> results with the clip's first caption in `lang` and its meta."""
    records = engine.records([clip_id for clip_id, _ in pairs])
    hits = []
    for rank, (clip_id, score) in enumerate(pairs, start=first_rank):
        record = records.get(clip_id)
        captions = record.captions.get(lang) if record else None
        hits.append(
            SearchHit(
                rank=rank,
                id=clip_id,
                score=round(float(score), 6),
                audio_url=audio_url(clip_id),
                caption=captions[0] if captions else None,
                meta=dict(record.meta) if record else {},
            )
        )
    return hits


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries: these statuses answer with the uniform error body."""
    return {status: {"model": ErrorResponse} for status in statuses}
