"""The loaders' worker default (``data.num_workers=None``): the CPUs available to the process
(affinity, cgroup v2 quota) minus one, between 0 and 8; no persistent worker pools by default."""

import math
import os
import subprocess
import sys
import textwrap

import torch

from pylon.data.workers import available_cpus, cgroup_cpu_limit
from pylon.training.config import DataConfig
from pylon.training.datamodule import eval_loader, resolve_num_workers


def _resolved_in_child(affinity: set[int] | None) -> int:
    """``resolve_num_workers(DataConfig())`` in a child process, optionally pinned to CPUs."""
    code = textwrap.dedent(
        f"""
        import os
        from pylon.training.config import DataConfig
        from pylon.training.datamodule import resolve_num_workers
        affinity = {affinity!r}
        if affinity is not None:
            os.sched_setaffinity(0, affinity)
        print(resolve_num_workers(DataConfig()))
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "LOCAL_WORLD_SIZE"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert out.returncode == 0, out.stderr
    return int(out.stdout.strip())


def test_one_cpu_gives_no_workers():
    first = min(os.sched_getaffinity(0))
    assert _resolved_in_child({first}) == 0


def test_real_affinity_gives_cpus_minus_one_at_most_eight():
    cpus = len(os.sched_getaffinity(0))
    quota = cgroup_cpu_limit()
    if quota is not None:  # a cgroup v2 quota caps the affinity
        cpus = min(cpus, math.ceil(quota))
    assert _resolved_in_child(None) == max(0, min(8, cpus - 1))
    assert resolve_num_workers(DataConfig(num_workers=3)) == 3  # an explicit count is kept


def test_cgroup_v2_quota_parsed_from_cpu_max(tmp_path):
    (tmp_path / "cpu.max").write_text("250000 100000\n")  # 2.5 CPUs
    assert cgroup_cpu_limit(tmp_path) == 2.5
    assert available_cpus(tmp_path) == min(len(os.sched_getaffinity(0)), 3)
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU still runs one process
    assert available_cpus(tmp_path) == 1
    (tmp_path / "cpu.max").write_text("max 100000\n")  # no quota
    assert cgroup_cpu_limit(tmp_path) is None
    assert available_cpus(tmp_path) == len(os.sched_getaffinity(0))
    (tmp_path / "cpu.max").write_text("garbage\n")
    assert cgroup_cpu_limit(tmp_path) is None


def test_worker_pools_are_not_persistent_unless_asked():
    data = torch.utils.data.TensorDataset(torch.zeros(4, 1))
    assert DataConfig().num_workers is None and DataConfig().persistent_workers is False
    default = eval_loader(data, DataConfig(num_workers=2))
    assert default.num_workers == 2 and default.persistent_workers is False
    asked = eval_loader(data, DataConfig(num_workers=2, persistent_workers=True))
    assert asked.persistent_workers is True
