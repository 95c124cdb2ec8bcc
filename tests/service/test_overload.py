"""Overload, deadlines, faults, API key and CORS over real HTTP: uvicorn in a thread serving the
real app, with a scripted runner in place of the model so the tests decide when the model is busy
or failing."""

from __future__ import annotations

import http.client
import json
import logging
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from live_servers import TINY_CLASSES, ThreadServer, metric, wait_until
from scripted_runner import CARD, ScriptedRunner

from benchmarks.live_service import free_port
from preprocessing.formats import encode
from service.app import build_app, build_context
from service.engine import Engine
from service.protocol import v2
from service.server import DrainingServer, uvicorn_config
from service.settings import Settings

BINARY = {"Content-Type": "application/octet-stream"}
JSON = {"Content-Type": "application/json"}
V2_BODY = json.dumps(
    {"inputs": [{"name": "IQ", "shape": [1, 64, 2], "datatype": "FP32", "data": [0.1] * 128}]}
)


def serve(runner: ScriptedRunner, wait_ready: bool = True, **settings) -> ThreadServer:
    ctx = build_context(Settings(**settings), CARD, runner)
    return ThreadServer(build_app(ctx), wait_ready=wait_ready)


def tagged(tag: float, n: int = 256) -> bytes:
    iq = np.full(n, 0.01, dtype=np.complex64)
    iq[0] = tag
    return encode(iq, "cf32")


def classify(url: str, tag: float, headers: dict | None = None) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/classify?format=cf32",
        content=tagged(tag),
        headers={**BINARY, **(headers or {})},
        timeout=30,
    )


def wait_for(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


def metrics_of(url: str) -> str:
    return httpx.get(f"{url}/metrics").text


def hold_the_model(url: str, runner: ScriptedRunner, pool: ThreadPoolExecutor):
    """Request 1 (tag 1.0) enters the model and is held there until runner.gate is set; returns
    its future."""
    runner.reset()
    runner.gate.clear()
    busy = pool.submit(classify, url, 1.0)
    assert runner.entered.acquire(timeout=5)
    return busy


def fill_the_queue(url: str, runner: ScriptedRunner, pool: ThreadPoolExecutor):
    """Hold the model on request 1 and queue request 2 (a server with max_queue 1 and max_batch
    1 then refuses the next); returns their futures."""
    busy = hold_the_model(url, runner, pool)
    queued = pool.submit(classify, url, 2.0)
    wait_for(lambda: metric(metrics_of(url), "rfcls_queue_depth") == 1)
    return busy, queued


def test_full_queue_is_503_with_retry_after():
    runner = ScriptedRunner()
    settings = {"max_queue": 1, "max_batch": 1, "deadline_ms": 10_000}
    with serve(runner, **settings) as s, ThreadPoolExecutor(2) as pool:
        busy, queued = fill_the_queue(s.url, runner, pool)
        refused = classify(s.url, 3.0)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"] == "1"
        assert refused.json()["error"]["code"] == "queue_full"
        runner.gate.set()
        assert busy.result().status_code == 200 and queued.result().status_code == 200
        text = metrics_of(s.url)
        assert metric(text, "rfcls_rejections_total", reason="queue_full") == 1
        route = {"route": "/v1/classify", "backend": "mha"}
        assert metric(text, "rfcls_requests_total", outcome="rejected", **route) == 1
        assert metric(text, "rfcls_requests_total", outcome="ok", **route) == 2
    assert runner.batches == [[1.0], [2.0]]


def test_a_refusal_leaves_its_body_unread_and_the_connection_serving():
    runner = ScriptedRunner()
    settings = {"max_queue": 1, "max_batch": 1, "deadline_ms": 10_000}
    with serve(runner, **settings) as s, ThreadPoolExecutor(2) as pool, httpx.Client() as client:
        busy, queued = fill_the_queue(s.url, runner, pool)
        url = f"{s.url}/v1/classify?format=cf32"
        # an odd byte count: a body that were read and decoded would be a 400, not a 503
        refused = client.post(url, content=tagged(3.0, 1 << 16)[:-1], headers=BINARY)
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "queue_full"
        runner.gate.set()
        assert busy.result().status_code == 200 and queued.result().status_code == 200
        # the same keep-alive client goes on: the unread body did not poison its connection
        served = client.post(url, content=tagged(4.0), headers=BINARY)
        assert served.status_code == 200
    assert runner.batches == [[1.0], [2.0], [4.0]]


def test_deadline_passed_in_queue_is_504_and_never_computed():
    runner = ScriptedRunner()
    with serve(runner, max_batch=1, deadline_ms=50) as s, ThreadPoolExecutor(2) as pool:
        busy = hold_the_model(s.url, runner, pool)
        late = pool.submit(classify, s.url, 2.0)
        wait_for(lambda: metric(metrics_of(s.url), "rfcls_queue_depth") == 1)
        time.sleep(0.1)
        runner.gate.set()
        assert busy.result().status_code == 200
        r = late.result()
        assert r.status_code == 504 and r.json()["error"]["code"] == "deadline_exceeded"
        assert classify(s.url, 3.0).status_code == 200
        text = metrics_of(s.url)
        assert metric(text, "rfcls_rejections_total", reason="deadline") == 1
        timeouts = {"route": "/v1/classify", "backend": "mha", "outcome": "timeout"}
        assert metric(text, "rfcls_requests_total", **timeouts) == 1
    assert 2.0 not in [t for batch in runner.batches for t in batch]


def test_a_client_that_disconnects_while_queued_is_withdrawn_not_computed_nor_counted_ok():
    runner = ScriptedRunner()
    with serve(runner, max_batch=1, deadline_ms=10_000) as s, ThreadPoolExecutor(1) as pool:
        busy = hold_the_model(s.url, runner, pool)
        body = tagged(2.0)
        with socket.create_connection(("127.0.0.1", s.port)) as conn:
            conn.sendall(
                b"POST /v1/classify?format=cf32 HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body
            )
            wait_for(lambda: metric(metrics_of(s.url), "rfcls_queue_depth") == 1)
        # the client has gone while its request waits behind the held batch
        wait_for(lambda: metric(metrics_of(s.url), "rfcls_queue_depth") == 0)
        runner.gate.set()
        assert busy.result().status_code == 200
        text = metrics_of(s.url)
        route = {"route": "/v1/classify", "backend": "mha"}
        assert metric(text, "rfcls_requests_total", outcome="ok", **route) == 1
        assert metric(text, "rfcls_requests_total", outcome="cancelled", **route) == 1
    assert runner.batches == [[1.0]]


def test_a_client_that_disconnects_while_sending_its_body_is_cancelled_not_an_error(caplog):
    with serve(ScriptedRunner()) as s:
        with socket.create_connection(("127.0.0.1", s.port)) as conn:
            conn.sendall(
                b"POST /v2/models/rfcls/infer HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{"
            )
            wait_for(lambda: metric(metrics_of(s.url), "rfcls_inflight_requests") == 1)
        wait_for(lambda: metric(metrics_of(s.url), "rfcls_inflight_requests") == 0)
        text = metrics_of(s.url)
        route = {"route": "/v2/models/{name}/infer", "backend": "mha"}
        assert metric(text, "rfcls_requests_total", outcome="cancelled", **route) == 1
        assert metric(text, "rfcls_requests_total", outcome="error", **route) == 0
    assert [rec for rec in caplog.records if rec.levelno >= logging.ERROR] == []


def test_a_body_that_stops_arriving_is_408_at_its_timeout_while_others_are_served():
    """Its client sends all but the last bytes and waits: the server answers 408 once the body
    timeout has passed since the headers, drops what it has of the body and closes the
    connection, and another client's request meanwhile is answered at once."""
    runner = ScriptedRunner()
    timeout_s = 1.5
    with serve(runner, body_timeout_s=timeout_s) as s:
        runner.reset()  # the warm-up's batches
        body = tagged(2.0, 1 << 14)
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as conn:
            sent = time.monotonic()
            conn.sendall(
                b"POST /v1/classify?format=cf32 HTTP/1.1\r\nHost: x\r\n"
                b"Content-Type: application/octet-stream\r\n"
                b"Content-Length: %d\r\n\r\n" % len(body) + body[:-8]
            )
            wait_for(lambda: metric(metrics_of(s.url), "rfcls_inflight_requests") == 1)
            assert classify(s.url, 1.0).status_code == 200
            assert select.select([conn], [], [], 0)[0] == []  # while the other still waits
            answer = b""
            while chunk := conn.recv(65536):  # to the close: the connection is not kept
                answer += chunk
            waited = time.monotonic() - sent
        head, payload = answer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 408 "), answer
        assert b"connection: close" in head.lower()
        error = json.loads(payload)["error"]
        assert error["code"] == "request_timeout" and error["field"] == "body"
        assert timeout_s <= waited < timeout_s + 5
        text = metrics_of(s.url)
        assert metric(text, "rfcls_rejections_total", reason="body_timeout") == 1
        route = {"route": "/v1/classify", "backend": "mha"}
        assert metric(text, "rfcls_requests_total", outcome="client_error", **route) == 1
        assert metric(text, "rfcls_requests_total", outcome="ok", **route) == 1
    assert runner.batches == [[1.0]]


def test_the_body_timeout_ends_with_the_body_not_with_the_answer():
    """A request whose body is in waits for the model past the body timeout and is answered:
    from then on `receive` only waits for a disconnect (disconnects.py), which is no body."""
    runner = ScriptedRunner()
    timeout_s = 0.2
    with serve(runner, body_timeout_s=timeout_s) as s, ThreadPoolExecutor(1) as pool:
        busy = hold_the_model(s.url, runner, pool)
        time.sleep(3 * timeout_s)
        runner.gate.set()
        assert busy.result().status_code == 200
    assert runner.batches == [[1.0]]


def test_a_model_fault_is_a_generic_500_and_the_next_request_succeeds():
    runner = ScriptedRunner()
    runner.poison = {7.0}
    with serve(runner) as s:
        r = classify(s.url, 7.0)
        assert r.status_code == 500
        assert r.json() == {
            "error": {
                "code": "internal",
                "message": "internal error; the request was not classified",
                "field": None,
            }
        }
        assert "injected" not in r.text and "Traceback" not in r.text
        ok = classify(s.url, 1.0)
        assert ok.status_code == 200 and ok.json()["frames"][0]["label"] == TINY_CLASSES[0]
        v2 = httpx.post(
            f"{s.url}/v2/models/rfcls/infer",
            json={
                "inputs": [
                    {
                        "name": "IQ",
                        "shape": [1, 64, 2],
                        "datatype": "FP32",
                        "data": [7.0] + [0.0] * 127,
                    }
                ]
            },
        )
        assert v2.status_code == 500 and v2.json() == {
            "error": "internal error; the request was not classified"
        }
        errors = {"route": "/v2/models/{name}/infer", "backend": "mha", "outcome": "error"}
        assert metric(metrics_of(s.url), "rfcls_requests_total", **errors) == 1


def test_a_bug_is_a_logged_500_and_the_connection_stays_open(monkeypatch, caplog):
    """An exception no handler maps: the generic 500, its traceback in the log, and the keep-alive
    connection still serving (Starlette's last-resort handler re-raises, and uvicorn then closes
    the connection under the client's next request)."""

    def bug(*args):
        raise RuntimeError("injected bug")

    monkeypatch.setattr(v2, "requested_outputs", bug)
    with serve(ScriptedRunner()) as s:
        connection = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        connection.request("POST", "/v2/models/rfcls/infer", body=V2_BODY, headers=JSON)
        r = connection.getresponse()
        assert r.status == 500
        assert json.loads(r.read()) == {"error": "internal error; the request was not classified"}
        socket_before = connection.sock
        connection.request("POST", "/v1/classify?format=cf32", body=tagged(1.0), headers=BINARY)
        r = connection.getresponse()
        assert r.status == 200 and connection.sock is socket_before, r.read()
        connection.close()
    [logged] = [rec for rec in caplog.records if rec.name == "service.protocol.errors"]
    assert "unexpected error" in logged.getMessage() and "injected bug" in str(logged.exc_info[1])


@pytest.mark.parametrize("when", ["warm-up", "once warm"])
def test_a_failed_engine_ends_its_server_process(monkeypatch, when):
    """An engine that can no longer answer (its warm-up failed, or its thread died once warm) ends
    the server, so that the process's supervisor (Workers, or the container's restart) starts a
    fresh one, rather than a worker refusing its share of the connections for good."""
    runner = ScriptedRunner()
    runner.broken = when == "warm-up"
    settings = Settings(port=free_port())
    ctx = build_context(settings, CARD, runner)
    server = DrainingServer(uvicorn_config(settings, build_app(ctx)), ctx.engine)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    if when == "once warm":
        wait_until(f"http://127.0.0.1:{settings.port}", timeout=30)
        assert thread.is_alive() and not server.engine_failed
        monkeypatch.setattr(Engine, "live", property(lambda engine: False))
    thread.join(timeout=30)
    assert not thread.is_alive() and server.engine_failed
    assert server.engine_warmed_up == (when == "once warm")


def test_not_ready_while_warming_up():
    runner = ScriptedRunner()
    runner.gate.clear()  # warm-up blocks inside the runner
    with serve(runner, wait_ready=False) as s:
        wait_for(lambda: httpx.get(f"{s.url}/healthz/live").status_code == 200)
        ready = httpx.get(f"{s.url}/healthz/ready")
        assert ready.status_code == 503 and ready.json() == {"status": "warming_up"}
        assert httpx.get(f"{s.url}/v2/health/ready").status_code == 400
        r = classify(s.url, 1.0)
        assert r.status_code == 503 and r.json()["error"]["code"] == "unavailable"
        assert r.headers["Retry-After"] == "1"
        runner.gate.set()
        wait_for(lambda: httpx.get(f"{s.url}/healthz/ready").status_code == 200)
        assert classify(s.url, 1.0).status_code == 200


def test_api_key():
    runner = ScriptedRunner()
    with serve(runner, api_key="s3cret") as s:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
            r = classify(s.url, 1.0, headers)
            assert r.status_code == 401, headers
            assert r.json()["error"]["field"] == "Authorization"
            assert r.headers["WWW-Authenticate"] == "Bearer"
        assert classify(s.url, 1.0, {"Authorization": "Bearer s3cret"}).status_code == 200
        assert httpx.get(f"{s.url}/v1/model").status_code == 401
        assert (
            httpx.get(f"{s.url}/v1/model", headers={"Authorization": "Bearer s3cret"}).status_code
            == 200
        )
        assert httpx.get(f"{s.url}/v2/models/rfcls").status_code == 401
        v2 = httpx.post(f"{s.url}/v2/models/rfcls/infer", json={})
        assert v2.status_code == 401 and set(v2.json()) == {"error"}
        # probes and metrics stay open
        for path in (
            "/healthz/live",
            "/healthz/ready",
            "/metrics",
            "/v2/health/ready",
            "/v2/models/rfcls/ready",
        ):
            assert httpx.get(f"{s.url}{path}").status_code == 200, path
        assert metric(metrics_of(s.url), "rfcls_rejections_total", reason="unauthorized") == 6


def test_cors_is_off_unless_origins_are_set():
    preflight = {
        "Origin": "https://console.example",
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    with serve(ScriptedRunner()) as s:
        r = httpx.options(f"{s.url}/v1/classify", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
    with serve(ScriptedRunner(), cors_origins="https://console.example") as s:
        r = httpx.options(f"{s.url}/v1/classify", headers=preflight)
        assert r.status_code == 200
        assert r.headers["access-control-allow-origin"] == "https://console.example"
        r = httpx.options(
            f"{s.url}/v1/classify", headers={**preflight, "Origin": "https://evil.example"}
        )
        assert r.status_code == 400
