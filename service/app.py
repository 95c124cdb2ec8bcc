"""The FastAPI app: thin routers over one engine, errors mapped in one place, metrics around the
classification routes. Torch-free; service/loading.py supplies the model's runner."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from service.admission import QueueWaitLimit
from service.context import ModelCard, ServiceContext
from service.engine import Engine, Runner
from service.loop_lag import LoopLag
from service.metrics import ServiceMetrics
from service.protocol import health, v1, v2
from service.protocol.auth import api_key_guard
from service.protocol.errors import install_error_handlers
from service.protocol.instrumentation import ROUTE_LABELS, RequestMetricsMiddleware
from service.protocol.limits import BodyLimitMiddleware
from service.protocol.v2_tensors import HEADER_LENGTH
from service.settings import Settings


def build_context(settings: Settings, card: ModelCard, runner: Runner) -> ServiceContext:
    metrics = ServiceMetrics(
        backend=card.backend,
        model_version=card.version,
        device=card.device,
        precision=card.precision,
        budget_s=settings.latency_budget_ms / 1000,
        max_batch=settings.max_batch,
        routes=ROUTE_LABELS,
        workers=settings.workers,
    )
    loop_lag = LoopLag(on_sample=metrics.loop_lag.set)
    engine = Engine(
        runner,
        metrics,
        max_batch=settings.max_batch,
        max_wait_s=settings.max_wait_ms / 1000,
        max_queue=settings.max_queue,
        deadline_s=settings.effective_deadline_ms / 1000,
        queue_wait=QueueWaitLimit(
            floor_s=settings.effective_max_queue_wait_ms / 1000,
            ceiling_s=settings.effective_max_queue_wait_ceiling_ms / 1000,
            budget_s=settings.latency_budget_ms / 1000,
        ),
        warmup_samples=settings.warmup_samples(card.feature_config.nfft),
        warmup_lengths=settings.warmup_lengths(card.feature_config.nfft),
        loop_lag=lambda: loop_lag.lag_s,
        stall_s=settings.stall_s,
    )
    return ServiceContext(
        settings=settings, card=card, engine=engine, metrics=metrics, loop_lag=loop_lag
    )


def build_app(ctx: ServiceContext) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        ctx.engine.start()  # warms up in its own thread; ready once done
        watching = asyncio.create_task(ctx.loop_lag.watch())
        if ctx.settings.workers > 1:
            # one of several takes connections only once warm: the kernel would hand a cold
            # worker its share of them, to be refused, while the others could serve them
            await asyncio.to_thread(ctx.engine.wait_for_warm_up)
        yield
        watching.cancel()
        # uvicorn has waited for the open requests by now; this answers anything still queued
        await asyncio.to_thread(ctx.engine.stop, ctx.settings.stall_s)

    app = FastAPI(
        title="rfcls",
        summary="RF signal classification from IQ samples",
        version=v2.server_version(),
        lifespan=lifespan,
    )
    install_error_handlers(app, ctx.metrics)
    guard = api_key_guard(ctx.settings.api_key)
    app.include_router(health.build_router(ctx))
    app.include_router(v1.build_router(ctx, guard))
    app.include_router(v2.build_router(ctx, guard))
    # added innermost first: metrics wrap everything (a 413 is counted), CORS answers preflights
    # before they count as classification requests
    app.add_middleware(
        BodyLimitMiddleware,
        max_bytes=ctx.settings.max_body_bytes,
        timeout_s=ctx.settings.body_timeout_s,
    )
    app.add_middleware(
        RequestMetricsMiddleware, metrics=ctx.metrics, on_admitted=ctx.engine.observe_admitted
    )
    if origins := ctx.settings.cors_origin_list:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "Content-Encoding", HEADER_LENGTH],
            expose_headers=[HEADER_LENGTH],
        )
    return app
