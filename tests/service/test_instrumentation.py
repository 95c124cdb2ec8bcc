"""The metrics middleware: every classification request counted with its outcome, and only those
the engine took (answered, or dropped at their deadline) handed on to steer admission."""

from __future__ import annotations

import pytest
from scripted_runner import make_metrics

from service.protocol.instrumentation import RequestMetricsMiddleware

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend():
    return "asyncio"


def answering(status: int):
    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    return app


async def call(app, path: str) -> None:
    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        pass

    await app({"type": "http", "path": path, "method": "POST"}, receive, send)


async def test_only_admitted_classifications_steer_admission():
    metrics = make_metrics()
    admitted: list[float] = []
    for status, path in [
        (200, "/v1/classify"),
        (200, "/v2/models/rfcls/infer"),
        (503, "/v1/classify"),
        (422, "/v2/models/rfcls/infer"),
        (504, "/v1/classify"),
        (200, "/v1/model"),  # not a classification route
    ]:
        app = RequestMetricsMiddleware(answering(status), metrics, on_admitted=admitted.append)
        await call(app, path)
    assert len(admitted) == 3 and all(0 <= s < 1 for s in admitted)  # the 200s and the 504
    counted = metrics.requests.labels("/v1/classify", "mha", "rejected")._value.get()
    assert counted == 1
