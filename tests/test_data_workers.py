"""Loader workers: defaults from the CPUs really available, one worker pool alive at a time,
the cache options of the data config reaching the dataset."""

import multiprocessing
import os
import subprocess
import sys
import textwrap

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from pylon.data.workers import available_cpus, cgroup_cpu_limit, default_num_workers
from pylon.training.config import DataConfig
from pylon.training.datamodule import PylonDataModule, build_dataset, resolve_num_workers


@pytest.mark.parametrize(
    "cpus,processes,expected",
    # one CPU per training process, the rest split between them, at most 8 each
    [(1, 1, 0), (2, 1, 1), (3, 1, 2), (16, 1, 8), (64, 1, 8), (16, 8, 1), (4, 2, 1), (3, 4, 0)],
)
def test_default_workers_arithmetic(cpus, processes, expected):
    assert default_num_workers(processes, cpus=cpus) == expected


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs 2 CPUs to restrict to 1")
def test_worker_default_follows_cpu_affinity():
    # In a child process, so that restricting its CPUs leaves the test process alone.
    code = textwrap.dedent(
        """
        import os
        from pylon.data.workers import available_cpus
        from pylon.training.config import DataConfig
        from pylon.training.datamodule import resolve_num_workers
        for allowed in ({0, 1}, {0}):
            os.sched_setaffinity(0, allowed)
            print(len(allowed), available_cpus(), resolve_num_workers(DataConfig()))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    quota = cgroup_cpu_limit()
    for line in out.stdout.splitlines():
        allowed, cpus, workers = (int(v) for v in line.split())
        expected = allowed if quota is None else min(allowed, int(np.ceil(quota)))
        assert cpus == expected
        assert workers == expected - 1  # 1 CPU: load in the training process; 2: one worker
    assert len(out.stdout.splitlines()) == 2
    assert resolve_num_workers(DataConfig(num_workers=3)) == 3


def test_cgroup_quota_files(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_limit(v2) == 1.5
    assert available_cpus(v2) == min(len(os.sched_getaffinity(0)), 2)
    (v2 / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_limit(v2) is None
    v1 = tmp_path / "v1" / "cpu"
    v1.mkdir(parents=True)
    (v1 / "cpu.cfs_quota_us").write_text("100000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_limit(tmp_path / "v1") == 1.0
    assert available_cpus(tmp_path / "v1") == 1
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_cpu_limit(tmp_path / "v1") is None
    assert cgroup_cpu_limit(tmp_path / "none") is None


class _Recorder(L.LightningModule):
    """Notes which worker processes are alive at every training and validation step."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.seen = []

    def _note(self, stage):
        self.seen.append((stage, frozenset(p.pid for p in multiprocessing.active_children())))

    def training_step(self, batch, _):
        self._note("train")
        return self.layer(batch["image"].mean((1, 2, 3))[:, None]).sum()

    def validation_step(self, batch, _):
        self._note("val")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), 0.1)


def _fit(persistent):
    config = DataConfig(
        name="synthetic",
        size=32,
        batch_size=4,
        num_workers=1,
        persistent_workers=persistent,
        split_options={"train": {"num_images": 40}, "val": {"num_images": 16}},
    )
    module = _Recorder()
    trainer = L.Trainer(
        max_epochs=2,
        limit_train_batches=3,  # the case that kept 4 train workers beside 4 val workers
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(module, datamodule=PylonDataModule(config, seed=0))
    return module.seen


def test_one_worker_pool_alive_at_a_time():
    seen = _fit(persistent=False)
    stages = [stage for stage, _ in seen]
    # sanity check (2 val batches), then per epoch 3 train batches and 4 val batches
    assert stages == ["val"] * 2 + (["train"] * 3 + ["val"] * 4) * 2
    assert max(len(pids) for _, pids in seen) == 1
    train_pids = {pid for stage, pids in seen if stage == "train" for pid in pids}
    val_pids = {pid for stage, pids in seen if stage == "val" for pid in pids}
    assert train_pids and val_pids and not train_pids & val_pids


def test_persistent_workers_keep_both_pools():
    seen = _fit(persistent=True)
    assert max(len(pids) for _, pids in seen) == 2


def test_cache_options_reach_the_dataset(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    rows = ["image,finding"]
    for i in range(4):
        Image.fromarray(np.full((80, 60), 40 * i, np.uint8)).save(folder / f"{i}.png")
        rows.append(f"{i}.png,{i % 2}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    config = DataConfig(
        name="csv",
        root=str(folder),
        size=32,
        cache_size=64,
        cache_dir=str(tmp_path / "caches"),
        options={"progress": False},
    )
    dataset = build_dataset(config, "all", augment=True)
    assert dataset.cache.image_shape == (64, 64, 1)  # a training cache: at cache_size
    assert dataset.cache[0].shape == (64, 48, 1)  # 80 x 60 scaled to fit, shape kept
    assert dataset.cache.array_path.parent == tmp_path / "caches"
    assert dataset[0]["image"].shape == (1, 32, 32)
    evaluation = build_dataset(config, "all")
    assert evaluation.cache.image_shape == (32, 32, 1)  # at the input size: the eval resize
    clash = DataConfig(**{**config.__dict__, "options": {"cache_size": 128, "progress": False}})
    with pytest.raises(ValueError, match="data.cache_size"):
        build_dataset(clash, "all")
    synthetic = DataConfig(name="synthetic", size=32, cache_size=64, cache_dir=str(tmp_path))
    assert len(build_dataset(synthetic, "val")) > 0  # renders its images: nothing to cache
