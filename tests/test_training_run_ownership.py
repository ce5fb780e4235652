"""A run folder is pylon's: --retrain deletes only what pylon wrote in a folder its marker proves
to be a run, one command at a time holds it (a killed holder's lock is taken over), Ctrl+C exits
130 and resumes, a finished run says it was skipped, and impossible device counts are refused
before any folder exists."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from pylon.cli.main import app
from pylon.data.workers import available_cpus
from pylon.locks import LOCK_NAME
from pylon.training.config import TrainConfig, apply_overrides
from pylon.training.fit import hardware_options, prepare_run
from pylon.training.runs import MARKER_NAME, RunPaths

TINY = {
    "experiment": "owned",
    "max_epochs": 3,
    "progress": False,
    "model.name": "pylon",
    "model.encoder": "resnet18",
    "data.batch_size": 2,
    "data.num_workers": 0,
    "data.split_options": {"train": {"num_images": 6}, "val": {"num_images": 2}},
}


def _command(config_path, runs, *extra):
    return [
        sys.executable, "-m", "pylon.cli.main", "train",
        "--config", str(config_path), "--runs-dir", str(runs), *extra,
    ]  # fmt: skip


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "400"}


def _wait_for_first_checkpoint(process, run, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not (run / "checkpoints/last.ckpt").exists():
        assert process.poll() is None, "training ended before writing checkpoints/last.ckpt"
        assert time.time() < deadline
        time.sleep(0.02)


def _fake_trained_run(tmp_path):
    config = apply_overrides(TrainConfig(), {"experiment": "e"})
    paths = RunPaths.of(tmp_path / "runs", "e", 0)
    prepare_run(config, paths, retrain=False)
    for name in (
        "checkpoints/last.ckpt",
        "checkpoints/best.safetensors",
        "logs/csv/version_0/metrics.csv",
        "heatmaps/test/heatmaps_000.png",
        "slurm/job.json",
        "phase1/config.yaml",
        "phase1/checkpoints/best.safetensors",
        "phase1/DONE",
        "DONE",
        "train_summary.json",
        "preprocessing.json",
        "eval_auc.csv",
        "unfinished_eval_loc.csv",
        "posthoc_gradcam.csv",
        LOCK_NAME,
    ):
        (paths.root / name).parent.mkdir(parents=True, exist_ok=True)
        (paths.root / name).write_text("pylon")
    return config, paths


def test_a_new_run_folder_is_marked_as_pylons(tmp_path):
    config = apply_overrides(TrainConfig(), {"experiment": "e", "seed": 3})
    paths = RunPaths.of(tmp_path, "e", 3)
    prepare_run(config, paths, retrain=False)
    record = json.loads((paths.root / MARKER_NAME).read_text())
    assert record["experiment"] == "e" and record["seed"] == 3


def test_retrain_deletes_only_pylons_files_and_keeps_the_users(tmp_path):
    config, paths = _fake_trained_run(tmp_path)
    (paths.root / "notes.txt").write_text("my notes")
    (paths.root / "analysis").mkdir()
    (paths.root / "analysis" / "plot.py").write_text("mine")
    (paths.root / "phase1" / "remarks.md").write_text("mine too")

    kept = prepare_run(config, paths, retrain=True)

    assert [p.relative_to(paths.root).as_posix() for p in kept] == [
        "analysis",
        "notes.txt",
        "phase1/remarks.md",
    ]
    assert (paths.root / "notes.txt").read_text() == "my notes"
    assert (paths.root / "analysis" / "plot.py").read_text() == "mine"
    assert (paths.root / "phase1" / "remarks.md").read_text() == "mine too"
    left = sorted(p.relative_to(paths.root).as_posix() for p in paths.root.rglob("*"))
    assert left == sorted(
        [
            "analysis",
            "analysis/plot.py",
            "notes.txt",
            "phase1",
            "phase1/remarks.md",
            LOCK_NAME,  # the lock file stays: removing it would race with a new holder
            MARKER_NAME,  # the fresh run's
            "config.yaml",
        ]
    )


def test_retrain_refuses_a_run_without_marker_and_deletes_nothing(tmp_path):
    config, paths = _fake_trained_run(tmp_path)
    (paths.root / MARKER_NAME).unlink()  # a run started by a pylon that wrote no marker
    before = sorted(paths.root.rglob("*"))
    with pytest.raises(ValueError) as caught:
        prepare_run(config, paths, retrain=True)
    message = str(caught.value)
    assert str(paths.root) in message and MARKER_NAME in message
    assert "delete the folder by hand" in message
    assert sorted(paths.root.rglob("*")) == before


@pytest.mark.slow
def test_cli_retrain_trains_again_and_names_what_it_kept(tmp_path):
    config = apply_overrides(TrainConfig(), {**TINY, "max_epochs": 1})
    config_path = tmp_path / "tiny.yaml"
    config.to_yaml(config_path)
    paths = RunPaths.of(tmp_path / "runs", config.experiment, 0)
    prepare_run(config, paths, retrain=False)
    paths.mark_done("an earlier run")
    (paths.root / "notes.txt").write_text("my notes")
    result = CliRunner().invoke(
        app,
        ["train", "--config", str(config_path), "--runs-dir", str(tmp_path / "runs"), "--retrain"],
        env={"COLUMNS": "400"},
    )
    assert result.exit_code == 0, result.output
    assert f"--retrain kept what pylon did not write in {paths.root}: notes.txt" in result.output
    assert (paths.root / "notes.txt").read_text() == "my notes"
    assert paths.best.is_file() and "an earlier run" not in paths.done.read_text()


def test_finished_run_says_it_was_skipped(tmp_path):
    config = apply_overrides(TrainConfig(), {"experiment": "e"})
    paths = RunPaths.of(tmp_path / "runs", "e", 0)
    prepare_run(config, paths, retrain=False)
    paths.mark_done("max_epochs 40")
    finished = paths.finished_at()
    result = CliRunner().invoke(
        app,
        ["train", "--config", str(paths.config), "--runs-dir", str(tmp_path / "runs")],
        env={"COLUMNS": "400"},
    )
    assert result.exit_code == 0, result.output
    assert (
        f"run {paths.root} is finished (DONE at {finished}); skipped; --retrain to train again"
        in result.output
    )


def test_more_cpu_processes_than_cpus_are_refused_before_any_folder(tmp_path):
    too_many = available_cpus() + 1
    config = apply_overrides(TrainConfig(), {"accelerator": "cpu", "devices": str(too_many)})
    with pytest.raises(ValueError, match=rf"devices={too_many} \(--devices\): more CPU processes"):
        hardware_options(config)
    assert hardware_options(apply_overrides(config, {"devices": str(available_cpus())}))

    runs = tmp_path / "runs"
    result = CliRunner().invoke(
        app,
        [
            "train",
            "synthetic-cam",
            "--devices",
            "99",
            "--accelerator",
            "cpu",
            "--runs-dir",
            str(runs),
        ],
        env={"COLUMNS": "400"},
    )
    assert result.exit_code == 1, result.output
    assert result.output.startswith("error: devices=99 (--devices): more CPU processes than CPUs")
    assert f"at most --devices {available_cpus()}" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not runs.exists()


def test_more_gpus_than_exist_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    config = apply_overrides(TrainConfig(), {"accelerator": "gpu", "devices": "3"})
    with pytest.raises(ValueError, match="more GPUs than exist; this machine has 2 GPU"):
        hardware_options(config)
    with pytest.raises(ValueError, match="GPU 2 does not exist"):
        hardware_options(apply_overrides(config, {"devices": "0,2"}))
    assert hardware_options(apply_overrides(config, {"devices": "0,1"}))["devices"] == "0,1"


@pytest.mark.slow
def test_second_train_is_refused_and_a_killed_holder_is_taken_over(tmp_path):
    config_path = tmp_path / "tiny.yaml"
    apply_overrides(TrainConfig(), TINY).to_yaml(config_path)
    runs = tmp_path / "runs"
    run = runs / "owned" / "0"
    first = subprocess.Popen(
        _command(config_path, runs),
        env=_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_first_checkpoint(first, run)
        os.kill(first.pid, signal.SIGSTOP)  # holds the lock, mid-run, as long as the test needs
        second = subprocess.run(
            _command(config_path, runs), env=_env(), capture_output=True, text=True, timeout=300
        )
        retrain = subprocess.run(
            _command(config_path, runs, "--retrain"),
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        first.kill()  # SIGKILL: the kernel releases its lock
        first.wait()
    for refused in (second, retrain):
        output = refused.stdout + refused.stderr
        assert refused.returncode == 1, output[-3000:]
        assert f"{run} is in use by pylon train (pid {first.pid} on host" in output
        assert "Traceback" not in output
    # the concurrent --retrain deleted nothing: the first run's checkpoint is still there
    assert (run / "checkpoints" / "last.ckpt").is_file() and (run / "config.yaml").is_file()
    assert not (run / "DONE").exists()

    third = subprocess.run(_command(config_path, runs), env=_env(), capture_output=True, text=True)
    assert third.returncode == 0, third.stderr[-3000:]
    assert "Restored all states from the checkpoint" in third.stderr
    assert (run / "DONE").is_file()


@pytest.mark.slow
def test_ctrl_c_exits_130_with_one_line_and_the_run_resumes(tmp_path):
    config_path = tmp_path / "tiny.yaml"
    apply_overrides(TrainConfig(), TINY).to_yaml(config_path)
    runs = tmp_path / "runs"
    run = runs / "owned" / "0"
    victim = subprocess.Popen(
        _command(config_path, runs), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    _wait_for_first_checkpoint(victim, run)
    time.sleep(0.5)
    victim.send_signal(signal.SIGINT)
    output = victim.communicate(timeout=120)[0].decode()
    assert victim.returncode == 130, output[-3000:]
    assert f"error: training of {run} was interrupted (SIGINT); run the same command again" in (
        output
    )
    assert "Traceback" not in output and "Detected KeyboardInterrupt" not in output
    assert not (run / "DONE").exists()

    resumed = subprocess.run(
        _command(config_path, runs), env=_env(), capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Restored all states from the checkpoint" in resumed.stderr
    assert (run / "DONE").is_file()
