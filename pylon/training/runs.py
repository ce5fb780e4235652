"""Run folder layout: ``runs/<experiment>/<seed>/`` with config, checkpoints, logs and results."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from pylon.io import write_text_atomic
from pylon.training.config import TrainConfig, apply_overrides
from pylon.training.names import check_experiment_name


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @classmethod
    def of(cls, runs_dir: str | Path, experiment: str, seed: int) -> RunPaths:
        """``runs_dir/experiment/seed``, refusing any name that would leave ``runs_dir``."""
        check_experiment_name(experiment)
        if int(seed) < 0:
            raise ValueError(f"seed={seed}; expected an integer >= 0")
        runs = Path(runs_dir).resolve()
        root = (runs / experiment / str(int(seed))).resolve()
        if runs not in root.parents:
            raise ValueError(f"run folder {root} would lie outside the runs directory {runs}")
        return cls(Path(runs_dir) / experiment / str(int(seed)))

    def has_checkpoint(self) -> bool:
        """True once the run (or any of its phases) wrote a checkpoint or best weights."""
        patterns = ("**/last.ckpt", "**/best.safetensors")
        return self.root.is_dir() and any(any(self.root.glob(p)) for p in patterns)

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def best(self) -> Path:
        return self.checkpoints / "best.safetensors"

    @property
    def last(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def done(self) -> Path:
        """Marker written last: its presence means the run finished."""
        return self.root / "DONE"

    @property
    def experiment_dir(self) -> Path:
        return self.root.parent

    def phase(self, index: int) -> RunPaths:
        return RunPaths(self.root / f"phase{index + 1}")

    def is_done(self) -> bool:
        return self.done.is_file()

    def mark_done(self, note: str = "") -> None:
        write_text_atomic(self.done, f"finished {time.strftime('%Y-%m-%d %H:%M:%S')}\n{note}")


def seed_dirs(experiment_dir: str | Path) -> list[Path]:
    """The seed folders of an experiment (numeric names), sorted by seed."""
    experiment_dir = Path(experiment_dir)
    dirs = [p for p in experiment_dir.iterdir() if p.is_dir() and p.name.lstrip("-").isdigit()]
    return sorted(dirs, key=lambda p: int(p.name))


def open_trained_run(run_dir: str | Path) -> tuple[RunPaths, TrainConfig]:
    """The paths of a trained run and the config that describes its best weights.

    For a multi-phase run that is the final phase's config. Raises ``FileNotFoundError`` naming
    what is missing when ``run_dir`` is not a run folder or has no best weights yet.
    """
    paths = RunPaths(Path(run_dir))
    if not paths.config.is_file():
        raise FileNotFoundError(f"{paths.root} is not a run folder: {paths.config} not found")
    if not paths.best.is_file():
        raise FileNotFoundError(f"{paths.best} not found: train the run first (pylon train)")
    config = TrainConfig.from_yaml(paths.config)
    if config.phases:
        config = apply_overrides(dataclasses.replace(config, phases=[]), config.phases[-1])
    return paths, config
