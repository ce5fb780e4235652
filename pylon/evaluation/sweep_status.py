"""``pylon sweep --status``: the state of each run of a sweep, from its run folder and ``squeue``.

States:

- ``done``: the run has ``DONE``.
- ``queued`` / ``running``: its recorded job (``slurm/job.json``) is pending / running in
  ``squeue`` (without ``squeue``: the job's log is absent / present, as far as the folder tells);
  ``running`` also when the folder's lock names a live process of this host (a local sweep).
- ``failed``: its job or local sweep ended with an error; the detail is the log's last line.
- ``interrupted``: training stopped before the end (SIGTERM, a kill, a time limit without
  requeue) and resumes when the sweep runs again.
- ``not started``: a folder without a job, config or checkpoint.
"""

from __future__ import annotations

import getpass
import json
import shutil
import subprocess
from pathlib import Path

from pylon.evaluation.cluster import read_job_record
from pylon.locks import LOCK_NAME, alive_here
from pylon.training.runs import RunPaths, seed_dirs

# squeue's states of a job that has not started (or waits to start again after a requeue)
QUEUED_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD"}
# what the last log line of an interrupted (not failed) run contains
_INTERRUPTED = ("TrainingInterrupted", "was interrupted", "was terminated")


def squeue_states(user: str | None = None) -> tuple[dict[str, str] | None, str]:
    """The user's jobs in ``squeue``, one entry per array task.

    Args:
        user: whose jobs (default: this user).

    Returns:
        (``{job id: state}``, e.g. ``{"1234_0": "PENDING"}``, or None when ``squeue`` is
        missing or failed; a one-line note saying so, or ``""``).
    """
    exe = shutil.which("squeue")
    if exe is None:
        return None, "squeue not found: states come from the run folders only"
    command = [
        exe,
        "--noheader",
        "--array",
        "--format=%i|%T",
        f"--user={user or getpass.getuser()}",
    ]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, f"squeue failed ({err}): states come from the run folders only"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        return None, f"squeue failed ({last}): states come from the run folders only"
    states: dict[str, str] = {}
    for line in result.stdout.splitlines():
        job_id, sep, state = line.strip().partition("|")
        if sep:
            states[job_id.strip()] = state.strip()
    return states, ""


def _tail(path: str | Path | None, size: int = 16384) -> str:
    """The last ``size`` bytes of a log file as text (``""`` when missing)."""
    if path is None:
        return ""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - size))
            return handle.read().decode("utf-8", "replace")
    except OSError:
        return ""


def last_line(path: str | Path | None) -> str:
    """The last non-empty line of a log file (``""`` when missing or empty)."""
    lines = _tail(path).splitlines()
    return next((line.strip() for line in reversed(lines) if line.strip()), "")


def _ended(paths: RunPaths, log: str | Path | None) -> tuple[str, str]:
    """State of a run not done and with no live job: failed (its log's last line says an
    error) or interrupted."""
    line = last_line(log)
    if line and any(word in line for word in _INTERRUPTED):
        return "interrupted", line
    if line and ("Error" in line or "error" in line.split(":")[0] or "Exception" in line):
        return "failed", line
    if paths.has_checkpoint() or paths.config.is_file():
        return "interrupted", line
    return ("failed", line) if line else ("not started", "")


def _live_holder_here(paths: RunPaths) -> str:
    """``"pid N on this host (COMMAND)"`` when the run folder's lock file names a live process
    of this host (a local sweep's or ``pylon train``'s), else ``""``. Only reads the file: taking
    the lock, even briefly, could refuse a run that is starting."""
    try:
        holder = json.loads((paths.root / LOCK_NAME).read_text() or "{}")
        pid = int(holder["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    if not alive_here(holder.get("host"), pid):
        return ""
    return f"pid {pid} on this host ({holder.get('command', '?')})"


def run_state(paths: RunPaths, active: dict[str, str] | None) -> dict:
    """The state of one run.

    Args:
        paths: the run folder.
        active: :func:`squeue_states`' jobs, or None without ``squeue``.

    Returns:
        ``experiment``, ``seed``, ``state`` (see the module), ``job`` (the recorded job id or
        ``""``), ``detail`` (the squeue state, the log's last line, or when it finished).
    """
    row = {"experiment": paths.experiment_dir.name, "seed": int(paths.root.name), "job": ""}
    record = read_job_record(paths)
    if record is not None:
        row["job"] = record["job_id"]
    if paths.is_done():
        return {**row, "state": "done", "detail": f"finished {paths.finished_at()}"}
    holder = _live_holder_here(paths)
    if holder:
        return {**row, "state": "running", "detail": holder}
    if record is None:
        # a local sweep's run (its log is RUNS/<experiment>/<seed>.log) or a `pylon train`
        log = paths.root.parent / f"{paths.root.name}.log"
        state, detail = _ended(paths, log)
        return {**row, "state": state, "detail": detail}
    stderr = record.get("stderr")
    if active is not None:
        job_state = active.get(record["job_id"])
        if job_state is not None:
            state = "queued" if job_state in QUEUED_STATES else "running"
            if record.get("after") and state == "queued":
                job_state += f", after {record['after']}"
            return {**row, "state": state, "detail": job_state}
        state, detail = _ended(paths, stderr)
        return {**row, "state": state, "detail": detail}
    # no squeue: the job's logs say whether it started, and how it ended
    line = last_line(stderr)
    if not line and not last_line(record.get("stdout")):
        return {**row, "state": "queued", "detail": "no log yet"}
    if "Submitted job triggered an exception" in _tail(stderr) or "Job not requeued" in line:
        state, detail = _ended(paths, stderr)
        return {**row, "state": state, "detail": detail}
    return {**row, "state": "running", "detail": line}


def sweep_status(runs_dir: str | Path, experiments: list[str] = ()) -> tuple[list[dict], str]:
    """The state of every run of ``experiments`` (default: every experiment under
    ``runs_dir``).

    Args:
        runs_dir: the runs root.
        experiments: experiment names (a preset's experiment is its name).

    Returns:
        (one :func:`run_state` row per run folder, sorted by experiment and seed; the note of
        :func:`squeue_states`, ``""`` when squeue answered).

    Raises:
        FileNotFoundError: an experiment folder named in ``experiments`` does not exist.
    """
    runs_dir = Path(runs_dir)
    if experiments:
        folders = [runs_dir / name for name in experiments]
        for folder in folders:
            RunPaths.of(runs_dir, folder.name, 0)  # refuses a name that leaves runs_dir
            if not folder.is_dir():
                raise FileNotFoundError(f"{folder}: no such experiment folder (under --runs-dir)")
    elif runs_dir.is_dir():
        folders = sorted(p for p in runs_dir.iterdir() if p.is_dir() and p.name[0] != ".")
    else:
        raise FileNotFoundError(f"{runs_dir}: no such runs folder (--runs-dir)")
    active, note = squeue_states()
    rows = [run_state(RunPaths(seed), active) for f in folders for seed in seed_dirs(f)]
    return rows, note
