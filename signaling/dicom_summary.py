"""Is a shared file a DICOM study, and what is in it? (pure core: no asyncio, blocking reads)

A single DICOM file is recognised by 'DICM' at offset 128 (after the preamble); a ZIP counts
when its members include such files. The summary holds only what a clinician needs to pick
the right study — modality, study date and description, series and instance counts.

Patient tags are never parsed: pydicom reads only the tags listed in ``_TAGS`` (and stops
before the pixel data), so a patient's name cannot leak into a log line, an audit entry or an
exception message from here. The shell runs this in a worker thread (it reads files).
"""

from __future__ import annotations

import logging
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pydicom
from pydicom.errors import InvalidDicomError

log = logging.getLogger("consilium.files")

PREAMBLE = 128
MAGIC = b"DICM"
ZIP_MAGIC = b"PK\x03\x04"
# A study of a few thousand images is normal; a ZIP listing more is refused as a summary.
MAX_MEMBERS = 20000
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_TAGS = [
    "SpecificCharacterSet",
    "SOPInstanceUID",
    "Modality",
    "StudyDate",
    "StudyDescription",
    "SeriesInstanceUID",
]


@dataclass(frozen=True, slots=True)
class DicomSummary:
    modality: str | None
    study_date: str | None
    study_description: str | None
    series_count: int
    instance_count: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "modality": self.modality,
            "studyDate": self.study_date,
            "studyDescription": self.study_description,
            "seriesCount": self.series_count,
            "instanceCount": self.instance_count,
        }


def is_dicom_header(head: bytes) -> bool:
    return len(head) >= PREAMBLE + 4 and head[PREAMBLE : PREAMBLE + 4] == MAGIC


def _iso_date(value: str) -> str:
    """DICOM DA ``YYYYMMDD`` → ``YYYY-MM-DD``; anything else is passed on as written."""
    v = value.strip()
    if len(v) == 8 and v.isdigit():
        return f"{v[:4]}-{v[4:6]}-{v[6:]}"
    return v


class _Collector:
    def __init__(self) -> None:
        self.modalities: list[str] = []
        self.study_date: str | None = None
        self.description: str | None = None
        self.series: set[str] = set()
        self.instances: set[str] = set()

    def add(self, fp: IO[bytes]) -> None:
        try:
            ds = pydicom.dcmread(fp, stop_before_pixels=True, specific_tags=_TAGS)
        except (InvalidDicomError, EOFError, OSError, ValueError, KeyError, TypeError):
            # Only the kind of failure: a message could quote a value from the file.
            log.info("skipped an unreadable DICOM object")
            return
        meta = getattr(ds, "file_meta", None)
        if meta is not None and str(meta.get("MediaStorageSOPClassUID", "")) == _DICOMDIR_CLASS:
            return  # a DICOMDIR indexes the study; it is not an image of it
        instance = str(ds.get("SOPInstanceUID", "") or "")
        if not instance and meta is not None:
            instance = str(meta.get("MediaStorageSOPInstanceUID", "") or "")
        if not instance:
            return  # no identity: not an instance of anything (or too damaged to tell)
        self.instances.add(instance)
        modality = str(ds.get("Modality", "") or "").strip()
        if modality and modality not in self.modalities:
            self.modalities.append(modality)
        if self.study_date is None and ds.get("StudyDate"):
            self.study_date = _iso_date(str(ds.StudyDate))
        if self.description is None and ds.get("StudyDescription"):
            self.description = str(ds.StudyDescription).strip() or None
        series = str(ds.get("SeriesInstanceUID", "") or "")
        if series:
            self.series.add(series)

    def summary(self) -> DicomSummary | None:
        if not self.instances:
            return None
        return DicomSummary(
            modality=", ".join(self.modalities) or None,
            study_date=self.study_date,
            study_description=self.description,
            series_count=len(self.series),
            instance_count=len(self.instances),
        )


@contextmanager
def _zip(path: Path) -> Iterator[zipfile.ZipFile | None]:
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError):
        yield None
        return
    with archive:
        yield archive


def summarize(path: str | Path) -> DicomSummary | None:
    """The study summary of a DICOM file or a ZIP of them; None for anything else."""
    path = Path(path)
    with path.open("rb") as fp:
        head = fp.read(PREAMBLE + 4)
        collector = _Collector()
        if is_dicom_header(head):
            fp.seek(0)
            collector.add(fp)
            return collector.summary()
    if not head.startswith(ZIP_MAGIC):
        return None
    with _zip(path) as archive:
        if archive is None:
            return None
        members = [m for m in archive.infolist() if not m.is_dir()]
        if len(members) > MAX_MEMBERS:
            log.info("a ZIP with %d members is too large to summarise", len(members))
            return None
        for member in members:
            try:
                with archive.open(member) as fp:
                    if not is_dicom_header(fp.read(PREAMBLE + 4)):
                        continue
                    fp.seek(0)
                    collector.add(fp)
            except (zipfile.BadZipFile, zlib.error, RuntimeError, OSError, ValueError, EOFError):
                # Encrypted or damaged member: the rest of the study still counts.
                log.info("skipped an unreadable ZIP member")
        return collector.summary()
