"""Probes and metrics: GET /healthz/live, /healthz/ready, /metrics. Always open (no API key)."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import JSONResponse, Response

from service.context import ServiceContext


def build_router(ctx: ServiceContext) -> APIRouter:
    router = APIRouter()
    engine = ctx.engine

    @router.get("/healthz/live", summary="Liveness: the process and its engine worker are up")
    async def live() -> Response:
        return JSONResponse({"status": engine.state}, status_code=200 if engine.live else 503)

    @router.get("/healthz/ready", summary="Readiness: model loaded, warmed up and not draining")
    async def ready() -> Response:
        return JSONResponse({"status": engine.state}, status_code=200 if engine.ready else 503)

    @router.get("/metrics", summary="Prometheus metrics (text format)")
    async def metrics() -> Response:
        return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return router
