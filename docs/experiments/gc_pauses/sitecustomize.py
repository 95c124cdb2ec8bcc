"""A probe, not part of the service: put this directory first on PYTHONPATH and every Python
process started with it (a benchmark's load generator and the servers it starts) appends each
full (generation 2) garbage collection to /tmp/gclog/gc-PID.log: wall time, pause, objects
frozen. With NO_FREEZE=1 it also turns gc.freeze into a no-op, the A/B for the service's and the
load generator's frozen heaps."""

import gc
import os
import time

LOG_DIR = "/tmp/gclog"
_started = {}


def _log_full_collections(phase: str, info: dict) -> None:
    if phase == "start":
        _started["at"] = time.perf_counter()
    elif info["generation"] == 2:
        pause_ms = 1e3 * (time.perf_counter() - _started["at"])
        with open(f"{LOG_DIR}/gc-{os.getpid()}.log", "a") as log:
            log.write(f"{time.time():.3f} gen2 {pause_ms:.1f} ms frozen {gc.get_freeze_count()}\n")


os.makedirs(LOG_DIR, exist_ok=True)
gc.callbacks.append(_log_full_collections)
if os.environ.get("NO_FREEZE"):
    gc.freeze = lambda: None
