"""Prometheus metrics (request counts and latencies per endpoint, index size) and the
middleware that records them and writes one structured access-log line per request."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from atri.service.asgi import HttpMiddleware

access_log = logging.getLogger("atri.service.access")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
UNMATCHED = "unmatched"  # one label for every path no route matched (scanners, typos)


class Metrics:
    """One registry per app, so several apps in one process (tests) never collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "atri_http_requests",
            "HTTP requests by method, endpoint (route template) and status",
            ["method", "endpoint", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "atri_http_request_duration_seconds",
            "HTTP request latency by method and endpoint",
            ["method", "endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.index_clips = Gauge(
            "atri_index_clips", "clips in the served index", registry=self.registry
        )
        self.index_captions = Gauge(
            "atri_index_captions", "distinct captions in the served index", registry=self.registry
        )
        self.ready = Gauge(
            "atri_ready", "1 once model and index are loaded", registry=self.registry
        )

    def watch_index(self, size: Callable[[], float], captions: Callable[[], float]) -> None:
        """Gauges read at scrape time, so they follow live additions and deletions."""
        self.index_clips.set_function(size)
        self.index_captions.set_function(captions)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ObserveRequests(HttpMiddleware):
    """ASGI middleware: counts, latency histogram and an access-log line per request."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        super().__init__(app)
        self.metrics = metrics

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        status = 500  # unless a response starts

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or UNMATCHED
            method = scope["method"]
            self.metrics.requests.labels(method, endpoint, str(status)).inc()
            self.metrics.latency.labels(method, endpoint).observe(elapsed)
            access_log.info(
                "%s %s %d",
                method,
                scope["path"],
                status,
                extra={
                    "fields": {
                        "method": method,
                        "path": scope["path"],
                        "endpoint": endpoint,
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 2),
                        "client": (scope.get("client") or ("", 0))[0],
                    }
                },
            )
