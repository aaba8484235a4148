"""Reading the real CT sample in ../shared/data/ct, checked against SimpleITK, dcm2niix and nibabel."""

from __future__ import annotations

import subprocess

import nibabel
import numpy as np
import pytest
import SimpleITK as sitk

from cgan_ct import read_volume
from cgan_ct.io.dicom_reader import read_dicom_series
from cgan_ct.io.sitk_bridge import geometry_from_sitk, to_sitk
from tests.conftest import require_tool

CHEST = "lung-pet-ct-dx-A0001"
HEAD = "ge-head-tilted"


def test_chest_series_matches_simpleitk(shared_ct):
    volume = read_volume(shared_ct / CHEST)
    assert volume.shape == (64, 512, 512)
    assert volume.spacing_mm == pytest.approx((5.0, 0.841796875, 0.841796875))
    assert (int(volume.hu.min()), int(volume.hu.max())) == (-1024, 2976)
    assert volume.warnings == ()
    acq = volume.acquisition
    assert (acq.manufacturer, acq.model, acq.kernel, acq.kvp) == ("Philips", "Brilliance16", "L", 120.0)

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(shared_ct / CHEST)))
    reference = sitk.DICOMOrient(reader.Execute(), "LPS")
    np.testing.assert_array_equal(volume.hu, sitk.GetArrayFromImage(reference))
    spacing, origin, direction = geometry_from_sitk(reference)
    np.testing.assert_allclose(volume.origin_mm, origin, atol=1e-4)
    np.testing.assert_allclose(volume.direction, direction, atol=1e-6)


def test_chest_reads_the_same_with_shuffled_file_names(shared_ct, tmp_path):
    files = sorted((shared_ct / CHEST).glob("*.dcm"))
    for i in np.random.default_rng(3).permutation(len(files)):
        (tmp_path / f"img_{i:03d}").symlink_to(files[len(files) - 1 - i])
    np.testing.assert_array_equal(read_volume(tmp_path).hu, read_volume(shared_ct / CHEST).hu)


def test_tilted_uneven_head_is_flagged(shared_ct):
    volume = read_volume(shared_ct / HEAD)
    text = " ".join(volume.warnings)
    assert "gantry tilt of 18.5 degrees" in text and "uneven slice spacing (1.08 to 7 mm)" in text
    assert volume.spacing_mm[0] == pytest.approx(4.0019, abs=1e-3)
    assert volume.hu.min() == -1024  # GE's -1500 padding outside the field of view is air


@pytest.mark.slow
def test_tilted_head_agrees_with_dcm2niix(shared_ct, tmp_path):
    """Same grid and, within the field of view, the same HU as dcm2niix's tilt-corrected output.

    dcm2niix resamples to its own equidistant spacing; we read at that spacing
    so that both grids coincide, then compare voxel by voxel.
    """
    dcm2niix = require_tool("dcm2niix")
    subprocess.run(
        [dcm2niix, "-z", "n", "-o", str(tmp_path), "-f", "head", str(shared_ct / HEAD)],
        check=True,
        capture_output=True,
    )
    [eq_file] = tmp_path.glob("*Tilt_Eq*.nii")
    reference = sitk.DICOMOrient(sitk.ReadImage(str(eq_file)), "LPS")
    spacing, origin, direction = geometry_from_sitk(reference)
    volume = read_dicom_series(shared_ct / HEAD, slice_spacing_mm=spacing[0])

    assert volume.shape == reference.GetSize()[::-1]
    np.testing.assert_allclose(volume.spacing_mm, spacing, rtol=1e-5)
    np.testing.assert_allclose(volume.direction, direction, atol=1e-4)
    assert np.linalg.norm(np.subtract(volume.origin_mm, origin)) < 0.5  # mm, about one pixel

    theirs = sitk.GetArrayFromImage(
        sitk.Resample(
            sitk.Cast(reference, sitk.sitkFloat32),
            to_sitk(volume),
            sitk.Transform(),
            sitk.sitkLinear,
            -5000.0,
        )
    )
    inside = (theirs > -1400) & (volume.hu > -1024)  # both inside the field of view
    assert inside.mean() > 0.5
    diff = np.abs(theirs - volume.hu)[inside]
    assert np.median(diff) <= 1.0
    assert diff.mean() <= 8.0
    assert np.percentile(diff, 95) <= 10.0


@pytest.mark.parametrize("name", ["example_ct_sm.nii.gz", "chest_cta_cropped.nii.gz"])
def test_nifti_orientation_matches_nibabel(shared_ct, name):
    path = shared_ct / "totalsegmentator" / name
    volume = read_volume(path)
    image = nibabel.load(path)
    data = np.asarray(image.dataobj)
    rng = np.random.default_rng(0)
    index = np.stack([rng.integers(0, n, 200) for n in volume.shape], axis=1)
    lps = volume.index_to_lps(index)
    ras = lps * np.array([-1.0, -1.0, 1.0])
    ijk = nibabel.affines.apply_affine(np.linalg.inv(image.affine), ras)
    ijk = np.rint(ijk).astype(int)
    np.testing.assert_array_equal(
        volume.hu[index[:, 0], index[:, 1], index[:, 2]], np.rint(data[tuple(ijk.T)]).astype(np.int16)
    )
    assert (np.diag(volume.direction[::-1]) > 0.9).all()  # canonical: toward L, P, S
