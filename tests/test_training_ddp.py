"""DDP code path on CPU (gloo, 2 processes): training runs, and evaluation gathers every rank's
predictions, so its metrics equal a single-process evaluation (not a per-rank average)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from pylon.evaluation.evaluate import read_metrics
from pylon.training.config import TrainConfig, apply_overrides

pytestmark = pytest.mark.slow

TINY = {
    "experiment": "ddp",
    "max_epochs": 1,
    "progress": False,
    "precision": "fp32",
    "accelerator": "cpu",
    "model.name": "cam",
    "model.encoder": "resnet18",
    "data.batch_size": 2,
    "data.num_workers": 0,
    "data.split_options": {
        "train": {"num_images": 4},
        "val": {"num_images": 3},
        "test": {"num_images": 15},  # odd: the two ranks get 8 and 7 images
    },
}


def _pylon(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pylon.cli.main", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)


def test_ddp_train_and_gathered_evaluation(tmp_path):
    config_path = tmp_path / "ddp.yaml"
    apply_overrides(TrainConfig(), TINY).to_yaml(config_path)
    runs = tmp_path / "runs"
    ddp = ["--devices", "2", "--strategy", "ddp"]
    result = _pylon("train", "--config", str(config_path), "--runs-dir", str(runs), *ddp)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "distributed_backend=gloo" in result.stderr
    run = runs / "ddp" / "0"
    assert (run / "DONE").is_file()

    result = _pylon("evaluate", str(run), "--no-progress", *ddp)
    assert result.returncode == 0, result.stderr[-3000:]
    gathered_auc = read_metrics(run / "eval_auc.csv")
    gathered_loc = read_metrics(run / "eval_loc.csv")
    assert gathered_auc["n_images_auc"] == 15

    # The reference: one process, same command and thread count (an untrained model's logits are
    # near-ties, so a different thread count alone could reorder them and move the AUROC).
    single_run = tmp_path / "single"
    shutil.copytree(run, single_run)
    result = _pylon("evaluate", str(single_run), "--no-progress", "--devices", "1")
    assert result.returncode == 0, result.stderr[-3000:]
    single_auc = read_metrics(single_run / "eval_auc.csv")
    single_loc = read_metrics(single_run / "eval_loc.csv")
    assert gathered_auc == pytest.approx(single_auc, abs=1e-6, nan_ok=True)
    # localization counts are integers summed over ranks: exactly equal
    assert gathered_loc == pytest.approx(single_loc, abs=1e-12, nan_ok=True)
    # every rank's per-pair records are gathered: the same rows as one process wrote
    import pandas as pd

    order = ["image_id", "class"]
    pairs = pd.read_csv(run / "eval_pairs.csv").sort_values(order, ignore_index=True)
    single = pd.read_csv(single_run / "eval_pairs.csv").sort_values(order, ignore_index=True)
    assert len(pairs) == gathered_loc["n_pairs_loc"]
    pd.testing.assert_frame_equal(pairs, single, check_exact=False, atol=1e-6)
