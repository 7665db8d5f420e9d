"""The base of the service's middlewares: plain ASGI, so that a middleware can wrap
`receive` and `send` (the body-size limit reads the body as it streams in, the metrics
see the status as the response starts), acting on HTTP requests only."""

from __future__ import annotations

from abc import ABC, abstractmethod

from starlette.types import ASGIApp, Receive, Scope, Send


class HttpMiddleware(ABC):
    """Hands an HTTP request to `handle`; any other scope (lifespan, websocket) goes to
    the app untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    @abstractmethod
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one HTTP request, calling `self.app` to pass it on."""
