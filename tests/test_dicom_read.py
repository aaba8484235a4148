"""Reading synthetic DICOM series: ordering, rescale, padding, series choice, geometry."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless

from cgan_ct import InputError, read_volume
from tests.dicom_factory import (
    AXIAL,
    ramp_hu,
    ramp_slices,
    random_hu,
    slice_positions,
    write_ct_series,
)


def test_slices_are_ordered_by_position_not_number_or_name(tmp_path):
    hu = random_hu((6, 8, 9))
    order = [3, 0, 5, 1, 4, 2]  # file i holds slice order[i]
    positions = slice_positions((0, 0, 0), AXIAL, 2.0, 6)
    write_ct_series(
        tmp_path,
        hu[order],
        positions=[positions[k] for k in order],
        instance_numbers=[6 - k for k in order],  # reversed and shuffled
        names=[f"{i}.dcm" for i in range(6)],
    )
    volume = read_volume(tmp_path)
    np.testing.assert_array_equal(volume.hu, hu)
    assert volume.spacing_mm == pytest.approx((2.0, 0.8, 0.8))
    np.testing.assert_allclose(volume.origin_mm, (0, 0, 0), atol=1e-6)
    np.testing.assert_allclose(volume.direction, [[0, 0, 1], [0, 1, 0], [1, 0, 0]], atol=1e-9)


def test_rescale_slope_and_intercept(tmp_path):
    hu = (random_hu((3, 5, 5)) // 2) * 2  # representable with slope 2
    write_ct_series(tmp_path, hu, slope=2.0, intercept=-1000.0)
    np.testing.assert_array_equal(read_volume(tmp_path).hu, hu)


def test_pixel_padding_becomes_air(tmp_path):
    hu = np.full((3, 6, 6), 40, np.int16)
    hu[:, 0, :] = -2000  # stored -2000 + 1024 = -976, declared as padding
    write_ct_series(tmp_path, hu, tags={"PixelPaddingValue": -976})
    volume = read_volume(tmp_path)
    assert (volume.hu[:, 0, :] == -1024).all()
    assert (volume.hu[:, 1:, :] == 40).all()


def test_non_dicom_files_and_localizers_are_ignored(tmp_path):
    hu = random_hu((4, 6, 7))
    write_ct_series(tmp_path, hu)
    (tmp_path / "README.txt").write_text("not an image")
    (tmp_path / "DICOMDIR_notes").write_bytes(b"\x00" * 300)
    write_ct_series(
        tmp_path / "scout",
        random_hu((1, 6, 7), seed=1),
        tags={"ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]},
    )
    np.testing.assert_array_equal(read_volume(tmp_path).hu, hu)


def test_several_series_need_a_choice(tmp_path):
    a, b = random_hu((3, 5, 5), seed=1), random_hu((4, 5, 5), seed=2)
    write_ct_series(tmp_path / "a", a, tags={"SeriesNumber": 7, "SeriesDescription": "lung"})
    write_ct_series(tmp_path / "b", b, tags={"SeriesNumber": 8, "SeriesDescription": "soft"})
    with pytest.raises(InputError) as info:
        read_volume(tmp_path)
    message = str(info.value)
    assert "2 series found" in message and "series 7 (CT, 5 x 5): 3 slices" in message
    assert "series 8 (CT, 5 x 5): 4 slices" in message and "lung" not in message  # free text can hold a name
    np.testing.assert_array_equal(read_volume(tmp_path, series="8").hu, b)
    volume_a = read_volume(tmp_path / "a")
    np.testing.assert_array_equal(read_volume(tmp_path, series=volume_a.volume_id).hu, a)
    with pytest.raises(InputError, match="series '9' not found"):
        read_volume(tmp_path, series="9")


def test_the_one_ct_series_beside_a_segmentation_needs_no_choice(tmp_path):
    """Issue 30 item 13: a SEG (or other non-CT image) series in the study made every command ask for --series."""
    ct = random_hu((3, 5, 5), seed=1)
    write_ct_series(tmp_path / "ct", ct, tags={"SeriesNumber": 2})
    write_ct_series(tmp_path / "seg", random_hu((3, 5, 5), seed=2), tags={"SeriesNumber": 300, "Modality": "SEG"})
    np.testing.assert_array_equal(read_volume(tmp_path).hu, ct)
    write_ct_series(tmp_path / "ct2", random_hu((2, 5, 5), seed=3), tags={"SeriesNumber": 3})
    with pytest.raises(InputError, match=r"3 series found.*series 300 \(SEG, 5 x 5\)"):
        read_volume(tmp_path)


def test_sagittal_series_comes_back_canonical(tmp_path):
    # Rows run posterior (+y), columns run inferior (-z): a sagittal stack along x.
    orientation = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
    positions = slice_positions((10.0, -50.0, 80.0), orientation, 3.0, 5)
    hu = ramp_slices(positions, orientation, 12, 10, (1.5, 1.0))
    write_ct_series(tmp_path, hu, positions=positions, orientation=orientation, pixel_spacing=(1.5, 1.0))
    volume = read_volume(tmp_path)
    assert volume.shape == (12, 10, 5)  # (z, y, x)
    assert volume.spacing_mm == pytest.approx((1.5, 1.0, 3.0))
    np.testing.assert_allclose(np.abs(volume.direction), np.eye(3)[:, ::-1], atol=1e-9)
    assert (np.diag(volume.direction[::-1]) > 0).all()  # toward L, P, S
    _assert_matches_ramp(volume, tolerance=0.5)


def _assert_matches_ramp(volume, tolerance, margin=1, covered=None):
    """Every covered voxel away from the edges holds the ramp at its own LPS position.

    ``covered`` marks voxels that every source slice around them covers (where
    a slice edge meets the air outside it, values blend, as they should).
    """
    k, j, i = np.meshgrid(*(np.arange(margin, n - margin) for n in volume.shape), indexing="ij")
    index = np.stack([k, j, i], axis=-1).reshape(-1, 3)
    expected = ramp_hu(volume.index_to_lps(index))
    got = volume.hu[index[:, 0], index[:, 1], index[:, 2]]
    inside = got != -1024 if covered is None else covered[index[:, 0], index[:, 1], index[:, 2]]
    assert inside.mean() > 0.5
    np.testing.assert_allclose(got[inside], expected[inside], atol=tolerance)


def test_gantry_tilt_is_corrected_onto_the_ramp(tmp_path):
    # Image planes tilted by 15 degrees about x: slices drift along the column direction.
    angle = np.radians(15)
    orientation = (1.0, 0.0, 0.0, 0.0, np.cos(angle), -np.sin(angle))
    positions = [
        np.array([-20.0, -30.0, 0.0]) + k * np.array([0.0, 0.0, 3.0]) for k in range(8)
    ]  # stacked straight up: in the tilted frame that is normal motion plus drift
    hu = ramp_slices(positions, orientation, 40, 30, (1.0, 1.0))
    geometry = dict(positions=positions, orientation=orientation, pixel_spacing=(1.0, 1.0))
    write_ct_series(tmp_path / "ramp", hu, **geometry)
    write_ct_series(tmp_path / "flat", np.full_like(hu, 1000), **geometry)
    volume = read_volume(tmp_path / "ramp")
    assert any("gantry tilt of 15.0 degrees" in w for w in volume.warnings)
    assert volume.shape[1] > 40  # widened to hold the shifted slices
    covered = read_volume(tmp_path / "flat").hu == 1000
    _assert_matches_ramp(volume, tolerance=1.0, covered=covered)


def test_uneven_spacing_is_resampled_onto_the_ramp(tmp_path):
    gaps = [2.0, 2.0, 2.0, 5.0, 5.0, 5.0]
    positions = slice_positions((0.0, 0.0, 0.0), AXIAL, None, 7, gaps=gaps)
    hu = ramp_slices(positions, AXIAL, 10, 10, (1.0, 1.0))
    write_ct_series(tmp_path, hu, positions=positions, pixel_spacing=(1.0, 1.0))
    volume = read_volume(tmp_path)
    assert any("uneven slice spacing" in w for w in volume.warnings)
    assert volume.spacing_mm[0] == pytest.approx(2.0)
    assert volume.shape[0] == 11  # 21 mm / 2 mm + 1
    _assert_matches_ramp(volume, tolerance=1.0, margin=0)


def test_uneven_spacing_with_consecutive_numbers_is_not_a_missing_slice(tmp_path):
    gaps = [2.5, 2.5, 5.0, 2.5]  # 5.0 is twice 2.5, but instance numbers do not skip
    positions = slice_positions((0.0, 0.0, 0.0), AXIAL, None, 5, gaps=gaps)
    write_ct_series(tmp_path, random_hu((5, 4, 4)), positions=positions)
    assert read_volume(tmp_path).spacing_mm[0] == pytest.approx(2.5)


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless])
def test_compressed_series_are_decoded(tmp_path, syntax):
    hu = random_hu((3, 64, 64))
    for path in write_ct_series(tmp_path, hu):
        ds = pydicom.dcmread(path)
        ds.compress(syntax)
        ds.save_as(path)
    assert pydicom.dcmread(tmp_path / "slice000.dcm").file_meta.TransferSyntaxUID == syntax
    np.testing.assert_array_equal(read_volume(tmp_path).hu, hu)


def test_resample_to_target_spacing(tmp_path):
    positions = slice_positions((0.0, 0.0, 0.0), AXIAL, 4.0, 6)
    hu = ramp_slices(positions, AXIAL, 20, 20, (1.0, 1.0))
    write_ct_series(tmp_path, hu, positions=positions, pixel_spacing=(1.0, 1.0))
    volume = read_volume(tmp_path, spacing_mm=(2.0, 2.0, 2.0))
    assert volume.shape == (12, 10, 10)
    assert volume.spacing_mm == (2.0, 2.0, 2.0)
    inner = volume.replace(hu=volume.hu[:-2, :-1, :-1])  # the last samples lie past the source
    _assert_matches_ramp(inner, tolerance=1.0, margin=0)


def test_patient_key_follows_patient_id_and_salt(tmp_path):
    write_ct_series(tmp_path / "a", random_hu((2, 4, 4)), tags={"PatientID": "P1"})
    write_ct_series(tmp_path / "b", random_hu((2, 4, 4)), tags={"PatientID": "P1"})
    write_ct_series(tmp_path / "c", random_hu((2, 4, 4)), tags={"PatientID": "P2"})
    a, b, c = (read_volume(tmp_path / n, salt="s1") for n in "abc")
    assert a.patient_key == b.patient_key != c.patient_key
    assert a.volume_id != b.volume_id
    assert read_volume(tmp_path / "a", salt="s2").patient_key != a.patient_key


@pytest.mark.parametrize(
    "series, damage, expect",
    [
        ("covid-ct-md-P001", "stray", "bytes after it were never decoded"),  # JPEG Lossless, process 14
        ("covid-ct-md-P001", "cut", "cut short"),
        ("lungx-ct004", "stray", "does not lead to the next tile-part"),  # JPEG 2000
        ("lungx-ct004", "cut", "cut short"),
    ],
)
def test_a_damaged_compressed_slice_is_an_error_not_wrong_pixels(shared_ct, tmp_path, series, damage, expect):
    """Issue 30 item 8: a stray end marker inside a JPEG Lossless frame decoded without an error, about half
    the slice wrong (up to 2,088 HU); the frame's structure is now checked before it is decoded."""
    from pydicom.encaps import encapsulate, generate_frames

    files = sorted((shared_ct / series).glob("*.dcm"))[:4]
    for k, source in enumerate(files):
        ds = pydicom.dcmread(source)
        if k == 2:
            frame = next(generate_frames(ds.PixelData, number_of_frames=1))
            middle = len(frame) // 2
            frame = frame[:middle] + b"\xff\xd9" + frame[middle:] if damage == "stray" else frame[:middle]
            ds.PixelData = encapsulate([frame])
        ds.save_as(tmp_path / source.name)
    with pytest.raises(InputError, match=f"{files[2].name}: corrupt compressed pixel data .*{expect}"):
        read_volume(tmp_path)
