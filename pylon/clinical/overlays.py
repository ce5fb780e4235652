"""pylon's heatmaps as images a PACS viewer shows: a Secondary Capture colour overlay per finding,
and the probability maps as one fractional Segmentation (highdicom).

The Secondary Capture is the source image as read for display
(:func:`pylon.data.dicom.read_dicom_image`: modality LUT, VOI, MONOCHROME1) at its full
``Rows x Columns``, with the class's heatmap blended over it in absolute probabilities and its
peak ringed (:func:`pylon.evaluation.overlay.peak_overlay`, the overlay of ``pylon predict``),
8-bit RGB. The Segmentation holds one FRACTIONAL (probability) segment per reported class at the
source's size. A Parametric Map (:func:`build_pmap`, float probabilities) is offered only for
sources with a frame of reference (CT, MR): highdicom 0.28 fails on projection radiographs (DX,
CR) with a dimension index error.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

import pylon
from pylon.clinical import codes
from pylon.clinical.sources import describe, orientation, series_laterality


def _algorithm(model_name: str) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(
        name="pylon",
        family=codes.ARTIFICIAL_INTELLIGENCE,
        version=pylon.__version__,
        parameters={"model": model_name},
    )


def _set_laterality(dataset: Dataset, source: Dataset) -> None:
    laterality = series_laterality(source)
    if laterality is not None:
        dataset.Laterality = laterality


def overlay_pixels(image: np.ndarray, heatmap: np.ndarray, peak: tuple[int, int]) -> np.ndarray:
    """The colour overlay of one finding at the image's full size.

    Args:
        image: the source's display values, uint8 ``(H, W)``.
        heatmap: the class's map in [0, 1] (any size; drawn at ``(H, W)``).
        peak: ``(x, y)`` pixel indices, ringed in white.

    Returns:
        uint8 ``(H, W, 3)`` RGB.
    """
    from pylon.evaluation.overlay import peak_overlay

    return peak_overlay(image, heatmap, peak, style="probability", max_side=None)


def build_sc(
    source: Dataset,
    rgb: np.ndarray,
    class_name: str,
    *,
    model_name: str,
    series_instance_uid: str,
    series_number: int = 9902,
    instance_number: int = 1,
) -> hd.sc.SCImage:
    """The Secondary Capture of one finding's overlay: same study and patient as ``source``,
    series ``series_instance_uid`` (one series for all overlays of a source), 8-bit RGB.

    Args:
        source: the prepared source header (:func:`pylon.clinical.sources.prepare_source`).
        rgb: uint8 ``(Rows, Columns, 3)`` (:func:`overlay_pixels`).
        class_name: the finding shown (in the Series/Derivation description).
        model_name: recorded as the Manufacturer's Model Name.
        series_instance_uid, series_number, instance_number: where the image goes.

    Returns:
        The Secondary Capture dataset.
    """
    rows, columns = int(source.Rows), int(source.Columns)
    if rgb.shape != (rows, columns, 3) or rgb.dtype != np.uint8:
        raise ValueError(
            f"overlay must be uint8 ({rows}, {columns}, 3) like the source, got "
            f"{rgb.dtype} {rgb.shape}"
        )
    sc = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=source,
        pixel_array=rgb,
        photometric_interpretation="RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=instance_number,
        manufacturer="pylon",
        patient_orientation=orientation(source),
        transfer_syntax_uid=ExplicitVRLittleEndian,
    )
    sc.BodyPartExamined = source.BodyPartExamined
    _set_laterality(sc, source)
    sc.SeriesDescription = "pylon heatmaps"
    sc.DerivationDescription = f"pylon heatmap of {class_name} over the source image"[:1024]
    sc.ImageComments = f"{class_name}: heatmap (absolute probability) with its peak ringed"
    sc.ManufacturerModelName = model_name[:64]
    sc.SoftwareVersions = pylon.__version__
    sc.BurnedInAnnotation = "NO"
    return sc


def _maps_instance(model_name: str, series_number: int) -> dict:
    """What the Segmentation and the Parametric Map of the probability maps share: the keyword
    arguments of one instance in a new series, with pylon and the model as the equipment."""
    return {
        "series_instance_uid": generate_uid(),
        "series_number": series_number,
        "sop_instance_uid": generate_uid(),
        "instance_number": 1,
        "manufacturer": "pylon",
        "manufacturer_model_name": model_name[:64],
        "software_versions": pylon.__version__,
        "device_serial_number": "0",
        "content_description": "pylon probability maps",
        "content_label": "PYLON",
    }


def build_seg(
    source: Dataset,
    maps: dict[str, np.ndarray],
    *,
    model_name: str,
    series_number: int = 9903,
) -> hd.seg.Segmentation:
    """A FRACTIONAL (probability) Segmentation with one segment per class of ``maps``.

    Args:
        source: the prepared source header.
        maps: ``{class: (Rows, Columns) map in [0, 1]}``, in segment order.
        model_name: the Manufacturer's Model Name and an algorithm parameter.
        series_number: the SEG's (new) series number.

    Returns:
        The Segmentation dataset (values quantised to 0..255, 255 = probability 1).
    """
    if not maps:
        raise ValueError("a Segmentation needs at least one class map")
    rows, columns = int(source.Rows), int(source.Columns)
    algorithm = _algorithm(model_name)
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=name[:64],
            segmented_property_category=codes.ABNORMAL_STRUCTURE,
            segmented_property_type=codes.finding_code(name),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for number, name in enumerate(maps, start=1)
    ]
    stack = np.stack([np.asarray(m, dtype=np.float32) for m in maps.values()], axis=-1)
    if stack.shape[:2] != (rows, columns):
        raise ValueError(f"maps must be ({rows}, {columns}) like the source, got {stack.shape[:2]}")
    private = any(codes.is_private(codes.finding_code(n)) for n in maps)
    seg = hd.seg.Segmentation(
        source_images=[source],
        pixel_array=np.clip(stack, 0.0, 1.0)[None],
        segmentation_type=hd.seg.SegmentationTypeValues.FRACTIONAL,
        segment_descriptions=descriptions,
        fractional_type=hd.seg.SegmentationFractionalTypeValues.PROBABILITY,
        max_fractional_value=255,
        omit_empty_frames=False,
        coding_schemes=codes.coding_schemes() if private else None,
        **_maps_instance(model_name, series_number),
    )
    if not has_frame_of_reference(source):
        # a projection radiograph's segmentation: General Image needs Patient Orientation (2C)
        seg.PatientOrientation = list(orientation(source))
    return seg


def has_frame_of_reference(source: Dataset) -> bool:
    """Whether ``source`` has a frame of reference and image plane (a CT or MR slice), which
    highdicom 0.28's Parametric Map needs."""
    return all(
        str(source.get(k) or "").strip()
        for k in ("FrameOfReferenceUID", "ImageOrientationPatient", "ImagePositionPatient")
    )


def check_pmap_source(source: Dataset) -> None:
    """Refuse a source a Parametric Map cannot be made for (see :func:`has_frame_of_reference`).

    Raises:
        ValueError: naming the source, what it lacks, and the Segmentation as the alternative.
    """
    if not has_frame_of_reference(source):
        raise ValueError(
            f"{describe(source)}: a Parametric Map needs a source with a frame of reference "
            "(FrameOfReferenceUID, ImageOrientationPatient, ImagePositionPatient: CT, MR); "
            f"highdicom 0.28 fails on this {source.get('Modality') or 'image'}'s kind "
            "(projection radiographs): write 'seg' instead"
        )


def build_pmap(
    source: Dataset,
    maps: dict[str, np.ndarray],
    *,
    model_name: str,
    series_number: int = 9904,
) -> hd.pm.ParametricMap:
    """A Parametric Map of the probability maps (float32, one frame per class of ``maps``, each
    with a real world value mapping "probability of <class>", unit "1"), for sources with a frame
    of reference only.

    Args:
        source: the prepared source header of a CT/MR slice.
        maps: ``{class: (Rows, Columns) map in [0, 1]}``, in frame order.
        model_name: the Manufacturer's Model Name.
        series_number: the map's (new) series number.

    Returns:
        The Parametric Map dataset.

    Raises:
        ValueError: a source without a frame of reference (DX, CR, secondary captures):
            highdicom 0.28 fails on those (use the Segmentation).
    """
    check_pmap_source(source)
    if not maps:
        raise ValueError("a Parametric Map needs at least one class map")
    stack = np.stack([np.asarray(m, dtype=np.float32) for m in maps.values()], axis=-1)
    mappings = [
        [
            hd.pm.RealWorldValueMapping(
                lut_label=f"P{number}",
                lut_explanation=f"probability of {name}"[:64],
                unit=codes.NO_UNITS,
                value_range=(0.0, 1.0),
                slope=1,
                intercept=0,
                quantity_definition=codes.PROBABILITY,
            )
        ]
        for number, name in enumerate(maps, start=1)
    ]
    pmap = hd.pm.ParametricMap(
        source_images=[source],
        pixel_array=np.clip(stack, 0.0, 1.0)[None],
        contains_recognizable_visual_features=False,
        real_world_value_mappings=mappings,
        voi_lut_transformations=[hd.VOILUTTransformation(window_center=0.5, window_width=1.0)],
        **_maps_instance(model_name, series_number),
    )
    pmap.BodyPartExamined = source.BodyPartExamined  # else Laterality (type 2C) is wanted
    _set_laterality(pmap, source)
    return pmap
