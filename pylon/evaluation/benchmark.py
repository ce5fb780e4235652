"""``pylon benchmark``: trained localizers and post-hoc explainers scored alike, with the field's
metrics, by lesion size, with bootstrap confidence intervals and paired tests.

For every (run, method) pair the maps of the same images are scored once into per-pair records
(``benchmark_scoring``), saved as ``records/<run>/<method>.safetensors`` with the key of what they
scored (weights, split, options), so a rerun skips finished pairs. The reductions are small:

- ``benchmark.csv`` (long): run, method, metric, size_bucket, class, value, ci_low, ci_high, n;
  ``size_bucket`` ``all`` or a bucket of ``pylon.metrics.sizes``; ``class`` ``all`` (pairs
  pooled), ``macro`` (mean over classes) or a class name; the interval a 95 % percentile
  bootstrap over images.
- ``comparisons.csv``: every (run, method) against the first run's own CAM on the same images,
  per metric: the paired bootstrap difference, its interval and two-sided p-value, and the
  one-line sentence.
- ``benchmark.md``: the headline figures (all sizes, pooled) with intervals, and the sentences.
- ``by_size.png``: point accuracy by lesion size with interval bars per method;
  ``faithfulness.png``: mean deletion and insertion curves, where faithfulness was scored.
- ``seeds.csv``: where several runs are seeds of one experiment, mean and std over seeds.

MaxBoxAccV2's threshold is chosen on the run's validation split when it has boxes
(``threshold_split``); otherwise on the test split itself and the metric is named
``maxboxacc_v2_oracle``, as the optimistic choice it is.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from pylon.evaluation.benchmark_scoring import (
    FAITHFULNESS_METRICS,
    OWN,
    PAIR_METRICS,
    BenchmarkOptions,
    blocks,
    concatenate,
    flatten,
    own_maps,
    posthoc_pair_maps,
    score_faithfulness,
    score_maps,
    timed,
    unflatten,
)
from pylon.io import atomic_path, write_csv_atomic, write_text_atomic
from pylon.metrics.bootstrap import bootstrap_ci, format_comparison, paired_bootstrap
from pylon.metrics.maxboxacc import BoxIoURecords, box_accuracy, records_at
from pylon.metrics.records import PairRecords
from pylon.metrics.sizes import DEFAULT_EDGES, DEFAULT_NAMES, size_buckets
from pylon.progress import Progress

DEFAULT_METHODS = (OWN, "gradcam", "layercam")
RECORDS_VERSION = 1


@dataclass(frozen=True)
class RunInfo:
    """A run taking part: its folder, its name in the tables, its experiment and the path it
    was given as (an experiment folder for its seeds)."""

    path: Path
    name: str
    experiment: str
    source: str = ""


def expand_runs(paths: Sequence[str | os.PathLike]) -> list[RunInfo]:
    """Run folders, with an experiment folder (of seed folders) expanded into its seeds.

    Returns:
        One :class:`RunInfo` per run, named ``experiment/seed`` (made unique if two collide).
        Raises ``ValueError`` for a path that is neither a run nor an experiment of runs.
    """
    from pylon.training.runs import seed_dirs

    found: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw)
        if (path / "config.yaml").is_file():
            found.append((path, str(raw)))
        elif path.is_dir() and seed_dirs(path):
            found.extend((seed, str(raw)) for seed in seed_dirs(path))
        else:
            raise ValueError(
                f"{path}: not a run folder (no config.yaml) nor an experiment folder of seed runs"
            )
    runs, names = [], set()
    for path, source in found:
        name = f"{path.parent.name}/{path.name}"
        base, k = name, 2
        while name in names:
            name, k = f"{base}~{k}", k + 1
        names.add(name)
        runs.append(RunInfo(path, name, path.parent.name, source))
    return runs


def _methods_per_path(runs, methods) -> dict[str, list[str]]:
    """Each run path's method list (de-duplicated), from one list or a mapping by path."""
    if isinstance(methods, Mapping):
        given = {str(k): v for k, v in methods.items()}
        missing = [str(r) for r in runs if str(r) not in given]
        if missing:
            raise ValueError(f"methods: no method list for run(s) {missing}")
    else:
        given = {str(r): methods for r in runs}
    out = {}
    for path, names in given.items():
        names = list(dict.fromkeys(names))
        if not names:
            raise ValueError(
                f"no method given for {path}; expected 'own' and/or pytorch-grad-cam method names"
            )
        out[path] = names
    return out


def _records_key(weights: Path, split: str, options: BenchmarkOptions, max_images, method) -> str:
    stat = weights.stat()
    return json.dumps(
        {
            "version": RECORDS_VERSION,
            "weights": [str(weights.resolve()), stat.st_size, stat.st_mtime_ns],
            "split": split,
            "max_images": max_images,
            "method": method,
            "options": options.as_dict(),
        },
        sort_keys=True,
    )


def _load_records(path: Path, key: str) -> tuple[dict[str, object], list[str]] | None:
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), "pt") as fh:
            meta = fh.metadata() or {}
    except Exception:  # a damaged file is recomputed
        return None
    if meta.get("key") != key:
        return None
    return unflatten(load_file(str(path))), json.loads(meta["image_ids"])


def _save_records(path: Path, results: dict[str, object], key: str, image_ids: list[str]) -> None:
    from safetensors.torch import save_file

    with atomic_path(path) as tmp:
        save_file(
            flatten(results), str(tmp), metadata={"key": key, "image_ids": json.dumps(image_ids)}
        )


def _grad_cam(method: str, model, target_layer: str | None):
    from pylon.evaluation.posthoc import METHODS, make_method

    if method not in METHODS:
        raise ValueError(
            f"unknown method {method!r}; expected {OWN!r} or one of {', '.join(METHODS)}"
        )
    layer = None
    if target_layer:
        try:
            layer = model.get_submodule(target_layer)
        except AttributeError:
            raise ValueError(f"the model has no submodule {target_layer!r}") from None
    return make_method(method, model, layer)


def score_run_method(
    run: RunInfo,
    method: str,
    *,
    split: str | None,
    max_images: int | None,
    options: BenchmarkOptions,
    out_dir: Path,
    device: str | None = "cpu",
    target_layer: str | None = None,
    progress: bool = True,
    timings: dict[str, float] | None = None,
) -> tuple[dict[str, object], list[str], bool]:
    """The records of one (run, method) pair, read from ``out_dir`` when already scored.

    ``timings``, if given, receives the seconds spent in the maps (model forwards or post-hoc
    method), in each metric family and in faithfulness.

    Returns:
        ``(results, image_ids, reused)``: ``{metric: records}``, the ids of the images scored
        (in index order), and whether the records were read instead of computed.
    """
    from pylon.evaluation.execution import load_run_model
    from pylon.evaluation.posthoc import boxed_indices
    from pylon.training.datamodule import build_dataset
    from pylon.training.runs import open_trained_run

    paths, config = open_trained_run(run.path)
    split = split or config.data.loc_split
    target = out_dir / "records" / run.name / f"{method}.safetensors"
    key = _records_key(paths.best, split, options, max_images, method)
    cached = _load_records(target, key)
    if cached is not None:
        return cached[0], cached[1], True
    dataset = build_dataset(config.data, split)
    indices = boxed_indices(dataset, max_images)
    if not indices:
        raise ValueError(f"{run.name}: split {split!r} has no image with a ground-truth box")
    model, execution, _ = load_run_model(paths, config, device)
    cam = None if method == OWN else _grad_cam(method, model, target_layer)

    def probabilities(x: torch.Tensor) -> torch.Tensor:
        x = x.to(next(model.parameters()).device)
        with torch.no_grad(), execution.autocast():
            return torch.sigmoid(model(execution.prepare_input(x)).logits.float()).cpu()

    timings = {} if timings is None else timings
    parts, image_ids, faithful_left = [], [], options.faithfulness_images
    label = f"benchmark {run.name} {method} ({split})"
    try:
        with Progress(label, len(indices), unit="img", enabled=progress) as reporter:
            for block in blocks(dataset, indices):
                with timed(timings, "maps (model forwards)" if cam is None else "maps (post-hoc)"):
                    if cam is None:
                        maps = own_maps(model, execution, block, options.batch_size)
                    else:
                        maps = posthoc_pair_maps(cam, block, options.batch_size)
                result = score_maps(maps, block, options, timings)
                if faithful_left > 0:
                    take = [k for k, (i, _) in enumerate(block.pairs) if i < faithful_left]
                    sub = _sub_block(block, take)
                    with timed(timings, "faithfulness"):
                        faithful = score_faithfulness(
                            probabilities,
                            maps[take],
                            sub,
                            options,
                            result["point"].box_area[take],
                            dataset.mean,
                            dataset.std,
                        )
                    result.update(faithful)
                    faithful_left -= len(block.images)
                parts.append(result)
                image_ids.extend(block.image_ids)
                reporter.advance(len(block.images))
    finally:
        if cam is not None:
            cam.activations_and_grads.release()
    results = concatenate(parts)
    _save_records(target, results, key, image_ids)
    return results, image_ids, False


def _sub_block(block, keep: list[int]):
    """The block restricted to some of its pairs (same images and offset)."""
    sub = type(block)(block.images, block.boxes, block.offset, block.image_ids)
    sub.pairs = [block.pairs[k] for k in keep]
    return sub


def table_records(
    results: dict[str, object], chosen_thresholds=None
) -> tuple[dict[str, PairRecords], dict[str, object]]:
    """The records of every reported metric, MaxBoxAccV2 turned into per-pair values.

    Args:
        results: one (run, method)'s records (:func:`score_run_method`).
        chosen_thresholds: MaxBoxAcc thresholds chosen on another split (a ``BoxAccuracy``);
            ``None``: chosen on these records (oracle).

    Returns:
        ``({metric: PairRecords}, notes)``: MaxBoxAccV2 per pair is the mean of its hits at the
        three IoU levels (so the pooled mean is MaxBoxAccV2), named ``maxboxacc_v2`` or
        ``maxboxacc_v2_oracle``; ``notes`` holds the thresholds used.
    """
    out = {m: results[m] for m in (*PAIR_METRICS, *FAITHFULNESS_METRICS) if m in results}
    box: BoxIoURecords = results["maxboxacc"]
    accuracy = box_accuracy(box, chosen_thresholds=chosen_thresholds)
    hits = [
        records_at(box, int(k), d)
        for k, d in zip(accuracy.threshold_index.tolist(), accuracy.iou_thresholds, strict=True)
    ]
    mean = torch.stack([h.value for h in hits]).mean(0)
    name = "maxboxacc_v2_oracle" if accuracy.oracle else "maxboxacc_v2"
    out[name] = PairRecords(box.image_index, box.class_index, mean, box.box_area, box.image_area)
    notes = {
        f"threshold_iou{d:g}": float(t)
        for d, t in zip(accuracy.iou_thresholds, accuracy.threshold, strict=True)
    }
    return out, notes


def summary_rows(
    run: str,
    method: str,
    records: dict[str, PairRecords],
    class_names: Sequence[str],
    num_images: int,
    *,
    edges: Sequence[float] = DEFAULT_EDGES,
    bucket_names: Sequence[str] = DEFAULT_NAMES,
    resamples: int = 1000,
    seed: int = 0,
) -> list[dict[str, object]]:
    """``benchmark.csv`` rows of one (run, method): every metric x size bucket x class."""
    rows = []
    k = len(class_names)
    for metric, rec in records.items():
        bucket = size_buckets(rec, edges, bucket_names)
        for b_name, keep in [
            ("all", None),
            *[(n, bucket == i) for i, n in enumerate(bucket_names)],
        ]:
            sel = rec if keep is None else rec.select(keep)
            for c_name, statistic in [
                ("all", "pooled"),
                ("macro", "macro"),
                *zip(class_names, range(k), strict=True),
            ]:
                if isinstance(statistic, int) and not bool((sel.class_index == statistic).any()):
                    continue
                if len(sel) == 0:
                    continue
                ci = bootstrap_ci(
                    sel,
                    k,
                    statistic=statistic,
                    resamples=resamples,
                    seed=seed,
                    num_images=num_images,
                )
                rows.append(
                    {
                        "run": run,
                        "method": method,
                        "metric": metric,
                        "size_bucket": b_name,
                        "class": c_name,
                        "value": ci.estimate,
                        "ci_low": ci.low,
                        "ci_high": ci.high,
                        "n": ci.n,
                    }
                )
    return rows


def _threshold_split(run: RunInfo, split: str, threshold_split: str | None) -> str | None:
    """The split MaxBoxAcc's thresholds are chosen on: ``"auto"`` is the run's validation split
    when it differs from ``split`` and has boxes; ``None`` chooses on ``split`` (oracle)."""
    if threshold_split != "auto":
        return threshold_split if threshold_split != split else None
    from pylon.evaluation.posthoc import boxed_indices
    from pylon.training.datamodule import build_dataset
    from pylon.training.runs import open_trained_run

    _, config = open_trained_run(run.path)
    val = config.data.val_split
    if not val or val == split:
        return None
    return val if boxed_indices(build_dataset(config.data, val), 1) else None


@dataclass
class BenchmarkResult:
    """What :func:`benchmark` wrote: the tables as data frames and the output folder."""

    table: pd.DataFrame
    comparisons: pd.DataFrame
    seeds: pd.DataFrame
    out_dir: Path
    reused: list[tuple[str, str]]


def benchmark(
    runs: Sequence[str | os.PathLike],
    methods: Sequence[str] | Mapping[str | os.PathLike, Sequence[str]] = DEFAULT_METHODS,
    *,
    out_dir: str | os.PathLike,
    split: str | None = None,
    threshold_split: str | None = "auto",
    max_images: int | None = None,
    options: BenchmarkOptions | None = None,
    resamples: int = 1000,
    seed: int = 0,
    edges: Sequence[float] = DEFAULT_EDGES,
    bucket_names: Sequence[str] = DEFAULT_NAMES,
    device: str | None = "cpu",
    target_layer: str | None = None,
    progress: bool = True,
) -> BenchmarkResult:
    """Score every (run, method) pair on the same images and write the tables and figures.

    Args:
        runs: run folders or experiment folders (their seeds); the first run's own CAM is the
            reference of the paired comparisons.
        methods: ``"own"`` (the model's CAM) and pytorch-grad-cam method names, for every run;
            or a mapping from each path of ``runs`` to its own list.
        out_dir: where everything goes (``records/`` keeps the per-pair records for resuming).
        split: the scored split (default: each run's ``loc_split``).
        threshold_split: the split MaxBoxAcc's thresholds are chosen on (``"auto"``: the run's
            validation split when it has boxes; ``None``: the scored split, an oracle choice).
        max_images: score at most this many images with boxes per split.
        options: :class:`BenchmarkOptions`.
        resamples, seed: the bootstrap's.
        edges, bucket_names: the lesion-size buckets (box area as a share of the image).
        device: where models run.
        target_layer: grad-cam's layer (dotted path; default the encoder's last stage).
        progress: progress lines / bars.

    Returns:
        :class:`BenchmarkResult`; the files are ``benchmark.csv``, ``comparisons.csv``,
        ``seeds.csv``, ``benchmark.md``, ``by_size.png`` and (with faithfulness)
        ``faithfulness.png`` in ``out_dir``.
    """
    from pylon.training.datamodule import build_dataset
    from pylon.training.runs import open_trained_run

    options = options or BenchmarkOptions()
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be >= 1, got {max_images}")
    per_path = _methods_per_path(runs, methods)
    infos = expand_runs(runs)
    out = Path(out_dir)
    rows, scored, reused, curves = [], {}, [], {}
    for info in infos:
        _, config = open_trained_run(info.path)
        run_split = split or config.data.loc_split
        class_names = list(build_dataset(config.data, run_split).class_names)
        chooser = _threshold_split(info, run_split, threshold_split)
        for method in per_path[info.source]:
            results, ids, was_reused = score_run_method(
                info, method, split=run_split, max_images=max_images, options=options,
                out_dir=out, device=device, target_layer=target_layer, progress=progress,
            )  # fmt: skip
            if was_reused:
                reused.append((info.name, method))
            chosen = None
            if chooser is not None:
                val, _, _ = score_run_method(
                    info, method, split=chooser, max_images=max_images,
                    options=BenchmarkOptions(**{**options.as_dict(), "faithfulness_images": 0}),
                    out_dir=out / "threshold_split", device=device, target_layer=target_layer,
                    progress=progress,
                )  # fmt: skip
                chosen = box_accuracy(val["maxboxacc"])
            records, _ = table_records(results, chosen)
            scored[(info.name, method)] = (records, ids, class_names, info.experiment)
            rows += summary_rows(
                info.name, method, records, class_names, len(ids), edges=edges,
                bucket_names=bucket_names, resamples=resamples, seed=seed,
            )  # fmt: skip
            if "deletion_curves" in results:
                curves[(info.name, method)] = (
                    results["deletion_curves"],
                    results["insertion_curves"],
                )
    table = pd.DataFrame(rows)
    comparisons = paired_comparisons(scored, resamples=resamples, seed=seed)
    seeds = seed_summary(table)
    out.mkdir(parents=True, exist_ok=True)
    write_csv_atomic(table, out / "benchmark.csv")
    write_csv_atomic(comparisons, out / "comparisons.csv")
    write_csv_atomic(seeds, out / "seeds.csv")
    write_text_atomic(out / "benchmark.md", markdown_report(table, comparisons, seeds))
    plot_by_size(table, out / "by_size.png", bucket_names)
    if curves:
        plot_curves(curves, out / "faithfulness.png")
    return BenchmarkResult(table, comparisons, seeds, out, reused)


def paired_comparisons(scored: dict, *, resamples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Every (run, method) against the first run's own CAM (or first method), per metric."""
    keys = list(scored)
    columns = [
        "reference",
        "run",
        "method",
        "metric",
        "difference",
        "ci_low",
        "ci_high",
        "p_value",
        "n",
        "line",
    ]
    if len(keys) < 2:
        return pd.DataFrame(columns=columns)
    ref = keys[0]
    ref_records, ref_ids, class_names, _ = scored[ref]
    ref_name = f"{ref[0]} {ref[1]}"
    rows = []
    for key in keys[1:]:
        records, ids, _, _ = scored[key]
        if ids != ref_ids:
            continue  # another split or other images: not paired
        for metric, rec in records.items():
            if metric not in ref_records:
                continue
            result = paired_bootstrap(
                rec, ref_records[metric], len(class_names), resamples=resamples, seed=seed,
                num_images=len(ids),
            )  # fmt: skip
            name = f"{key[0]} {key[1]}"
            rows.append(
                {
                    "reference": ref_name,
                    "run": key[0],
                    "method": key[1],
                    "metric": metric,
                    "difference": result.estimate,
                    "ci_low": result.low,
                    "ci_high": result.high,
                    "p_value": result.p_value,
                    "n": result.n,
                    "line": f"{metric}: " + format_comparison(result, name, ref_name),
                }
            )
    return pd.DataFrame(rows, columns=columns)


def seed_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over the seeds of each experiment of the headline figures (all sizes,
    pairs pooled); experiments with one seed have std NaN."""
    columns = ["experiment", "method", "metric", "mean", "std", "seeds"]
    if table.empty:
        return pd.DataFrame(columns=columns)
    head = table[(table["size_bucket"] == "all") & (table["class"] == "all")].copy()
    head["experiment"] = head["run"].str.rsplit("/", n=1).str[0]
    grouped = head.groupby(["experiment", "method", "metric"], sort=False)["value"]
    summary = grouped.agg(["mean", "std", "count"]).reset_index()
    return summary.rename(columns={"count": "seeds"})[columns]


def markdown_report(table: pd.DataFrame, comparisons: pd.DataFrame, seeds: pd.DataFrame) -> str:
    """``benchmark.md``: headline figures with intervals, then the paired comparisons."""
    head = table[(table["size_bucket"] == "all") & (table["class"] == "all")]
    metrics = list(dict.fromkeys(head["metric"]))
    lines = [
        "# Localization benchmark",
        "",
        "Pairs pooled over classes, all lesion sizes; 95 % bootstrap intervals over images.",
        "",
        "| run | method | " + " | ".join(metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
    ]
    for (run, method), group in head.groupby(["run", "method"], sort=False):
        cells = []
        for metric in metrics:
            row = group[group["metric"] == metric]
            if row.empty:
                cells.append("")
                continue
            r = row.iloc[0]
            cells.append(f"{r['value']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]")
        lines.append(f"| {run} | {method} | " + " | ".join(cells) + " |")
    if not comparisons.empty:
        lines += ["", "## Paired comparisons", ""]
        lines += [f"- {line}" for line in comparisons["line"]]
    if not seeds.empty and (seeds["seeds"] > 1).any():
        lines += ["", "## Over seeds (mean +- std)", ""]
        for _, r in seeds[seeds["seeds"] > 1].iterrows():
            lines.append(
                f"- {r['experiment']} {r['method']} {r['metric']}: {r['mean']:.3f} +- "
                f"{r['std']:.3f} ({r['seeds']} seeds)"
            )
    return "\n".join(lines) + "\n"


def plot_by_size(
    table: pd.DataFrame, path: Path, bucket_names: Sequence[str], metric: str = "point"
) -> None:
    """Bars of ``metric`` by lesion size per (run, method), with the bootstrap intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table[(table["metric"] == metric) & (table["class"] == "all")]
    series = list(dict.fromkeys(zip(rows["run"], rows["method"], strict=True)))
    buckets = ["all", *bucket_names]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(buckets) * max(1, len(series)) / 2), 4))
    width = 0.8 / max(1, len(series))
    for k, (run, method) in enumerate(series):
        sel = rows[(rows["run"] == run) & (rows["method"] == method)].set_index("size_bucket")
        x, y, low, high = [], [], [], []
        for b, bucket in enumerate(buckets):
            if bucket in sel.index:
                r = sel.loc[bucket]
                x.append(b + (k - (len(series) - 1) / 2) * width)
                y.append(r["value"])
                low.append(max(0.0, r["value"] - r["ci_low"]))
                high.append(max(0.0, r["ci_high"] - r["value"]))
        ax.bar(x, y, width, yerr=[low, high], capsize=3, label=f"{run} {method}")
    ax.set_xticks(range(len(buckets)), buckets)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(f"{metric} (95 % CI)")
    ax.set_xlabel("lesion size (box area / image)")
    ax.legend(fontsize=8)
    _save_figure(fig, path)


def _save_figure(fig, path: Path) -> None:
    """Write a matplotlib figure as PNG atomically and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def plot_curves(curves: dict, path: Path) -> None:
    """Mean deletion and insertion curves per (run, method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for (run, method), (deletion, insertion) in curves.items():
        for ax, c in zip(axes, (deletion, insertion), strict=True):
            mean = c.mean(0).numpy()
            ax.plot(np.linspace(0, 1, len(mean)), mean, label=f"{run} {method}")
    for ax, title in zip(
        axes, ("deletion (lower is better)", "insertion (higher is better)"), strict=True
    ):
        ax.set_title(title)
        ax.set_xlabel("share of pixels moved")
        ax.set_ylabel("class probability")
        ax.legend(fontsize=8)
    _save_figure(fig, path)
