"""Write a synthetic CT/MR study (a ZIP of DICOM files) to try study sharing without patient data.

    .venv/bin/python -m tools.make_study --out study.zip --series 3 --slices 40
    .venv/bin/python -m tools.make_study --out big.zip --size-mb 800     # about 800 MB

Every slice is a valid DICOM Part 10 file (explicit VR little endian, 16-bit pixels) with a
drawn phantom (an ellipse "body" with denser discs) so viewers show something recognisable.
Patient tags are synthetic ("Synthetic^Patient"). Files are stored uncompressed in the ZIP,
streamed one slice at a time, so memory stays flat for any size.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

MODALITY_SOP = {"CT": CTImageStorage, "MR": MRImageStorage}


@dataclass(frozen=True)
class StudySpec:
    modality: str = "CT"
    series: int = 2
    slices: int = 20
    size: int = 256  # pixels per side
    description: str = "Synthetic chest study"
    study_date: str = "20261126"


def phantom(size: int, position: float) -> np.ndarray:
    """One slice: a body ellipse with two "organs" that move with the slice position 0..1."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    image = np.zeros((size, size), np.float32)
    image[(x / 0.42) ** 2 + (y / 0.32) ** 2 <= 1] = 1000
    radius = 0.08 + 0.05 * math.sin(math.pi * position)
    image[(x + 0.18) ** 2 + y**2 <= radius**2] = 1600
    image[(x - 0.18) ** 2 + (y - 0.05) ** 2 <= (radius * 0.8) ** 2] = 1300
    noise = np.random.default_rng(int(position * 1e6)).normal(0, 25, image.shape)
    return np.clip(image + noise, 0, 4095).astype(np.uint16)


def _slice(spec: StudySpec, study_uid: str, series_uid: str, series: int, index: int) -> bytes:
    sop_class = MODALITY_SOP[spec.modality]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.Modality = spec.modality
    ds.StudyDate = spec.study_date
    ds.StudyTime = "101500"
    ds.StudyDescription = spec.description
    ds.SeriesDescription = f"Series {series + 1}"
    ds.SeriesNumber = series + 1
    ds.InstanceNumber = index + 1
    ds.PatientName = "Synthetic^Patient"
    ds.PatientID = "SYN-0001"
    ds.PatientBirthDate = "19700101"
    ds.SliceThickness = "1.0"
    ds.ImagePositionPatient = [0, 0, float(index)]
    pixels = phantom(spec.size, index / max(1, spec.slices - 1))
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    out = DicomBytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def slices(spec: StudySpec) -> Iterator[tuple[str, bytes]]:
    """(path in the archive, DICOM bytes) for every slice of the study, one at a time."""
    study_uid = generate_uid()
    for series in range(spec.series):
        series_uid = generate_uid()
        for index in range(spec.slices):
            name = f"series{series + 1:02d}/slice{index + 1:04d}.dcm"
            yield name, _slice(spec, study_uid, series_uid, series, index)


def write_zip(spec: StudySpec, out: Path) -> int:
    """Write the study; returns the archive's size in bytes."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:
        for name, data in slices(spec):
            archive.writestr(zipfile.ZipInfo(name, date_time=(2026, 11, 26, 10, 15, 0)), data)
    return out.stat().st_size


def spec_for_size(size_mb: float, series: int, size: int, modality: str) -> StudySpec:
    per_slice = size * size * 2 + 1200  # pixels plus header and ZIP entry
    total_slices = max(series, math.ceil(size_mb * 1e6 / per_slice))
    return StudySpec(modality, series, math.ceil(total_slices / series), size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("study.zip"))
    parser.add_argument("--modality", choices=sorted(MODALITY_SOP), default="CT")
    parser.add_argument("--series", type=int, default=2)
    parser.add_argument("--slices", type=int, default=20, help="per series")
    parser.add_argument("--size", type=int, default=256, help="pixels per side")
    parser.add_argument("--size-mb", type=float, help="instead of --slices: about this many MB")
    args = parser.parse_args(argv)
    if args.series < 1 or args.slices < 1 or not 16 <= args.size <= 2048:
        parser.error("need --series >= 1, --slices >= 1 and 16 <= --size <= 2048")
    if args.size_mb:
        spec = spec_for_size(args.size_mb, args.series, args.size, args.modality)
    else:
        spec = StudySpec(args.modality, args.series, args.slices, args.size)
    started = dt.datetime.now()
    written = write_zip(spec, args.out)
    seconds = (dt.datetime.now() - started).total_seconds()
    print(
        f"{args.out}: {spec.modality} study, {spec.series} series x {spec.slices} slices "
        f"({spec.size}x{spec.size}), {written / 1e6:.1f} MB in {seconds:.1f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
