"""The synthetic study generator writes DICOM that pydicom reads back as one study."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pydicom

from tools.make_study import StudySpec, main, spec_for_size, write_zip


def test_study_zip_is_one_study_with_the_asked_series(tmp_path: Path) -> None:
    out = tmp_path / "study.zip"
    write_zip(StudySpec("MR", series=3, slices=4, size=64, description="Knee"), out)
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        datasets = [pydicom.dcmread(io.BytesIO(archive.read(n))) for n in names]
    assert len(names) == 12
    assert {d.StudyInstanceUID for d in datasets} == {datasets[0].StudyInstanceUID}
    assert len({d.SeriesInstanceUID for d in datasets}) == 3
    assert {d.Modality for d in datasets} == {"MR"}
    assert {d.StudyDescription for d in datasets} == {"Knee"}
    pixels = datasets[0].pixel_array
    assert pixels.shape == (64, 64) and pixels.max() > pixels.min()


def test_size_target_is_met_roughly(tmp_path: Path, capsys: object) -> None:
    spec = spec_for_size(3, series=2, size=128, modality="CT")
    out = tmp_path / "sized.zip"
    assert main(["--out", str(out), "--size-mb", "3", "--size", "128"]) == 0
    assert spec.series == 2
    assert 2.7e6 <= out.stat().st_size <= 3.5e6
