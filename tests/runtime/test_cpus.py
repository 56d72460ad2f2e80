"""The default number of torch threads (``runtime.server.cpus``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from runtime.server.cpus import auto_threads, default_threads, read_cpu_max, usable_cpus


@pytest.mark.parametrize(
    ("affinity", "cpu_max", "cpus"),
    [
        (2, None, 2),
        (16, "max 100000", 16),
        (16, "400000 100000", 4),  # a Pod's CPU limit of 4 on a 16-core node
        (16, "150000 100000", 1),  # 1.5 CPUs: one OpenMP thread can be kept busy
        (16, "50000 100000", 1),  # under one CPU: still one
        (4, "800000 100000", 4),  # a quota above the CPU set does not add CPUs
        (8, "garbage", 8),
        (8, "x 100000", 8),
        (8, "0 100000", 8),
        (0, None, 1),
    ],
)
def test_usable_cpus(affinity: int, cpu_max: str | None, cpus: int) -> None:
    assert usable_cpus(affinity, cpu_max) == cpus


@pytest.mark.parametrize(("cpus", "threads"), [(0, 1), (1, 1), (2, 2), (3, 3), (16, 16)])
def test_one_thread_per_usable_cpu(cpus: int, threads: int) -> None:
    assert default_threads(cpus) == threads


def test_read_cpu_max(tmp_path: Path) -> None:
    path = tmp_path / "cpu.max"
    assert read_cpu_max(path) is None
    path.write_text("200000 100000\n")
    assert read_cpu_max(path) == "200000 100000"


def test_auto_threads_of_this_process() -> None:
    threads, cpus = auto_threads()
    assert 1 <= cpus <= len(os.sched_getaffinity(0))
    assert threads == default_threads(cpus)
