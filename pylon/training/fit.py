"""``train(config)``: one (possibly multi-phase) training run into ``runs/<experiment>/<seed>/``."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

import lightning as L
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from pylon.data.workers import available_cpus
from pylon.io import atomic_path, remove_stale_temp_files, write_text_atomic
from pylon.locks import folder_lock
from pylon.models import create_model
from pylon.models.freeze import freeze_encoder
from pylon.models.head_prior import init_head_prior
from pylon.models.precision import Execution, resolve_execution
from pylon.models.weights import load_weights
from pylon.progress import progress_mode
from pylon.training.callbacks import BestWeights, ResumeCheckpoint
from pylon.training.checkpoint import AtomicCheckpointIO, run_fingerprint
from pylon.training.config import ModelConfig, TrainConfig, apply_overrides
from pylon.training.datamodule import PylonDataModule
from pylon.training.image_logging import ValidationImages
from pylon.training.loop_progress import LoopProgress
from pylon.training.module import ClassifierModule
from pylon.training.runnable import check_accelerator, check_runnable, device_type
from pylon.training.runs import RunPaths, clear_run


class TrainingInterrupted(RuntimeError):
    """Training was stopped by SIGTERM (exit 143) or SIGINT (Ctrl+C, exit 130) before it
    finished; the run folder resumes on restart."""

    exit_code = 143  # 128 + SIGTERM, what a shell reports for a terminated process

    def __init__(self, message: str, exit_code: int = 143):
        super().__init__(message)
        self.exit_code = exit_code


SIGINT_EXIT_CODE = 130  # 128 + SIGINT


# Keys that may differ when a run is resumed (hardware, display and logging, not the experiment).
RESUMABLE_KEYS = (
    "accelerator",
    "devices",
    "num_nodes",
    "strategy",
    "progress",
    "log_images",
    "log_images_count",
)


def on_gpu(config: TrainConfig) -> bool:
    """Whether the run executes on CUDA (:func:`pylon.training.runnable.device_type`)."""
    return device_type(config) == "cuda"


def _check_device_count(config: TrainConfig) -> None:
    """Refuse more processes than this machine has CPUs or GPUs for (DDP would start them all
    and hang at initialisation); ``ValueError`` naming ``devices`` and the limit."""
    devices = str(config.devices).strip().strip("[]").replace(" ", "")
    if config.accelerator not in ("auto", "cpu", "gpu", "cuda") or devices in ("auto", "-1", ""):
        return
    if on_gpu(config):
        count = torch.cuda.device_count()
        if "," in devices or devices.endswith(","):
            ids = [int(i) for i in devices.split(",") if i.lstrip("-").isdigit()]
            missing = [i for i in ids if not 0 <= i < count]
            if missing:
                raise ValueError(
                    f"devices={config.devices} (--devices): GPU {missing[0]} does not exist; "
                    f"this machine has {count} GPU(s) visible to PyTorch (ids 0 to {count - 1})"
                )
        elif devices.isdigit() and int(devices) > count:
            raise ValueError(
                f"devices={config.devices} (--devices): more GPUs than exist; this machine has "
                f"{count} GPU(s) visible to PyTorch"
            )
        return
    cpus = available_cpus()
    if devices.isdigit() and int(devices) > cpus:
        raise ValueError(
            f"devices={config.devices} (--devices): more CPU processes than CPUs; this process "
            f"may use {cpus} CPU(s), so at most --devices {cpus}"
        )


def hardware_options(config: TrainConfig) -> dict[str, object]:
    """The ``L.Trainer`` arguments that say where a run executes (the same for training and
    evaluation): accelerator, devices, num_nodes, strategy.

    Raises:
        ValueError: naming the option when the machine cannot provide it: a GPU accelerator
            (or MPS backend) without one, more GPUs than exist, or more CPU processes than CPUs.
    """
    check_accelerator(config)
    _check_device_count(config)
    return {
        "accelerator": config.accelerator,
        "devices": config.devices,
        "num_nodes": config.num_nodes,
        "strategy": config.strategy,
    }


def resolve_precision(config: TrainConfig) -> Execution:
    """The run's execution (precision and memory format) through the one policy,
    :func:`pylon.models.precision.resolve_execution`."""
    device = "cuda" if on_gpu(config) else "cpu"
    return resolve_execution(config.precision, device, channels_last=config.model.channels_last)


def build_model(
    config: ModelConfig, *, num_classes: int, in_channels: int, channels_last: bool = False
) -> torch.nn.Module:
    model = create_model(
        config.name,
        encoder=config.encoder,
        in_channels=in_channels,
        num_classes=num_classes,
        encoder_weights=config.encoder_weights,
        **config.options,
    )
    if config.head_prior is not None:
        init_head_prior(model, prior=config.head_prior)
    if config.init_from:
        report = load_weights(model, config.init_from, transfer=True)
        rank_zero_info(f"init_from {config.init_from}: {report.summary()}")
    if config.freeze == "enc":
        freeze_encoder(model, bn_eval=config.freeze_bn)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


def _under_slurm() -> bool:
    # detect() also warns where srun exists but is not used; the Trainer says that itself
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SLURMEnvironment.detect()


def is_rank_zero_process() -> bool:
    if _under_slurm():  # srun started every rank: Lightning's SLURM environment
        return SLURMEnvironment().global_rank() == 0
    # Lightning's DDP launcher re-runs the command in child processes with these set.
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def cluster_plugins() -> list[SLURMEnvironment]:
    """Under SLURM, Lightning's SLURM environment (ranks, nodes) with its auto-requeue off: the
    sweep's submitit job owns the preemption signal and requeues (docs/training.md)."""
    return [SLURMEnvironment(auto_requeue=False)] if _under_slurm() else []


def _comparable(config: TrainConfig) -> dict:
    data = config.to_dict()
    for key in RESUMABLE_KEYS:
        data.pop(key)
    return data


def prepare_run(config: TrainConfig, paths: RunPaths, *, retrain: bool) -> list[Path]:
    """Clear pylon's files of the folder for ``retrain``; refuse to resume a folder trained with
    another config; mark a run pylon starts (:attr:`RunPaths.marker`). Call it holding the run
    folder's lock (:func:`run_lock`).

    Args:
        config: the run's config.
        paths: the run folder.
        retrain: delete pylon's files of an earlier run first
            (:func:`pylon.training.runs.clear_run`).

    Returns:
        What ``retrain`` kept because pylon did not write it (empty otherwise).
    """
    if not is_rank_zero_process():
        return []
    kept = clear_run(paths) if retrain else []
    remove_stale_temp_files(paths.checkpoints, paths.last.name)
    if not paths.config.is_file():
        paths.write_marker(config.experiment, config.seed)
    if paths.config.is_file():
        previous = TrainConfig.from_yaml(paths.config)
        # a run that failed before its first checkpoint holds nothing to resume: start it afresh
        if _comparable(previous) != _comparable(config) and paths.has_checkpoint():
            old, new = _comparable(previous), _comparable(config)
            changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
            raise ValueError(
                f"run folder {paths.root} was started with a different config (differs in: "
                f"{', '.join(changed)}); pass --retrain to start over, or change the experiment "
                "name"
            )
    config.to_yaml(paths.config)
    return kept


@contextlib.contextmanager
def run_lock(paths: RunPaths, what: str) -> Iterator[None]:
    """Hold the run folder's exclusive lock (:func:`pylon.locks.folder_lock`) in the rank-zero
    process; DDP's child processes (ranks > 0, started by the holder) take none.

    Raises:
        pylon.locks.FolderLockedError: another live command holds the folder.
    """
    if not is_rank_zero_process():
        yield
        return
    with folder_lock(paths.root, what):
        yield


def progress_callbacks(enabled: bool, stream: TextIO | None = None) -> list[L.Callback]:
    """Training's progress display (:func:`pylon.progress.progress_mode` on ``stream``).

    Args:
        enabled: ``config.progress``; ``False`` shows nothing.
        stream: where progress goes (default ``sys.stdout``, where Lightning's bar draws).

    Returns:
        ``[RichProgressBar()]`` in a terminal, ``[LoopProgress]`` (plain train and validation
        lines on ``stream``) otherwise, ``[]`` when disabled.
    """
    stream = stream or sys.stdout
    mode = progress_mode(stream, enabled)
    if mode == "bar":
        return [RichProgressBar()]
    return [LoopProgress(["train", "validate"], stream=stream)] if mode == "lines" else []


def _drop_tips(record: logging.LogRecord) -> bool:
    # the KeyboardInterrupt notice too: train() says in one line what happened to the run
    return not str(record.msg).startswith(("💡 Tip", "\nDetected KeyboardInterrupt"))


def quiet_lightning_notices() -> None:
    """Drop Lightning's advertising tip and a deprecation warning of its own internals (nothing a
    user of pylon can act on); every other message stays."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    if _drop_tips not in logger.filters:
        logger.addFilter(_drop_tips)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")


def check_model_config(config: TrainConfig) -> None:
    """Refuse, before any run folder exists, a model that cannot be built or an input size it
    cannot take (``ValueError`` naming the key). The model is built on the meta device: no
    weights are allocated or downloaded."""
    options = dict(config.model.options)
    try:
        with torch.device("meta"):
            model = create_model(
                config.model.name,
                encoder=config.model.encoder,
                in_channels=3 if config.data.name == "voc" else 1,
                num_classes=2,
                encoder_weights=None,
                **options,
            )
    except (KeyError, ValueError, TypeError) as err:
        message = str(err).strip("'\"")
        raise ValueError(
            f"model.name={config.model.name!r}, model.encoder={config.model.encoder!r}: {message}"
        ) from None
    sizes = [config.data.size] + [
        phase["data.size"] for phase in config.phases if "data.size" in phase
    ]
    for size in sizes:
        if size < model.min_size:
            raise ValueError(
                f"data.size={size}; model {config.model.name!r} needs inputs of at least "
                f"{model.min_size} px"
            )


def train(
    config: TrainConfig,
    *,
    runs_dir: str | Path = "runs",
    retrain: bool = False,
    notify: Callable[[str], None] | None = None,
) -> Path:
    """Train (or resume, or skip if finished) the run of ``config``, holding the run folder's
    lock for the whole time.

    Args:
        config: the run's config.
        runs_dir: the runs root; the run folder is ``runs_dir/<experiment>/<seed>``.
        retrain: delete pylon's files of an earlier run of the folder and train again.
        notify: called (on rank zero) with one line when the run is skipped as finished or
            ``retrain`` kept files pylon did not write.

    Returns:
        The run folder.

    Raises:
        TrainingInterrupted: SIGTERM (exit code 143) or SIGINT (130) stopped training.
        pylon.locks.FolderLockedError: another command holds the run folder.
    """
    config.validate()
    check_model_config(config)
    hardware_options(config)  # refuse what this machine cannot run before any folder exists
    check_runnable(config)  # weights, precision and splits, also before any folder exists
    paths = RunPaths.of(runs_dir, config.experiment, config.seed)
    try:
        with run_lock(paths, "pylon train"):
            _train_locked(config, paths, retrain=retrain, notify=notify)
    except KeyboardInterrupt:
        raise _interrupted(paths, "SIGINT", SIGINT_EXIT_CODE) from None
    return paths.root


def _interrupted(paths: RunPaths, signal_name: str, exit_code: int) -> TrainingInterrupted:
    return TrainingInterrupted(
        f"training of {paths.root} was interrupted ({signal_name}); run the same command again "
        "to resume from the last completed epoch",
        exit_code,
    )


def _train_locked(
    config: TrainConfig, paths: RunPaths, *, retrain: bool, notify: Callable[[str], None] | None
) -> None:
    notify = notify if notify is not None and is_rank_zero_process() else lambda line: None
    kept = prepare_run(config, paths, retrain=retrain)
    if kept:
        notify(
            f"--retrain kept what pylon did not write in {paths.root}: "
            + ", ".join(p.relative_to(paths.root).as_posix() for p in kept)
        )
    if paths.is_done():
        notify(
            f"run {paths.root} is finished (DONE at {paths.finished_at()}); skipped; --retrain "
            "to train again"
        )
        return
    # the run's identity in its resume checkpoints: the top config (phase configs hold paths)
    fingerprint = run_fingerprint(_comparable(config))
    if not config.phases:
        _fit(config, paths, fingerprint)
        return

    base = dataclasses.replace(config, phases=[])
    previous_best: Path | None = None
    for index, overrides in enumerate(config.phases):
        phase = apply_overrides(base, overrides)
        if previous_best is not None:
            phase.model.init_from = str(previous_best)
        phase_paths = paths.phase(index)
        if is_rank_zero_process():
            phase.to_yaml(phase_paths.config)
        _fit(phase, phase_paths, f"{fingerprint}-phase{index + 1}")
        previous_best = phase_paths.best
    if is_rank_zero_process():
        with atomic_path(paths.best) as tmp:
            shutil.copyfile(previous_best, tmp)
        shutil.copyfile(
            previous_best.parent.parent / "train_summary.json", paths.root / "train_summary.json"
        )
        paths.mark_done(f"{len(config.phases)} phases")


class _KeyboardInterrupts(L.Callback):
    """Records that Lightning's loop was stopped by KeyboardInterrupt (SIGINT)."""

    seen = False

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):
            self.seen = True


def _fit(config: TrainConfig, paths: RunPaths, fingerprint: str) -> None:
    if paths.is_done():
        return
    started = time.time()
    L.seed_everything(config.seed, workers=True, verbose=False)
    datamodule = PylonDataModule(config.data, config.seed)
    datamodule.setup("fit")
    record = datamodule.train_set.preprocessing
    model_config = config.model
    if model_config.init_from:
        init_from = model_config.init_from.replace("{seed}", str(config.seed))
        if not Path(init_from).is_file():
            raise FileNotFoundError(
                f"model.init_from: weights {init_from} not found (train the source run first)"
            )
        model_config = dataclasses.replace(model_config, init_from=init_from)
    execution = resolve_precision(config)
    precision = execution.lightning_precision
    model = build_model(
        model_config,
        num_classes=len(record.class_names),
        in_channels=record.in_channels,
        channels_last=execution.channels_last,
    )
    record = record.with_model(model.pylon_config)
    if is_rank_zero_process():
        record.write(paths.root)
    module = ClassifierModule(model, config.optim, check_gradients=execution.precision != "fp16")
    best = BestWeights(paths.best, record)
    progress = progress_callbacks(config.progress)
    interrupts = _KeyboardInterrupts()
    callbacks: list[L.Callback] = [best, ResumeCheckpoint(paths.last), *progress, interrupts]
    if config.log_images:
        callbacks.append(ValidationImages(config.log_images_count))
    quiet_lightning_notices()
    trainer = L.Trainer(
        **hardware_options(config),
        precision=precision,
        max_epochs=config.max_epochs,
        check_val_every_n_epoch=config.val_every,
        limit_train_batches=config.limit_train_batches,
        num_sanity_val_steps=0,
        callbacks=callbacks,
        # a new version folder per session, so resuming never overwrites earlier logs
        logger=[
            CSVLogger(paths.logs, name="csv"),
            TensorBoardLogger(paths.logs, name="tensorboard"),
        ],
        plugins=[
            AtomicCheckpointIO(
                fingerprint,
                {k: tuple(v.shape) for k, v in module.state_dict().items()},
            ),
            *cluster_plugins(),
        ],
        enable_checkpointing=False,
        enable_progress_bar=any(isinstance(c, RichProgressBar) for c in progress),
        enable_model_summary=False,
        use_distributed_sampler=False,
        default_root_dir=paths.root,
        log_every_n_steps=1,
    )
    resume = paths.last if paths.last.is_file() else None
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=resume, weights_only=True)
    except SIGTERMException:
        # Lightning stops on SIGTERM with SystemExit(None), i.e. status 0: a SLURM or Kubernetes
        # stop would then look finished. last.ckpt holds the last completed epoch; the
        # interrupted epoch runs again on resume, so the result equals an uninterrupted run.
        raise TrainingInterrupted(
            f"training of {paths.root} was terminated (SIGTERM); the last completed epoch is in "
            f"{paths.last}: run the same command again to resume"
        ) from None
    except SystemExit:
        # Lightning turns Ctrl+C into a bare sys.exit(1); say what happened and exit 130
        if interrupts.seen:
            raise _interrupted(paths, "SIGINT", SIGINT_EXIT_CODE) from None
        raise
    if not trainer.is_global_zero:
        return
    if not paths.best.is_file():
        raise RuntimeError(
            f"training of {paths.root} ended without a validation epoch, so no best weights; "
            f"lower val_every ({config.val_every}) or raise max_epochs ({config.max_epochs})"
        )
    summary = {
        "best_val_loss": best.best,
        "best_epoch": best.best_epoch,
        "epochs": trainer.current_epoch,
        "global_step": trainer.global_step,
        "stop_reason": module.stop_reason or f"max_epochs {config.max_epochs}",
        "precision": execution.precision,
        "seconds_this_session": round(time.time() - started, 1),
    }
    write_text_atomic(paths.root / "train_summary.json", json.dumps(summary, indent=2))
    paths.mark_done(summary["stop_reason"])
