"""signaling.dicom_summary: recognising DICOM files and ZIPs of them, and the study summary.

Patient tags must never come out: not in the summary, not in a log line.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import pytest
from dicom_samples import PATIENT_ID, PATIENT_NAME, write_instance, write_study, zip_study
from pydicom.uid import generate_uid

from signaling.dicom_summary import DicomSummary, is_dicom_header, summarize


def test_single_file_summary(tmp_path: Path) -> None:
    path = write_instance(tmp_path / "one.dcm", generate_uid(), generate_uid(), 1)
    assert is_dicom_header(path.read_bytes()[:132])
    summary = summarize(path)
    assert summary == DicomSummary("CT", "2024-01-31", "CT THORAX", 1, 1)
    assert summary.as_dict() == {
        "modality": "CT",
        "studyDate": "2024-01-31",
        "studyDescription": "CT THORAX",
        "seriesCount": 1,
        "instanceCount": 1,
    }


def test_zip_of_two_series(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    archive = zip_study(tmp_path / "study", tmp_path / "study.zip")
    summary = summarize(archive)
    assert summary is not None
    assert (summary.series_count, summary.instance_count) == (2, 5)
    assert summary.modality == "CT" and summary.study_date == "2024-01-31"
    text = repr(summary.as_dict()) + caplog.text
    for secret in (PATIENT_NAME, "Doe", "Janet", PATIENT_ID, "19580214"):
        assert secret not in text


def test_zip_with_a_damaged_member_counts_the_rest(tmp_path: Path) -> None:
    paths = write_study(tmp_path / "s", (2,))
    archive = tmp_path / "mixed.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for p in paths:
            zf.write(p, p.name)
        # DICM at 128 but garbage after: recognised, unreadable, skipped.
        zf.writestr("broken.dcm", b"\0" * 128 + b"DICM" + b"\xff" * 7)
    summary = summarize(archive)
    assert summary is not None and summary.instance_count == 2


@pytest.mark.parametrize(
    "content",
    [b"", b"hello", b"\0" * 128 + b"DICX" + b"\0" * 100, b"%PDF-1.7\n" + b"x" * 500],
)
def test_other_files_are_not_dicom(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "f.bin"
    path.write_bytes(content)
    assert summarize(path) is None


def test_zip_without_dicom_and_broken_zip(tmp_path: Path) -> None:
    plain = tmp_path / "plain.zip"
    with zipfile.ZipFile(plain, "w") as zf:
        zf.writestr("a.txt", "just text")
    assert summarize(plain) is None
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04" + b"\x00" * 200)
    assert summarize(broken) is None
