"""Text-to-audio search (GET and POST /search) and clips that sound alike
(GET /search/similar)."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Query, Response
from pydantic import ConfigDict

from atri.service.deps import EngineDep, SettingsDep
from atri.service.engine import Engine
from atri.service.languages import detect, resolve
from atri.service.routes.common import elapsed_ms, errors, json_response, search_hits
from atri.service.schemas import MAX_K, SearchRequest, SearchResponse, SimilarResponse
from atri.service.settings import Settings

router = APIRouter(tags=["search"])


class SearchQuery(SearchRequest):
    """GET /search's query parameters; unknown ones (cache busters) are ignored."""

    model_config = ConfigDict(extra="ignore")


def run_search(request: SearchRequest, engine: Engine, settings: Settings) -> SearchResponse:
    started = time.perf_counter()
    detection = None
    if request.lang is None:
        detection = detect(request.q, settings.lang_confidence_threshold, settings.fallback_lang)
        lang = detection.lang
    else:
        lang = resolve(request.lang)
    query = engine.embed_texts([request.q], lang)[0]  # (E,)
    pairs = engine.search(query, request.k, request.offset)
    return SearchResponse(
        query=request.q,
        lang=lang,
        k=request.k,
        offset=request.offset,
        took_ms=elapsed_ms(started),
        lang_detected=detection is not None,
        lang_confidence=round(detection.confidence, 4) if detection else None,
        lang_candidate=detection.candidate if detection else None,
        lang_fallback=detection.fallback if detection else False,
        results=search_hits(engine, pairs, lang, first_rank=request.offset + 1),
    )


@router.get("/search", response_model=SearchResponse, responses=errors(422, 503))
def search_get(
    params: Annotated[SearchQuery, Query()], engine: EngineDep, settings: SettingsDep
) -> Response:
    """Text-to-audio search. Without `lang` the query's language is detected."""
    return json_response(run_search(params, engine, settings))


@router.post("/search", response_model=SearchResponse, responses=errors(413, 422, 503))
def search_post(body: SearchRequest, engine: EngineDep, settings: SettingsDep) -> Response:
    """The same as GET /search with a JSON body (long queries)."""
    return json_response(run_search(body, engine, settings))


@router.get("/search/similar", response_model=SimilarResponse, responses=errors(404, 422, 503))
def search_similar(
    engine: EngineDep,
    id: Annotated[str, Query(description="an indexed clip")],
    k: Annotated[int, Query(ge=1, le=MAX_K, description="number of results, 1..100")] = 10,
    lang: Annotated[str, Query(description="language of the captions shown")] = "eng",
) -> SimilarResponse:
    """Clips that sound like an indexed clip (the clip itself left out)."""
    started = time.perf_counter()
    lang = resolve(lang)
    pairs = engine.similar(id, k)
    return SimilarResponse(
        id=id, lang=lang, k=k, took_ms=elapsed_ms(started), results=search_hits(engine, pairs, lang)
    )
