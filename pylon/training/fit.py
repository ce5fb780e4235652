"""``train(config)``: one (possibly multi-phase) training run into ``runs/<experiment>/<seed>/``."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import TextIO

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from pylon.io import atomic_path, remove_stale_temp_files, write_text_atomic
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
from pylon.training.loop_progress import LoopProgress
from pylon.training.module import ClassifierModule
from pylon.training.runs import RunPaths


class TrainingInterrupted(RuntimeError):
    """Training was stopped by SIGTERM before it finished; the run folder resumes on restart."""

    exit_code = 143  # 128 + SIGTERM, what a shell reports for a terminated process


# Keys that may differ when a run is resumed (hardware and display, not the experiment).
RESUMABLE_KEYS = ("accelerator", "devices", "num_nodes", "strategy", "progress")


def on_gpu(config: TrainConfig) -> bool:
    if config.accelerator in ("gpu", "cuda"):
        return True
    return config.accelerator == "auto" and torch.cuda.is_available()


def hardware_options(config: TrainConfig) -> dict[str, object]:
    """The ``L.Trainer`` arguments that say where a run executes (the same for training and
    evaluation): accelerator, devices, num_nodes, strategy."""
    if config.accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"accelerator={config.accelerator!r}: no CUDA GPU is available to PyTorch on this "
            "machine (torch.cuda.is_available() is False); use --accelerator cpu or auto"
        )
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


def is_rank_zero_process() -> bool:
    # Lightning's DDP launcher re-runs the command in child processes with these set.
    return os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"


def _comparable(config: TrainConfig) -> dict:
    data = config.to_dict()
    for key in RESUMABLE_KEYS:
        data.pop(key)
    return data


def prepare_run(config: TrainConfig, paths: RunPaths, *, retrain: bool) -> None:
    """Clear the folder for ``retrain``; refuse to resume a folder trained with another config."""
    if not is_rank_zero_process():
        return
    if retrain and paths.root.exists():
        if not paths.config.is_file():
            raise ValueError(
                f"--retrain: {paths.root} exists but is not a pylon run (no config.yaml); "
                "refusing to delete it"
            )
        shutil.rmtree(paths.root)
    remove_stale_temp_files(paths.checkpoints, paths.last.name)
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
    return not str(record.msg).startswith("💡 Tip")


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


def train(config: TrainConfig, *, runs_dir: str | Path = "runs", retrain: bool = False) -> Path:
    """Train (or resume, or skip if finished) the run of ``config``; returns the run folder."""
    config.validate()
    check_model_config(config)
    paths = RunPaths.of(runs_dir, config.experiment, config.seed)
    prepare_run(config, paths, retrain=retrain)
    if paths.is_done():
        return paths.root
    # the run's identity in its resume checkpoints: the top config (phase configs hold paths)
    fingerprint = run_fingerprint(_comparable(config))
    if not config.phases:
        _fit(config, paths, fingerprint)
        return paths.root

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
    return paths.root


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
    callbacks: list[L.Callback] = [best, ResumeCheckpoint(paths.last), *progress]
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
            )
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
