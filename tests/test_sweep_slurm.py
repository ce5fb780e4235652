"""``sweep --launcher slurm`` through submitit: real jobs on submitit's local executor (a sweep end
to end, and a USR2 preemption that requeues a run which then ends with the weights of an
uninterrupted one), and the sbatch scripts of a GPU array read back from a fake ``sbatch``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from pylon.cli.main import app
from pylon.evaluation.cluster import SlurmOptions, read_job_record, submit_sweep
from pylon.training.runs import RunPaths

runner = CliRunner()

# Two presets made the same tiny CAM run (4 epochs of 4 steps at 64 px): a 2-run sweep whose runs
# differ only in their experiment name, which no random draw depends on.
PRESETS = ["synthetic-cam", "synthetic-li2018"]
PREEMPTED = "synthetic-fpn"  # the same run again, stopped as SLURM preempts: SIGTERM, then USR2
TINY = [
    "model.name=cam",
    "model.options={}",
    "max_epochs=4",
    "progress=false",
    "precision=fp32",
    "data.size=64",
    "data.batch_size=2",
    "data.num_workers=0",
    'data.split_options={"train": {"num_images": 8}, "val": {"num_images": 2}}',
]


def _wait(condition, what: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory):
    """The 2-run sweep on submitit's local executor (subprocesses); the job of
    ``synthetic-li2018`` gets SIGUSR2 once its first epoch's last.ckpt exists."""
    runs_dir = tmp_path_factory.mktemp("local") / "runs"
    old = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # the jobs inherit it: the same kernels in each
    try:
        rows = submit_sweep(
            PRESETS, [0], options=SlurmOptions(gpus_per_run=0, time_min=30), overrides=TINY,
            runs_dir=runs_dir, evaluate=False, cluster="local",
        )  # fmt: skip
        preempted = submit_sweep(
            [PREEMPTED], [0], options=SlurmOptions(gpus_per_run=0, time_min=30), overrides=TINY,
            runs_dir=runs_dir, evaluate=False, cluster="local",
        )  # fmt: skip
    finally:
        if old is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = old
    assert preempted[0]["status"] == "submitted"
    reference, run = (RunPaths.of(runs_dir, preset, 0) for preset in PRESETS)
    third = RunPaths.of(runs_dir, PREEMPTED, 0)
    for victim, signals in ((run, [signal.SIGUSR2]), (third, [signal.SIGTERM, signal.SIGUSR2])):
        _wait(victim.last.is_file, "the first epoch's last.ckpt", timeout=600)
        assert not victim.is_done() and torch.load(victim.last, weights_only=True)["epoch"] < 3
        # the lock file names the process training the run: submitit's job process
        pid = json.loads((victim.root / ".pylon.lock").read_text())["pid"]
        os.kill(pid, signals[0])
        if len(signals) == 2:  # USR2 once training has stopped on the SIGTERM
            log = victim.root / "slurm" / "log.out"
            _wait(lambda log=log: "preemption signal" in log.read_text(), "SIGTERM", timeout=300)
            os.kill(pid, signals[1])
    runs = (reference, run, third)
    _wait(lambda: all(r.is_done() for r in runs), "the runs to finish", timeout=600)
    return {"rows": rows, "runs_dir": runs_dir, "reference": reference, "run": run, "third": third}


@pytest.mark.slow
def test_local_executor_runs_a_two_run_sweep_as_subprocesses(local_sweep):
    rows = local_sweep["rows"]
    assert [(r["experiment"], r["status"]) for r in rows] == [(p, "submitted") for p in PRESETS]
    for row, run in zip(rows, (local_sweep["reference"], local_sweep["run"]), strict=True):
        assert run.is_done() and run.best.is_file()
        assert set(load_file(run.best)), "best weights hold tensors"
        record = read_job_record(run)
        assert record["job_id"] == row["job"] and record["job_id"] != str(os.getpid())
        # the job's logs are linked in the run folder
        assert "Job completed successfully" in (run.root / "slurm" / "log.out").read_text()
    # submitting again skips the finished runs
    again = submit_sweep(
        PRESETS, [0], options=SlurmOptions(gpus_per_run=0), overrides=TINY,
        runs_dir=local_sweep["runs_dir"], evaluate=False, cluster="local",
    )  # fmt: skip
    assert [r["status"] for r in again] == ["skipped (finished)"] * 2


def _same_training(reference: RunPaths, run: RunPaths) -> None:
    a, b = load_file(reference.best), load_file(run.best)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    a = torch.load(reference.last, weights_only=True)["state_dict"]
    b = torch.load(run.last, weights_only=True)["state_dict"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ref_summary = json.loads((reference.root / "train_summary.json").read_text())
    summary = json.loads((run.root / "train_summary.json").read_text())
    for key in ("best_val_loss", "best_epoch", "epochs", "global_step"):
        assert summary[key] == ref_summary[key], key


@pytest.mark.slow
def test_sigusr2_requeues_the_run_which_ends_as_an_uninterrupted_one(local_sweep):
    run, reference = local_sweep["run"], local_sweep["reference"]
    out = (run.root / "slurm" / "log.out").read_text()
    err = (run.root / "slurm" / "log.err").read_text()
    assert "Caught signal SIGUSR2" in out and "Calling checkpoint method" in out, out[-3000:]
    assert "Requeued job" in out and "Job completed successfully" in out, out[-3000:]
    assert "Restored all states from the checkpoint" in err, err[-3000:]
    assert "Requeued job" not in (reference.root / "slurm" / "log.out").read_text()
    _same_training(reference, run)


@pytest.mark.slow
def test_a_preemption_sigterm_then_usr2_is_requeued_by_submitit_alone(local_sweep):
    # SLURM preempts with SIGTERM, then USR2: Lightning stops training on the SIGTERM, the job
    # waits for submitit's USR2, which requeues it; it ends as the uninterrupted run
    third = local_sweep["third"]
    out = (third.root / "slurm" / "log.out").read_text()
    assert "terminated (SIGTERM)" in out and "Caught signal SIGUSR2" in out, out[-3000:]
    assert "Requeued job" in out and "Job completed successfully" in out, out[-3000:]
    assert "Submitted job triggered an exception" not in out
    _same_training(local_sweep["reference"], third)


FAKE_SBATCH = """#!/bin/sh
n=$(cat "$FAKE_SLURM/count" 2>/dev/null || echo 1233)
n=$((n+1)); echo $n > "$FAKE_SLURM/count"
echo "$@" > "$FAKE_SLURM/args_$n"
cp "$1" "$FAKE_SLURM/script_$n"
echo "Submitted batch job $n"
"""


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """``sbatch`` that records each script and answers job ids 1234, 1235, ...; ``srun``."""
    bin_dir, record = tmp_path / "bin", tmp_path / "sbatch"
    bin_dir.mkdir()
    record.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for tool in bin_dir.iterdir():
        tool.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SLURM", str(record))
    monkeypatch.chdir(tmp_path)  # the transfer presets read runs/nih256-<model>/<seed>/...
    return record


def _options(script: str) -> dict[str, str]:
    lines = [line.removeprefix("#SBATCH --") for line in script.splitlines()]
    return dict(line.split("=", 1) for line in lines if "=" in line and not line[0] == "#")


def test_sbatch_script_of_a_gpu_array_option_by_option(fake_slurm, tmp_path):
    # seed 1 of the NIH run is finished and evaluated: skipped, and its transfer run needs no
    # dependency; seed 0's transfer run waits for seed 0's job
    done = tmp_path / "runs" / "nih256-pylon" / "1"
    (done / "checkpoints").mkdir(parents=True)
    (done / "checkpoints" / "best.safetensors").write_bytes(b"")
    (done / "DONE").write_text("finished")
    time.sleep(0.01)
    (done / "eval_auc.csv").write_text("metric,value\nauroc_macro,0.5\n")  # newer: not stale
    args = [
        "sweep", "nih256-pylon", "vindr-pylon-transfer", "--seeds", "0-1",
        "--launcher", "slurm", "--partition", "gpu", "--gpus-per-run", "2",
        "--cpus-per-run", "8", "--mem", "32", "--time", "120", "--account", "lab",
        "--qos", "high", "--array-parallelism", "1", "--slurm-option", "constraint=a100",
        "--slurm-option", "mail-type=END",
    ]  # fmt: skip
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in fake_slurm.glob("script_*")) == ["script_1234", "script_1235"]
    array = (fake_slurm / "script_1234").read_text()
    options = _options(array)
    expected = {
        "partition": "gpu",
        "gpus-per-node": "2",
        "ntasks-per-node": "2",  # one task per GPU: Lightning's SLURM environment runs DDP
        "nodes": "1",
        "cpus-per-task": "8",
        "mem": "32GB",
        "time": "120",
        "account": "lab",
        "qos": "high",
        "array": "0-1%1",  # nih256-pylon/0 and vindr-pylon-transfer/1
        "constraint": "a100",
        "mail-type": "END",
        "signal": "USR2@90",  # submitit's preemption and time-limit signal
        "open-mode": "append",
    }
    for key, value in expected.items():
        assert options.get(key) == value, (key, array)
    assert "dependency" not in options
    assert options["output"] == str(tmp_path / "runs" / ".submitit" / "%A_%a_0_log.out")
    assert "srun --unbuffered" in array and "submitit.core._submit" in array

    single = _options((fake_slurm / "script_1235").read_text())
    assert single["dependency"] == "afterok:1234_0"
    for key in ("partition", "gpus-per-node", "cpus-per-task", "mem", "time", "constraint"):
        assert single[key] == expected[key], key
    assert "array" not in single

    records = {
        (exp, seed): read_job_record(RunPaths.of(tmp_path / "runs", exp, seed))
        for exp, seed in [("nih256-pylon", 0), ("vindr-pylon-transfer", 0)]
    }
    records[("vindr-pylon-transfer", 1)] = read_job_record(
        RunPaths.of(tmp_path / "runs", "vindr-pylon-transfer", 1)
    )
    assert records[("nih256-pylon", 0)]["job_id"] == "1234_0"
    assert records[("vindr-pylon-transfer", 1)]["job_id"] == "1234_1"
    assert records[("vindr-pylon-transfer", 0)]["job_id"] == "1235"
    assert records[("vindr-pylon-transfer", 0)]["after"] == "1234_0"
    assert not (tmp_path / "runs" / "nih256-pylon" / "1" / "slurm").exists()  # skipped
    log = tmp_path / "runs" / "nih256-pylon" / "0" / "slurm" / "log.out"
    assert os.readlink(log) == str(tmp_path / "runs" / ".submitit" / "1234_0_0_log.out")


def test_the_job_of_a_gpu_run_trains_on_its_gpus_with_lightnings_slurm_environment(
    fake_slurm, tmp_path
):
    # the pickled job (what srun runs) asks for the GPUs of its allocation, one DDP rank each
    import cloudpickle

    submit_sweep(
        ["nih256-pylon"], [0], options=SlurmOptions(gpus_per_run=4, nodes_per_run=2),
        runs_dir="runs", evaluate=False,
    )  # fmt: skip
    with open(tmp_path / "runs" / ".submitit" / "1234_submitted.pkl", "rb") as handle:
        job = cloudpickle.load(handle).function  # written by this test: trusted
    assert (job.config.accelerator, job.config.devices) == ("gpu", "4")
    assert (job.config.num_nodes, job.config.strategy) == (2, "ddp")
    script = _options((fake_slurm / "script_1234").read_text())
    assert (script["nodes"], script["ntasks-per-node"], script["gpus-per-node"]) == ("2", "4", "4")


def test_a_second_sweep_skips_runs_whose_job_is_still_queued(fake_slurm, tmp_path):
    submit_sweep(["synthetic-cam"], [0, 1], options=SlurmOptions(), runs_dir="runs")
    squeue = Path(os.environ["PATH"].split(os.pathsep)[0]) / "squeue"
    squeue.write_text("#!/bin/sh\necho '1234_0|PENDING'\necho '1234_1|RUNNING'\n")
    squeue.chmod(0o755)
    rows = submit_sweep(["synthetic-cam"], [0, 1], options=SlurmOptions(), runs_dir="runs")
    assert [r["status"] for r in rows] == [
        "skipped (job 1234_0 is PENDING)",
        "skipped (job 1234_1 is RUNNING)",
    ]
    assert not (fake_slurm / "script_1235").exists()


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ("constraint", "expected KEY=VALUE"),
        ("=a100", "expected KEY=VALUE"),
        ("constraint=", "expected KEY=VALUE"),
        ("array=0-3", "use --array-parallelism"),
        ("time=10", "use --time"),
    ],
)
def test_a_bad_slurm_option_exits_2_naming_it(fake_slurm, option, message):
    args = ["sweep", "synthetic-cam", "--launcher", "slurm", "--slurm-option", option]
    result = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output
    assert message in result.output and repr(option) in result.output
    assert not (fake_slurm / "count").exists()  # nothing submitted


def test_slurm_options_without_launcher_slurm_exit_2(tmp_path):
    args = ["sweep", "synthetic-cam", "--partition", "gpu", "--runs-dir", str(tmp_path)]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 2 and "--partition need --launcher slurm" in result.output


def test_without_submitit_launcher_slurm_says_which_extra_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit raises ImportError
    args = ["sweep", "synthetic-cam", "--launcher", "slurm", "--runs-dir", str(tmp_path)]
    result = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 1
    assert result.output.strip() == (
        "error: --launcher slurm needs submitit: pip install 'pylon-localization[cluster]'"
    )
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_under_slurm_lightnings_auto_requeue_is_off(tmp_path):
    # In a SLURM step (srun's variables), Lightning would requeue on USR1 itself (save an HPC
    # checkpoint, call `scontrol requeue`) beside submitit's USR2 requeue. With its auto-requeue
    # off nobody handles USR1: the process ends by the signal and scontrol is never called.
    from pylon.training.config import TrainConfig, apply_overrides, parse_override

    config = apply_overrides(TrainConfig(), dict(parse_override(t) for t in TINY))
    config = apply_overrides(config, {"experiment": "slurm", "max_epochs": 30})
    config.to_yaml(tmp_path / "tiny.yaml")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path}/scontrol_calls\n')
    (bin_dir / "scontrol").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
        "SLURM_NTASKS": "1",
        "SLURM_NTASKS_PER_NODE": "1",
        "SLURM_JOB_NAME": "pylon-sweep",
        "SLURM_JOB_ID": "1234",
        "SLURM_PROCID": "0",
        "SLURM_LOCALID": "0",
        "SLURM_NODEID": "0",
        "SLURM_NODELIST": "localhost",
    }
    command = [
        sys.executable, "-m", "pylon.cli.main", "train", "--config", str(tmp_path / "tiny.yaml"),
        "--runs-dir", str(tmp_path / "runs"),
    ]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    run = RunPaths.of(tmp_path / "runs", "slurm", 0)
    _wait(lambda: run.last.is_file() or process.poll() is not None, "last.ckpt", timeout=600)
    assert process.poll() is None, process.communicate()[0].decode()[-3000:]
    process.send_signal(signal.SIGUSR1)
    output = process.communicate(timeout=300)[0].decode()
    assert process.returncode == -signal.SIGUSR1, output[-3000:]
    assert not (tmp_path / "scontrol_calls").exists()
    assert not list(run.root.rglob("hpc_ckpt_*.ckpt"))


def test_a_transfer_run_whose_source_is_neither_finished_nor_queued_is_not_submitted(fake_slurm):
    args = ["sweep", "vindr-cam-transfer", "--seeds", "0", "--launcher", "slurm"]
    result = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 1, result.output
    assert "not submitted: needs runs/nih256-cam/0" in result.output
    assert not (fake_slurm / "count").exists()


def test_launcher_slurm_without_srun_says_where_to_submit_from(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no srun, no sbatch
    args = ["sweep", "synthetic-cam", "--launcher", "slurm", "--runs-dir", str(tmp_path / "r")]
    result = runner.invoke(app, args, env={"COLUMNS": "300"})
    assert result.exit_code == 1, result.output
    assert "srun" in result.output and "login node" in result.output
    assert "Traceback" not in result.output
