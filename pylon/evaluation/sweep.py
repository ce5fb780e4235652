"""``sweep``: many runs (presets x seeds) as subprocesses, one per GPU or CPU worker slot."""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
from pathlib import Path

from pylon.evaluation.evaluate import summarize_experiment
from pylon.training.config import TrainConfig, apply_overrides, parse_override
from pylon.training.fit import SIGINT_EXIT_CODE, TrainingInterrupted
from pylon.training.presets import get_preset
from pylon.training.runs import RunPaths, evaluation_staleness


def parse_seeds(text: str) -> list[int]:
    """Parse a ``--seeds`` value.

    Args:
        text: ``"0-4"`` -> [0, 1, 2, 3, 4]; ``"0,2,5"`` -> [0, 2, 5]; ranges and lists combine.

    Returns:
        The seeds, in the order given. Raises ``ValueError`` for anything else or no seed.
    """
    seeds: list[int] = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part[1:]:
                low, high = part.split("-", 1) if not part.startswith("-") else (part, "")
                seeds.extend(range(int(low), int(high) + 1))
            elif part:
                seeds.append(int(part))
    except ValueError:
        raise ValueError(f"--seeds {text!r}: expected e.g. '0-4' or '0,2,3'") from None
    if not seeds:
        raise ValueError(f"--seeds {text!r} selects no seed")
    return seeds


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "pylon.cli.main", *args]


def is_evaluated(paths: RunPaths) -> bool:
    """True when the run has ``eval_auc.csv`` and no evaluation output of it is older than the
    weights it scored (:func:`pylon.training.runs.evaluation_staleness`)."""
    outputs = [p for p in (paths.root / "eval_auc.csv", paths.root / "eval_loc.csv") if p.is_file()]
    if not outputs or outputs[0].name != "eval_auc.csv":
        return False
    return all(evaluation_staleness(paths.root, p) is None for p in outputs)


def planned_runs(
    presets: list[str], seeds: list[int], overrides: list[str], runs_dir: str | Path
) -> list[tuple[str, int, TrainConfig, RunPaths]]:
    """Every preset x seed of a sweep with its config (``overrides``, then the seed) and folder.

    Returns:
        ``(preset, seed, config, paths)`` per run, preset by preset.

    Raises:
        ConfigError: an unknown preset or a bad override (before any run is started).
    """
    parsed = dict(parse_override(o) for o in overrides)
    runs = []
    for preset in presets:
        base = get_preset(preset)
        for seed in seeds:
            config = apply_overrides(base, {**parsed, "seed": seed})
            runs.append((preset, seed, config, RunPaths.of(runs_dir, config.experiment, seed)))
    return runs


def sweep(
    presets: list[str],
    seeds: list[int],
    *,
    gpus: list[str] = (),
    workers: int = 1,
    overrides: list[str] = (),
    runs_dir: str | Path = "runs",
    evaluate: bool = True,
) -> list[dict]:
    """Train (then evaluate) every preset x seed not finished yet; returns one status row per run.

    With ``gpus`` each slot is one GPU (``CUDA_VISIBLE_DEVICES``); otherwise ``workers`` CPU slots.
    Each run's output goes to ``RUNS/<experiment>/<seed>.log``.

    Args:
        presets: preset names.
        seeds: seeds of each preset.
        gpus: GPU ids, one slot each.
        workers: CPU slots when no GPU is given.
        overrides: ``key=value`` overrides for every run.
        runs_dir: the runs folder.
        evaluate: also evaluate each run (``pylon evaluate``) and summarise its experiment.

    Returns:
        One row per run: ``experiment``, ``seed``, ``status``.
    """
    jobs: queue.Queue = queue.Queue()
    rows: list[dict] = []
    for preset, seed, config, paths in planned_runs(presets, seeds, overrides, runs_dir):
        row = {"experiment": config.experiment, "seed": seed, "status": "pending"}
        rows.append(row)
        trained = paths.is_done()
        evaluated = is_evaluated(paths)
        if trained and (evaluated or not evaluate):
            row["status"] = "skipped (finished)"
            continue
        commands = []
        if not trained:
            train_args = ["train", preset, "--seed", str(seed), "--runs-dir", str(runs_dir)]
            for text in overrides:
                train_args += ["--set", text]
            commands.append(_command(*train_args))
        if evaluate:
            commands.append(_command("evaluate", str(paths.root), "--no-progress"))
        jobs.put((row, commands, paths))

    slots = [str(g) for g in gpus] if gpus else [None] * max(1, workers)

    def work(gpu: str | None) -> None:
        env = dict(os.environ)
        env["CUDA_VISIBLE_DEVICES"] = gpu if gpu is not None else ""
        while True:
            try:
                row, commands, paths = jobs.get_nowait()
            except queue.Empty:
                return
            row["status"] = "running"
            log = paths.root.parent / f"{paths.root.name}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a") as out:
                for command in commands:
                    result = subprocess.run(command, env=env, stdout=out, stderr=subprocess.STDOUT)
                    if result.returncode in (TrainingInterrupted.exit_code, SIGINT_EXIT_CODE):
                        row["status"] = f"interrupted (rerun to resume, see {log})"
                        break
                    if result.returncode != 0:
                        row["status"] = f"failed (see {log})"
                        break
                else:
                    row["status"] = "done"

    threads = [threading.Thread(target=work, args=(gpu,), daemon=True) for gpu in slots]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if evaluate:
        for experiment in sorted({row["experiment"] for row in rows}):
            if (Path(runs_dir) / experiment).is_dir():
                summarize_experiment(Path(runs_dir) / experiment)
    return rows
