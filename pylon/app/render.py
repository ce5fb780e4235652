"""Overlays of the viewer, rendered on demand into a cache folder the viewer owns.

A case's overlay runs the run's model on that one image through
:class:`pylon.inference.Predictor` (the image read as the dataset reads it, the map drawn over the
original resolution, bounded to :data:`pylon.overlay_draw.DISPLAY_MAX_SIDE` on its longer side),
with the ground-truth boxes (green) and the peak ring (white), through
:func:`pylon.evaluation.overlay.peak_overlay`: the one overlay of evaluation and ``pylon predict``.
PNGs are keyed by (weights file and its version, image, class, method, opacity, scale), so a
second request is a file lookup; the maps of recent images stay in memory, so moving the opacity
slider does not run the model again.

Serving rule: a server shows only files for which :meth:`OverlayCache.contains` is true (files
inside the cache folder); anything from a run or benchmark folder is copied in first
(:meth:`OverlayCache.publish`).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pylon.app.cases import Case
from pylon.app.security import inside
from pylon.overlay_draw import DISPLAY_MAX_SIDE

# images per forward pass when a page's overlays are rendered together (render_many)
PAGE_BATCH = 20
# the viewer's colour scales -> pylon.evaluation.overlay styles
SCALES = {"image": "reference", "absolute": "probability"}
SCALE_TITLES = {
    "image": "colour scale per image (map min-max scaled)",
    "absolute": "absolute colour scale (probability 0..1)",
}


def check_scale(scale: str) -> str:
    """``scale`` if it is one of :data:`SCALES`, else a ValueError naming the choices."""
    if scale not in SCALES:
        raise ValueError(f"scale={scale!r}; expected one of {', '.join(SCALES)}")
    return scale


def _check_opacity(opacity: float) -> float:
    opacity = float(opacity)
    if not 0.0 <= opacity <= 1.0:
        raise ValueError(f"opacity={opacity}; expected a number in [0, 1]")
    return round(opacity, 3)


@dataclass
class _Map:
    """One image's map of one class: the display-sized image, its scale from the original, the
    map in [0, 1] (any resolution) and the map's own peak in original pixels."""

    pixels: np.ndarray
    scale: float
    heatmap: np.ndarray
    peak: tuple[int, int]


class LRU:
    """A mapping that keeps the ``size`` most recently used entries (``get`` returns ``None`` for
    a missing key); not thread-safe: callers hold their own lock."""

    def __init__(self, size: int):
        self.size = size
        self.items: OrderedDict[Hashable, Any] = OrderedDict()

    def get(self, key):
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        return None

    def put(self, key, value) -> None:
        self.items[key] = value
        self.items.move_to_end(key)
        while len(self.items) > self.size:
            self.items.popitem(last=False)


def weights_key(weights: str | os.PathLike) -> tuple[str, int, int]:
    """``(resolved path, size, mtime_ns)`` of a weights file: a retrained run's overlays are
    never taken from the cache of its earlier weights."""
    path = Path(weights).resolve()
    stat = path.stat()
    return str(path), stat.st_size, stat.st_mtime_ns


class OverlayCache:
    """Renders case overlays and uploaded images' predictions into ``folder``.

    Args:
        folder: the cache folder, the viewer's own (created, mode 0700; default a new temporary
            folder). Never a run or benchmark folder.
        device: where models run (``"cpu"``, ``"cuda"``).
        precision: the predictors' precision (default ``"fp32"``: the maps of the evaluation's
            fp32 runs exactly).
        max_side: overlays are drawn at the original resolution, shrunk so their longer side is
            at most this (``None``: never shrunk).
        models: predictors (one per weights file) kept loaded.
        maps: images whose maps are kept in memory.
    """

    def __init__(
        self,
        folder: str | os.PathLike | None = None,
        *,
        device: str = "cpu",
        precision: str = "fp32",
        max_side: int | None = DISPLAY_MAX_SIDE,
        models: int = 4,
        maps: int = 64,
    ):
        if folder is None:
            folder = tempfile.mkdtemp(prefix="pylon-view-")
        self.folder = Path(folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        self.device, self.precision, self.max_side = device, precision, max_side
        self._predictors = LRU(models)
        self._maps = LRU(maps)
        self._uploads = LRU(16)
        self._lock = threading.RLock()

    def contains(self, path: str | os.PathLike) -> bool:
        """True only for an existing file inside the cache folder (symlinks resolved)."""
        return Path(path).is_file() and inside(path, [self.folder])

    def predictor(self, weights: str | os.PathLike, **options):
        """The :class:`pylon.inference.Predictor` of a weights file (kept loaded; reloaded when
        the file changes). ``options`` go to the Predictor (e.g. ``png16``, ``voi``)."""
        from pylon.inference import Predictor

        key = (weights_key(weights), tuple(sorted(options.items())))
        with self._lock:
            predictor = self._predictors.get(key)
            if predictor is None:
                predictor = Predictor(
                    weights,
                    device=self.device,
                    precision=self.precision,
                    batch_size=PAGE_BATCH,
                    display_max_side=self.max_side,
                    **options,
                )
                self._predictors.put(key, predictor)
            return predictor

    def _case_map(self, case: Case, method: str) -> _Map:
        if case.weights is None:
            raise ValueError(
                f"{case.run}: no weights file (a run's checkpoints/best.safetensors, a prediction "
                f"folder's predict.json weights) to render "
                f"{case.image_id} with"
            )
        if case.images is None:
            raise ValueError(f"{case.run}: the case has no image source ({case.image_id})")
        key = (weights_key(case.weights), case.image_id, case.class_name, method)
        with self._lock:
            found = self._maps.get(key)
            if found is not None:
                return found
            from pylon.data.images import DATASET_PNG16

            predictor = self.predictor(case.weights, png16=DATASET_PNG16)
            image = case.images.image(case.image_id)
            if method == "own":
                made = _own_map(predictor, image, case)
            else:
                made = _posthoc_map(predictor, image, case, method)
            self._maps.put(key, made)
            return made

    def heatmap(self, case: Case, *, method: str = "own") -> np.ndarray:
        """The case's map in [0, 1] (the own CAM's sigmoid at the network's resolution, or a
        post-hoc method's map at the input size), as rendered."""
        return self._case_map(case, method).heatmap

    def render(
        self,
        case: Case,
        *,
        opacity: float = 0.5,
        scale: str = "image",
        method: str = "own",
    ) -> Path:
        """The overlay PNG of a case, rendered on first request and then read from the cache.

        Args:
            case: the case (its run's weights and image source).
            opacity: the heatmap's weight in [0, 1].
            scale: ``"image"`` (each map min-max scaled, the reference's figures) or
                ``"absolute"`` (probabilities on a fixed 0..1 colour scale);
                :data:`SCALE_TITLES` says which in words.
            method: ``"own"`` (the model's CAM) or a pytorch-grad-cam method name of
                :data:`pylon.evaluation.posthoc.METHODS` (e.g. ``"gradcam"``) computed on the
                same model.

        Returns:
            The PNG's path, inside :attr:`folder`: the image at its original resolution (bounded
            by ``max_side``), the map, the class's boxes and a white ring at the peak: the
            recorded peak (``case.peak``, where the hit was scored) for the own CAM, the map's
            own arg-max for post-hoc maps and cases without a recorded peak.

        Raises:
            ValueError: a bad opacity, scale or method, or a case without weights.
            KeyError: the image is no longer in the run's dataset.
            FileNotFoundError: the image file is gone (and the overlay was not cached).
        """
        from pylon.evaluation.overlay import peak_overlay, write_png

        opacity = _check_opacity(opacity)
        check_scale(scale)
        _check_method(method)
        if case.weights is None:
            raise ValueError(
                f"{case.run}: no weights file (a run's checkpoints/best.safetensors, a prediction "
                f"folder's predict.json weights) to render "
                f"{case.image_id} with"
            )
        key = {
            "weights": weights_key(case.weights),
            "image": case.image_id,
            "class": case.class_name,
            "method": method,
            "opacity": opacity,
            "scale": scale,
            "max_side": self.max_side,
            "peak": case.peak if method == "own" else None,
            "boxes": case.boxes,
        }
        target = self.folder / "cases" / f"{_digest(key)}.png"
        if target.is_file():
            return target
        made = self._case_map(case, method)
        peak = case.peak if method == "own" and case.peak is not None else made.peak
        rgb = peak_overlay(
            made.pixels,
            made.heatmap,
            (peak[0] * made.scale, peak[1] * made.scale),
            style=SCALES[scale],
            max_side=None,
            boxes=[tuple(v * made.scale for v in box[:4]) for box in case.boxes],
            alpha=opacity,
        )
        write_png(target, rgb)
        return target

    def render_many(
        self,
        cases: list[Case],
        *,
        opacity: float = 0.5,
        scale: str = "image",
        method: str = "own",
    ) -> list[Path]:
        """:meth:`render` of every case (e.g. a page), the own CAMs of the images not yet in
        memory computed in batched forward passes (one per run, :data:`PAGE_BATCH` images
        each) instead of one per image.

        Returns:
            The PNG paths, in the order of ``cases``.
        """
        if method == "own":
            self._prefetch(cases)
        return [self.render(c, opacity=opacity, scale=scale, method=method) for c in cases]

    def _prefetch(self, cases: list[Case]) -> None:
        from pylon.data.images import DATASET_PNG16

        todo: dict[tuple, list[Case]] = {}
        for case in cases:
            if case.weights is None or case.images is None:
                continue  # render() says why
            key = (weights_key(case.weights), case.image_id, case.class_name, "own")
            if self._maps.get(key) is None:
                todo.setdefault(key[0], []).append(case)
        with self._lock:
            for group in todo.values():
                predictor = self.predictor(group[0].weights, png16=DATASET_PNG16)
                ids = list(dict.fromkeys(c.image_id for c in group))
                images = group[0].images
                inputs = [predictor.to_input(images.image(i), i) for i in ids]
                found = dict(
                    zip(ids, predictor.predict_inputs(inputs, keep_pixels=True), strict=True)
                )
                for case in group:
                    self._maps.put(
                        (weights_key(case.weights), case.image_id, case.class_name, "own"),
                        _map_of(found[case.image_id], case.class_name),
                    )

    def publish(self, path: str | os.PathLike) -> Path:
        """Copy a file (e.g. a benchmark's ``by_size.png``) into the cache and return the copy,
        which a server may serve; named by its content, so a changed file is a new copy."""
        path = Path(path)
        data = path.read_bytes()
        target = self.folder / "published" / f"{hashlib.sha256(data).hexdigest()[:20]}{path.suffix}"
        if not target.is_file():
            from pylon.io import atomic_path

            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                tmp.write_bytes(data)
        return target

    def clear(self) -> None:
        """Delete the cache folder's contents (the folder stays)."""
        with self._lock:
            for entry in self.folder.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()


def _digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _check_method(method: str) -> None:
    if method == "own":
        return
    from pylon.evaluation.posthoc import METHODS

    if method not in METHODS:
        raise ValueError(f"method={method!r}; expected 'own' or one of {', '.join(METHODS)}")


def _own_map(predictor, image: np.ndarray, case: Case) -> _Map:
    prediction = predictor.predict(image, image_id=case.image_id, keep_pixels=True)
    return _map_of(prediction, case.class_name)


def _map_of(prediction, class_name: str) -> _Map:
    """One class's :class:`_Map` of a :class:`pylon.inference.Prediction` kept with pixels."""
    return _Map(
        prediction.pixels,
        prediction.pixels_scale,
        prediction.probability_map(class_name),
        prediction.peaks[class_name],
    )


def _posthoc_map(predictor, image: np.ndarray, case: Case, method: str) -> _Map:
    """A pytorch-grad-cam method's map of the case's class (the benchmark's sigmoid target),
    in [0, 1] at the input size; its peak is the map's first arg-max, in original pixels."""
    import torch

    from pylon.evaluation.benchmark_scoring import SigmoidTarget
    from pylon.evaluation.coordinates import input_to_original
    from pylon.evaluation.posthoc import make_method

    prepared = predictor.prepare(predictor.to_input(image, case.image_id), keep_pixels=True)
    x = prepared.tensor[None].to(predictor.device)
    cam = make_method(method, predictor.model)
    try:
        target = SigmoidTarget(predictor.class_names.index(case.class_name))
        with torch.enable_grad():
            heat = np.asarray(cam(input_tensor=x, targets=[target]))[0].astype(np.float32)
    finally:
        cam.activations_and_grads.release()
    heat = np.clip(np.nan_to_num(heat), 0.0, 1.0)
    row, col = divmod(int(np.argmax(heat)), heat.shape[1])
    height, width = prepared.size
    y = int(input_to_original(torch.tensor(row), heat.shape[0], height))
    x_orig = int(input_to_original(torch.tensor(col), heat.shape[1], width))
    return _Map(prepared.pixels, prepared.pixels_scale, heat, (x_orig, y))


@dataclass
class UploadResult:
    """What the New image tab shows for an uploaded file.

    Attributes:
        prediction: the :class:`pylon.inference.Prediction` (probabilities, peaks, maps).
        probabilities: class -> probability, in the model's order.
        selected: the classes at or above the threshold, in the model's order.
        overlays: class -> overlay PNG (inside the cache folder) for each selected class.
        json_path: the prediction as JSON (``Prediction.to_dict()`` with this threshold's
            ``selected`` and the ``threshold``), inside the cache folder, for download.
    """

    prediction: Any
    probabilities: dict[str, float]
    selected: list[str]
    overlays: dict[str, Path]
    json_path: Path


def predict_upload(
    path: str | os.PathLike,
    predictor,
    threshold: float,
    cache: OverlayCache,
    *,
    opacity: float = 0.5,
    scale: str = "absolute",
) -> UploadResult:
    """Predict an uploaded PNG/JPEG/DICOM file as ``pylon predict`` does and render its overlays.

    The file goes through pylon's own readers (:meth:`Predictor.to_input`: 16-bit PNGs by their
    bit depth, DICOMs with their VOI LUT/window, as ``pylon predict``); the model runs once per
    file content (kept in memory), so a new threshold, opacity or scale only re-draws.

    Args:
        path: the uploaded file (e.g. the path a Gradio ``File`` component hands over).
        predictor: the :class:`pylon.inference.Predictor` (e.g. ``cache.predictor(weights)``).
        threshold: classes at or above this probability are selected and drawn, in [0, 1].
        cache: where the PNGs and the JSON go.
        opacity, scale: as :meth:`OverlayCache.render` (absolute probabilities by default, as
            ``pylon predict``).

    Returns:
        :class:`UploadResult`.

    Raises:
        ValueError: an unreadable or unsupported file (naming it), a bad threshold, opacity or
            scale.
    """
    from pylon.evaluation.overlay import peak_overlay, write_png
    from pylon.io import write_text_atomic

    threshold = float(threshold)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"threshold={threshold}; expected a number in [0, 1]")
    opacity = _check_opacity(opacity)
    check_scale(scale)
    path = Path(path)
    try:
        content = hashlib.sha256(path.read_bytes()).hexdigest()[:24]
    except OSError as err:
        raise ValueError(f"{path.name}: cannot read the uploaded file ({err.strerror})") from None
    model_key = id(predictor)
    key = (model_key, content)
    with cache._lock:
        found = cache._uploads.get(key)
        # the same predictor object (an id can be reused once a predictor is gone)
        prediction = found[1] if found is not None and found[0]() is predictor else None
        if prediction is None:
            prediction = predictor.predict(path, image_id=path.name, keep_pixels=True)
            cache._uploads.put(key, (weakref.ref(predictor), prediction))
    names = list(prediction.probabilities)
    selected = [c for c in names if prediction.probabilities[c] >= threshold]
    # named by the file and what the model made of it: another model's overlays never match
    folder = (
        cache.folder
        / "uploads"
        / _digest(
            {"file": content, "probabilities": prediction.probabilities, "peaks": prediction.peaks}
        )
    )
    stem = re.sub(r"[^\w.\-]", "_", Path(path.name).stem) or "image"
    overlays = {}
    for name in selected:
        safe = name.replace("/", "_").replace("\\", "_")
        target = folder / f"{stem}_{safe}_{scale}_{opacity:g}.png"
        if not target.is_file():
            x, y = prediction.peaks[name]
            rgb = peak_overlay(
                prediction.pixels,
                prediction.probability_map(name),
                (x * prediction.pixels_scale, y * prediction.pixels_scale),
                style=SCALES[scale],
                max_side=None,
                alpha=opacity,
            )
            write_png(target, rgb)
        overlays[name] = target
    record = {**prediction.to_dict(), "selected": selected, "threshold": threshold}
    record["path"] = path.name  # not the server's temporary path
    json_path = folder / f"t{threshold:g}" / f"{stem}.json"
    write_text_atomic(json_path, json.dumps(record, indent=2) + "\n")
    return UploadResult(prediction, dict(prediction.probabilities), selected, overlays, json_path)
