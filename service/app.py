"""The FastAPI application (shared spec api.md): `create_app(settings)`.

The port answers at once; model and index load in a background thread started by the
lifespan, and the routes reach them through the `engine` dependency (503 until ready)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

import atri
from atri.service.engine import Engine
from atri.service.errors import install_error_handler
from atri.service.loading import LoadState, load_engine, start_loading, start_watching
from atri.service.metrics import Metrics, ObserveRequests
from atri.service.routes import (
    audio,
    audio_search,
    clips,
    consistency,
    health,
    metrics,
    search,
)
from atri.service.settings import Settings, get_settings
from atri.service.upload import BodySizeLimit
from atri.training.languages import names

log = logging.getLogger(__name__)

WEB = Path(__file__).resolve().parent / "web"

DESCRIPTION = f"""Multilingual audio-text retrieval in {names()}: text-to-audio and
audio-to-text search, and rank consistency of a query across languages. Errors answer
`{{"error": {{"code", "message", "details"}}}}`."""


def create_app(
    settings: Settings | None = None, *, load: Callable[[Settings], Engine] = load_engine
) -> FastAPI:
    """The service. `settings` default to `get_settings()` (the environment); `load`
    builds the engine in the background (tests may pass their own)."""
    settings = settings or get_settings()
    state = LoadState()
    registry = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        start_loading(state, lambda: load(settings))
        if settings.index_poll_s > 0:
            start_watching(state, settings.index_poll_s)
        yield
        state.stopping.set()
        log.info("shutting down")

    app = FastAPI(
        title="atri",
        version=atri.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.load_state = state
    app.state.metrics = registry
    registry.watch_index(
        lambda: len(state.engine) if state.engine else 0,
        lambda: state.engine.captions_indexed if state.engine else 0,
    )
    registry.ready.set_function(lambda: 1.0 if state.engine else 0.0)

    install_error_handler(app)
    for module in (health, search, audio_search, consistency, clips, audio, metrics):
        app.include_router(module.router)

    app.mount("/static", StaticFiles(directory=WEB), name="static")

    @app.get("/", include_in_schema=False)
    def index_page() -> FileResponse:
        return FileResponse(WEB / "index.html", media_type="text/html")

    # The last added is the outermost: requests are observed first (so a 413 is counted),
    # CORS headers reach every answer, and the size limit wraps the body before any reader.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Range"],
            expose_headers=["Content-Range", "Accept-Ranges", "Content-Length"],
        )
    app.add_middleware(ObserveRequests, metrics=registry)
    return app
