"""The viewer's case list: one case per (image, class with boxes) of a run's evaluation split, read
from the per-pair records that ``pylon evaluate`` wrote (``eval_pairs.csv``), filtered, sorted
and paged with pandas; no model runs here (overlays are rendered on demand by
:mod:`pylon.app.render`).

The image paths and ground-truth boxes come from the run's dataset (its ``loc_split``, read
without an image cache), built on the first page asked for, not when the table opens.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pylon.metrics.sizes import DEFAULT_NAMES

HIT_CHOICES = ("hit", "miss")
SORTS = ("confidence", "confident_wrong", "image")
# eval_pairs.csv columns the case list needs (the file has more: PAIR_COLUMNS)
NEEDED = (
    "image_id",
    "class",
    "probability",
    "peak_row_original",
    "peak_col_original",
    "point_hit",
    "iobb",
    "box_share",
    "size_bucket",
)


class RunImages:
    """The original images and ground-truth boxes of a run's evaluation split.

    Built from the run's config (``data.loc_split``, the split ``eval_pairs.csv`` scores); the
    dataset itself is made on first use, without an image cache (a file-backed dataset reads its
    record table and checks its files; the synthetic one renders the images asked for).

    Args:
        run_dir: the run folder.
        split: the split (default: the run's ``data.loc_split``).
    """

    def __init__(self, run_dir: str | os.PathLike, split: str | None = None):
        self.run_dir = Path(run_dir)
        self._split = split
        self._dataset = None
        self._index: dict[str, int] | None = None
        self._synthetic_boxes: dict[str, list[tuple]] = {}
        self._lock = threading.Lock()

    def _open(self):
        with self._lock:
            if self._dataset is None:
                from pylon.training.datamodule import build_dataset
                from pylon.training.runs import open_trained_run

                try:
                    _, config = open_trained_run(self.run_dir)
                except FileNotFoundError:
                    from pylon.training.config import TrainConfig

                    config = TrainConfig.from_yaml(self.run_dir / "config.yaml")
                split = self._split or config.data.loc_split
                dataset = build_dataset(config.data, split, cache=False)
                if hasattr(dataset, "records"):
                    ids = [r.image_id for r in dataset.records]
                else:  # generated images: ids from their index, as the dataset names them
                    ids = [_synthetic_id(dataset, i) for i in range(len(dataset))]
                self._index = {image_id: i for i, image_id in enumerate(ids)}
                self.split = split
                self._dataset = dataset
        return self._dataset

    @property
    def dataset(self):
        """The evaluation split's dataset (built on first use)."""
        return self._open()

    @property
    def class_names(self) -> list[str]:
        return list(self._open().class_names)

    def index(self, image_id: str) -> int:
        """The dataset index of ``image_id``.

        Raises:
            KeyError: naming the image, the split and the run, when the split has no such image
                (the data changed since the evaluation?).
        """
        self._open()
        try:
            return self._index[image_id]
        except KeyError:
            raise KeyError(
                f"image {image_id!r} is not in split {self.split!r} of {self.run_dir}'s dataset "
                "(did the data change since `pylon evaluate`?)"
            ) from None

    def path(self, image_id: str) -> Path | None:
        """The image's file; ``None`` for generated (synthetic) images and ids the split lacks."""
        dataset = self._open()
        if not hasattr(dataset, "records") or image_id not in self._index:
            return None
        return Path(dataset.records[self._index[image_id]].path)

    def boxes(self, image_ids: Iterable[str]) -> dict[str, list[tuple]]:
        """``(x, y, w, h, class_index)`` boxes of each image, in its original pixels (none for
        an id the split lacks).

        Raises:
            FileNotFoundError, ValueError: the run's dataset cannot be opened (moved, changed).
        """
        dataset = self._open()
        ids = list(dict.fromkeys(image_ids))
        if hasattr(dataset, "records"):
            return {
                i: list(dataset.records[self._index[i]].boxes) if i in self._index else []
                for i in ids
            }
        ids_known = [i for i in ids if i in self._index]
        self._synthetic_boxes.update({i: [] for i in ids if i not in self._index})
        todo = [i for i in ids_known if i not in self._synthetic_boxes]
        if todo:
            batch = dataset.generate_batch([self.index(i) for i in todo])
            for image_id, boxes in zip(todo, batch["boxes"], strict=True):
                self._synthetic_boxes[image_id] = [tuple(b) for b in boxes]
        return {i: self._synthetic_boxes[i] for i in ids}

    def image(self, image_id: str) -> np.ndarray:
        """The original image as the dataset reads it (uint8; a file-backed dataset's decoding,
        16-bit PNGs over the full range; the synthetic images de-normalised)."""
        from pylon.evaluation.heatmaps import original_view

        image, _ = original_view(self._open(), self.index(image_id))
        return image


def _synthetic_id(dataset, index: int) -> str:
    return f"synthetic-{dataset.split}-{dataset.seed}-{index}"


@dataclass(frozen=True)
class Case:
    """One (image, class) pair of a run's evaluation split with ground-truth boxes of that class,
    or of a ``pylon predict`` output folder's findings (:mod:`pylon.app.predict_cases`: no
    ground truth, so ``hit`` ``None``, no boxes, NaN IoBB and box share, size ``n/a``).

    Attributes:
        run: the run's source name (``experiment/seed``; a prediction folder's name).
        image_id: the dataset's id of the image.
        class_name: the class.
        probability: the model's probability of the class for the image (from evaluation; NaN
            where unknown, e.g. a benchmark record).
        hit: whether the heatmap's peak lies in a box of the class (point localization, as in
            ``eval_loc.csv``); ``None`` where unknown.
        iobb: the paper's IoBB of the pair (NaN where unknown).
        box_share: the class's box area as a share of the image (network input pixels).
        size_bucket: ``small``/``medium``/``large`` (:data:`pylon.metrics.sizes.DEFAULT_NAMES`).
        peak: ``(col, row)`` = ``(x, y)`` of the heatmap's peak in the original image's pixels,
            the point the hit was scored at; ``None`` where not recorded (the renderer then
            marks the peak of the map it draws).
        boxes: the class's ground-truth boxes ``(x, y, w, h)`` in the original image's pixels.
        image_path: the image file (``None`` for generated images).
        weights: the run's weights file, which renders the case (``None``: the run has none).
        images: the run's :class:`RunImages` (how the renderer reads the original image; a
            prediction folder's :class:`pylon.app.predict_cases.PredictImages`).
    """

    run: str
    image_id: str
    class_name: str
    probability: float
    hit: bool | None
    iobb: float
    box_share: float
    size_bucket: str
    peak: tuple[int, int] | None
    boxes: tuple[tuple[float, float, float, float], ...]
    image_path: Path | None
    weights: Path | None = None
    images: Any = field(default=None, compare=False, repr=False)

    @property
    def key(self) -> tuple[str, str]:
        """``(image_id, class_name)``: the same case in another run has the same key."""
        return self.image_id, self.class_name


def read_pairs(path: str | os.PathLike) -> pd.DataFrame:
    """Read an ``eval_pairs.csv`` into the columns the case list uses.

    Raises:
        FileNotFoundError: the file is missing (``pylon evaluate RUN`` writes it).
        ValueError: naming the file, when it is unreadable or lacks columns.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: evaluate the run first (`pylon evaluate {path.parent}`)"
        )
    try:
        frame = pd.read_csv(path, dtype={"image_id": str, "class": str})
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not a readable eval_pairs.csv ({err})") from None
    missing = [c for c in NEEDED if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {', '.join(missing)}; expected the columns `pylon "
            "evaluate` writes (evaluate the run again with this pylon version)"
        )
    frame = frame[list(NEEDED)].copy()
    hit = frame["point_hit"]
    if hit.dtype != bool:
        hit = hit.astype(str).str.lower().map({"true": True, "false": False, "1": True, "0": False})
        if hit.isna().any():
            row = int(np.flatnonzero(hit.isna().to_numpy())[0])
            raise ValueError(
                f"{path}, line {row + 2}: point_hit {frame['point_hit'].iloc[row]!r} is not "
                "True or False"
            )
        frame["point_hit"] = hit.astype(bool)
    return frame


class CaseTable:
    """The cases of one run, in a current order; :meth:`filter` and :meth:`sort` return new
    tables (sharing the images), :meth:`page` builds the :class:`Case` objects of one page.

    Args:
        pairs: rows of :data:`NEEDED` columns (:func:`read_pairs`).
        run: the run's source name.
        images: the run's :class:`RunImages` (``None``: cases get no boxes or image path).
        weights: the run's weights file (rendering).
        class_order: the run's classes in model order (default: as they first appear).
    """

    def __init__(
        self,
        pairs: pd.DataFrame,
        *,
        run: str,
        images: RunImages | None = None,
        weights: Path | None = None,
        class_order: Sequence[str] | None = None,
    ):
        self._frame = pairs.reset_index(drop=True) if "_row" not in pairs else pairs
        if "_row" not in self._frame:
            self._frame = self._frame.assign(_row=np.arange(len(self._frame)))
        self.run = run
        self.images = images
        self.images_error: str | None = None
        self.weights = weights
        order = class_order or list(dict.fromkeys(self._frame["class"]))
        self.class_order = list(order)

    @classmethod
    def from_run(
        cls, run_dir: str | os.PathLike, *, name: str | None = None, pairs: str | None = None
    ) -> CaseTable:
        """The cases of a run folder, from its ``eval_pairs.csv`` (else
        ``unfinished_eval_pairs.csv``).

        Args:
            run_dir: the run folder.
            name: the run's name (default ``experiment/seed`` from the folder names, as
                :func:`pylon.app.sources.open_sources` names it).
            pairs: the records file (default: found in the run folder).

        Raises:
            FileNotFoundError: the run was not evaluated (naming ``pylon evaluate RUN``).
            ValueError: an unreadable records file, naming it.
        """
        from pylon.app.sources import PAIRS_FILES

        run_dir = Path(run_dir)
        if pairs is None:
            found = [run_dir / f for f in PAIRS_FILES if (run_dir / f).is_file()]
            path = found[0] if found else run_dir / PAIRS_FILES[0]
        else:
            path = Path(pairs)
        frame = read_pairs(path)
        resolved = run_dir.resolve()
        weights = run_dir / "checkpoints" / "best.safetensors"
        return cls(
            frame,
            run=name or f"{resolved.parent.name}/{resolved.name}",
            images=RunImages(run_dir),
            weights=weights if weights.is_file() else None,
            class_order=_weights_classes(weights),
        )

    @classmethod
    def from_source(cls, source) -> CaseTable:
        """:meth:`from_run` of a run :class:`pylon.app.sources.Source`; the findings of a
        prediction folder (:func:`pylon.app.predict_cases.prediction_table`).

        Raises:
            ValueError: the source is a benchmark, or unreadable records (naming the file).
            FileNotFoundError: the run was not evaluated.
        """
        if source.kind == "predict":
            from pylon.app.predict_cases import prediction_table

            return prediction_table(source)
        if source.kind != "run":
            raise ValueError(f"{source.name}: a {source.kind} has no case list; open a run")
        return cls.from_run(source.path, name=source.name, pairs=source.pairs)

    def _derive(self, frame: pd.DataFrame) -> CaseTable:
        return CaseTable(
            frame,
            run=self.run,
            images=self.images,
            weights=self.weights,
            class_order=self.class_order,
        )

    def __len__(self) -> int:
        return len(self._frame)

    @property
    def classes(self) -> list[str]:
        """The classes that have cases, in the model's order."""
        present = set(self._frame["class"])
        return [c for c in self.class_order if c in present]

    @property
    def size_buckets(self) -> list[str]:
        """The size buckets that have cases, smallest first."""
        present = set(self._frame["size_bucket"].dropna())
        return [b for b in DEFAULT_NAMES if b in present] + sorted(present - set(DEFAULT_NAMES))

    def filter(
        self,
        *,
        classes: Iterable[str] | None = None,
        hit: str | None = None,
        prob_range: tuple[float, float] = (0.0, 1.0),
        size_buckets: Iterable[str] | None = None,
    ) -> CaseTable:
        """The cases that pass every filter given, in the current order.

        Args:
            classes: keep these classes (``None`` or empty: all); each must be a class of the
                run.
            hit: ``"hit"`` (the peak lies in a box), ``"miss"``, or ``None`` (both); cases
                without ground truth (a prediction folder's, hit unknown) are neither.
            prob_range: ``(low, high)``, both included, ``0 <= low <= high <= 1``.
            size_buckets: keep these lesion-size buckets (``None`` or empty: all), names of
                :data:`pylon.metrics.sizes.DEFAULT_NAMES`.

        Raises:
            ValueError: an unknown class, hit choice or bucket, or a bad range, naming the valid
                values.
        """
        frame = self._frame
        keep = np.ones(len(frame), dtype=bool)
        if classes:
            classes = list(classes)
            unknown = [c for c in classes if c not in self.class_order]
            if unknown:
                raise ValueError(
                    f"unknown class(es) {', '.join(map(repr, unknown))}; the run's classes are "
                    f"{', '.join(self.class_order)}"
                )
            keep &= frame["class"].isin(classes).to_numpy()
        if hit is not None:
            if hit not in HIT_CHOICES:
                raise ValueError(f"hit={hit!r}; expected 'hit', 'miss' or None")
            known, is_hit = _hits(frame)
            keep &= known & (is_hit == (hit == "hit"))
        low, high = (float(v) for v in prob_range)
        if not (math.isfinite(low) and math.isfinite(high) and 0.0 <= low <= high <= 1.0):
            raise ValueError(
                f"prob_range={prob_range!r}; expected (low, high), 0 <= low <= high <= 1"
            )
        if (low, high) != (0.0, 1.0):
            probability = frame["probability"].to_numpy()
            keep &= (probability >= low) & (probability <= high)
        if size_buckets:
            size_buckets = list(size_buckets)
            unknown = [b for b in size_buckets if b not in DEFAULT_NAMES]
            if unknown:
                raise ValueError(
                    f"unknown size bucket(s) {', '.join(map(repr, unknown))}; expected "
                    f"{', '.join(DEFAULT_NAMES)}"
                )
            keep &= frame["size_bucket"].isin(size_buckets).to_numpy()
        return self._derive(frame[keep])

    def sort(self, by: str) -> CaseTable:
        """The cases in a new order (ties keep the evaluation order).

        Args:
            by: ``"confidence"``: highest probability first; ``"confident_wrong"``: misses
                first, the most confident miss first, then hits, most confident first (the
                cases where a sure model points outside the boxes lead), cases without ground
                truth (hit unknown) between them; ``"image"``: by image
                id, then class in the model's order.

        Raises:
            ValueError: another ``by``, naming the choices.
        """
        frame = self._frame
        probability = frame["probability"].to_numpy(dtype=float)
        row = frame["_row"].to_numpy()
        if by == "confidence":
            order = np.lexsort((row, -probability))
        elif by == "confident_wrong":
            known, is_hit = _hits(frame)
            rank = np.where(known, np.where(is_hit, 2, 0), 1)
            order = np.lexsort((row, -probability, rank))
        elif by == "image":
            rank = {c: k for k, c in enumerate(self.class_order)}
            cls = frame["class"].map(rank).to_numpy()
            ids = frame["image_id"].to_numpy(dtype=str)
            order = np.lexsort((row, cls, ids))
        else:
            raise ValueError(f"sort by {by!r}; expected one of {', '.join(SORTS)}")
        return self._derive(frame.iloc[order])

    def page_count(self, size: int = 20) -> int:
        """Pages of ``size`` cases (at least 1, an empty table has one empty page)."""
        _check_size(size)
        return max(1, -(-len(self) // size))

    def page(self, number: int, size: int = 20) -> list[Case]:
        """The cases of page ``number`` (1 is the first) of ``size`` cases each.

        A page past the last is empty. The boxes of the page's images are read here (one
        dataset access for the page; a generated dataset renders those images).

        Raises:
            ValueError: ``number`` < 1 or ``size`` < 1.
        """
        _check_size(size)
        if int(number) < 1:
            raise ValueError(f"page number {number}; pages are numbered from 1")
        start = (int(number) - 1) * size
        return self.cases(self._frame.iloc[start : start + size])

    def case(self, image_id: str, class_name: str) -> Case | None:
        """The case of ``(image_id, class_name)`` in this table, ``None`` when it has none."""
        frame = self._frame
        match = frame[(frame["image_id"] == image_id) & (frame["class"] == class_name)]
        if match.empty:
            return None
        return self.cases(match.iloc[:1])[0]

    def cases(self, rows: pd.DataFrame) -> list[Case]:
        """:class:`Case` objects of some of this table's rows (e.g. a slice of
        :meth:`as_dataframe` order). Where the run's dataset cannot be opened (moved or
        changed since the evaluation), the cases come without boxes or image paths and
        :attr:`images_error` says why (``None`` otherwise)."""
        boxes: dict[str, list[tuple]] = {}
        paths: dict[str, Path | None] = {}
        self.images_error = None
        if self.images is not None and len(rows):
            ids = list(dict.fromkeys(rows["image_id"]))
            try:
                boxes = self.images.boxes(ids)
                paths = {i: self.images.path(i) for i in ids}
                rank = {c: k for k, c in enumerate(self.images.class_names)}
            except (OSError, ValueError) as err:
                # the cases are still listed (from the records); rendering says what is wrong
                boxes, paths, self.images_error = {}, {}, str(err)
        out = []
        columns = {c: rows[c].tolist() for c in NEEDED}
        for k in range(len(rows)):
            image_id, cls = columns["image_id"][k], columns["class"][k]
            own = ()
            if boxes:
                wanted = rank.get(cls, -1)
                own = tuple(
                    tuple(float(v) for v in b[:4]) for b in boxes[image_id] if int(b[4]) == wanted
                )
            out.append(
                Case(
                    run=self.run,
                    image_id=image_id,
                    class_name=cls,
                    probability=float(columns["probability"][k]),
                    hit=_hit(columns["point_hit"][k]),
                    iobb=float(columns["iobb"][k]),
                    box_share=float(columns["box_share"][k]),
                    size_bucket=_text(columns["size_bucket"][k]),
                    peak=(
                        int(columns["peak_col_original"][k]),
                        int(columns["peak_row_original"][k]),
                    ),
                    boxes=own,
                    image_path=paths.get(image_id),
                    weights=self.weights,
                    images=self.images,
                )
            )
        return out

    def as_dataframe(self) -> pd.DataFrame:
        """The cases in the current order as a display table: ``image_id, class, probability,
        result`` (``hit``/``miss``; ``n/a`` without ground truth), ``iobb, size_bucket,
        box_share, peak_x, peak_y``."""
        frame = self._frame
        known, is_hit = _hits(frame)
        return pd.DataFrame(
            {
                "image_id": frame["image_id"].to_numpy(),
                "class": frame["class"].to_numpy(),
                "probability": frame["probability"].to_numpy(),
                "result": np.where(known, np.where(is_hit, "hit", "miss"), "n/a"),
                "iobb": frame["iobb"].to_numpy(),
                "size_bucket": frame["size_bucket"].to_numpy(),
                "box_share": frame["box_share"].to_numpy(),
                "peak_x": frame["peak_col_original"].to_numpy(),
                "peak_y": frame["peak_row_original"].to_numpy(),
            }
        )


def _hits(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """``(known, hit)`` boolean arrays of the frame's ``point_hit`` (``None``/NaN: unknown)."""
    hits = frame["point_hit"]
    known = hits.notna().to_numpy(dtype=bool)
    return known, hits.eq(True).to_numpy(dtype=bool) & known


def _hit(value) -> bool | None:
    return None if value is None or pd.isna(value) else bool(value)


def _text(value) -> str:
    return "n/a" if value is None or pd.isna(value) else str(value)


def _check_size(size: int) -> None:
    if int(size) < 1:
        raise ValueError(f"page size {size}; expected an integer >= 1")


def _weights_classes(weights: Path) -> list[str] | None:
    """The class names a weights file declares (model order), ``None`` when unreadable."""
    if not weights.is_file():
        return None
    try:
        from pylon.data.preprocessing import Preprocessing
        from pylon.models.weights import read_weights_metadata

        return list(
            Preprocessing.from_metadata(read_weights_metadata(weights), weights).class_names
        )
    except (ValueError, KeyError, OSError):
        return None


# per-pair benchmark metrics shown next to a case (PairRecords of pylon.evaluation.benchmark)
RECORD_METRICS = ("point", "pointing_game", "energy_pg", "hit_rate", "seg_iou", "iobb0.5")
_RECORDS_CACHE: dict[tuple, pd.DataFrame] = {}


def benchmark_pairs(source) -> pd.DataFrame:
    """The per-pair records of a ``pylon benchmark`` output, one row per (run, method, image,
    class): ``run, method, image_id, class`` and the values of :data:`RECORD_METRICS` (NaN where
    undefined), plus ``run_dir``: the run folder the records were scored from (from the records'
    key; ``None`` when that folder is gone).

    Reads ``records/<experiment>/<seed>/<method>.safetensors`` (not the ``threshold_split``
    records); a run whose weights file is gone is left out (its class names cannot be read).
    Cached per folder until a records file changes.
    """
    import json

    from safetensors import safe_open

    from pylon.evaluation.benchmark_scoring import unflatten

    root = Path(source.path) / "records"
    files = sorted(root.glob("*/*/*.safetensors")) if root.is_dir() else []
    stamp = (str(root.resolve()), tuple((str(f), f.stat().st_mtime_ns) for f in files))
    if stamp in _RECORDS_CACHE:
        return _RECORDS_CACHE[stamp]
    columns = ["run", "method", "image_id", "class", *RECORD_METRICS, "run_dir"]
    parts = []
    for path in files:
        run = f"{path.parent.parent.name}/{path.parent.name}"
        try:
            with safe_open(str(path), "pt") as handle:
                meta = handle.metadata() or {}
                flat = {k: handle.get_tensor(k) for k in handle.keys()}  # noqa: SIM118
            key = json.loads(meta["key"])
            image_ids = json.loads(meta["image_ids"])
        except (OSError, ValueError, KeyError, TypeError, RuntimeError):
            continue  # a damaged or foreign file: the benchmark would recompute it too
        weights = Path(key["weights"][0])
        classes = _weights_classes(weights)
        if classes is None:
            continue
        results = unflatten(flat)
        point = results.get("point")
        if point is None:
            continue
        frame = pd.DataFrame(
            {
                "run": run,
                "method": str(key.get("method", path.stem)),
                "image_id": [image_ids[i] for i in point.image_index.tolist()],
                "class": [classes[c] for c in point.class_index.tolist()],
            }
        )
        index = pd.MultiIndex.from_arrays([point.image_index.numpy(), point.class_index.numpy()])
        for metric in RECORD_METRICS:
            records = results.get(metric)
            if records is None:
                frame[metric] = np.nan
                continue
            values = pd.Series(
                records.value.numpy(),
                index=pd.MultiIndex.from_arrays(
                    [records.image_index.numpy(), records.class_index.numpy()]
                ),
            )
            frame[metric] = values.reindex(index).to_numpy()
        run_dir = weights.parent.parent
        frame["run_dir"] = str(run_dir) if (run_dir / "config.yaml").is_file() else None
        parts.append(frame)
    table = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    _RECORDS_CACHE.clear()
    _RECORDS_CACHE[stamp] = table
    return table


@dataclass(frozen=True)
class SideEntry:
    """One panel of a side-by-side row: the same (image, class) seen by another run, or by a
    post-hoc method of a benchmark.

    Attributes:
        source: the name of the source it comes from (a run, or a benchmark).
        run: the run whose model gives the map (``experiment/seed``).
        method: ``"own"`` (the model's own CAM) or a pytorch-grad-cam method (``gradcam``,
            ...) scored by ``pylon benchmark``.
        case: the case to render with that run's weights (``case.weights``) and ``method``;
            for a post-hoc method its ``hit`` is that method's (the record's ``point``) and its
            ``peak`` ``None`` (the renderer marks the map's own peak); ``None`` when the run's
            folder is not available (the values alone are shown).
        values: the benchmark's per-pair values for it (:data:`RECORD_METRICS`: ``point`` is
            1.0 for a hit, 0.0 for a miss); empty for a run without benchmark records.
    """

    source: str
    run: str
    method: str
    case: Case | None
    values: dict[str, float] = field(default_factory=dict)


def side_by_side(
    case: Case, tables: Sequence[CaseTable], benchmarks: Sequence = ()
) -> list[SideEntry]:
    """The same (image, class) as ``case`` in the other runs and, where benchmark records hold
    it, under each benchmarked method, in one row.

    Args:
        case: the case picked.
        tables: the :class:`CaseTable` of every run opened (the case's own run included: it
            comes first as ``own``); a run without this pair is left out.
        benchmarks: benchmark :class:`pylon.app.sources.Source` objects whose records
            (:func:`benchmark_pairs`) are searched for the pair.

    Returns:
        The case's own run first, then the other runs in the order given, then each benchmark
        (run, method) that scored the pair and is not already shown as a run's ``own`` map.
        A benchmark entry of a run that is also open shares that run's case (its
        probability and boxes); otherwise it gets the picked case's boxes and no probability.
    """
    entries: list[SideEntry] = []
    by_run: dict[str, Case] = {}
    ordered = sorted(tables, key=lambda t: t.run != case.run)
    for table in ordered:
        same = case if table.run == case.run else table.case(case.image_id, case.class_name)
        if same is None:
            continue
        by_run[table.run] = same
        entries.append(SideEntry(table.run, table.run, "own", same))
    for source in benchmarks:
        pairs = benchmark_pairs(source)
        if pairs.empty:
            continue
        rows = pairs[(pairs["image_id"] == case.image_id) & (pairs["class"] == case.class_name)]
        for row in rows.itertuples(index=False):
            values = {m: float(getattr(row, _attr(m))) for m in RECORD_METRICS}
            shown = by_run.get(row.run)
            if row.method == "own" and shown is not None:
                index = next(k for k, e in enumerate(entries) if e.run == row.run)
                entries[index] = SideEntry(
                    entries[index].source,
                    row.run,
                    "own",
                    shown,
                    {**entries[index].values, **values},
                )
                continue
            if shown is not None:  # the open run's case, with this method's hit and peak
                hit = None if math.isnan(row.point) else bool(row.point)
                target = dataclasses.replace(shown, hit=hit, peak=None)
            else:
                target = _benchmark_case(case, row)
            entries.append(SideEntry(source.name, row.run, row.method, target, values))
    return entries


def _attr(metric: str) -> str:
    """The itertuples field name of a metric column (``iobb0.5`` is not an identifier)."""
    return metric if metric.isidentifier() else f"_{RECORD_METRICS.index(metric) + 4}"


def _benchmark_case(case: Case, row) -> Case | None:
    """The picked case as seen by a benchmarked run that is not open: its weights, the picked
    case's image and boxes (the same dataset split), the record's hit; no probability."""
    if row.run_dir is None:
        return None
    weights = Path(row.run_dir) / "checkpoints" / "best.safetensors"
    hit = None if math.isnan(row.point) else bool(row.point)
    return Case(
        run=row.run,
        image_id=case.image_id,
        class_name=case.class_name,
        probability=float("nan"),
        hit=hit,
        iobb=float("nan"),
        box_share=case.box_share,
        size_bucket=case.size_bucket,
        peak=None,
        boxes=case.boxes,
        image_path=case.image_path,
        weights=weights if weights.is_file() else None,
        images=case.images,
    )
