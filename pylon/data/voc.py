"""Pascal VOC 2012 classification with boxes: labels derived from the XML objects, 3 channels."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from pylon.data.base import BoxDataset, Record, check_box

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_SPLITS = ("train", "val", "trainval")


def find_voc_root(root: Path) -> Path:
    """Accept the folder containing ``VOCdevkit``, ``VOCdevkit`` itself or ``VOC2012``."""
    for candidate in (root / "VOCdevkit" / "VOC2012", root / "VOC2012", root):
        if (candidate / "JPEGImages").is_dir() and (candidate / "Annotations").is_dir():
            return candidate
    raise FileNotFoundError(
        f"voc: no VOCdevkit/VOC2012 with JPEGImages/ and Annotations/ found at {root}"
    )


def parse_annotation(
    path: Path, inclusive_boxes: bool = False
) -> tuple[list[tuple[float, float, float, float, int]], int, int]:
    """Boxes ``(x, y, w, h, class)`` and (height, width) of a VOC XML file.

    Args:
        path: the XML file.
        inclusive_boxes: ``False`` (the reference): ``x, y = xmin, ymin`` and ``w, h = xmax -
            xmin, ymax - ymin``. ``True`` reads VOC's corners as the 1-based, inclusive pixels
            they are: ``x, y = xmin - 1, ymin - 1`` and ``w, h = xmax - xmin + 1, ...`` (each box
            one pixel up-left and one wider than the reference's).
    """
    if not path.is_file():
        raise FileNotFoundError(f"voc: annotation file not found: {path}")
    try:
        tree = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"voc: cannot parse XML {path}: {err}") from err
    try:
        width = int(float(tree.findtext("size/width")))
        height = int(float(tree.findtext("size/height")))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: <size> needs numeric <width> and <height>") from err
    boxes = []
    for k, obj in enumerate(tree.iter("object")):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise ValueError(
                f"{path}, object {k}: unknown class {name!r}; "
                f"expected one of {', '.join(VOC_CLASSES)}"
            )
        try:
            xmin, ymin, xmax, ymax = (
                float(obj.findtext(f"bndbox/{tag}")) for tag in ("xmin", "ymin", "xmax", "ymax")
            )
        except (TypeError, ValueError) as err:
            raise ValueError(
                f"{path}, object {k}: <bndbox> needs numeric xmin/ymin/xmax/ymax"
            ) from err
        if inclusive_boxes:
            box = (xmin - 1.0, ymin - 1.0, xmax - xmin + 1.0, ymax - ymin + 1.0)
        else:
            box = (xmin, ymin, xmax - xmin, ymax - ymin)
        boxes.append(
            (*check_box(box, height, width, f"{path}, object {k}"), VOC_CLASSES.index(name))
        )
    return boxes, height, width


class VOCDataset(BoxDataset):
    """VOC 2012 under ``root`` (``JPEGImages``, ``Annotations``, ``ImageSets/Main/<split>.txt``).

    Labels are the classes of the objects whose boxes survive the sample's transform (all of
    them at eval; an object an augmentation crops away loses its label, as in the reference);
    ``records`` hold the labels of all objects. Uses the VOC transform on 3-channel images.
    ``background_class=True`` prepends the reference's ``"background"`` class (21 outputs, one
    that no object ever makes positive); by default the 20 object classes. Boxes are read as
    the reference reads them; ``inclusive_boxes=True`` reads VOC's 1-based inclusive corners
    exactly (:func:`parse_annotation`).
    """

    splits: tuple[str, ...] = VOC_SPLITS  # the split names it reads

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        split: str = "train",
        size: int = 256,
        augment: bool = False,
        *,
        background_class: bool = False,
        inclusive_boxes: bool = False,
        **options: Any,
    ):
        if root is None:
            raise ValueError("voc: root must be the folder containing VOCdevkit (or VOC2012)")
        if split not in VOC_SPLITS:
            raise ValueError(f"voc: unknown split {split!r}; expected one of {VOC_SPLITS}")
        voc = find_voc_root(Path(root))
        list_file = voc / "ImageSets" / "Main" / f"{split}.txt"
        if not list_file.is_file():
            raise FileNotFoundError(f"voc: split list not found: {list_file}")
        names = [line.split()[0] for line in list_file.read_text().splitlines() if line.strip()]
        class_names = ("background", *VOC_CLASSES) if background_class else VOC_CLASSES
        shift = int(background_class)
        records = []
        for name in names:
            boxes, _, _ = parse_annotation(voc / "Annotations" / f"{name}.xml", inclusive_boxes)
            boxes = [(*box[:4], box[4] + shift) for box in boxes]
            labels = np.zeros(len(class_names), dtype=np.float32)
            labels[[b[4] for b in boxes]] = 1.0
            records.append(Record(name, voc / "JPEGImages" / f"{name}.jpg", labels, boxes))
        super().__init__(
            records,
            class_names,
            name="voc",
            split=split,
            size=size,
            augment=augment,
            kind="voc",
            in_channels=3,
            labels_from_boxes=True,
            **options,
        )
