"""Readiness (GET /health) and the supported languages (GET /languages)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from atri.service.deps import StateDep
from atri.service.errors import public_text_for
from atri.service.languages import aliases
from atri.service.schemas import Health, HealthUnavailable, LanguageOut, VocabularyInfo
from atri.training.languages import LANGUAGES

router = APIRouter(tags=["service"])


@router.get("/health", response_model=Health, responses={503: {"model": HealthUnavailable}})
def health(state: StateDep, request: Request) -> Health | JSONResponse:
    """200 once model and index are loaded; 503 with status "loading" (or "failed") before."""
    engine = state.engine
    if engine is None:
        body = HealthUnavailable(
            status="failed" if state.status == "failed" else "loading",
            error=public_text_for(request, state.error) if state.error else None,
        )
        return JSONResponse(
            body.model_dump(exclude_none=True), status_code=503, headers={"Retry-After": "5"}
        )
    return Health(
        index_size=len(engine),
        captions_indexed=engine.captions_indexed,
        model=engine.name,
        languages=list(LANGUAGES),
        index_version=engine.version,
        warnings=engine.warnings,
        vocabulary=VocabularyInfo(**vocabulary) if (vocabulary := engine.vocabulary) else None,
    )


@router.get("/languages", response_model=list[LanguageOut])
def languages() -> list[LanguageOut]:
    """The supported languages with the alternative names the API accepts."""
    return [LanguageOut(code=i.code, name=i.name, aliases=aliases(i)) for i in LANGUAGES.values()]
