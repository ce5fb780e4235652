"""Writes small DICOM files (12-bit grayscale secondary captures) for the tests that need them."""

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def write_dicom(path, pixels, photometric="MONOCHROME2", compress=None, **attributes):
    """Save ``pixels`` (uint16, values < 4096) as a DICOM; ``compress`` is a transfer syntax UID;
    ``attributes`` (keyword: value, e.g. ``WindowCenter=40``) are set last, over the defaults."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    if compress is not None:
        ds.compress(compress)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_dx(path, pixels, *, modality="DX", spacing=(0.2, 0.2), **attributes):
    """Save ``pixels`` (uint16, values < 4096) as a complete Digital X-Ray (for presentation)
    image, or a Computed Radiography image with ``modality="CR"``, that ``dciodvfy`` accepts
    without an error (patient, study, series, equipment and image modules filled), so a validator
    run on what pylon writes from it flags pylon's objects, not the source. ``spacing`` is the
    ``ImagerPixelSpacing`` (row, column) in mm; ``attributes`` are set last, over the defaults.

    Returns:
        ``path``.
    """
    from pydicom.sequence import Sequence
    from pydicom.uid import ComputedRadiographyImageStorage, DigitalXRayImageStorageForPresentation

    sop_class = DigitalXRayImageStorageForPresentation
    if modality == "CR":
        sop_class = ComputedRadiographyImageStorage
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Test^Patient"
    ds.PatientID = "PYLON-TEST-1"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyID = "1"
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = "A1"
    ds.ReferringPhysicianName = ""
    ds.Modality = modality
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = "pylon tests"
    ds.BodyPartExamined = "CHEST"
    ds.PatientOrientation = ["P", "F"]
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.ImagerPixelSpacing = [f"{spacing[0]:g}", f"{spacing[1]:g}"]
    if modality == "CR":
        ds.ViewPosition = "PA"
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PresentationLUTShape = "IDENTITY"
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "US"
        ds.WindowCenter, ds.WindowWidth = 2048, 4096
        ds.BurnedInAnnotation = "NO"
        ds.PixelIntensityRelationship = "LIN"
        ds.PixelIntensityRelationshipSign = 1
        ds.ImageLaterality = "U"
        ds.PositionerType = "NONE"
        ds.DetectorType = "DIRECT"
        ds.LossyImageCompression = "00"
        ds.ViewPosition = "PA"
        region = Dataset()
        region.CodeValue, region.CodingSchemeDesignator = "51185008", "SCT"
        region.CodeMeaning = "Chest"
        ds.AnatomicRegionSequence = Sequence([region])
        ds.AcquisitionContextSequence = Sequence()
        view = Dataset()
        view.CodeValue, view.CodingSchemeDesignator = "399348003", "SCT"
        view.CodeMeaning = "postero-anterior"
        view.ViewModifierCodeSequence = Sequence()
        ds.ViewCodeSequence = Sequence([view])
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.save_as(path, enforce_file_format=True)
    return path
