"""SIGTERM while requests are in flight: every request gets its answer, then the server exits.

Which requests are still in flight when the signal lands must not depend on how fast this machine
is: half of the requests hold back the second half of their body until the server has begun
shutting down (its listening socket is closed), so they are in flight by construction. The other
half are sent whole and are queued or computing at the signal, or already answered on a fast
machine; either way each must get its 200. With two workers the signal goes to the parent, which
passes it on to both; it exits 0 once they have, leaving no process behind.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from live_servers import ServerProcess, metric

from benchmarks.live_service import descendants
from preprocessing.formats import encode

N_WHOLE = 3
N_HELD = 3
FRAMES = 16
FRAME_SAMPLES = 16_384
WAIT_S = 30


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def received(url: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    ok = {"route": "/v1/classify", "backend": "mha", "outcome": "ok"}
    return metric(text, "rfcls_inflight_requests") + metric(text, "rfcls_requests_total", **ok)


def accepting(url: str) -> bool:
    """False once uvicorn has closed its listening socket, i.e. is shutting down."""
    try:
        httpx.get(f"{url}/healthz/live", timeout=1)
    except httpx.TransportError:  # refused, or connected just before the close and then dropped
        return False
    return True


def running(pid: int) -> bool:
    """Neither exited nor a zombie (an orphan's is reaped by whoever adopted it, maybe never)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_drains_in_flight_requests(tiny_bundle, workers):
    rng = np.random.default_rng(3)
    # heavy enough (16 frames of 511 tokens each) that the whole requests are likely still queued
    n = FRAMES * FRAME_SAMPLES
    body = encode(0.3 * (rng.standard_normal(n) + 1j * rng.standard_normal(n)), "ci8")
    release = threading.Event()

    def held_body() -> Iterator[bytes]:
        yield body[: len(body) // 2]
        assert release.wait(WAIT_S), "the rest of the body was never released"
        yield body[len(body) // 2 :]

    env = {
        "RFCLS_MODEL_DIR": str(tiny_bundle),
        "RFCLS_MAX_BATCH": "4",
        "RFCLS_DEADLINE_MS": "60000",
        "RFCLS_MAX_QUEUE_WAIT_MS": "60000",  # every request is admitted, however busy the box
        "RFCLS_WORKERS": str(workers),
    }
    with ServerProcess(env) as server, ThreadPoolExecutor(N_WHOLE + N_HELD) as pool:

        def classify(content) -> httpx.Response:
            return httpx.post(
                f"{server.url}/v1/classify?format=ci8&frame_samples={FRAME_SAMPLES}",
                content=content,
                headers={"Content-Type": "application/octet-stream"},
                timeout=60,
            )

        held = [pool.submit(classify, held_body()) for _ in range(N_HELD)]
        whole = [pool.submit(classify, body) for _ in range(N_WHOLE)]
        # all received, none refused at the door; the held ones cannot have finished
        everyone = N_WHOLE + N_HELD
        wait_for(lambda: received(server.url) == everyone, "the requests never reached the server")
        children = descendants(server.process.pid)
        server.process.send_signal(signal.SIGTERM)
        wait_for(lambda: not accepting(server.url), "the server never began shutting down")
        release.set()
        answers = [f.result() for f in held + whole]
        assert [r.status_code for r in answers] == [200] * everyone
        assert all(len(r.json()["frames"]) == FRAMES for r in answers)
        # a single process: uvicorn re-raises the signal once shut down, so ended by SIGTERM, not
        # killed; the parent of workers returns once they have
        assert server.process.wait(timeout=WAIT_S) in (
            (0, -signal.SIGTERM) if workers == 1 else (0,)
        )
        # multiprocessing's resource tracker leaves after the last of them
        wait_for(lambda: not any(map(running, children)), f"left behind: {children}")
        assert "Traceback" not in server.output()
