"""How long one JSON request holds up the others: the worst /healthz/live round trip, pinged
every 2 ms from a thread, while one POST /v1/classify with I and Q lists is parsed and answered.

Starts `rfcls serve` on the shipped model with the JSON limit raised to the body limit, so that
every size is parsed. Usage: python docs/experiments/json_stall/stall.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time

import httpx
import numpy as np

URL = "http://127.0.0.1:8123"


def wait_ready() -> None:
    for _ in range(300):
        try:
            if httpx.get(URL + "/healthz/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become ready")


def worst_ping_during(body: bytes) -> tuple[float, int]:
    rtts: list[float] = []
    stop = threading.Event()

    def ping() -> None:
        with httpx.Client() as client:
            while not stop.is_set():
                t = time.perf_counter()
                client.get(URL + "/healthz/live")
                rtts.append(time.perf_counter() - t)
                time.sleep(0.002)

    pinger = threading.Thread(target=ping)
    pinger.start()
    time.sleep(0.2)
    status = httpx.post(
        URL + "/v1/classify",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=60,
    ).status_code
    time.sleep(0.1)
    stop.set()
    pinger.join()
    return max(rtts), status


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    env = {**os.environ, "RFCLS_PORT": "8123", "RFCLS_MAX_JSON_BODY_BYTES": str(16 * 2**20)}
    server = subprocess.Popen(
        [sys.executable, "-m", "service", "serve"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready()
        rng = np.random.default_rng(0)
        for n in (32_768, 65_536, 131_072, 262_144):
            x = rng.standard_normal((2, n))
            body = json.dumps({"frames": [{"i": x[0].tolist(), "q": x[1].tolist()}]}).encode()
            worst, statuses = zip(*(worst_ping_during(body) for _ in range(args.runs)), strict=True)
            print(
                f"{len(body) / 2**20:5.2f} MiB of JSON ({n:,} samples, answers {set(statuses)}): "
                f"worst ping, median of {args.runs} runs {np.median(worst) * 1e3:.0f} ms "
                f"(largest {max(worst) * 1e3:.0f})",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
