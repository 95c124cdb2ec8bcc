"""One maximal request and a stream of small ones against `rfcls serve`: how many of the small
ones are refused, and how long the admitted ones take, while the large one is on the engine.

Arms: the source trees given (`--trees`), each served in turn from its own directory by this
venv's python (`python -m service serve`, run there so that its packages are imported, not the
editable install's), with the default settings; the trees alternate, `--runs` times each, a
fresh server per run.

A run: one process sends the default limits' largest request, 32 frames of 262,144 samples of
ci8 noise (a 16 MiB body), to `/v1/classify`; from `--lead` seconds after it, this process sends
one small request (a 32,768-sample ci8 frame of noise, or `--small-samples`) every `--interval`
seconds, open loop, each on its own thread, until the large one is answered. Counted: the small
requests sent while the large one was in flight, by status, and the latency of the answered ones.

    python docs/experiments/fair_turns/probe.py --trees /tmp/fair-base /tmp/fair --runs 3
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

LARGE_FRAMES, LARGE_SAMPLES = 32, 262_144


def noise_ci8(samples: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return rng.integers(-40, 40, size=2 * samples, dtype=np.int8).tobytes()


def post(port: int, body: bytes, frame_samples: int, timeout: float = 120.0) -> tuple[int, float]:
    """(status, seconds) of one classify request on a fresh connection."""
    start = time.perf_counter()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(
            "POST",
            f"/v1/classify?format=ci8&frame_samples={frame_samples}",
            body,
            {"Content-Type": "application/octet-stream"},
        )
        response = connection.getresponse()
        response.read()
        return response.status, time.perf_counter() - start
    finally:
        connection.close()


def send_large(port: int, done, out) -> None:
    body = noise_ci8(LARGE_FRAMES * LARGE_SAMPLES, seed=1)
    out.put("sending")
    out.put(("large", *post(port, body, LARGE_SAMPLES)))
    done.set()


def wait_ready(port: int, server: subprocess.Popen, limit_s: float = 300.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/healthz/ready")
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError("the server never became ready")


def one_run(tree: Path, port: int, args) -> dict:
    env = {**os.environ, "RFCLS_PORT": str(port), "PYTHONPATH": str(tree)}
    server = subprocess.Popen(
        [sys.executable, "-m", "service", "serve"],
        cwd=tree,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_ready(port, server)
        small_body = noise_ci8(args.small_samples, seed=2)
        post(port, small_body, args.small_samples)  # one answer before: the connection path warm
        done, out = multiprocessing.Event(), multiprocessing.Queue()
        large = multiprocessing.Process(target=send_large, args=(port, done, out))
        large.start()
        out.get()  # its body is about to be sent
        time.sleep(args.lead)
        results: list[tuple[int, float]] = []
        threads = []
        while not done.is_set():
            thread = threading.Thread(
                target=lambda: results.append(post(port, small_body, args.small_samples))
            )
            thread.start()
            threads.append(thread)
            done.wait(args.interval)
        for thread in threads:
            thread.join()
        _, large_status, large_s = out.get()
        large.join()
    finally:
        server.terminate()
        server.wait(60)
    answered = sorted(s for status, s in results if status == 200)
    return {
        "tree": str(tree),
        "large_status": large_status,
        "large_s": round(large_s, 2),
        "small_sent": len(results),
        "small_refused_503": sum(status == 503 for status, _ in results),
        "small_other_errors": sorted(status for status, _ in results if status not in (200, 503)),
        "small_answered": len(answered),
        "small_p50_ms": round(1e3 * answered[len(answered) // 2], 1) if answered else None,
        "small_p99_ms": (
            round(1e3 * answered[min(len(answered) - 1, int(0.99 * len(answered)))], 1)
            if answered
            else None
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", nargs="+", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--port", type=int, default=8431)
    parser.add_argument("--small-samples", type=int, default=32_768)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--lead", type=float, default=0.5)
    args = parser.parse_args()
    rows = []
    for _ in range(args.runs):
        for tree in args.trees:
            rows.append(one_run(tree.resolve(), args.port, args))
            print(json.dumps(rows[-1]), flush=True)
    for tree in args.trees:
        mine = [r for r in rows if r["tree"] == str(tree.resolve())]
        summary = {
            key: statistics.median(r[key] for r in mine if r[key] is not None)
            for key in mine[0]
            if key not in ("tree", "large_status", "small_other_errors")
            and any(r[key] is not None for r in mine)
        }
        print(f"# {tree}: medians of {len(mine)} runs: {json.dumps(summary)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
