"""The case list of a ``pylon predict`` output folder: one case per (image, selected class) of its
``predictions.jsonl`` records, so the viewer's Cases tab browses a prediction folder as it
browses an evaluated run.

A record's ``selected`` classes are its findings: the classes at or above ``--threshold`` (or
the ``--classes`` given to ``pylon predict``), the ones it drew overlays for. An image with no
selected class has no case (its probabilities are in the ``predictions.csv`` metric table).
There is no ground truth: a case's ``hit`` is ``None``, it has no boxes, IoBB or size bucket.
Overlays are re-rendered by :class:`pylon.app.render.OverlayCache` with the folder's weights
(``predict.json``), the image read as ``pylon predict`` read it (its ``--voi``, ``--png16`` and
pixel limit).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pylon.app.cases import NEEDED, CaseTable


class PredictImages:
    """The images of a prediction folder's records, read as ``pylon predict`` read them.

    The same interface as :class:`pylon.app.cases.RunImages` (what :class:`CaseTable` and the
    renderer use): no boxes, each image's file from its record.

    Args:
        paths: image id -> the file its record names.
        class_names: the model's classes, in output order (the records' order).
        settings: the folder's ``predict.json`` (``voi``, ``png16``, ``max_pixels`` are used;
            missing ones take ``pylon predict``'s defaults).
        weights: the weights file (its input channels decide how an image is decoded);
            ``None`` when it is gone (:meth:`image` then raises).
    """

    def __init__(
        self,
        paths: Mapping[str, Path],
        class_names: Iterable[str],
        settings: Mapping[str, Any],
        weights: Path | None,
    ):
        self.paths = dict(paths)
        self.class_names = list(class_names)
        self.settings = dict(settings)
        self.weights = weights
        self._channels: int | None = None

    def path(self, image_id: str) -> Path | None:
        """The image's file as its record names it (``None`` for an id without a record)."""
        return self.paths.get(image_id)

    def boxes(self, image_ids: Iterable[str]) -> dict[str, list[tuple]]:
        """No ground truth: an empty list for each image."""
        return {i: [] for i in image_ids}

    def image(self, image_id: str) -> np.ndarray:
        """The image decoded as ``pylon predict`` decoded it: uint8 ``(H, W, channels)`` of the
        model's input channels.

        Raises:
            KeyError: no record of ``image_id``.
            FileNotFoundError: the image file is gone.
            ValueError: no weights file, or the file cannot be decoded (naming it).
        """
        from pylon.inference.inputs import load_input

        if image_id not in self.paths:
            raise KeyError(f"image {image_id!r} has no record in predictions.jsonl")
        return load_input(
            self.paths[image_id],
            self._input_channels(),
            image_id,
            max_pixels_limit=self.settings.get("max_pixels"),
            voi=self.settings.get("voi", "window"),
            png16=self.settings.get("png16", "bits"),
        ).pixels

    def _input_channels(self) -> int:
        if self._channels is None:
            if self.weights is None:
                raise ValueError("the prediction folder's weights file is gone: no overlays")
            from pylon.data.preprocessing import Preprocessing
            from pylon.models.weights import read_weights_metadata

            metadata = read_weights_metadata(self.weights)
            self._channels = Preprocessing.from_metadata(metadata, self.weights).in_channels
        return self._channels


def read_prediction_cases(folder: str | os.PathLike) -> tuple[pd.DataFrame, list[str], dict]:
    """The cases of a prediction folder's ``predictions.jsonl``, as case-list rows.

    Args:
        folder: a ``pylon predict`` output folder.

    Returns:
        ``(frame, class_names, paths)``: one row of :data:`pylon.app.cases.NEEDED` columns per
        (record, selected class) in record order, classes in the model's order
        (``probability`` and the record's peak; ``point_hit`` ``None``; ``iobb``, ``box_share``
        NaN; ``size_bucket`` ``None``), the classes of the records' probabilities, and image
        id -> file.

    Raises:
        ValueError: an unreadable records file or a record without its fields, naming it.
    """
    from pylon.inference.outputs import PREDICTIONS_JSONL, read_records

    path = Path(folder) / PREDICTIONS_JSONL
    records, _ = read_records(path)  # a torn last line (a killed run) is left out
    rows, classes, paths = [], [], {}
    for number, record in enumerate(records, start=1):
        try:
            probabilities = record["probabilities"]
            peaks = record["peaks"]
            selected = set(record["selected"])
            paths[record["image_id"]] = Path(record["path"])
            for name in probabilities:
                if name not in classes:
                    classes.append(name)
            for name in (c for c in probabilities if c in selected):
                x, y = peaks[name]
                rows.append(
                    {
                        "image_id": record["image_id"],
                        "class": name,
                        "probability": float(probabilities[name]),
                        "peak_row_original": int(y),
                        "peak_col_original": int(x),
                        "point_hit": None,
                        "iobb": float("nan"),
                        "box_share": float("nan"),
                        "size_bucket": None,
                    }
                )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"{path}, record {number} ({record.get('image_id')!r}): missing or bad field "
                f"{err}; expected the records `pylon predict` writes"
            ) from None
    frame = pd.DataFrame(rows, columns=list(NEEDED))
    frame["point_hit"] = frame["point_hit"].astype(object)
    return frame, classes, paths


def prediction_table(source) -> CaseTable:
    """The :class:`CaseTable` of a prediction :class:`pylon.app.sources.Source`: its cases
    (:func:`read_prediction_cases`), rendered with ``source.weights`` (``None`` when the
    weights file is gone: the cases are listed, rendering one says there are no weights)."""
    from pylon.inference.outputs import SETTINGS_JSON

    frame, classes, paths = read_prediction_cases(source.path)
    try:
        settings = json.loads((Path(source.path) / SETTINGS_JSON).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        settings = {}
    if not isinstance(settings, dict):
        settings = {}
    images = PredictImages(paths, classes, settings, source.weights)
    return CaseTable(
        frame, run=source.name, images=images, weights=source.weights, class_order=classes
    )


def prediction_note(source, n_cases: int) -> str:
    """What the viewer says about a prediction folder's cases: how many findings, or why there
    are none, and that overlays are unavailable when its weights file is gone."""
    if n_cases == 0:
        return (
            "no findings (no class selected in predictions.jsonl): its probabilities are in Metrics"
        )
    note = f"{n_cases} finding(s) as cases"
    if source.weights is None:
        note += (
            f"; the weights named in {source.path / 'predict.json'} are gone: cases listed "
            "without overlays"
        )
    return note
