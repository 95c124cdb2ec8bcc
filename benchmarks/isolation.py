"""Run one measurement in a fresh process with a time limit and, on the CPU, a memory limit.

A fresh process per point keeps peak memory from leaking from one point into the next, and lets a
point that runs too long be stopped. Processes fork from a server that has torch imported already
(multiprocessing's forkserver), so a point costs milliseconds to start, not seconds."""

from __future__ import annotations

import multiprocessing
import os
import resource
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import torch

from benchmarks.memory import proc_status_bytes

PRELOAD = ["torch", "benchmarks.point"]
_context = multiprocessing.get_context("forkserver")
_context.set_forkserver_preload(PRELOAD)

# statuses a point can end with besides "ok"
OUT_OF_MEMORY = "out of memory"
TIME_LIMIT = "time limit"
FAILED = "failed"


def is_out_of_memory(exc: BaseException) -> bool:
    """torch's CUDA OOM, or a CPU allocation refused (by the address-space limit set below)."""
    return isinstance(exc, torch.OutOfMemoryError | MemoryError) or (
        isinstance(exc, RuntimeError) and "can't allocate memory" in str(exc)
    )


def _child(
    target: Callable[[Any], dict], spec: Any, memory_limit_bytes: int | None, conn: Connection
) -> None:
    if memory_limit_bytes is not None:
        # a cap on address space above what the process maps already: an allocation beyond it
        # fails inside torch (reported as out of memory) instead of pushing the shared machine
        # into swap or the kernel's OOM killer
        limit = proc_status_bytes("VmSize") + memory_limit_bytes
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # read when CUDA first allocates, which a fresh child has not done yet. Without it the batch
    # search's largest attempts left 20-24 GiB reserved in fragments on an 80 GB H100, and the
    # timed forward at the batch below then failed to find 16 GiB in one piece
    os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")
    try:
        conn.send({"status": "ok", **target(spec)})
    except BaseException as exc:  # everything goes back to the parent as a row
        if is_out_of_memory(exc):
            conn.send({"status": OUT_OF_MEMORY, "detail": str(exc).splitlines()[0][:300]})
        else:
            conn.send({"status": FAILED, "detail": traceback.format_exc(limit=4)[-2000:]})
    finally:
        conn.close()


def run_isolated(
    target: Callable[[Any], dict],
    spec: Any,
    time_limit_s: float,
    memory_limit_mb: int | None = None,
) -> dict:
    """target(spec) in a fresh process -> its dict with "status": "ok", or a dict whose status is
    OUT_OF_MEMORY, TIME_LIMIT or FAILED with a "detail" saying why. The memory limit applies to
    CPU runs only (CUDA maps far more address space than it uses)."""
    receive, send = _context.Pipe(duplex=False)
    limit = None if memory_limit_mb is None else memory_limit_mb * 2**20
    process = _context.Process(target=_child, args=(target, spec, limit, send), daemon=True)
    process.start()
    send.close()
    try:
        if receive.poll(time_limit_s):
            try:
                return receive.recv()
            except EOFError:
                pass  # died without a word: handled below
        else:
            process.kill()
            return {"status": TIME_LIMIT, "detail": f"no result within {time_limit_s:g} s"}
    finally:
        if process.is_alive():  # interrupted (Ctrl-C) while waiting: leave no point running
            process.kill()
        process.join()
        receive.close()
    if process.exitcode == -9:
        return {"status": OUT_OF_MEMORY, "detail": "killed by SIGKILL (the kernel's OOM killer?)"}
    return {"status": FAILED, "detail": f"process exited with {process.exitcode} and no result"}
