"""write_dicom_series and write_nifti: read back by us, pydicom, SimpleITK, dcm2niix; dciodvfy."""

from __future__ import annotations

import subprocess

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

import cgan_ct
from cgan_ct import InputError, Volume, read_volume, write_dicom_series, write_nifti
from cgan_ct.io.sitk_bridge import geometry_from_sitk
from cgan_ct.io.volume import AcquisitionInfo
from tests.conftest import require_tool


def _volume(shape=(5, 12, 10), seed=0) -> Volume:
    angle = np.radians(20)  # an oblique, orthonormal geometry
    direction = np.array([[0, 0, 1], [np.sin(angle), np.cos(angle), 0], [np.cos(angle), -np.sin(angle), 0]], float)
    hu = np.random.default_rng(seed).integers(-1024, 3000, size=shape).astype(np.int16)
    return Volume(
        hu=hu,
        spacing_mm=(2.5, 0.75, 0.8),
        origin_mm=(-120.5, 33.25, -410.0),
        direction=direction,
        volume_id="vol-test",
        patient_key="pat-test",
        acquisition=AcquisitionInfo("DICOM", manufacturer="ACME", kernel="B30f", kvp=120.0),
    )


def _assert_same_geometry(volume, spacing, origin, direction):
    np.testing.assert_allclose(spacing, volume.spacing_mm, rtol=1e-5)
    np.testing.assert_allclose(origin, volume.origin_mm, atol=1e-3)
    np.testing.assert_allclose(direction, volume.direction, atol=1e-5)


def test_dicom_round_trip_through_our_reader(tmp_path):
    volume = _volume()
    write_dicom_series(volume, tmp_path / "out")
    back = read_volume(tmp_path / "out")
    np.testing.assert_array_equal(back.hu, volume.hu)
    _assert_same_geometry(volume, back.spacing_mm, back.origin_mm, back.direction)
    assert back.acquisition.manufacturer == "ACME" and back.acquisition.kernel == "B30f"


def test_dicom_reads_back_in_pydicom_and_simpleitk(tmp_path):
    volume = _volume()
    write_dicom_series(volume, tmp_path / "out")
    files = sorted((tmp_path / "out").glob("*.dcm"))
    assert len(files) == 5
    for k, path in enumerate(files):
        ds = pydicom.dcmread(path)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.Modality == "CT"
        assert "DERIVED" in ds.ImageType
        hu = ds.pixel_array.astype(np.int32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(hu, volume.hu[k])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(tmp_path / "out")))
    image = reader.Execute()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), volume.hu)
    _assert_same_geometry(volume, *geometry_from_sitk(image))


@pytest.mark.slow
def test_dicom_reads_back_in_dcm2niix(tmp_path):
    dcm2niix = require_tool("dcm2niix")
    volume = _volume()
    write_dicom_series(volume, tmp_path / "out")
    subprocess.run(
        [dcm2niix, "-z", "n", "-o", str(tmp_path), "-f", "back", str(tmp_path / "out")],
        check=True,
        capture_output=True,
    )
    reference = cgan_ct.read_volume(tmp_path / "back.nii")
    np.testing.assert_array_equal(reference.hu, volume.hu)
    _assert_same_geometry(volume, reference.spacing_mm, reference.origin_mm, reference.direction)


@pytest.mark.slow
def test_dicom_passes_dciodvfy(tmp_path, shared_ct):
    dciodvfy = require_tool("dciodvfy")
    volume = read_volume(shared_ct / "ge-head-tilted")  # real geometry, resampled
    write_dicom_series(volume, tmp_path / "out")
    for path in sorted((tmp_path / "out").glob("*.dcm"))[:3]:
        result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True)
        report = result.stdout + result.stderr
        assert "CTImage" in report
        errors = [line for line in report.splitlines() if line.startswith("Error")]
        assert errors == [], report


def test_existing_folder_is_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(InputError, match="not empty; not overwriting"):
        write_dicom_series(_volume(), out)
    assert [p.name for p in out.iterdir()] == ["mine.txt"]


def test_overwrite_replaces_whole_series(tmp_path):
    write_dicom_series(_volume(seed=1), tmp_path / "out")
    write_dicom_series(_volume(seed=2), tmp_path / "out", overwrite=True)
    np.testing.assert_array_equal(read_volume(tmp_path / "out").hu, _volume(seed=2).hu)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_failure_midway_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing_write(path, ds, **kwargs):
        calls.append(path)
        if len(calls) == 3:
            raise OSError("disk full")
        return original(path, ds, **kwargs)

    original = pydicom.dcmwrite
    monkeypatch.setattr(pydicom, "dcmwrite", failing_write)
    with pytest.raises(InputError, match=r"out: writing failed \(disk full\)"):
        write_dicom_series(_volume(), tmp_path / "out")
    assert list(tmp_path.iterdir()) == []


def test_non_orthonormal_direction_is_refused(tmp_path):
    volume = _volume().replace(direction=np.array([[1, 0.3, 0], [0, 1, 0], [0, 0, 1]], float))
    with pytest.raises(InputError, match="not orthonormal"):
        write_dicom_series(volume, tmp_path / "out")


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
def test_nifti_round_trip(tmp_path, name):
    volume = _volume()
    path = write_nifti(volume, tmp_path / name)
    back = read_volume(path)
    np.testing.assert_array_equal(back.hu, volume.hu)
    _assert_same_geometry(volume, back.spacing_mm, back.origin_mm, back.direction)
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # no temporary left


def test_nifti_refuses_overwrite_and_bad_suffix(tmp_path):
    path = tmp_path / "v.nii.gz"
    path.write_bytes(b"precious")
    with pytest.raises(InputError, match="already exists"):
        write_nifti(_volume(), path)
    assert path.read_bytes() == b"precious"
    with pytest.raises(InputError, match="must end in .nii"):
        write_nifti(_volume(), tmp_path / "v.mha")
