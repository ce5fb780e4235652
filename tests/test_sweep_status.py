"""``pylon sweep --status``: hand-made run folders in each state, read with a fake ``squeue`` on
PATH and without one."""

from __future__ import annotations

import json
import os
import socket
import subprocess

import pytest
from typer.testing import CliRunner

from pylon.cli.main import app
from pylon.evaluation.sweep_status import sweep_status

runner = CliRunner()

TRACEBACK = """submitit ERROR (2026-01-01 10:00:00,000) - Submitted job triggered an exception
Traceback (most recent call last):
  File "x.py", line 1, in <module>
FileNotFoundError: model.init_from: weights runs/nih256-pylon/3/best.safetensors not found
"""


def _run(runs, seed, *, job=None, err=None, done=False, checkpoint=False, local_log=None):
    run = runs / "exp" / str(seed)
    run.mkdir(parents=True)
    if job is not None:
        stderr = runs / ".submitit" / f"{job}_0_log.err"
        stderr.parent.mkdir(exist_ok=True)
        if err is not None:
            stderr.write_text(err)
        record = {"job_id": job, "stdout": str(stderr.with_suffix(".out")), "stderr": str(stderr)}
        (run / "slurm").mkdir()
        (run / "slurm" / "job.json").write_text(json.dumps({**record, "after": None}))
    if checkpoint:
        (run / "config.yaml").write_text("seed: 0\n")
        (run / "checkpoints").mkdir()
        (run / "checkpoints" / "last.ckpt").write_bytes(b"")
    if done:
        (run / "DONE").write_text("finished 2026-01-01 12:00:00\nmax_epochs 4")
    if local_log is not None:
        (runs / "exp" / f"{seed}.log").write_text(local_log)


@pytest.fixture
def runs(tmp_path):
    runs = tmp_path / "runs"
    _run(runs, 0, job="500_0", err="epoch 3\n", done=True)
    _run(runs, 1, job="500_1")  # no log yet
    _run(runs, 2, job="500_2", err="Epoch 1: train_loss 0.7\n", checkpoint=True)
    _run(runs, 3, job="500_3", err=TRACEBACK)
    _run(runs, 4, job="500_4", err="Epoch 2: train_loss 0.6\n", checkpoint=True)
    _run(runs, 5, local_log="error: data.root: folder data/nih14 not found\n")
    _run(runs, 6, checkpoint=True)
    dead = subprocess.Popen(["true"])  # the stale lock of a process that has exited
    dead.wait()
    stale = {"command": "pylon train", "pid": dead.pid, "host": socket.gethostname()}
    (runs / "exp" / "6" / ".pylon.lock").write_text(json.dumps(stale))
    _run(runs, 7)
    _run(runs, 8, checkpoint=True)  # a local sweep's run in progress: its lock names this process
    lock = {"command": "pylon train", "pid": os.getpid(), "host": socket.gethostname()}
    (runs / "exp" / "8" / ".pylon.lock").write_text(json.dumps(lock))
    return runs


@pytest.fixture
def fake_squeue(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    squeue = bin_dir / "squeue"
    # the array's pending task 1 and running task 2; 500_4 ended (not listed); another job
    squeue.write_text(
        '#!/bin/sh\necho "$@" > "$(dirname "$0")/args"\n'
        "echo '500_1|PENDING'\necho '500_2|RUNNING'\necho '77|RUNNING'\n"
    )
    squeue.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


FAILED_LINE = "FileNotFoundError: model.init_from: weights runs/nih256-pylon/3/best.safetensors"


def _states(rows):
    return {row["seed"]: (row["state"], row["job"], row["detail"]) for row in rows}


def test_status_with_squeue(runs, fake_squeue, monkeypatch):
    monkeypatch.setenv("USER", "alice")
    rows, note = sweep_status(runs)
    assert note == ""
    states = _states(rows)
    assert states[0] == ("done", "500_0", "finished 2026-01-01 12:00:00")
    assert states[1] == ("queued", "500_1", "PENDING")
    assert states[2] == ("running", "500_2", "RUNNING")
    assert states[3][:2] == ("failed", "500_3") and states[3][2].startswith(FAILED_LINE)
    assert states[4] == ("interrupted", "500_4", "Epoch 2: train_loss 0.6")  # ended, resumable
    assert states[5] == ("failed", "", "error: data.root: folder data/nih14 not found")
    assert states[6] == ("interrupted", "", "")
    assert states[7] == ("not started", "", "")
    assert states[8] == ("running", "", f"pid {os.getpid()} on this host (pylon train)")
    args = (fake_squeue / "args").read_text().split()
    assert "--array" in args and "--noheader" in args  # one line per array task


def test_status_without_squeue_says_so_once_and_reads_the_folders(runs, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    rows, note = sweep_status(runs)
    assert note == "squeue not found: states come from the run folders only"
    states = _states(rows)
    assert states[0][0] == "done"
    assert states[1] == ("queued", "500_1", "no log yet")
    assert states[2] == ("running", "500_2", "Epoch 1: train_loss 0.7")
    assert states[3][0] == "failed" and states[3][2].startswith(FAILED_LINE)
    assert states[5][0] == "failed" and states[6][0] == "interrupted"
    assert states[7][0] == "not started" and states[8][0] == "running"


def test_status_command_prints_the_note_once_and_a_row_per_run(runs, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    args = ["sweep", "--status", "exp", "--runs-dir", str(runs)]
    result = runner.invoke(app, args, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert result.output.count("squeue not found") == 1
    for state in ("done", "queued", "running", "failed", "interrupted", "not started"):
        assert state in result.output
    assert "500_3" in result.output and "FileNotFoundError" in result.output


def test_status_of_an_unknown_experiment_exits_1_naming_it(runs):
    result = runner.invoke(app, ["sweep", "--status", "nosuch", "--runs-dir", str(runs)])
    assert result.exit_code == 1 and "nosuch: no such experiment folder" in result.output
