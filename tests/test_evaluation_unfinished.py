"""Evaluation describes finished runs only: a run without DONE is refused unless
--allow-unfinished (whose outputs are named as such and never counted), and an eval_*.csv older
than the weights it scored is stale for summaries and sweeps, which evaluate the run again."""

from __future__ import annotations

import os
import shutil

import pytest
from typer.testing import CliRunner

from pylon.cli.main import app
from pylon.evaluation.evaluate import stale_evaluations, summarize_experiment, write_metrics
from pylon.evaluation.sweep import sweep
from pylon.training.config import TrainConfig, apply_overrides
from pylon.training.fit import train
from pylon.training.runs import evaluation_staleness

TINY = {
    "experiment": "unfinished",
    "max_epochs": 1,
    "progress": False,
    "precision": "fp32",
    "model.name": "pylon",
    "model.encoder": "resnet18",
    "data.batch_size": 2,
    "data.num_workers": 0,
    "data.split_options": {
        "train": {"num_images": 2},
        "val": {"num_images": 2},
        "test": {"num_images": 4},
    },
}
ENV = {"COLUMNS": "400"}


def _invoke(*args):
    return CliRunner().invoke(app, list(args), env=ENV)


def test_an_output_older_than_the_weights_or_done_is_stale(tmp_path):
    run = tmp_path / "e" / "0"
    (run / "checkpoints").mkdir(parents=True)
    write_metrics({"auroc_macro": 0.5}, run / "eval_auc.csv")
    assert evaluation_staleness(run, run / "eval_auc.csv") is None  # nothing to compare with
    (run / "checkpoints" / "best.safetensors").write_bytes(b"w")
    (run / "DONE").write_text("finished")
    old = os.stat(run / "DONE").st_mtime_ns - 10**9
    os.utime(run / "eval_auc.csv", ns=(old, old))
    reason = evaluation_staleness(run, run / "eval_auc.csv")
    assert reason is not None and f"{run / 'eval_auc.csv'} is older than" in reason
    assert f"pylon evaluate {run}" in reason
    assert summarize_experiment(tmp_path / "e") == {}
    assert stale_evaluations(tmp_path / "e") == [reason]


@pytest.mark.slow
def test_unfinished_run_is_refused_marked_and_stale_once_finished(tmp_path):
    config = apply_overrides(TrainConfig(), TINY)
    runs = tmp_path / "runs"
    run = train(config, runs_dir=runs)
    (run / "DONE").unlink()  # as while training is still going: the best weights are interim

    refused = _invoke("evaluate", str(run), "--no-progress")
    assert refused.exit_code == 1, refused.output
    assert refused.output.startswith(f"error: {run} is not finished (no DONE)")
    assert "--allow-unfinished" in refused.output and "Traceback" not in refused.output
    assert not list(run.glob("*eval_*.csv"))

    allowed = _invoke("evaluate", str(run), "--no-progress", "--allow-unfinished")
    assert allowed.exit_code == 0, allowed.output
    assert sorted(p.name for p in run.glob("*eval_*.csv")) == [
        "unfinished_eval_auc.csv",
        "unfinished_eval_loc.csv",
        "unfinished_eval_pairs.csv",
    ]
    assert not (run.parent / "summary_auc.csv").exists()

    # what a pylon without this check wrote: the interim weights' numbers as eval_*.csv
    for kind in ("auc", "loc"):
        shutil.copyfile(run / f"unfinished_eval_{kind}.csv", run / f"eval_{kind}.csv")
    train(config, runs_dir=runs)  # the run finishes
    assert (run / "DONE").is_file()

    summarized = _invoke("summarize", str(run.parent))
    assert summarized.exit_code == 1
    assert f"warning: {run / 'eval_auc.csv'} is older than DONE" in summarized.output
    assert "no evaluated seed folder" in summarized.output
    assert summarize_experiment(run.parent) == {}

    rows = sweep(["synthetic-cam"], [0], overrides=["experiment=unfinished"], runs_dir=runs)
    assert [row["status"] for row in rows] == ["done"]  # evaluated again, not skipped
    assert stale_evaluations(run.parent) == []
    assert summarize_experiment(run.parent)["auc"]["n"].tolist()[0] == 1
    again = sweep(["synthetic-cam"], [0], overrides=["experiment=unfinished"], runs_dir=runs)
    assert [row["status"] for row in again] == ["skipped (finished)"]
