"""Route dependencies: settings, the loaded engine (503 until ready), the admin check.
Tests swap any of them through `app.dependency_overrides`.

Each is `async def` although none awaits: FastAPI runs a plain `def` dependency in the
thread pool, a hop per dependency per request (three on /search, where they cost
1.85 ms of CPU per request under load: docs/benchmarks.md), where an `async def` one
runs inline on the event loop. None of them blocks."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Header, Request

from atri.service.engine import Engine
from atri.service.errors import Forbidden, LoadFailed, NotFound, NotReady, Unauthorized
from atri.service.loading import LoadState
from atri.service.metrics import Metrics
from atri.service.settings import Settings


async def app_settings(request: Request) -> Settings:
    """The settings `create_app` was given (by default `get_settings()`)."""
    return request.app.state.settings


async def load_state(request: Request) -> LoadState:
    return request.app.state.load_state


async def app_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def engine(state: Annotated[LoadState, Depends(load_state)]) -> Engine:
    """The engine once loaded; 503 with the uniform body before (or after a failed load)."""
    if state.engine is not None:
        return state.engine
    if state.status == "failed":
        raise LoadFailed(f"the model or index failed to load: {state.error}")
    raise NotReady()


async def require_admin(
    settings: Annotated[Settings, Depends(app_settings)],
    authorization: Annotated[str | None, Header()] = None,
) -> None:
    """Bearer-token check of the admin endpoints: disabled (404) without a configured
    token, 401 without a token, 403 with a wrong one (compared in constant time)."""
    if settings.admin_token is None or not settings.admin_token.get_secret_value():
        raise NotFound("Not Found")
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized()
    expected = settings.admin_token.get_secret_value().encode("utf-8")
    if not hmac.compare_digest(token.strip().encode("utf-8"), expected):
        raise Forbidden("the admin token is wrong")


SettingsDep = Annotated[Settings, Depends(app_settings)]
StateDep = Annotated[LoadState, Depends(load_state)]
EngineDep = Annotated[Engine, Depends(engine)]
MetricsDep = Annotated[Metrics, Depends(app_metrics)]
AdminDep = Annotated[None, Depends(require_admin)]
