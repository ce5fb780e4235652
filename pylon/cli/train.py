"""``pylon train``, ``pylon presets`` and ``pylon sweep``: run the paper's experiments."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from pylon.cli.app import app, exit_on_user_error, fail

console = Console()


def _say(line: str) -> None:
    console.print(line, markup=False, highlight=False, soft_wrap=True)


def resolve_config(
    preset: str | None, config_file: Path | None, overrides: list[str], seed: int | None
):
    """Preset (or defaults), then the config file, then ``--set`` overrides, then ``--seed``."""
    from pylon.training.config import TrainConfig, apply_overrides, parse_override
    from pylon.training.presets import get_preset

    if preset and config_file:
        raise typer.BadParameter("give a PRESET or --config, not both")
    config = get_preset(preset) if preset else TrainConfig()
    if config_file:
        config = TrainConfig.from_yaml(config_file)
    parsed = dict(parse_override(text) for text in overrides)
    if seed is not None:
        parsed["seed"] = seed
    return apply_overrides(config, parsed) if parsed else config.validate()


@app.command("train")
def train_command(
    ctx: typer.Context,
    preset: str | None = typer.Argument(None, help="Preset name (see `pylon presets`)."),
    config_file: Path | None = typer.Option(
        None, "--config", help="YAML config, e.g. RUN/config.yaml."
    ),
    overrides: list[str] = typer.Option([], "--set", help="Override, e.g. --set optim.lr=3e-4."),
    seed: int | None = typer.Option(None, help="Random seed (also the run folder name)."),
    runs_dir: Path = typer.Option(Path("runs"), help="Runs root: RUNS/<experiment>/<seed>/."),
    devices: str | None = typer.Option(None, help="Lightning devices: 'auto', 2, '0,1'."),
    num_nodes: int | None = typer.Option(None, help="Number of nodes."),
    strategy: str | None = typer.Option(None, help="Lightning strategy, e.g. ddp."),
    accelerator: str | None = typer.Option(None, help="cpu, gpu or auto."),
    precision: str | None = typer.Option(
        None, help="auto (fp16 on GPU, bf16 on CPUs with native bf16), fp32, bf16 or fp16."
    ),
    retrain: bool = typer.Option(
        False, help="Delete pylon's files of the run folder (never others) and train again."
    ),
) -> None:
    """Train one run; re-running the same command resumes it, or skips it when finished.

    The run folder is locked while the command runs: a second command on the same run is
    refused. SIGTERM exits 143 and Ctrl+C 130; both resume on rerun.
    """
    from pylon.training.fit import is_rank_zero_process, train

    if preset is None and config_file is None:
        # no experiment named: show what to run instead of starting a default 40-epoch run
        typer.echo(ctx.get_help())
        typer.echo("\nerror: give a PRESET (see `pylon presets`) or --config FILE", err=True)
        raise typer.Exit(2)
    extra = list(overrides)
    for key, value in (
        ("devices", devices),
        ("num_nodes", num_nodes),
        ("strategy", strategy),
        ("accelerator", accelerator),
        ("precision", precision),
    ):
        if value is not None:
            extra.append(f"{key}={value}")
    with exit_on_user_error(console):
        config = resolve_config(preset, config_file, extra, seed)
        run_dir = train(config, runs_dir=runs_dir, retrain=retrain, notify=_say)
    if is_rank_zero_process():
        console.print(f"run folder: {run_dir}")


@app.command("presets")
def presets_command() -> None:
    """List the experiment presets with a one-line description."""
    from pylon.training.presets import list_presets

    table = Table("preset", "description")
    for name, description in list_presets().items():
        table.add_row(name, description)
    console.print(table)


@app.command("sweep")
def sweep_command(
    presets: list[str] = typer.Argument(
        None,
        metavar="PRESET",
        help="Preset names (with --status: experiment names; none = all).",
    ),
    seeds: str = typer.Option("0-4", help="Seeds: '0-4' or '0,2,3'."),
    launcher: str = typer.Option(
        "local", help="local: subprocesses on this machine; slurm: one SLURM job per run."
    ),
    gpus: str = typer.Option("", help="local: GPU ids '0,1,...', one run per GPU; empty = CPU."),
    workers: int = typer.Option(1, help="local: parallel runs on CPU when --gpus is empty."),
    partition: str | None = typer.Option(None, help="slurm: partition."),
    gpus_per_run: int | None = typer.Option(
        None, min=0, help="slurm: GPUs per node of each run (default 1; 0 = CPU; >1 = DDP)."
    ),
    nodes_per_run: int | None = typer.Option(None, min=1, help="slurm: nodes per run (default 1)."),
    cpus_per_run: int | None = typer.Option(None, min=1, help="slurm: CPUs per task."),
    mem: float | None = typer.Option(None, min=0.1, help="slurm: memory per node in GB."),
    time_min: int | None = typer.Option(
        None,
        "--time",
        min=1,
        help="slurm: time limit per job in minutes (default 240); "
        "longer runs are requeued and resume.",
    ),
    account: str | None = typer.Option(None, help="slurm: account."),
    qos: str | None = typer.Option(None, help="slurm: quality of service."),
    array_parallelism: int | None = typer.Option(
        None, min=1, help="slurm: runs of the job array at once (default 64)."
    ),
    slurm_options: list[str] = typer.Option(
        [], "--slurm-option", help="slurm: more sbatch options, KEY=VALUE (repeatable)."
    ),
    status: bool = typer.Option(
        False,
        "--status",
        help="Show each run's state (queued, running, done, interrupted, "
        "failed) instead of starting runs.",
    ),
    overrides: list[str] = typer.Option([], "--set", help="Override applied to every run."),
    runs_dir: Path = typer.Option(Path("runs"), help="Runs root."),
    evaluate: bool = typer.Option(True, help="Evaluate finished runs and summarise seeds."),
) -> None:
    """Run PRESET x SEEDS, skipping finished runs: locally as subprocesses, one per free GPU,
    then summarise; or with --launcher slurm as SLURM jobs (docs/training.md)."""
    presets = presets or []
    if status:
        _print_status(runs_dir, presets)
        return
    if not presets:
        raise fail(console, "give PRESET... (see `pylon presets`), or --status", 2)
    slurm_given = [
        name
        for name, value in (
            ("--partition", partition),
            ("--gpus-per-run", gpus_per_run),
            ("--nodes-per-run", nodes_per_run),
            ("--cpus-per-run", cpus_per_run),
            ("--mem", mem),
            ("--time", time_min),
            ("--account", account),
            ("--qos", qos),
            ("--array-parallelism", array_parallelism),
            ("--slurm-option", slurm_options or None),
        )
        if value is not None
    ]
    if launcher not in ("local", "slurm"):
        raise fail(console, f"--launcher {launcher!r}: expected local or slurm", 2)
    if launcher == "local" and slurm_given:
        raise fail(console, f"{', '.join(slurm_given)} need --launcher slurm", 2)
    if launcher == "slurm":
        if gpus or workers != 1:
            raise fail(
                console, "--gpus and --workers are for --launcher local; use --gpus-per-run", 2
            )
        _sweep_slurm(
            presets, seeds, overrides, runs_dir, evaluate,
            dict(
                partition=partition, gpus_per_run=gpus_per_run, nodes_per_run=nodes_per_run,
                cpus_per_run=cpus_per_run, mem_gb=mem, time_min=time_min, account=account,
                qos=qos, array_parallelism=array_parallelism,
            ),
            slurm_options,
        )  # fmt: skip
        return
    from pylon.evaluation.sweep import parse_seeds, sweep

    with exit_on_user_error(console):
        summary = sweep(
            presets,
            parse_seeds(seeds),
            gpus=[g for g in gpus.split(",") if g.strip()],
            workers=workers,
            overrides=overrides,
            runs_dir=runs_dir,
            evaluate=evaluate,
        )
    table = Table("experiment", "seed", "status")
    for row in summary:
        table.add_row(row["experiment"], str(row["seed"]), row["status"])
    console.print(table)
    if any(row["status"].startswith("failed") for row in summary):
        raise typer.Exit(1)


def _sweep_slurm(presets, seeds, overrides, runs_dir, evaluate, given, slurm_options) -> None:
    from pylon.evaluation.cluster import (
        SlurmOptions,
        parse_slurm_options,
        require_submitit,
        submit_sweep,
    )
    from pylon.evaluation.sweep import parse_seeds

    try:
        require_submitit()
    except ImportError as err:
        raise fail(console, err, 1) from None
    with exit_on_user_error(console, code=2):
        seed_list = parse_seeds(seeds)
        options = SlurmOptions(
            **{k: v for k, v in given.items() if v is not None},
            extra=parse_slurm_options(slurm_options),
        )
    with exit_on_user_error(console):
        rows = submit_sweep(
            presets,
            seed_list,
            options=options,
            overrides=overrides,
            runs_dir=runs_dir,
            evaluate=evaluate,
        )
    table = Table("experiment", "seed", "status", "job", "after")
    for row in rows:
        table.add_row(row["experiment"], str(row["seed"]), row["status"], row["job"], row["after"])
    console.print(table)
    console.print(f"`pylon sweep --status --runs-dir {runs_dir}` shows their states")
    refused = [row for row in rows if row["status"].startswith("not submitted")]
    for row in refused:  # whole lines, whatever the terminal's width did to the table
        console.print(
            f"{row['experiment']}/{row['seed']}: {row['status']}",
            soft_wrap=True,
            markup=False,
            highlight=False,
        )
    if refused:
        raise typer.Exit(1)


def _print_status(runs_dir: Path, experiments: list[str]) -> None:
    from pylon.evaluation.sweep_status import sweep_status

    with exit_on_user_error(console):
        rows, note = sweep_status(runs_dir, experiments)
    if note:
        _say(note)
    table = Table("experiment", "seed", "state", "job", "detail")
    for row in rows:
        table.add_row(row["experiment"], str(row["seed"]), row["state"], row["job"], row["detail"])
    console.print(table)
