"""Per-request metrics for the classification routes, observed around the whole ASGI exchange so
the duration runs to the last byte sent and every outcome (including refusals raised before the
handler, such as 413) is counted."""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import ServiceMetrics

# path pattern -> the route label (one label for the versioned and unversioned v2 paths)
CLASSIFY_ROUTES = {
    re.compile(r"/v1/classify"): "/v1/classify",
    re.compile(r"/v1/scan"): "/v1/scan",
    re.compile(r"/v2/models/[^/]+(?:/versions/[^/]+)?/infer"): "/v2/models/{name}/infer",
}
ROUTE_LABELS = tuple(CLASSIFY_ROUTES.values())


def outcome(status: int) -> str:
    if status < 400:
        return "ok"
    if status in (429, 503):
        return "rejected"
    if status == 504:
        return "timeout"
    if status == 499:
        return "cancelled"
    return "error" if status >= 500 else "client_error"


def route_label(path: str) -> str | None:
    for pattern, label in CLASSIFY_ROUTES.items():
        if pattern.fullmatch(path):
            return label
    return None


class RequestMetricsMiddleware:
    """on_admitted gets the duration of each request the engine took: answered with a prediction,
    or dropped once queued past its deadline (504, a slow answer too). The engine steers its
    admission by them; refusals and bad requests say nothing of the queue's speed."""

    def __init__(
        self,
        app: ASGIApp,
        metrics: ServiceMetrics,
        on_admitted: Callable[[float], None] | None = None,
    ):
        self.app = app
        self.metrics = metrics
        self.on_admitted = on_admitted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        label = route_label(scope["path"]) if scope["type"] == "http" else None
        if label is None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # if the app raises before answering, the server sends a 500

        async def observed_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        self.metrics.inflight.inc()
        try:
            await self.app(scope, receive, observed_send)
        finally:
            self.metrics.inflight.dec()
            seconds, result = time.perf_counter() - started, outcome(status)
            self.metrics.observe_request(label, result, seconds)
            if self.on_admitted is not None and result in ("ok", "timeout"):
                self.on_admitted(seconds)
