"""How many CPUs this process can keep busy: its CPU affinity, capped by its cgroup's CPU quota.

A container's CPU limit (`docker run --cpus 2`, a Kubernetes `limits.cpu` without the static CPU
manager) is a quota, which os.sched_getaffinity does not see: it lists every core of the host.
Threads sized from the affinity alone then outnumber the quota and are throttled together."""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

CGROUP_V2_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")  # "QUOTA PERIOD" or "max PERIOD"
CGROUP_V1_CPU = Path("/sys/fs/cgroup/cpu")  # cpu.cfs_quota_us (-1: none), cpu.cfs_period_us


@functools.cache  # read once: iq_logits asks on every CPU request
def usable_cpus() -> int:
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_quota()
    return cpus if quota is None else max(1, min(cpus, math.ceil(quota)))


def cgroup_cpu_quota() -> float | None:
    """CPUs' worth of time per period this cgroup may use, or None without a quota."""
    try:
        quota, period = CGROUP_V2_CPU_MAX.read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((CGROUP_V1_CPU / "cpu.cfs_quota_us").read_text())
        period = int((CGROUP_V1_CPU / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 else quota / period
