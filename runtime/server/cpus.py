"""How many CPU threads torch gets when ``--threads`` is not set.

torch's own default is one OpenMP thread per core of the machine. In a container that is wrong:
the container may run on fewer CPUs than the node has (its CPU set, or a cgroup CPU quota: a
Pod's CPU limit, which torch ignores), and OpenMP threads beyond the CPUs the process may use
wait at every parallel region's barrier for a time slice.

The default is therefore one thread per CPU this process may use (``sched_getaffinity``, capped
by the cgroup v2 ``cpu.max`` quota, rounded down), as vLLM-CPU binds one OpenMP thread per core
it may use. The server's asyncio thread (HTTP, JSON, one wake-up per step) is not given a CPU of
its own: on a quiet 2-core machine it keeps a few percent of one core busy, and two torch threads
served 1.3-1.6x the tokens/s of one (``bench/README.md``). On a node where other processes
compete for the same cores, fewer threads than CPUs can be faster (one thread was 1.4x to 6x
faster than two on the loaded 2-core machine): ``--threads`` sets the number.
"""

from __future__ import annotations

import os
from pathlib import Path

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def usable_cpus(affinity: int, cpu_max: str | None) -> int:
    """CPUs this process may keep busy: its CPU set, capped by a ``cpu.max`` quota ("max P" or
    "QUOTA PERIOD"; ``None`` or malformed: no cap); at least 1."""
    cpus = max(1, affinity)
    if cpu_max:
        fields = cpu_max.split()
        if len(fields) == 2 and fields[0] != "max":
            try:
                quota, period = int(fields[0]), int(fields[1])
            except ValueError:
                return cpus
            if quota > 0 and period > 0:
                cpus = min(cpus, max(1, quota // period))
    return cpus


def default_threads(cpus: int) -> int:
    """torch threads for ``cpus`` usable CPUs: one per CPU, at least one."""
    return max(1, cpus)


def read_cpu_max(path: Path = CGROUP_CPU_MAX) -> str | None:
    """The cgroup v2 CPU quota of this process, or ``None`` where there is none to read."""
    try:
        return path.read_text(encoding="ascii").strip()
    except OSError:
        return None


def auto_threads() -> tuple[int, int]:
    """(torch threads, usable CPUs) for this process."""
    cpus = usable_cpus(len(os.sched_getaffinity(0)), read_cpu_max())
    return default_threads(cpus), cpus


__all__ = ["auto_threads", "default_threads", "read_cpu_max", "usable_cpus"]
