"""Resume after SIGKILL: a killed-then-rerun training ends where an uninterrupted one does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from pylon.training.config import TrainConfig, apply_overrides

pytestmark = pytest.mark.slow

TINY = {
    "experiment": "resume",
    "max_epochs": 3,
    "progress": False,
    "model.name": "pylon",
    "model.encoder": "resnet18",
    "data.batch_size": 2,
    "data.num_workers": 0,
    "data.split_options": {"train": {"num_images": 6}, "val": {"num_images": 2}},
    "optim.lr": 1e-3,
    "optim.equivariance": 0.1,  # its random views must be restored on resume too
}


def _command(config_path, runs):
    return [
        sys.executable, "-m", "pylon.cli.main", "train",
        "--config", str(config_path), "--runs-dir", str(runs),
    ]  # fmt: skip


def _wait_for_first_checkpoint(process, run, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not (run / "checkpoints/last.ckpt").exists():
        assert process.poll() is None, "training ended before writing checkpoints/last.ckpt"
        assert time.time() < deadline
        time.sleep(0.02)


def test_sigkill_mid_epoch_then_resume_equals_uninterrupted(tmp_path):
    config_path = tmp_path / "tiny.yaml"
    apply_overrides(TrainConfig(), TINY).to_yaml(config_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole, killed = tmp_path / "whole", tmp_path / "killed"

    reference = subprocess.Popen(_command(config_path, whole), env=env, stderr=subprocess.PIPE)
    victim = subprocess.Popen(_command(config_path, killed), env=env, stderr=subprocess.DEVNULL)
    run = killed / "resume" / "0"
    _wait_for_first_checkpoint(victim, run)
    time.sleep(1.0)  # into the next epoch (3 steps of 2 images)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert not (run / "DONE").exists()
    state = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert state["epoch"] < 2, "the kill must land before the last epoch"

    resumed = subprocess.run(_command(config_path, killed), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restored all states from the checkpoint" in resumed.stderr
    _, err = reference.communicate()
    assert reference.returncode == 0, err[-3000:]

    # Exact equality: same CPU, thread count and kernels, and every random draw is restored
    # (data order and augmentation are functions of (seed, epoch, index); RNG states are saved).
    ref_run = whole / "resume" / "0"
    for name in ("best.safetensors",):
        a, b = load_file(ref_run / "checkpoints" / name), load_file(run / "checkpoints" / name)
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
    a = torch.load(ref_run / "checkpoints/last.ckpt", weights_only=True)
    b = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    assert a["pylon_plateau"] == b["pylon_plateau"]
    ref_summary = json.loads((ref_run / "train_summary.json").read_text())
    summary = json.loads((run / "train_summary.json").read_text())
    for key in ("best_val_loss", "best_epoch", "epochs", "global_step"):
        assert summary[key] == ref_summary[key], key


def test_sigterm_saves_exits_nonzero_is_not_done_and_resumes(tmp_path):
    config_path = tmp_path / "tiny.yaml"
    apply_overrides(TrainConfig(), TINY).to_yaml(config_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = tmp_path / "runs"
    victim = subprocess.Popen(
        _command(config_path, runs), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    run = runs / "resume" / "0"
    _wait_for_first_checkpoint(victim, run)
    time.sleep(0.5)
    victim.send_signal(signal.SIGTERM)  # as SLURM or Kubernetes stop a job
    output = victim.communicate(timeout=120)[0].decode()
    assert victim.returncode == 143, output[-3000:]
    assert "terminated (SIGTERM)" in output and "Traceback" not in output
    assert not (run / "DONE").exists()
    state = torch.load(run / "checkpoints/last.ckpt", weights_only=True)
    assert state["epoch"] < 2

    resumed = subprocess.run(_command(config_path, runs), env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restored all states from the checkpoint" in resumed.stderr
    assert (run / "DONE").is_file()
