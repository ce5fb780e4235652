"""``sweep --launcher slurm``: a sweep's runs as SLURM jobs through submitit, one job per run.

Runs without a pending source are one job array (``--array-parallelism`` at a time). A transfer
run (``model.init_from`` naming another run's ``best.safetensors``, e.g. ``vindr-pylon-transfer``
from ``nih256-pylon``) whose source run is not finished yet is submitted as its own job with
``--dependency=afterok:<the source run's job>``, so it starts once that run succeeded and never
when it failed. Finished runs are skipped, as are runs whose recorded job is still in ``squeue``.

Each run folder records its job in ``slurm/job.json`` with links ``slurm/log.out`` and
``slurm/log.err`` to the job's submitit logs (the array's files live in ``RUNS/.submitit``).
The job (:class:`pylon.evaluation.cluster_job.RunJob`) resumes from ``last.ckpt`` after a
preemption or a time limit; ``pylon sweep --status`` reads the records
(:mod:`pylon.evaluation.sweep_status`).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pylon.evaluation.sweep import is_evaluated, planned_runs
from pylon.io import write_text_atomic
from pylon.training.config import ConfigError, TrainConfig, apply_overrides
from pylon.training.runs import RunPaths

EXTRA_HINT = "pip install 'pylon-localization[cluster]'"
SUBMITIT_FOLDER = ".submitit"  # under the runs root; experiment names cannot start with "."
JOB_FOLDER = "slurm"  # in each run folder
# How often a job may be requeued at its time limit (it resumes from last.ckpt each time).
MAX_TIMEOUT_REQUEUES = 20
# sbatch options that submitit's logs and requeueing rely on: not settable by --slurm-option.
RESERVED_OPTIONS = {
    "array": "--array-parallelism",
    "output": "(the run's slurm/log.out)",
    "error": "(the run's slurm/log.err)",
    "open_mode": "(submitit appends after a requeue)",
    "signal": "(submitit's preemption signal)",
    "partition": "--partition",
    "account": "--account",
    "qos": "--qos",
    "time": "--time",
    "mem": "--mem",
    "cpus_per_task": "--cpus-per-run",
    "gpus_per_node": "--gpus-per-run",
}
_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")


class SubmissionError(RuntimeError):
    """sbatch refused a submission (or could not run): exit 1 with its message."""

    exit_code = 1


def require_submitit():
    """Import submitit (the ``[cluster]`` extra) or raise one line saying how to install it.

    Returns:
        The ``submitit`` module.

    Raises:
        ImportError: submitit is not installed.
    """
    try:
        return importlib.import_module("submitit")
    except ImportError:
        raise ImportError(f"--launcher slurm needs submitit: {EXTRA_HINT}") from None


def parse_slurm_options(texts: list[str]) -> dict[str, str]:
    """Parse repeated ``--slurm-option KEY=VALUE`` into submitit's ``slurm_additional_parameters``.

    Args:
        texts: e.g. ``["constraint=a100", "mail-type=END"]``; keys are sbatch long options
            without ``--`` (``-`` and ``_`` alike).

    Returns:
        ``{key: value}`` with ``_`` in keys (submitit writes them as ``--key-name=value``).

    Raises:
        ConfigError: (exit 2) not ``KEY=VALUE``, or a key pylon sets itself (naming the option
            to use instead).
    """
    options: dict[str, str] = {}
    for text in texts:
        key, sep, value = text.partition("=")
        key = key.strip().removeprefix("--")
        if not sep or not _KEY.fullmatch(key) or not value.strip():
            raise ConfigError(
                f"--slurm-option {text!r}: expected KEY=VALUE with an sbatch option name, "
                "e.g. --slurm-option constraint=a100"
            )
        key = key.replace("-", "_")
        if key in RESERVED_OPTIONS:
            raise ConfigError(
                f"--slurm-option {text!r}: pylon sets {key.replace('_', '-')} itself; use "
                f"{RESERVED_OPTIONS[key]}"
            )
        options[key] = value.strip()
    return options


@dataclass(frozen=True)
class SlurmOptions:
    """What each run's job asks SLURM for.

    Args:
        partition: ``--partition``; None: the cluster's default.
        gpus_per_run: GPUs per node of each run (0: a CPU run); more than one starts one task
            per GPU and trains with DDP through Lightning's SLURM environment.
        nodes_per_run: nodes of each run (multi-node DDP).
        cpus_per_run: ``--cpus-per-task``; None: the cluster's default.
        mem_gb: memory per node in GB; None: the cluster's default.
        time_min: the time limit of each job in minutes; a run that needs longer is requeued
            (up to :data:`MAX_TIMEOUT_REQUEUES` times) and resumes from its last epoch.
        account: ``--account``.
        qos: ``--qos``.
        array_parallelism: how many runs of the array run at once.
        extra: more sbatch options (:func:`parse_slurm_options`).
    """

    partition: str | None = None
    gpus_per_run: int = 1
    nodes_per_run: int = 1
    cpus_per_run: int | None = None
    mem_gb: float | None = None
    time_min: int = 240
    account: str | None = None
    qos: str | None = None
    array_parallelism: int = 64
    extra: dict[str, str] = field(default_factory=dict)

    def executor_parameters(self) -> dict[str, Any]:
        """The parameters of ``AutoExecutor.update_parameters`` (generic and ``slurm_*``)."""
        tasks = max(1, self.gpus_per_run)
        params: dict[str, Any] = {
            "timeout_min": self.time_min,
            "nodes": self.nodes_per_run,
            "tasks_per_node": tasks,
            "slurm_array_parallelism": self.array_parallelism,
            "slurm_additional_parameters": dict(self.extra),
        }
        optional = {
            "gpus_per_node": self.gpus_per_run or None,
            "cpus_per_task": self.cpus_per_run,
            "mem_gb": self.mem_gb,
            "slurm_partition": self.partition,
            "slurm_account": self.account,
            "slurm_qos": self.qos,
        }
        params.update({k: v for k, v in optional.items() if v is not None})
        return params

    def hardware_overrides(self) -> dict[str, Any]:
        """The run config's hardware keys for these resources (all resumable keys)."""
        if self.gpus_per_run == 0:
            return {}
        world = self.gpus_per_run * self.nodes_per_run
        return {
            "accelerator": "gpu",
            "devices": str(self.gpus_per_run),
            "num_nodes": self.nodes_per_run,
            "strategy": "ddp" if world > 1 else "auto",
        }


def transfer_source(config: TrainConfig) -> RunPaths | None:
    """The run whose best weights ``config`` starts from (``model.init_from`` of the form
    ``<runs>/<experiment>/<seed>/checkpoints/best.safetensors``), or None."""
    init_from = config.model.init_from
    if not init_from:
        return None
    weights = Path(init_from.replace("{seed}", str(config.seed)))
    if weights.name != "best.safetensors" or weights.parent.name != "checkpoints":
        return None
    return RunPaths(weights.parent.parent)


def job_record_path(paths: RunPaths) -> Path:
    """``RUN/slurm/job.json``: the run's last submitted job."""
    return paths.root / JOB_FOLDER / "job.json"


def read_job_record(paths: RunPaths) -> dict | None:
    """The run's job record (:func:`write_job_record`), or None if it has none or it is
    unreadable."""
    try:
        record = json.loads(job_record_path(paths).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "job_id" in record else None


def write_job_record(paths: RunPaths, job, *, cluster: str, after: str | None) -> None:
    """Record ``job`` (a submitit job) in the run folder and link its logs there.

    Writes ``slurm/job.json`` (job id, cluster, submission time, log paths, the job it waits
    for) and links ``slurm/log.out`` / ``slurm/log.err`` to the job's stdout / stderr.
    """
    folder = paths.root / JOB_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    stdout, stderr = Path(job.paths.stdout).resolve(), Path(job.paths.stderr).resolve()
    record = {
        "job_id": str(job.job_id),
        "cluster": cluster,
        "submitted": time.strftime("%Y-%m-%d %H:%M:%S"),
        "stdout": str(stdout),
        "stderr": str(stderr),
        "after": after,
    }
    for name, target in (("log.out", stdout), ("log.err", stderr)):
        link = folder / name
        tmp = folder / f".{name}.tmp"
        tmp.unlink(missing_ok=True)
        os.symlink(target, tmp)
        os.replace(tmp, link)
    write_text_atomic(job_record_path(paths), json.dumps(record, indent=2) + "\n")


@dataclass
class _Run:
    config: TrainConfig
    paths: RunPaths
    row: dict
    source: RunPaths | None = None


def _active_job(paths: RunPaths, active: dict[str, str] | None) -> str | None:
    record = read_job_record(paths)
    if record is None or active is None or record["job_id"] not in active:
        return None
    return record["job_id"]


def submit_sweep(
    presets: list[str],
    seeds: list[int],
    *,
    options: SlurmOptions,
    overrides: list[str] = (),
    runs_dir: str | Path = "runs",
    evaluate: bool = True,
    cluster: str = "slurm",
) -> list[dict]:
    """Submit every preset x seed not finished yet as a job; returns one row per run.

    Args:
        presets: preset names.
        seeds: seeds of each preset.
        options: the jobs' resources.
        overrides: ``key=value`` overrides for every run.
        runs_dir: the runs root (shared with the cluster's nodes).
        evaluate: each job also evaluates its run and summarises the experiment's seeds.
        cluster: submitit's executor: ``"slurm"``, or ``"local"`` (subprocesses on this
            machine, no dependencies: a transfer run whose source is unfinished is left).

    Returns:
        One row per run: ``experiment``, ``seed``, ``status`` (``submitted``, ``skipped (...)``,
        ``not submitted: ...`` for a transfer run whose source is neither finished nor queued,
        ``waits for ...`` on the local executor), ``job`` (the job id or ``""``), ``after``
        (the job it waits for, or ``""``).

    Raises:
        ImportError: submitit is missing (one line naming the extra).
        SubmissionError: sbatch failed.
    """
    from pylon.evaluation.sweep_status import squeue_states

    submitit = require_submitit()
    from pylon.evaluation.cluster_job import RunJob  # imports submitit

    runs_dir = Path(runs_dir).resolve()
    runs: list[_Run] = []
    for _, seed, config, paths in planned_runs(presets, seeds, overrides, runs_dir):
        row = {"experiment": config.experiment, "seed": seed, "status": "", "job": "", "after": ""}
        runs.append(_Run(config, paths, row, transfer_source(config)))

    active = squeue_states()[0] if cluster == "slurm" else None
    jobs_of: dict[Path, str] = {}  # run folder -> its queued, running or new job
    todo: list[_Run] = []
    for run in runs:
        running = _active_job(run.paths, active)
        if run.paths.is_done() and (is_evaluated(run.paths) or not evaluate):
            run.row["status"] = "skipped (finished)"
        elif running is not None:
            run.row.update(status=f"skipped (job {running} is {active[running]})", job=running)
            jobs_of[run.paths.root.resolve()] = running
        else:
            todo.append(run)

    if not todo:
        return [run.row for run in runs]
    try:
        executor = submitit.AutoExecutor(
            folder=runs_dir / SUBMITIT_FOLDER,
            cluster=cluster,
            slurm_max_num_timeout=MAX_TIMEOUT_REQUEUES,
        )
    except RuntimeError as err:  # no srun: not a SLURM machine
        raise SubmissionError(
            f"--launcher slurm: {err} (submit from a login node of the cluster)"
        ) from None
    workdir = str(Path.cwd())
    hardware = options.hardware_overrides()

    def job_of(run: _Run) -> RunJob:
        config = apply_overrides(run.config, hardware) if hardware else run.config
        return RunJob(config, str(runs_dir), workdir, evaluate)

    def ready(run: _Run) -> tuple[bool, str | None]:
        """(can be submitted now, the job it must wait for)."""
        if run.source is None or run.source.is_done():
            return True, None
        waits_for = jobs_of.get(run.source.root.resolve())
        if waits_for is None:
            waits_for = _active_job(run.source, active)
        return waits_for is not None, waits_for

    parameters = options.executor_parameters()
    first = [run for run in todo if ready(run) == (True, None)]
    later = [run for run in todo if run not in first]
    if first:
        executor.update_parameters(name="pylon-sweep", **parameters)
        try:
            with executor.batch():
                jobs = [executor.submit(job_of(run)) for run in first]
        except Exception as err:  # sbatch's error, or it could not be run
            raise SubmissionError(f"submitting the sweep's job array failed: {err}") from err
        for run, job in zip(first, jobs, strict=True):
            _submitted(run, job, cluster, None, jobs_of)

    # a source submitted above may unlock its transfer runs; repeat for chains
    progress = True
    while later and progress:
        progress = False
        for run in list(later):
            can, waits_for = ready(run)
            if not can:
                continue
            if cluster != "slurm":
                # the local executor has no dependencies
                run.row["status"] = f"waits for {run.source.root} (job {waits_for}); sweep again"
                later.remove(run)
                continue
            extra = dict(parameters["slurm_additional_parameters"])
            dependency = f"afterok:{waits_for}"
            if extra.get("dependency"):
                dependency = f"{dependency},{extra['dependency']}"
            extra["dependency"] = dependency
            executor.update_parameters(
                **{**parameters, "slurm_additional_parameters": extra},
                name=f"pylon-{run.paths.experiment_dir.name}-{run.paths.root.name}",
            )
            try:
                job = executor.submit(job_of(run))
            except Exception as err:
                raise SubmissionError(f"submitting {run.paths.root} failed: {err}") from err
            _submitted(run, job, cluster, waits_for, jobs_of)
            later.remove(run)
            progress = True
    for run in later:
        run.row["status"] = (
            f"not submitted: needs {run.source.root} (train it first, or add its preset to "
            "the sweep)"
        )
    return [run.row for run in runs]


def _submitted(run: _Run, job, cluster: str, after: str | None, jobs_of: dict) -> None:
    write_job_record(run.paths, job, cluster=cluster, after=after)
    jobs_of[run.paths.root.resolve()] = str(job.job_id)
    run.row.update(status="submitted", job=str(job.job_id), after=after or "")
