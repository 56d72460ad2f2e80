"""How many CPU threads torch gets when ``--threads`` is not set.

torch's own default is one OpenMP thread per core of the machine. In a container that is wrong
twice: the container may run on fewer CPUs than the node has (its CPU set, or a cgroup CPU
quota: a Pod's CPU limit), and the server's own asyncio thread (HTTP, JSON, tokenization, one
wake-up per generated token) competes with the OpenMP threads for the same cores. An OpenMP
parallel region waits at its barrier for every one of its threads, so when one of them is
descheduled the whole step waits for a time slice: ``bench/README.md`` measured the engine 1.4x
to 6x slower with 2 threads than with 1 on a 2-core machine under load. vLLM-CPU likewise binds
one OpenMP thread per core it may use.

The default is therefore: the CPUs this process may use (``sched_getaffinity``, capped by the
cgroup v2 ``cpu.max`` quota, rounded down), less one kept for the event loop when there are at
least two. ``--threads`` overrides it.
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
    """torch threads for ``cpus`` usable CPUs: one per CPU, less one for the event loop."""
    return cpus - 1 if cpus >= 2 else 1


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
