"""Prometheus metrics in the text format (GET /metrics)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from atri.service.deps import MetricsDep

router = APIRouter(tags=["service"])


@router.get("/metrics", response_class=Response)
def metrics(registry: MetricsDep) -> Response:
    """Request counts and latencies per endpoint, index size."""
    return Response(registry.render(), media_type=CONTENT_TYPE_LATEST)
