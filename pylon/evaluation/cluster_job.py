"""The callable a cluster job runs: one run of a sweep (train, then evaluate), which submitit
resubmits after a preemption or before a time limit.

Needs submitit (the ``[cluster]`` extra); :func:`pylon.evaluation.cluster.require_submitit` says
so in one line before this module is imported.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import submitit

from pylon.evaluation.evaluate import evaluate_run
from pylon.evaluation.sweep import is_evaluated
from pylon.training.config import TrainConfig
from pylon.training.fit import TrainingInterrupted, train
from pylon.training.runs import RunPaths

# How long a job stopped by SIGTERM waits for submitit's preemption signal (see RunJob).
PREEMPTION_SIGNAL_WAIT_S = 60.0


class RunJob(submitit.helpers.Checkpointable):
    """Train one run of a sweep into ``runs_dir/<experiment>/<seed>``, then evaluate it.

    submitit owns the preemption signal: before the time limit (and on a preemption, where the
    cluster signals it) SLURM sends USR2, submitit calls :meth:`checkpoint` (Checkpointable's:
    the same call again) and requeues the job, which resumes from ``last.ckpt`` as every pylon
    run does. A preemption sends SIGTERM first; Lightning then stops training at the next batch
    (:class:`pylon.training.fit.TrainingInterrupted`), and the job waits up to
    :data:`PREEMPTION_SIGNAL_WAIT_S` for USR2 so that submitit, not the SIGTERM, decides: a
    SIGTERM alone (``scancel``) ends the job as interrupted, resumable by the next sweep.

    Args:
        config: the run's config (seed set).
        runs_dir: the runs root, absolute.
        workdir: the submission's working folder; relative paths of the config
            (``data.root``, ``model.init_from``) are relative to it.
        evaluate: evaluate the finished run (``pylon evaluate``, which also summarises the
            experiment's seeds).
    """

    def __init__(self, config: TrainConfig, runs_dir: str, workdir: str, evaluate: bool):
        self.config = config
        self.runs_dir = runs_dir
        self.workdir = workdir
        self.evaluate = evaluate

    def __call__(self) -> str:
        """Run it; returns the run folder. Raises what training or evaluation raises."""
        os.chdir(self.workdir)
        try:
            run_dir = train(self.config, runs_dir=self.runs_dir, notify=print)
        except TrainingInterrupted as err:
            if err.exit_code == TrainingInterrupted.exit_code:  # SIGTERM, not Ctrl+C
                print(
                    f"{err}; waiting up to {PREEMPTION_SIGNAL_WAIT_S:.0f} s for submitit's "
                    "preemption signal to requeue the job",
                    flush=True,
                )
                _wait_for_preemption_signal()
            raise
        if self.evaluate and not is_evaluated(RunPaths(Path(run_dir))):
            evaluate_run(run_dir, progress=False)  # also updates the experiment's summaries
        return str(run_dir)


def _wait_for_preemption_signal() -> None:
    # submitit's USR2 handler requeues the job and exits from inside this sleep
    deadline = time.monotonic() + PREEMPTION_SIGNAL_WAIT_S
    while time.monotonic() < deadline:
        time.sleep(0.5)
