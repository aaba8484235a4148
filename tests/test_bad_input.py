"""Every input a user can get wrong gives an InputError naming the input and the problem."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from cgan_ct import InputError, read_volume
from tests.dicom_factory import AXIAL, random_hu, slice_positions, write_ct_series


def _error(path, **kwargs) -> str:
    with pytest.raises(InputError) as info:
        read_volume(path, **kwargs)
    assert isinstance(info.value, ValueError)
    return str(info.value)


def test_missing_path(tmp_path):
    message = _error(tmp_path / "nope")
    assert str(tmp_path / "nope") in message and "no such file" in message


def test_empty_folder(tmp_path):
    assert "no DICOM image files found" in _error(tmp_path)


def test_folder_without_dicom(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "image.png").write_bytes(b"\x89PNG" + b"\x00" * 200)
    assert "no DICOM image files found" in _error(tmp_path)


def test_non_ct_modality(tmp_path):
    write_ct_series(tmp_path, random_hu((3, 4, 4)), tags={"Modality": "MR"})
    message = _error(tmp_path)
    assert "modality is 'MR', not CT" in message and "slice000.dcm" in message


def test_missing_slice(tmp_path):
    positions = slice_positions((0, 0, 0), AXIAL, 2.0, 6)
    keep = [0, 1, 2, 4, 5]
    write_ct_series(
        tmp_path,
        random_hu((5, 4, 4)),
        positions=[positions[k] for k in keep],
        instance_numbers=[k + 1 for k in keep],
    )
    message = _error(tmp_path)
    assert "missing slice" in message and "gap of 4 mm" in message and str(tmp_path) in message


def test_duplicate_positions(tmp_path):
    positions = slice_positions((0, 0, 0), AXIAL, 2.0, 3)
    write_ct_series(tmp_path, random_hu((4, 4, 4)), positions=positions + [positions[1]])
    assert "same position" in _error(tmp_path)


def test_inconsistent_rows_and_columns(tmp_path):
    write_ct_series(tmp_path, random_hu((3, 4, 4)))
    write_ct_series(
        tmp_path,
        random_hu((1, 5, 4)),
        positions=slice_positions((0, 0, 7.5), AXIAL, 2.5, 1),
        names=["odd.dcm"],
        series_uid=str(pydicom.dcmread(tmp_path / "slice000.dcm").SeriesInstanceUID),
    )
    message = _error(tmp_path)
    # Names the file that differs from the series' first (in name order: odd.dcm), and no second file
    # name: in a conversion's skip reasons any other file name could be a patient's.
    assert "inconsistent rows/columns" in message and "slice000.dcm" in message and "odd.dcm" not in message


def test_inconsistent_pixel_spacing(tmp_path):
    write_ct_series(tmp_path, random_hu((3, 4, 4)), per_slice_tags={2: {"PixelSpacing": [0.9, 0.9]}})
    message = _error(tmp_path)
    assert "pixel spacing" in message and "slice002.dcm" in message


def test_missing_position(tmp_path):
    paths = write_ct_series(tmp_path, random_hu((3, 4, 4)))
    ds = pydicom.dcmread(paths[1])
    del ds.ImagePositionPatient
    ds.save_as(paths[1])
    assert "missing ImagePositionPatient" in _error(tmp_path)


def test_truncated_file(tmp_path):
    paths = write_ct_series(tmp_path, random_hu((3, 32, 32)))
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) - 700])
    message = _error(tmp_path)
    assert "slice001.dcm" in message


def test_corrupt_file(tmp_path):
    write_ct_series(tmp_path, random_hu((3, 4, 4)))
    (tmp_path / "broken.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\xff\xfe\x12" * 40)
    message = _error(tmp_path)
    assert "broken.dcm" in message and "corrupt" in message


def test_unsupported_transfer_syntax(tmp_path):
    paths = write_ct_series(tmp_path, random_hu((2, 8, 8)))
    for path in paths:
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video
        ds.PixelData = pydicom.encaps.encapsulate([b"\x00\x01" * 16])
        ds.save_as(path, enforce_file_format=True)
    message = _error(tmp_path)
    assert "cannot decode pixel data" in message and "1.2.840.10008.1.2.4.100" in message
    assert "MPEG2" in message


def test_multiframe_is_refused(tmp_path):
    write_ct_series(tmp_path, random_hu((2, 4, 4)), tags={"NumberOfFrames": 2})
    assert "multi-frame" in _error(tmp_path)


def test_unknown_file_type(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG")
    assert "not a supported volume file" in _error(path)


def test_corrupt_nifti(tmp_path):
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(b"this is not gzip at all")
    message = _error(path)
    assert "scan.nii.gz" in message and "corrupt NIfTI file: not a valid gzip stream" in message


def test_four_dimensional_nifti(tmp_path):
    path = tmp_path / "series.nii"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 3, 4, 5), np.int16)), str(path))
    assert "expected a 3-D single-channel volume" in _error(path)


def test_series_argument_on_a_file(tmp_path):
    path = tmp_path / "v.nii"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((3, 4, 5), np.int16)), str(path))
    assert "series= applies to DICOM folders" in _error(path, series="2")


@pytest.mark.parametrize("spacing", [0, (1, 2), (-1, 1, 1)])
def test_bad_spacing(tmp_path, spacing):
    write_ct_series(tmp_path, random_hu((2, 4, 4)))
    assert "spacing_mm must be" in _error(tmp_path, spacing_mm=spacing)


def test_the_old_name_volume_error_catches_the_same_errors(tmp_path):
    """``VolumeError`` was the class's name until issue 32; code that catches it keeps working."""
    from cgan_ct import VolumeError
    from cgan_ct.errors import VolumeError as from_errors

    assert VolumeError is InputError is from_errors
    with pytest.raises(VolumeError, match="no such file"):
        read_volume(tmp_path / "nope")
