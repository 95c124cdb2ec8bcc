"""SIGTERM while requests are in flight: every request gets its answer, then the server exits."""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from live_servers import ServerProcess, metric

from preprocessing.formats import encode

N_REQUESTS = 6
FRAMES = 16
FRAME_SAMPLES = 16_384


def received(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    ok = {"route": "/v1/classify", "backend": "mha", "outcome": "ok"}
    return metric(text, "rfcls_inflight_requests") + metric(text, "rfcls_requests_total", **ok)


def test_sigterm_drains_in_flight_requests(tiny_bundle):
    rng = np.random.default_rng(3)
    # heavy enough (16 frames of 511 tokens each) that requests are still queued at SIGTERM
    n = FRAMES * FRAME_SAMPLES
    body = encode(0.3 * (rng.standard_normal(n) + 1j * rng.standard_normal(n)), "ci8")
    env = {
        "RFCLS_MODEL_DIR": str(tiny_bundle),
        "RFCLS_MAX_BATCH": "4",
        "RFCLS_DEADLINE_MS": "60000",
    }
    with ServerProcess(env) as server, ThreadPoolExecutor(N_REQUESTS) as pool:

        def classify() -> tuple[httpx.Response, float]:
            r = httpx.post(
                f"{server.url}/v1/classify?format=ci8&frame_samples={FRAME_SAMPLES}",
                content=body,
                headers={"Content-Type": "application/octet-stream"},
                timeout=60,
            )
            return r, time.monotonic()

        futures = [pool.submit(classify) for _ in range(N_REQUESTS)]
        deadline = time.monotonic() + 30
        while received(server.url) < N_REQUESTS:  # all received: none is refused at the door
            assert time.monotonic() < deadline, "the requests never reached the server"
            time.sleep(0.005)
        server.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        answers = [f.result() for f in futures]
        assert [r.status_code for r, _ in answers] == [200] * N_REQUESTS
        assert all(len(r.json()["frames"]) == FRAMES for r, _ in answers)
        assert max(t for _, t in answers) > signalled  # some were still being worked on
        # uvicorn re-raises the signal once shut down: ended by SIGTERM, not killed
        assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
        assert "Traceback" not in server.output()
