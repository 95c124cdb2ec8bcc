"""rfmodel.cpus.usable_cpus: the affinity, capped by a cgroup v2 or v1 CPU quota."""

from __future__ import annotations

import math
import os

import pytest

from rfmodel import cpus

AFFINITY = len(os.sched_getaffinity(0))


@pytest.fixture
def cgroup(tmp_path, monkeypatch):
    """Points the module at a fake cgroup tree; yields a writer of its v2 or v1 files."""
    v2, v1 = tmp_path / "cpu.max", tmp_path / "cpu"
    v1.mkdir()
    monkeypatch.setattr(cpus, "CGROUP_V2_CPU_MAX", v2)
    monkeypatch.setattr(cpus, "CGROUP_V1_CPU", v1)
    cpus.usable_cpus.cache_clear()

    def write(v2_text: str | None = None, v1_quota: int | None = None, v1_period: int = 100_000):
        if v2_text is not None:
            v2.write_text(v2_text)
        if v1_quota is not None:
            (v1 / "cpu.cfs_quota_us").write_text(f"{v1_quota}\n")
            (v1 / "cpu.cfs_period_us").write_text(f"{v1_period}\n")

    yield write
    cpus.usable_cpus.cache_clear()  # what the real cgroup says, for the tests after these


def test_no_cgroup_files_leave_the_affinity(cgroup):
    assert cpus.cgroup_cpu_quota() is None
    assert cpus.usable_cpus() == AFFINITY


@pytest.mark.parametrize(
    ("v2_text", "quota"),
    [("max 100000\n", None), ("100000 100000\n", 1.0), ("150000 100000\n", 1.5)],
)
def test_a_cgroup_v2_quota(cgroup, v2_text, quota):
    cgroup(v2_text=v2_text)
    assert cpus.cgroup_cpu_quota() == quota
    # a part of a CPU still runs a thread: 1.5 CPUs of quota keep two threads busy in turn
    expected = AFFINITY if quota is None else min(AFFINITY, math.ceil(quota))
    assert cpus.usable_cpus() == expected


@pytest.mark.parametrize(("v1_quota", "quota"), [(-1, None), (50_000, 0.5), (300_000, 3.0)])
def test_a_cgroup_v1_quota(cgroup, v1_quota, quota):
    cgroup(v1_quota=v1_quota)
    assert cpus.cgroup_cpu_quota() == quota
    expected = AFFINITY if quota is None else min(AFFINITY, math.ceil(quota))
    assert cpus.usable_cpus() == expected


def test_a_quota_of_more_cpus_than_the_affinity_is_capped_by_the_affinity(cgroup):
    cgroup(v2_text=f"{(AFFINITY + 4) * 100_000} 100000\n")
    assert cpus.usable_cpus() == AFFINITY


def test_an_unreadable_v2_file_falls_back_to_v1(cgroup):
    cgroup(v2_text="garbage", v1_quota=100_000)
    assert cpus.cgroup_cpu_quota() == 1.0
