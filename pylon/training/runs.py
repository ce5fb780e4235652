"""Run folder layout: ``runs/<experiment>/<seed>/`` with config, checkpoints, logs and results."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from pylon.io import write_text_atomic


@dataclass(frozen=True)
class RunPaths:
    root: Path

    @classmethod
    def of(cls, runs_dir: str | Path, experiment: str, seed: int) -> RunPaths:
        return cls(Path(runs_dir) / experiment / str(seed))

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
