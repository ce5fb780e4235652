"""What a PATH given to ``pylon view`` is: a run, an experiment folder of seeds, a ``pylon
benchmark`` output or a ``pylon predict`` output; and the metric tables each one holds.

Nothing here runs a model: opening sources reads folder layouts and small CSV files only.
The plots listed by :func:`metric_plots` lie inside the source folders: a server must not serve
those paths (the folders hold checkpoints and configs): copy them into the viewer's own cache
first (:meth:`pylon.app.render.OverlayCache.publish`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

KINDS = ("run", "benchmark", "predict")
BENCHMARK_TABLES = ("benchmark.csv", "comparisons.csv", "seeds.csv")
BENCHMARK_PLOTS = ("by_size.png", "faithfulness.png")
PAIRS_FILES = ("eval_pairs.csv", "unfinished_eval_pairs.csv")


@dataclass(frozen=True)
class Source:
    """One thing the viewer shows.

    Attributes:
        kind: ``"run"`` (a trained run folder), ``"benchmark"`` (a ``pylon benchmark`` output
            folder) or ``"predict"`` (a ``pylon predict`` output folder).
        name: unique among the sources opened together; a run is ``experiment/seed`` (the name
            ``pylon benchmark`` gives it, so benchmark records find their run), the others their
            folder's name.
        path: the folder.
        given: the path as given (an experiment folder for each of its seeds).
        weights: a run's ``checkpoints/best.safetensors`` (``None`` when it has none yet); a
            prediction folder's weights file from its ``predict.json`` (a model folder's
            ``model.safetensors``) when that file still exists; ``None`` for a benchmark.
        pairs: a run's per-pair records, ``eval_pairs.csv`` (else ``unfinished_eval_pairs.csv``,
            written by ``pylon evaluate --allow-unfinished``); ``None`` when the run has not been
            evaluated (``pylon evaluate RUN`` writes it) and for the other kinds.
    """

    kind: str
    name: str
    path: Path
    given: Path
    weights: Path | None = None
    pairs: Path | None = None

    @property
    def unfinished(self) -> bool:
        """True for a run whose cases come from ``unfinished_eval_pairs.csv``."""
        return self.pairs is not None and self.pairs.name.startswith("unfinished_")


def _is_run(path: Path) -> bool:
    return (path / "config.yaml").is_file()


def _run_source(path: Path, given: Path, name: str) -> Source:
    from pylon.training.runs import RunPaths

    paths = RunPaths(path)
    pairs = next((path / f for f in PAIRS_FILES if (path / f).is_file()), None)
    weights = paths.best if paths.best.is_file() else None
    return Source("run", name, path, given, weights, pairs)


def _predict_weights(path: Path) -> Path | None:
    """The weights file of a prediction folder's ``predict.json`` (a model folder's
    ``model.safetensors``); ``None`` when it is gone or unreadable."""
    from pylon.inference.outputs import SETTINGS_JSON
    from pylon.models.folder import weights_file

    try:
        settings = json.loads((path / SETTINGS_JSON).read_text(encoding="utf-8"))
        weights = weights_file(Path(settings["weights"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return weights if weights.is_file() else None


def classify(path: str | os.PathLike) -> str:
    """What ``path`` is: ``"run"``, ``"experiment"`` (a folder of seed runs), ``"benchmark"`` or
    ``"predict"``.

    Raises:
        ValueError: naming the path and what the viewer opens, when it is none of these.
    """
    from pylon.inference.outputs import PREDICTIONS_JSONL, SETTINGS_JSON
    from pylon.training.runs import seed_dirs

    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: not found; expected {_EXPECTED}")
    if not path.is_dir():
        raise ValueError(f"{path} is a file; expected {_EXPECTED}")
    if _is_run(path):
        return "run"
    if (path / "benchmark.csv").is_file():
        return "benchmark"
    if (path / SETTINGS_JSON).is_file() or (path / PREDICTIONS_JSONL).is_file():
        return "predict"
    if any(_is_run(seed) for seed in seed_dirs(path)):
        return "experiment"
    raise ValueError(f"{path}: not a folder pylon view opens; expected {_EXPECTED}")


_EXPECTED = (
    "a run folder (with config.yaml), an experiment folder of seed runs, a `pylon benchmark` "
    "output (with benchmark.csv) or a `pylon predict` output (with predict.json)"
)


def open_sources(paths: Sequence[str | os.PathLike]) -> list[Source]:
    """The sources of the paths given to ``pylon view``, in order (an experiment folder gives
    one run source per seed folder holding a run, in seed order).

    Args:
        paths: run, experiment, benchmark or prediction folders.

    Returns:
        One :class:`Source` each, names made unique (``name~2`` for a second source of the same
        name); the same folder given twice is opened once.

    Raises:
        ValueError: no path, or a path that is none of these (naming it and what is expected).
    """
    from pylon.training.runs import seed_dirs

    if not paths:
        raise ValueError(f"no path given; expected {_EXPECTED}")
    found: list[Source] = []
    seen: set[Path] = set()
    names: set[str] = set()

    def add(kind: str, path: Path, given: Path) -> None:
        resolved = path.resolve()
        if resolved in seen:
            return
        seen.add(resolved)
        base = f"{resolved.parent.name}/{resolved.name}" if kind == "run" else resolved.name
        name, k = base, 2
        while name in names:
            name, k = f"{base}~{k}", k + 1
        names.add(name)
        if kind == "run":
            found.append(_run_source(path, given, name))
        elif kind == "predict":
            found.append(Source("predict", name, path, given, _predict_weights(path)))
        else:
            found.append(Source(kind, name, path, given))

    for raw in paths:
        path = Path(raw)
        kind = classify(path)
        if kind == "experiment":
            for seed in seed_dirs(path):
                if _is_run(seed):
                    add("run", seed, path)
        else:
            add(kind, path, path)
    return found


def _read_csv(path: Path) -> pd.DataFrame | None:
    if not path.is_file():
        return None
    try:
        return pd.read_csv(path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable CSV table ({err})") from None


def _metric_table(path: Path) -> pd.DataFrame | None:
    from pylon.evaluation.evaluate import read_metrics

    if not path.is_file():
        return None
    values = read_metrics(path)
    return pd.DataFrame({"metric": list(values), "value": list(values.values())})


def pairs_summary(pairs: pd.DataFrame) -> pd.DataFrame:
    """Point accuracy of a run's per-pair records by class and lesion-size bucket.

    Args:
        pairs: an ``eval_pairs.csv`` frame (:data:`pylon.evaluation.evaluate.PAIR_COLUMNS`).

    Returns:
        Rows ``class, size_bucket, n, hits, point_acc`` (``all`` rows for every class pooled and
        every bucket pooled), classes and buckets in the order they first appear.
    """
    frame = pairs.assign(_all="all")
    rows = []
    for cls_key in ("_all", "class"):
        for bucket_key in ("_all", "size_bucket"):
            grouped = frame.groupby([cls_key, bucket_key], sort=False)["point_hit"]
            for (cls, bucket), hits in grouped:
                n = int(hits.size)
                rows.append(
                    {
                        "class": cls,
                        "size_bucket": bucket,
                        "n": n,
                        "hits": int(hits.astype(bool).sum()),
                        "point_acc": float(hits.astype(bool).mean()) if n else float("nan"),
                    }
                )
    return pd.DataFrame(rows, columns=["class", "size_bucket", "n", "hits", "point_acc"])


def metric_tables(source: Source) -> dict[str, pd.DataFrame]:
    """The metric tables a source holds, by title (only those present).

    - run: ``"AUROC"`` (``eval_auc.csv``), ``"localization"`` (``eval_loc.csv``), ``"point
      accuracy by class and size"`` (from the per-pair records, :func:`pairs_summary`),
      ``"seeds AUROC"`` / ``"seeds localization"`` (the experiment's ``summary_*.csv``: mean,
      std, n over seeds), and ``"post-hoc"`` (``posthoc_comparison.csv`` of
      ``pylon evaluate-cam``); an unfinished run's files (``unfinished_eval_*.csv``) are
      titled with `` (unfinished)``.
    - benchmark: ``"headline"`` (``benchmark.csv`` rows of every size and class pooled, with the
      95 % bootstrap interval ``ci_low, ci_high``), ``"by size"`` (pooled classes per size
      bucket), ``"benchmark"`` (every row), ``"comparisons"`` (paired tests against the first
      run's own CAM), ``"seeds"``.
    - predict: ``"predictions"`` (``predictions.csv``), ``"failures"`` (``failures.csv``).

    Raises:
        ValueError: a table that is not readable, naming its file.
    """
    folder = source.path
    tables: dict[str, pd.DataFrame | None] = {}
    if source.kind == "run":
        for prefix, note in (("", ""), ("unfinished_", " (unfinished)")):
            tables[f"AUROC{note}"] = _metric_table(folder / f"{prefix}eval_auc.csv")
            tables[f"localization{note}"] = _metric_table(folder / f"{prefix}eval_loc.csv")
        if source.pairs is not None:
            pairs = _read_csv(source.pairs)
            if pairs is not None and "point_hit" in pairs:
                tables["point accuracy by class and size"] = pairs_summary(pairs)
        tables["seeds AUROC"] = _read_csv(folder.parent / "summary_auc.csv")
        tables["seeds localization"] = _read_csv(folder.parent / "summary_loc.csv")
        tables["post-hoc"] = _read_csv(folder / "posthoc_comparison.csv")
    elif source.kind == "benchmark":
        table = _read_csv(folder / "benchmark.csv")
        if table is not None:
            pooled = table[table["class"].astype(str) == "all"]
            tables["headline"] = pooled[pooled["size_bucket"] == "all"].reset_index(drop=True)
            tables["by size"] = pooled[pooled["size_bucket"] != "all"].reset_index(drop=True)
            tables["benchmark"] = table
        tables["comparisons"] = _read_csv(folder / "comparisons.csv")
        tables["seeds"] = _read_csv(folder / "seeds.csv")
    elif source.kind == "predict":
        from pylon.inference.outputs import FAILURES_CSV, PREDICTIONS_CSV

        tables["predictions"] = _read_csv(folder / PREDICTIONS_CSV)
        tables["failures"] = _read_csv(folder / FAILURES_CSV)
    return {title: table for title, table in tables.items() if table is not None}


def metric_plots(source: Source) -> dict[str, Path]:
    """The figures a benchmark wrote (``by_size.png``, ``faithfulness.png``) by file name.

    The paths lie in the source folder: copy them into the viewer's cache
    (:meth:`pylon.app.render.OverlayCache.publish`) before serving them. Runs and prediction
    folders have none (their overlays are rendered on demand).
    """
    if source.kind != "benchmark":
        return {}
    return {name: source.path / name for name in BENCHMARK_PLOTS if (source.path / name).is_file()}
