"""``evaluate_run(run_dir)``: test-split AUROC and localization accuracy of a run's best weights.

Streaming: each batch's CAMs are scored and dropped. Under DDP the logits/labels of every rank are
gathered and the localization counts summed before any metric is computed. The per-pair records
the localization metric computes anyway (peak, hit, IoBB / IoU, box size) are kept as small rows
and written as ``eval_pairs.csv`` (:data:`PAIR_COLUMNS`), so the benchmark and the viewer read
them without re-running the model.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import lightning as L
import pandas as pd
import torch
import torch.distributed as dist

from pylon.io import write_csv_atomic
from pylon.metrics import AUROCAccumulator, LocalizationAccumulator, summarize_seeds
from pylon.models.precision import Execution
from pylon.models.weights import load_model
from pylon.training.config import TrainConfig
from pylon.training.datamodule import build_dataset, eval_loader
from pylon.training.fit import (
    hardware_options,
    quiet_lightning_notices,
    resolve_precision,
    run_lock,
)
from pylon.training.loop_progress import LoopProgress
from pylon.training.runs import evaluation_staleness, open_trained_run, seed_dirs

# A run evaluated before it finished (``allow_unfinished``) gets these names instead of
# ``eval_<kind>.csv``: seed summaries and ``pylon sweep`` never count them.
UNFINISHED_PREFIX = "unfinished_"
PAIR_COLUMNS = [
    "image_id",
    "class",
    "probability",
    "peak_row",
    "peak_col",
    "peak_row_original",
    "peak_col_original",
    "point_hit",
    "iobb",
    "iou",
    "box_area",
    "box_share",
    "size_bucket",
]


class EvalModule(L.LightningModule):
    """Accumulates AUROC inputs and/or localization counts over a test loop."""

    def __init__(
        self,
        model: torch.nn.Module,
        class_names: list[str],
        *,
        auc: bool,
        loc: bool,
        execution: Execution | None = None,
    ):
        super().__init__()
        self.model = model
        self.execution = execution
        self.class_names = class_names
        self.auc, self.loc = auc, loc
        self.logits: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.localization: LocalizationAccumulator | None = None
        self.pairs: list[dict[str, object]] = []
        self.results: dict[str, float] = {}

    def test_step(self, batch, batch_idx):
        """Run the model on one batch and add its logits / localization counts (returns None)."""
        image = batch["image"]
        if self.execution is not None:
            image = self.execution.prepare_input(image)  # autocast is Lightning's precision
        output = self.model(image)
        if self.auc:
            self.logits.append(output.logits.float().cpu())
            self.labels.append(batch["labels"].float().cpu())
        if self.loc:
            if self.localization is None:
                self.localization = LocalizationAccumulator(
                    len(self.class_names),
                    tuple(batch["image"].shape[-2:]),
                    class_names=self.class_names,
                )
            # scored where the maps are (on a GPU the chunks run there); counts come back on CPU
            scores = self.localization.update(output.cam.float(), batch["boxes"])
            self.pairs += pair_rows(scores, output.logits, batch["image_id"], self.class_names)

    def on_test_epoch_end(self) -> None:
        """Gather across ranks (under DDP) and compute the metrics into ``self.results``."""
        distributed = dist.is_available() and dist.is_initialized() and self.trainer.world_size > 1
        if self.auc:
            logits, labels = torch.cat(self.logits), torch.cat(self.labels)
            if distributed:
                gathered: list = [None] * self.trainer.world_size
                dist.all_gather_object(gathered, (logits, labels))
                logits = torch.cat([g[0] for g in gathered])
                labels = torch.cat([g[1] for g in gathered])
            accumulator = AUROCAccumulator(self.class_names)
            accumulator.update(logits, labels)
            self.results.update(accumulator.compute())
            self.results["n_images_auc"] = float(len(logits))
        if self.loc:
            counts = self.localization.counts()
            if distributed:
                counts = {
                    k: self.trainer.strategy.reduce(v.to(self.device), reduce_op="sum").cpu()
                    for k, v in counts.items()
                }
                self.localization.load_counts(counts)
                gathered = [None] * self.trainer.world_size
                dist.all_gather_object(gathered, self.pairs)
                self.pairs = [row for rows in gathered for row in rows]
            self.results.update(self.localization.compute())
            self.results["n_pairs_loc"] = float(self.localization.pairs.sum())


def _run_split(config: TrainConfig, model, split: str, *, auc: bool, loc: bool, progress: bool):
    dataset = build_dataset(config.data, split)
    execution = resolve_precision(config)  # the training fast path: precision and memory format
    execution.prepare_model(model)
    module = EvalModule(model, list(dataset.class_names), auc=auc, loc=loc, execution=execution)
    quiet_lightning_notices()
    trainer = L.Trainer(
        **hardware_options(config),
        precision=execution.lightning_precision,
        logger=False,
        enable_checkpointing=False,
        # pylon's own reporter: a bar in a terminal, plain count/rate/ETA lines in log files
        enable_progress_bar=False,
        callbacks=[LoopProgress(["test"], description=f"evaluate {split}", enabled=progress)],
        enable_model_summary=False,
        use_distributed_sampler=False,
    )
    trainer.test(module, datamodule=_ShardedLoader(dataset, config), verbose=False)
    if loc and trainer.is_global_zero:
        module.results["pairs"] = finish_pair_rows(module.pairs, dataset, config.data.size)
    return module.results, trainer.is_global_zero


def pair_rows(scores, logits: torch.Tensor, image_ids, class_names) -> list[dict[str, object]]:
    """One row per scored (image, class) pair of a batch (``PairScores``), before the original
    image's size is known."""
    probability = torch.sigmoid(logits.float()).cpu()
    rows = []
    for k in range(len(scores)):
        i, c = int(scores.image_index[k]), int(scores.class_index[k])
        rows.append(
            {
                "image_id": str(image_ids[i]),
                "class": class_names[c],
                "probability": float(probability[i, c]),
                "peak_row": int(scores.peak_row[k]),
                "peak_col": int(scores.peak_col[k]),
                "point_hit": bool(scores.point_hit[k]),
                "iobb": float(scores.iobb[k]),
                "iou": float(scores.iou[k]),
                "box_area": int(scores.gt_area[k]),
            }
        )
    return rows


def finish_pair_rows(rows: list[dict[str, object]], dataset, size: int) -> pd.DataFrame:
    """The pair rows with each peak in the original image's pixels and the box's size bucket.

    Args:
        rows: :func:`pair_rows` of every batch.
        dataset: the evaluated dataset (file-backed: originals' sizes from their headers; the
            synthetic images are their own originals).
        size: the network input's side.

    Returns:
        A frame of :data:`PAIR_COLUMNS`, in evaluation order.
    """
    from pylon.data.base import BoxDataset
    from pylon.data.images import image_size
    from pylon.evaluation.coordinates import peak_in_original
    from pylon.metrics.sizes import DEFAULT_NAMES, share_buckets

    frame = pd.DataFrame(rows, columns=[c for c in PAIR_COLUMNS if c not in _DERIVED])
    originals: dict[str, tuple[int, int]] = {}
    if isinstance(dataset, BoxDataset):
        paths = {r.image_id: r.path for r in dataset.records}
        originals = {i: image_size(paths[i]) for i in set(frame["image_id"])}
    peaks = [
        peak_in_original(r, c, size, originals.get(i, (size, size)))
        for i, r, c in zip(frame["image_id"], frame["peak_row"], frame["peak_col"], strict=True)
    ]
    frame["peak_row_original"] = [p[0] for p in peaks]
    frame["peak_col_original"] = [p[1] for p in peaks]
    frame["box_share"] = frame["box_area"] / float(size * size)
    bucket = share_buckets(torch.from_numpy(frame["box_share"].to_numpy(dtype="float64")))
    frame["size_bucket"] = [DEFAULT_NAMES[b] for b in bucket.tolist()]
    return frame[PAIR_COLUMNS]


_DERIVED = ("peak_row_original", "peak_col_original", "box_share", "size_bucket")


class _ShardedLoader(L.LightningDataModule):
    """Builds the evaluation loader inside ``trainer.test`` (after DDP setup) for this rank."""

    def __init__(self, dataset, config: TrainConfig):
        super().__init__()
        self.dataset, self.config = dataset, config

    def test_dataloader(self):
        return eval_loader(
            self.dataset,
            self.config.data,
            world_size=self.trainer.world_size,
            rank=self.trainer.global_rank,
        )


def evaluate_run(
    run_dir: str | Path,
    *,
    devices: str | None = None,
    strategy: str | None = None,
    progress: bool = True,
    allow_unfinished: bool = False,
) -> dict[str, dict[str, float]]:
    """Evaluate ``RUN/checkpoints/best.safetensors``; write ``eval_auc.csv``/``eval_loc.csv`` in
    the run folder and ``summary_auc.csv``/``summary_loc.csv`` over the experiment's seeds.

    The run folder is locked meanwhile (:func:`pylon.training.fit.run_lock`): a run that is
    being trained is refused.

    The model runs on the training fast path (the run's precision policy and channels_last,
    :func:`pylon.training.fit.resolve_precision`); progress is reported in a terminal and in
    log files alike.

    Args:
        run_dir: a trained run folder ``runs/<experiment>/<seed>``.
        devices, strategy: override the run's (e.g. ``devices="2", strategy="ddp"``).
        progress: report progress.
        allow_unfinished: evaluate a run that has no ``DONE`` yet (its intermediate best
            weights); the files are then ``unfinished_eval_{auc,loc}.csv`` and no seed summary
            is written.

    Returns:
        ``{"auc": {...}, "loc": {...}}`` (on every DDP rank; only rank 0 writes files).

    Raises:
        ValueError: the run is not finished and ``allow_unfinished`` is not set.
        pylon.locks.FolderLockedError: another command (e.g. its training) holds the run folder.
    """
    paths, config = open_trained_run(run_dir)
    hardware = {"devices": devices, "strategy": strategy}
    config = dataclasses.replace(config, **{k: v for k, v in hardware.items() if v is not None})
    hardware_options(config)  # refuse devices this machine lacks before taking the lock
    with run_lock(paths, "pylon evaluate"):
        finished = paths.is_done()
        if not finished and not allow_unfinished:
            raise ValueError(
                f"{paths.root} is not finished (no {paths.done.name}): its best weights are "
                "intermediate; finish training first (rerun `pylon train` to resume), or pass "
                f"--allow-unfinished to write {UNFINISHED_PREFIX}eval_*.csv"
            )
        return _evaluate_locked(paths, config, progress=progress, finished=finished)


def _evaluate_locked(paths, config: TrainConfig, *, progress: bool, finished: bool) -> dict:
    data = config.data
    model = load_model(paths.best).eval()

    same = data.loc_split == data.test_split
    auc, is_main = _run_split(config, model, data.test_split, auc=True, loc=same, progress=progress)
    if same:
        loc = {k: v for k, v in auc.items() if not k.startswith(("auroc", "n_images"))}
        auc = {k: v for k, v in auc.items() if k.startswith(("auroc", "n_images"))}
    else:
        loc, is_main = _run_split(
            config, model, data.loc_split, auc=False, loc=True, progress=progress
        )
    pairs = loc.pop("pairs", None)
    if not is_main:
        return {"auc": auc, "loc": loc}
    prefix = "" if finished else UNFINISHED_PREFIX
    write_metrics(auc, paths.root / f"{prefix}eval_auc.csv")
    write_metrics(loc, paths.root / f"{prefix}eval_loc.csv")
    write_csv_atomic(pairs, paths.root / f"{prefix}eval_pairs.csv")
    if finished:
        summarize_experiment(paths.experiment_dir)
    return {"auc": auc, "loc": loc}


def write_metrics(metrics: dict[str, float], path: Path) -> None:
    """Write ``metric,value`` rows (the format of ``eval_*.csv``) atomically.

    Args:
        metrics: metric name -> value.
        path: the CSV file.

    Returns:
        None.
    """
    frame = pd.DataFrame({"metric": list(metrics), "value": list(metrics.values())})
    write_csv_atomic(frame, path)


def read_metrics(path: Path) -> dict[str, float]:
    """Read a ``metric,value`` CSV written by :func:`write_metrics`.

    Args:
        path: the CSV file.

    Returns:
        metric name -> value (float).

    Raises:
        ValueError: naming the file (and line) when it is empty, its columns are not
            ``metric,value`` or a value is not a number.
    """
    try:
        frame = pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError) as err:
        raise ValueError(f"{path}: not a metric,value CSV ({err})") from None
    if list(frame.columns) != ["metric", "value"]:
        raise ValueError(f"{path}: expected columns metric,value, got {list(frame.columns)}")
    values = pd.to_numeric(frame["value"], errors="coerce")
    bad = (values.isna() & frame["value"].notna()).to_numpy().nonzero()[0]
    if len(bad):
        row = int(bad[0])
        raise ValueError(
            f"{path}, line {row + 2}: value {frame['value'].iloc[row]!r} of metric "
            f"{frame['metric'].iloc[row]!r} is not a number"
        )
    return dict(zip(frame["metric"], values.astype(float), strict=True))


def evaluation_outputs(experiment_dir: str | Path, kind: str) -> tuple[list[Path], list[str]]:
    """The current ``eval_<kind>.csv`` files of an experiment's seed folders, and why the others
    were left out.

    Args:
        experiment_dir: ``runs/<experiment>``.
        kind: ``"auc"`` or ``"loc"``.

    Returns:
        ``(files, stale)``: the files that describe their run's final weights, and one line per
        file older than the weights it scored (:func:`pylon.training.runs.evaluation_staleness`).
    """
    files, stale = [], []
    for seed_dir in seed_dirs(experiment_dir):
        path = seed_dir / f"eval_{kind}.csv"
        if not path.is_file():
            continue
        reason = evaluation_staleness(seed_dir, path)
        if reason is None:
            files.append(path)
        else:
            stale.append(reason)
    return files, stale


def stale_evaluations(experiment_dir: str | Path) -> list[str]:
    """One line per ``eval_*.csv`` of the experiment that :func:`summarize_experiment` skips
    because it is older than the weights it scored (e.g. written before the run finished)."""
    return [line for kind in ("auc", "loc") for line in evaluation_outputs(experiment_dir, kind)[1]]


def summarize_experiment(experiment_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Mean, std and n over the evaluated seed folders; writes ``summary_{auc,loc}.csv``.

    An ``eval_*.csv`` older than the weights it scored is stale and skipped
    (:func:`stale_evaluations` says which).

    Args:
        experiment_dir: ``runs/<experiment>``, holding seed folders with ``eval_*.csv``.

    Returns:
        ``{"auc": frame, "loc": frame}`` (``metric, mean, std, n`` rows, from
        :func:`pylon.metrics.summarize_seeds`) for the kinds that have evaluated seeds.
    """
    experiment_dir = Path(experiment_dir)
    out = {}
    for kind in ("auc", "loc"):
        files, _ = evaluation_outputs(experiment_dir, kind)
        runs = [read_metrics(f) for f in files]
        summary = experiment_dir / f"summary_{kind}.csv"
        if runs:
            out[kind] = summarize_seeds(runs)
            write_csv_atomic(out[kind], summary)
        else:
            summary.unlink(missing_ok=True)  # it summarised outputs that are stale now
    return out
