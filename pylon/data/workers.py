"""How many CPUs this process may really use (affinity and cgroup quota), and the loader worker
count that follows from it."""

from __future__ import annotations

import math
import os
from pathlib import Path

MAX_DEFAULT_WORKERS = 8


def cgroup_cpu_limit(root: str | os.PathLike = "/sys/fs/cgroup") -> float | None:
    """CPUs allowed by the cgroup's CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us``).

    Args:
        root: the cgroup filesystem's mount point.

    Returns:
        quota / period (e.g. 1.5), or ``None`` where no quota is set or none can be read.
    """
    root = Path(root)
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for folder in (root / "cpu", root / "cpu,cpuacct", root):
        try:
            quota = int((folder / "cpu.cfs_quota_us").read_text())
            period = int((folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota <= 0 or period <= 0 else quota / period
    return None


def available_cpus(cgroup_root: str | os.PathLike = "/sys/fs/cgroup") -> int:
    """CPUs this process can run on: its affinity mask, capped by the cgroup quota (at least 1).

    Args:
        cgroup_root: the cgroup filesystem's mount point.

    Returns:
        The count.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    limit = cgroup_cpu_limit(cgroup_root)
    if limit is not None:
        cpus = min(cpus, math.ceil(limit))
    return max(1, cpus)


def default_num_workers(processes_per_node: int = 1, cpus: int | None = None) -> int:
    """DataLoader workers per process when ``data.num_workers`` is not set.

    One CPU per training process stays for the training step itself; the rest load data, split
    between the processes of the node, at most :data:`MAX_DEFAULT_WORKERS` each. On 2 CPUs
    that is 1 worker, on 1 CPU none (loading in the training process).

    Args:
        processes_per_node: training processes on this machine (DDP devices).
        cpus: available CPUs (default :func:`available_cpus`).

    Returns:
        The worker count (>= 0).
    """
    cpus = available_cpus() if cpus is None else cpus
    processes = max(1, processes_per_node)
    spare = max(0, cpus - processes)
    return min(MAX_DEFAULT_WORKERS, spare // processes)
