"""How many CPUs this process may really use (affinity and cgroup quota), the loader worker
count that follows from it, and a fork guard for OpenCV's thread pool."""

from __future__ import annotations

import math
import os
import sys
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


_forking_opencv_threads: list[int] = []
_fork_guard_installed = False


def _opencv_before_fork() -> None:
    cv2 = sys.modules.get("cv2")
    threads = cv2.getNumThreads() if cv2 is not None else 1
    _forking_opencv_threads.append(threads)
    if threads != 1:
        cv2.setNumThreads(1)  # joins the pool's threads: the child inherits no waiting ones


def _opencv_after_fork() -> None:
    threads = _forking_opencv_threads.pop() if _forking_opencv_threads else 1
    cv2 = sys.modules.get("cv2")
    if cv2 is not None and threads != 1:
        cv2.setNumThreads(threads)  # the pool starts again (lazily), in parent and child alike


def install_opencv_fork_guard() -> None:
    """Make ``fork`` safe for OpenCV's thread pool (idempotent; done when this module loads).

    A process forked while OpenCV's pool threads wait on their condition variable inherits that
    variable with waiters that do not exist in the child, and the child's first
    ``cv2.setNumThreads`` (a DataLoader worker's ``init_worker``) then waits for them forever:
    with ``num_workers=1`` after any multi-threaded OpenCV call in the main process (a
    ``num_workers=0`` pass, an in-process evaluation), the worker hung at start-up. Around every
    fork the pool is shrunk to one thread (no pool threads) and restored afterwards, in the
    parent and in the child; nothing happens while ``cv2`` is not imported.
    """
    global _fork_guard_installed
    if _fork_guard_installed or not hasattr(os, "register_at_fork"):
        return
    os.register_at_fork(
        before=_opencv_before_fork,
        after_in_parent=_opencv_after_fork,
        after_in_child=_opencv_after_fork,
    )
    _fork_guard_installed = True


install_opencv_fork_guard()
