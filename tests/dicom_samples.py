"""Small DICOM files made with pydicom for the file-sharing tests (two CT series, a ZIP)."""

from __future__ import annotations

import zipfile
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

PATIENT_NAME = "Doe^Janet"
PATIENT_ID = "PID-7319-XQ"


def write_instance(path: Path, study_uid: str, series_uid: str, number: int) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.PatientBirthDate = "19580214"
    ds.Modality = "CT"
    ds.StudyDate = "20240131"
    ds.StudyDescription = "CT THORAX"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.InstanceNumber = number
    ds.Rows = 4
    ds.Columns = 4
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = bytes(range(32))
    ds.save_as(path, enforce_file_format=True)
    return path


def write_study(directory: Path, per_series: tuple[int, ...] = (3, 2)) -> list[Path]:
    """One study, len(per_series) series with that many instances each."""
    directory.mkdir(parents=True, exist_ok=True)
    study = generate_uid()
    paths: list[Path] = []
    for s, count in enumerate(per_series):
        series = generate_uid()
        for i in range(count):
            paths.append(write_instance(directory / f"s{s}_i{i}.dcm", study, series, i + 1))
    return paths


def zip_study(directory: Path, out: Path, extra_text: bool = True) -> Path:
    paths = write_study(directory)
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in paths:
            zf.write(p, f"STUDY/{p.name}")
        if extra_text:
            zf.writestr("README.txt", "viewer notes\n")
    return out
