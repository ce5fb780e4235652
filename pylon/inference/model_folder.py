"""``pylon export-model``: a trained run, or released weights with a preset, as a shareable model
folder (``model.safetensors``, ``config.json``, ``README.md`` model card) that
:func:`pylon.from_pretrained`, :class:`pylon.Predictor` and ``pylon predict`` load.

The folder is written into a temporary sibling and renamed into place, so an interrupted export
leaves no half folder; ``overwrite`` replaces only an earlier model folder (one whose
``config.json`` says so), never another folder.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
from torch import nn

from pylon.data.preprocessing import Preprocessing, make_preprocessing
from pylon.inference.model_card import CardFacts, build_model_card
from pylon.io import TEMP_PREFIX, TEMP_SUFFIX, current_umask, write_text_atomic
from pylon.models.folder import (
    CARD_NAME,
    CONFIG_NAME,
    FORMAT,
    FORMAT_VERSION,
    WEIGHTS_NAME,
    load_folder,
)
from pylon.models.weights import read_weights_metadata, save_weights

BENCHMARK_CSV = "benchmark.csv"


def export_run(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    benchmark: str | os.PathLike | None = None,
    repo_id: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a finished run's best weights as a model folder.

    Args:
        run_dir: a run folder (``runs/<experiment>/<seed>``) with ``DONE``.
        out: the model folder to write.
        benchmark: a ``pylon benchmark`` output folder that scored this run: its table (with
            95 % intervals) goes into the card.
        repo_id: ``ORG/NAME`` the folder will be uploaded as (the card's usage line then reads
            ``pylon.from_pretrained("hf-hub:ORG/NAME")``).
        overwrite: replace ``out`` if it is an earlier model folder.

    Returns:
        ``out``. The card's tables are the run's ``eval_auc.csv`` / ``eval_loc.csv`` (a missing
        or stale one is named in the card instead).

    Raises:
        FileNotFoundError: not a run folder, no best weights.
        ValueError: an unfinished run; a benchmark that did not score this run's weights;
            ``out`` exists and is not an earlier model folder (or ``overwrite`` is off).
    """
    from pylon.evaluation.evaluate import read_metrics
    from pylon.models.weights import load_model
    from pylon.training.config import TrainConfig
    from pylon.training.runs import evaluation_staleness, open_trained_run

    out = check_destination(out, overwrite=overwrite)
    paths, _ = open_trained_run(run_dir)
    if not paths.is_done():
        raise ValueError(
            f"{paths.root}: the run has not finished (no DONE file): its best weights may still "
            "change; finish it with pylon train first"
        )
    experiment, seed = paths.root.parent.name, paths.root.name
    metadata = read_weights_metadata(paths.best)
    model = load_model(paths.best)
    record = Preprocessing.from_metadata(metadata, paths.best)
    config = TrainConfig.from_yaml(paths.config).to_dict()
    facts = CardFacts(
        title=f"pylon {experiment} (seed {seed})",
        model=model.pylon_config,
        preprocessing=_record_dict(record),
        origin=(
            f"Trained with `pylon train` (experiment `{experiment}`, seed {seed}); the weights "
            "are the run's best on the validation loss."
        ),
        config=config,
        source=f"hf-hub:{repo_id}" if repo_id else "path/to/this/folder",
    )
    for kind in ("auc", "loc"):
        path = paths.root / f"eval_{kind}.csv"
        if not path.is_file():
            facts.notes.append(
                f"No `eval_{kind}.csv`: the run was not evaluated (`pylon evaluate`)."
            )
            continue
        stale = evaluation_staleness(paths.root, path)
        if stale:
            facts.notes.append(f"`eval_{kind}.csv` left out: it scored earlier weights.")
            continue
        setattr(facts, f"eval_{kind}", read_metrics(path))
    summary = paths.root / "train_summary.json"
    if summary.is_file():
        with contextlib.suppress(json.JSONDecodeError, UnicodeDecodeError):
            facts.train_summary = json.loads(summary.read_text())
    if benchmark is not None:
        facts.benchmark, facts.benchmark_split = read_benchmark(benchmark, paths.root, paths.best)
    source = {"kind": "run", "experiment": experiment, "seed": int(seed)}
    for key in ("epoch", "val_loss"):
        if key in metadata:
            source[key] = metadata[key]
    return _write_folder(out, model, record, facts, source, overwrite=overwrite)


def export_weights(
    weights: str | os.PathLike,
    out: str | os.PathLike,
    *,
    preset: str,
    repo_id: str | None = None,
    overwrite: bool = False,
) -> Path:
    """Write released weights (e.g. the reference's ``pylon,nih,256.pkl``) as a model folder.

    The pickle is read with ``torch.load(weights_only=True)`` (tensors and plain containers
    only; anything else is refused, never unpickled), the reference's names are mapped to
    pylon's, and every tensor must fit the preset's model.

    Args:
        weights: a state dict file (``.pkl``, ``.pt``, ``.pth``, ``.safetensors``).
        out: the model folder to write.
        preset: the preset describing the weights (model, dataset classes, input size), e.g.
            ``nih256-pylon``.
        repo_id: ``ORG/NAME`` for the card's usage line.
        overwrite: replace ``out`` if it is an earlier model folder.

    Returns:
        ``out``.

    Raises:
        ValueError: a preset whose dataset's classes are only known from its data (synthetic,
            csv), weights that do not fit, an unsafe pickle.
    """
    from pylon.models import create_model
    from pylon.models.weights import load_weights
    from pylon.training.presets import get_preset

    config = get_preset(preset)  # ConfigError (exit 2) for an unknown name
    out = check_destination(out, overwrite=overwrite)
    weights = Path(weights)
    record = preset_preprocessing(config, preset)
    model = create_model(
        config.model.name,
        encoder=config.model.encoder,
        in_channels=record.in_channels,
        num_classes=len(record.class_names),
        **config.model.options,
    )
    load_weights(model, weights, strict=True)
    digest = _sha256(weights)
    # the recipe the preset describes, without the local paths of this machine
    shown = dataclasses.replace(config, data=dataclasses.replace(config.data, root=None))
    facts = CardFacts(
        title=f"pylon {preset} ({weights.name})",
        model=model.pylon_config,
        preprocessing=_record_dict(record),
        origin=(
            f"Converted from the released weights `{weights.name}` (sha256 `{digest}`) with "
            f"`pylon export-model --weights {weights.name} --preset {preset}`: the names of the "
            "reference implementation's state dict are mapped to pylon's, every tensor loaded "
            f"strictly. The recipe below is the preset `{preset}`'s, the paper's setting the "
            "weights were trained with."
        ),
        config=shown.to_dict(),
        source=f"hf-hub:{repo_id}" if repo_id else "path/to/this/folder",
        notes=[
            "This folder carries no evaluation of its own: the weights were not trained by a "
            "pylon run. The PYLON paper reports the reference's figures."
        ],
    )
    source = {"kind": "weights", "file": weights.name, "sha256": digest, "preset": preset}
    return _write_folder(out, model, record, facts, source, overwrite=overwrite)


def preset_preprocessing(config, preset: str) -> Preprocessing:
    """The preprocessing record of a preset's dataset, without its data.

    Args:
        config: the preset's ``TrainConfig``.
        preset: its name, for messages.

    Returns:
        The record (transform, input size, channels, normalisation, class names).

    Raises:
        ValueError: a dataset whose classes come from its files (synthetic, csv).
    """
    from pylon.data.nih import NIH14_CLASSES
    from pylon.data.transforms import normalization
    from pylon.data.vindr import NO_FINDING, VINDR_CLASSES
    from pylon.data.voc import VOC_CLASSES

    options = config.data.options
    name = config.data.name
    if name == "nih14":
        kind, classes = "xray", NIH14_CLASSES
    elif name == "vindr":
        include = options.get("include_no_finding", True)
        kind, classes = "xray", VINDR_CLASSES if include else VINDR_CLASSES[:NO_FINDING]
    elif name == "voc":
        background = options.get("background_class", False)
        kind, classes = "voc", (("background",) if background else ()) + VOC_CLASSES
    else:
        raise ValueError(
            f"--preset {preset}: dataset {name!r} has no fixed class list; export a trained run "
            "(pylon export-model RUN DIR) instead"
        )
    in_channels = int(options.get("in_channels", 3 if kind == "voc" else 1))
    mean, std = normalization(kind, in_channels)
    return make_preprocessing(kind, config.data.size, in_channels, mean, std, classes)


def read_benchmark(
    folder: str | os.PathLike, run_dir: Path, best: Path
) -> tuple[list[dict[str, Any]], str | None]:
    """This run's rows of a ``pylon benchmark`` output, checked to score its current weights.

    Args:
        folder: the benchmark's output folder (``benchmark.csv``, ``records/``).
        run_dir: the run folder.
        best: its best weights.

    Returns:
        (rows as dicts, the scored split or ``None`` where the records are not there).

    Raises:
        FileNotFoundError: no ``benchmark.csv``.
        ValueError: the table has no row of this run, or it scored other weights.
    """
    folder = Path(folder)
    table_path = folder / BENCHMARK_CSV
    if not table_path.is_file():
        raise FileNotFoundError(f"--benchmark: {table_path} not found (written by pylon benchmark)")
    table = pd.read_csv(table_path)
    needed = {"run", "method", "metric", "size_bucket", "class", "value", "ci_low", "ci_high", "n"}
    if not needed <= set(table.columns):
        raise ValueError(
            f"{table_path}: lacks column(s) {', '.join(sorted(needed - set(table.columns)))}"
        )
    label = f"{run_dir.parent.name}/{run_dir.name}"
    rows = table[table["run"] == label]
    if rows.empty:
        runs = ", ".join(sorted(map(str, table["run"].unique())))
        raise ValueError(f"{table_path}: no row of run {label} (it scored {runs})")
    split = None
    weights = [str(best.resolve()), best.stat().st_size, best.stat().st_mtime_ns]
    records = sorted((folder / "records" / label).glob("*.safetensors"))
    for record in records:
        key = read_weights_metadata(record).get("key")
        if not isinstance(key, dict):
            continue
        if key.get("weights") != weights:
            raise ValueError(
                f"--benchmark {folder}: it scored other weights than {best} (retrained or "
                "moved since); run pylon benchmark again"
            )
        split = key.get("split", split)
    if not records and table_path.stat().st_mtime_ns < best.stat().st_mtime_ns:
        raise ValueError(
            f"--benchmark {folder}: {table_path} is older than {best}: it scored earlier weights"
        )
    clean = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
        for row in rows.to_dict("records")
    ]
    return clean, split


def check_destination(out: str | os.PathLike, *, overwrite: bool) -> Path:
    """Refuse an output folder that exists, unless it is an earlier model folder and
    ``overwrite`` is set (an empty folder is fine).

    Raises:
        ValueError: naming the folder and what to do.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not _is_model_folder(out):
            raise ValueError(
                f"{out}: exists and is not a pylon model folder; choose a new or empty folder"
            )
        if not overwrite:
            raise ValueError(f"{out}: already holds a model folder; pass --overwrite to replace it")
    return out


def _is_model_folder(folder: Path) -> bool:
    try:
        return json.loads((folder / CONFIG_NAME).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _record_dict(record: Preprocessing) -> dict[str, Any]:
    data = record.to_dict()
    data.pop("model", None)
    return data


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_folder(
    out: Path,
    model: nn.Module,
    record: Preprocessing,
    facts: CardFacts,
    source: dict[str, Any],
    *,
    overwrite: bool,
) -> Path:
    from pylon import __version__

    record = record.with_model(model.pylon_config)
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "pylon_version": __version__,
        "model": model.pylon_config,
        "preprocessing": _record_dict(record),
        "source": source,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(
        tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{out.name}.", suffix=TEMP_SUFFIX, dir=out.parent)
    )
    old = None
    try:
        os.chmod(tmp, 0o777 & ~current_umask())
        save_weights(
            model,
            tmp / WEIGHTS_NAME,
            metadata={**record.to_metadata(), "pylon_version": __version__},
        )
        write_text_atomic(tmp / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")
        write_text_atomic(tmp / CARD_NAME, str(build_model_card(facts)))
        load_folder(tmp)  # what users will load: strict, config.json against the metadata
        if out.exists():
            check_destination(out, overwrite=overwrite)  # still ours to replace
            old = out.with_name(f"{TEMP_PREFIX}{out.name}.old{TEMP_SUFFIX}")
            shutil.rmtree(old, ignore_errors=True)
            os.rename(out, old)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return out
