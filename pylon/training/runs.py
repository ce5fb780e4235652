"""Run folder layout: ``runs/<experiment>/<seed>/`` with config, checkpoints, logs and results."""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from pylon.io import TEMP_PREFIX, TEMP_SUFFIX, write_text_atomic
from pylon.locks import LOCK_NAME
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

    @property
    def marker(self) -> Path:
        """Written when pylon starts a run in the folder: the proof ``--retrain`` asks for."""
        return self.root / MARKER_NAME

    def is_marked(self) -> bool:
        return self.marker.is_file()

    def write_marker(self, experiment: str, seed: int) -> None:
        record = {
            "pylon_run": 1,
            "experiment": experiment,
            "seed": int(seed),
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        write_text_atomic(self.marker, json.dumps(record) + "\n")

    def finished_at(self) -> str:
        """When the run finished, from its ``DONE`` file (``"?"`` when unreadable)."""
        try:
            first = self.done.read_text().splitlines()[0]
        except (OSError, IndexError, UnicodeDecodeError):
            return "?"
        return first.removeprefix("finished ").strip() or "?"

    def phase(self, index: int) -> RunPaths:
        return RunPaths(self.root / f"phase{index + 1}")

    def is_done(self) -> bool:
        return self.done.is_file()

    def mark_done(self, note: str = "") -> None:
        write_text_atomic(self.done, f"finished {time.strftime('%Y-%m-%d %H:%M:%S')}\n{note}")


MARKER_NAME = ".pylon-run"
# What pylon writes in a run folder (names, shell patterns): what --retrain may delete. Folders
# in PYLON_TREES are pylon's as a whole; phase folders hold the same entries as a run folder.
PYLON_FILES = (
    "config.yaml",
    "DONE",
    "train_summary.json",
    "preprocessing.json",
    "eval_auc.csv",
    "eval_loc.csv",
    "unfinished_eval_auc.csv",
    "unfinished_eval_loc.csv",
    "eval_pairs.csv",
    "unfinished_eval_pairs.csv",
    "posthoc_*.csv",
    MARKER_NAME,
    f"{TEMP_PREFIX}*{TEMP_SUFFIX}",
)
PYLON_TREES = ("checkpoints", "logs", "heatmaps", "slurm")  # slurm: the sweep's job records
_PHASE = re.compile(r"phase[1-9][0-9]*")


def _pylon_entries(folder: Path) -> tuple[list[Path], list[Path]]:
    """(pylon's entries, everything else) in ``folder``, phase folders looked into; the lock
    file is in neither: it stays (see :mod:`pylon.locks`)."""
    ours: list[Path] = []
    others: list[Path] = []
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if name == LOCK_NAME:
            continue
        if entry.is_dir() and not entry.is_symlink():
            if name in PYLON_TREES:
                ours.append(entry)
            elif _PHASE.fullmatch(name):
                phase_ours, phase_others = _pylon_entries(entry)
                if phase_others:
                    ours.extend(phase_ours)
                    others.extend(phase_others)
                else:
                    ours.append(entry)
            else:
                others.append(entry)
        elif any(fnmatch.fnmatchcase(name, pattern) for pattern in PYLON_FILES):
            ours.append(entry)
        else:
            others.append(entry)
    return ours, others


def clear_run(paths: RunPaths) -> list[Path]:
    """Delete pylon's files of a run folder for ``--retrain``; anything else is kept.

    Only a folder with pylon's marker (:attr:`RunPaths.marker`, written when pylon starts a run)
    is touched; the lock file stays. Call it while holding the folder's lock.

    Args:
        paths: the run.

    Returns:
        The entries kept because pylon did not write them (e.g. a user's notes).

    Raises:
        ValueError: the folder holds files but no marker: not a pylon run, or a run started by
            a pylon version that wrote no marker; nothing is deleted.
    """
    if not paths.root.is_dir():
        return []
    ours, others = _pylon_entries(paths.root)
    if not ours and not others:
        return []
    if not paths.is_marked():
        kind = "a run of an older pylon version" if paths.config.is_file() else "not a pylon run"
        raise ValueError(
            f"--retrain: {paths.root} is not a pylon run folder as far as pylon can tell (no "
            f"{MARKER_NAME} marker: {kind}); refusing to delete anything in it: delete the "
            "folder by hand to train it again"
        )
    for entry in ours:
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink(missing_ok=True)
    return others


def evaluation_staleness(run_dir: str | Path, output: str | Path) -> str | None:
    """Why an evaluation output of a run no longer describes the run, or ``None`` if it does.

    An output written before the run's best weights or its ``DONE`` file scored weights that
    have since been replaced (or an unfinished run's intermediate weights).

    Args:
        run_dir: the run folder.
        output: an evaluation output in it, e.g. ``eval_auc.csv``.

    Returns:
        A one-line reason naming the output and the newer file, or ``None`` (also when the run
        folder holds neither weights nor ``DONE``: nothing to compare with).
    """
    paths = RunPaths(Path(run_dir))
    written = os.stat(output).st_mtime_ns
    for newer, what in ((paths.best, "the best weights it scored"), (paths.done, "DONE")):
        if newer.is_file() and newer.stat().st_mtime_ns > written:
            return (
                f"{output} is older than {what} ({newer}): stale, skipped; run "
                f"`pylon evaluate {paths.root}` again"
            )
    return None


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
