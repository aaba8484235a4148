"""A catalogue of bad (and awkward but valid) CT inputs, built from small synthetic series.

Each case writes one input under a folder and says what every reader must do
with it: ``ok`` (read, with ``check`` holding for the volume) or ``error``
(one InputError whose message holds ``expect``). ``convert`` says what a
conversion of an archive holding it does: "ok" (converted), "skip" (listed as
skipped with its reason) or "same" (ok -> ok, error -> skip).
"""

from __future__ import annotations

import dataclasses
import gzip
import pathlib
import struct
from collections.abc import Callable

import numpy as np
import pydicom
import SimpleITK as sitk

from tests.dicom_factory import AXIAL, random_hu, slice_positions, write_ct_series

SHAPE = (4, 6, 7)
SLOPE_ZERO_HU = np.linspace(-1000, 1000, num=4 * 6 * 7).reshape(SHAPE).round().astype(np.int16)


@dataclasses.dataclass(frozen=True)
class Case:
    name: str
    build: Callable[[pathlib.Path, int], pathlib.Path]  # (folder, seed) -> the input path
    outcome: str  # "ok" or "error"
    expect: str = ""  # part of the error message, or of a warning for "ok"
    convert: str = "same"
    check: Callable | None = None  # check(volume) for "ok"


def _series(folder: pathlib.Path, seed: int, shape=SHAPE, **kwargs) -> pathlib.Path:
    write_ct_series(folder, random_hu(shape, seed), **kwargs)
    return folder


def _edit(folder: pathlib.Path, index: int, **attributes) -> None:
    """Sets DICOM attributes of slice file ``index`` (in name order)."""
    path = sorted(folder.glob("*.dcm"))[index]
    ds = pydicom.dcmread(path)
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.save_as(path, enforce_file_format=True)


def _truncate(folder: pathlib.Path, index: int, size: int | None = None, keep: float | None = None) -> None:
    path = sorted(folder.glob("*.dcm"))[index]
    data = path.read_bytes()
    path.write_bytes(data[: size if size is not None else int(len(data) * keep)])


def _series_then(edit):
    def build(folder, seed):
        _series(folder, seed)
        edit(folder)
        return folder

    return build


def _nifti(name: str, values: np.ndarray, spacing=(0.8, 0.8, 2.5)):
    def build(folder, seed):
        folder.mkdir(parents=True)
        path = folder / name
        image = sitk.GetImageFromArray(values + (seed % 7 if values.dtype.kind == "i" else 0))
        image.SetSpacing(spacing)
        sitk.WriteImage(image, str(path), useCompression=name.endswith(".gz"))
        return path

    return build


def _cut_file(build, keep: float):
    def cut(folder, seed):
        path = build(folder, seed)
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * keep)])
        return path

    return cut


def _pixdim(value: float, compress: bool):
    """A NIfTI whose first voxel size (pixdim[1]) is ``value`` (ITK refuses to write it, so patched)."""

    def build(folder, seed):
        path = _nifti("scan.nii", random_hu(SHAPE, seed))(folder, seed)
        data = bytearray(path.read_bytes())
        struct.pack_into("<f", data, 80, value)
        if compress:
            path.unlink()
            path = folder / "scan.nii.gz"
            path.write_bytes(gzip.compress(bytes(data)))
        else:
            path.write_bytes(bytes(data))
        return path

    return build


def _huge_header(folder, seed, values=None):
    """A NIfTI header claiming 4096^3 voxels over a few bytes of data."""
    path = _nifti("scan.nii", random_hu(SHAPE, seed) if values is None else values)(folder, seed)
    data = bytearray(path.read_bytes())
    struct.pack_into("<4h", data, 40, 3, 4096, 4096, 4096)
    path.write_bytes(bytes(data))
    return path


def _floats(seed, fill=None, where=(1, 2, 3)):
    values = random_hu(SHAPE, seed).astype(np.float32)
    if fill is not None:
        if where is None:
            values[:] = fill
        else:
            values[where] = fill
    return values


def _two_series(folder, seed):
    _series(folder, seed)
    write_ct_series(folder, random_hu(SHAPE, seed + 1), names=[f"other{i}.dcm" for i in range(SHAPE[0])])
    return folder


def _write(content: bytes, name: str):
    def build(folder, seed):
        folder.mkdir(parents=True)
        (folder / name).write_bytes(content)
        return folder / name

    return build


def _other_files(folder: pathlib.Path) -> None:
    """Files beside a series that are plainly not its slices: other names, an empty DICOMDIR."""
    (folder / "LICENSE").write_text("CC BY 4.0")
    (folder / "notes.txt").write_text("")
    (folder / "DICOMDIR").write_bytes(b"")
    (folder / "thumbnail.dcm").write_bytes(b"\x00" * 64)


def _garbage_slice(folder):
    (folder / "slice999.dcm").write_bytes(b"\x00" * 128 + b"DICM" + b"\xff\xfe\x12" * 40)


def _mpeg2(folder):
    for path in sorted(folder.glob("*.dcm")):
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
        ds.PixelData = pydicom.encaps.encapsulate([b"\x00\x01" * 16])
        ds.save_as(path, enforce_file_format=True)


def _slope_zero(folder, seed):
    """A NIfTI of raw HU whose header says scl_slope 0, scl_inter -1024: the standard applies no scaling."""
    path = _nifti("scan.nii", SLOPE_ZERO_HU)(folder, 0)
    data = bytearray(path.read_bytes())
    struct.pack_into("<ff", data, 112, 0.0, -1024.0)
    path.write_bytes(bytes(data))
    return path


def _hu_range(low: int, high: int):
    def check(volume):
        assert (volume.hu.min(), volume.hu.max()) == (low, high), (volume.hu.min(), volume.hu.max())

    return check


def _detached(data_file: str):
    """A MetaImage header (.mhd) whose ElementDataFile is ``data_file`` (relative to its folder, or absolute)."""

    def build(folder, seed):
        path = _nifti("scan.mhd", random_hu(SHAPE, seed))(folder, seed)
        (folder / "outside.raw").write_bytes((folder / "scan.raw").read_bytes())
        text = path.read_text().replace("ElementDataFile = scan.raw", f"ElementDataFile = {data_file}")
        path.write_text(text)
        return path

    return build


def _min_is_air(volume) -> None:
    assert volume.hu.min() == -1024, volume.hu.min()


def _shape(expected):
    def check(volume):
        assert volume.shape == expected, volume.shape

    return check


def _below_air_nifti(folder, seed):
    values = random_hu(SHAPE, seed)
    values[0, :2, :2] = -3024
    return _nifti("scan.nii.gz", values)(folder, 0)


def _below_air_dicom(folder, seed):
    hu = random_hu(SHAPE, seed)
    hu[:, 0, 0] = -2048
    write_ct_series(folder, hu)
    return folder


CASES = [
    # --- DICOM series that read
    Case("dicom_good", _series, "ok", check=_shape(SHAPE)),
    Case("dicom_single_slice", lambda f, s: _series(f, s, shape=(1, 6, 7)), "ok", check=_shape((1, 6, 7))),
    Case("dicom_below_air", _below_air_dicom, "ok", "below -1024 HU", check=_min_is_air),
    Case(
        "dicom_padding_value",
        lambda f, s: _series(f, s, tags={"PixelPaddingValue": 0}),  # stored 0 = -1024 HU
        "ok",
        check=_shape(SHAPE),
    ),
    Case(
        "dicom_tilted",
        lambda f, s: _series(f, s, positions=slice_positions((0, 0, 0), AXIAL, 2.5, 4, drift=(0, 0.3, 0))),
        "ok",
        "gantry tilt",
    ),
    Case(
        "dicom_uneven",
        lambda f, s: _series(f, s, positions=slice_positions((0, 0, 0), AXIAL, 2.5, 4, gaps=[2.5, 2.5, 4.0])),
        "ok",
        "uneven slice spacing",
    ),
    Case("dicom_two_series", _two_series, "error", "2 series found", convert="ok"),
    # --- DICOM series with a file that cannot be read
    Case("dicom_last_slice_truncated_header", _series_then(lambda f: _truncate(f, -1, size=400)), "error", "truncated"),
    Case("dicom_first_slice_truncated_header", _series_then(lambda f: _truncate(f, 0, size=400)), "error", "truncated"),
    Case("dicom_slice_cut_in_header", _series_then(lambda f: _truncate(f, 1, size=1000)), "error", "truncated"),
    # a slice cut before the DICM marker (or empty) is no DICOM file at all: still one of the series' slices
    Case("dicom_first_slice_empty", _series_then(lambda f: _truncate(f, 0, size=0)), "error", "(an empty file)"),
    Case("dicom_last_slice_cut_short", _series_then(lambda f: _truncate(f, -1, size=100)), "error", "cut at 100 bytes"),
    Case("dicom_with_other_files", _series_then(_other_files), "ok", check=_shape(SHAPE)),
    Case(
        "dicom_last_slice_cut_in_pixels",
        lambda f, s: (_series(f, s, shape=(4, 40, 40)), _truncate(f, -1, keep=0.9), f)[2],  # pixels > defer size
        "error",
        "truncated DICOM file: its pixel data needs",
    ),
    Case(
        "dicom_slice_cut_in_deferred_pixels",
        lambda f, s: (_series(f, s, shape=(3, 64, 64)), _truncate(f, 1, keep=0.5), f)[2],  # read past, not loaded
        "error",
        "truncated DICOM file: its pixel data needs",
    ),
    Case("dicom_garbage_slice", _series_then(_garbage_slice), "error", "corrupt"),
    Case("dicom_mpeg2", _series_then(_mpeg2), "error", "cannot decode pixel data"),
    # --- DICOM headers that make no sense
    Case("dicom_slope_zero", _series_then(lambda f: _edit(f, 2, RescaleSlope=0)), "error", "RescaleSlope is 0"),
    Case(
        "dicom_huge_rows",
        _series_then(lambda f: _edit(f, 1, Rows=65535, Columns=65535)),
        "error",
        "not an image size",
    ),
    Case(
        "dicom_rows_too_many",
        _series_then(lambda f: [_edit(f, i, Rows=12) for i in range(SHAPE[0])]),
        "error",
        "the file is truncated or its header's image size is wrong",
    ),
    Case("dicom_rows_zero", _series_then(lambda f: _edit(f, 0, Rows=0)), "error", "Rows is 0"),
    Case(
        "dicom_nan_position",
        _series_then(lambda f: _edit(f, 1, ImagePositionPatient=["nan", "0", "5"])),
        "error",
        "ImagePositionPatient must be 3 finite numbers",
    ),
    Case(
        "dicom_zero_orientation",
        _series_then(lambda f: [_edit(f, i, ImageOrientationPatient=[0] * 6) for i in range(SHAPE[0])]),
        "error",
        "is not two perpendicular unit vectors",
    ),
    Case(
        "dicom_skew_orientation",
        _series_then(lambda f: [_edit(f, i, ImageOrientationPatient=[1, 0, 0, 0.5, 0.866, 0]) for i in range(4)]),
        "error",
        "is not two perpendicular unit vectors",
    ),
    Case(
        "dicom_negative_pixel_spacing",
        _series_then(lambda f: [_edit(f, i, PixelSpacing=[-0.8, 0.8]) for i in range(SHAPE[0])]),
        "error",
        "PixelSpacing must be positive",
    ),
    Case(
        "dicom_zero_pixel_spacing",
        _series_then(lambda f: [_edit(f, i, PixelSpacing=[0, 0]) for i in range(SHAPE[0])]),
        "error",
        "PixelSpacing must be positive",
    ),
    Case(
        "dicom_pixel_spacing_one_value",
        _series_then(lambda f: [_edit(f, i, PixelSpacing=[0.8]) for i in range(SHAPE[0])]),
        "error",
        "PixelSpacing must be 2 finite numbers",
    ),
    Case(
        "dicom_missing_position",
        _series_then(lambda f: delattr_slice(f, 2, "ImagePositionPatient")),
        "error",
        "missing ImagePositionPatient",
    ),
    Case(
        "dicom_missing_pixel_spacing",
        _series_then(lambda f: delattr_slice(f, 0, "PixelSpacing")),
        "error",
        "missing PixelSpacing",
    ),
    Case(
        "dicom_text_intercept",
        _series_then(lambda f: _edit(f, 1, RescaleIntercept="inf")),
        "error",
        "RescaleIntercept must be 1 finite numbers",
    ),
    Case("dicom_modality_mr", lambda f, s: _series(f, s, tags={"Modality": "MR"}), "error", "not CT"),
    Case("dicom_multiframe", lambda f, s: _series(f, s, tags={"NumberOfFrames": 2}), "error", "multi-frame"),
    Case(
        "dicom_duplicate_positions",
        lambda f, s: _series(f, s, positions=[np.zeros(3)] * 2 + slice_positions((0, 0, 5), AXIAL, 2.5, 2)),
        "error",
        "two slices at the same position",
    ),
    Case(
        "dicom_missing_slice",
        lambda f, s: _series(f, s, positions=_without_third(), instance_numbers=[1, 2, 4, 5]),
        "error",
        "missing slice",
    ),
    Case(
        "dicom_inconsistent_spacing",
        lambda f, s: _series(f, s, per_slice_tags={2: {"PixelSpacing": [0.9, 0.9]}}),
        "error",
        "pixel spacing",
    ),
    Case(
        "dicom_inconsistent_orientation",
        lambda f, s: _series(f, s, per_slice_tags={1: {"ImageOrientationPatient": [1, 0, 0, 0, 0, -1]}}),
        "error",
        "orientation differs",
    ),
    # --- folders and paths
    Case("empty_folder", lambda f, s: (f.mkdir(parents=True), f)[1], "error", "no DICOM image files", "skip"),
    Case("folder_of_text", _write(b"hello", "notes.txt"), "error", "not a supported volume file", "skip"),
    Case("missing_path", lambda f, s: f / "nope", "error", "no such file or folder", "skip"),
    Case("empty_nifti_file", _write(b"", "scan.nii.gz"), "error", "NIfTI"),
    # --- volume files that read
    Case("nifti_good", _nifti("scan.nii.gz", random_hu(SHAPE, 3)), "ok", check=_shape(SHAPE)),
    Case("nifti_plain_good", _nifti("scan.nii", random_hu(SHAPE, 4)), "ok", check=_shape(SHAPE)),
    Case("nifti_float_good", lambda f, s: _nifti("scan.nii.gz", _floats(s))(f, s), "ok", check=_shape(SHAPE)),
    Case("nifti_below_air", _below_air_nifti, "ok", "below -1024 HU", check=_min_is_air),
    Case("metaimage_good", _nifti("scan.mha", random_hu(SHAPE, 5)), "ok", check=_shape(SHAPE)),
    Case("metaimage_detached_good", _detached("scan.raw"), "ok", check=_shape(SHAPE)),
    Case("metaimage_data_file_above", _detached("../scan.raw"), "error", "lies outside the header's folder"),
    Case("metaimage_data_file_absolute", _detached("/etc/hostname"), "error", "lies outside the header's folder"),
    Case("nifti_slope_zero", _slope_zero, "ok", "no scaling applied", check=_hu_range(-1000, 1000)),
    Case("nrrd_good", _nifti("scan.nrrd", random_hu(SHAPE, 6)), "ok", check=_shape(SHAPE)),
    # --- volume files that do not
    Case(
        "nifti_gz_truncated",
        _cut_file(_nifti("scan.nii.gz", random_hu((40, 30, 20), 7)), 0.66),
        "error",
        "gzip stream ends early",
    ),
    Case(
        "nifti_truncated",
        _cut_file(_nifti("scan.nii", random_hu(SHAPE, 8)), 0.66),
        "error",
        "truncated NIfTI file: its header needs",
    ),
    Case("nifti_huge_header", _huge_header, "error", "truncated NIfTI file: its header needs"),
    Case(  # float data: the finite-value scan must not size anything by the header's claim
        "nifti_float_huge_header",
        lambda f, s: _huge_header(f, s, _floats(s)),
        "error",
        "truncated NIfTI file: its header needs",
    ),
    Case("nifti_not_gzip", _write(b"this is not gzip at all", "scan.nii.gz"), "error", "not a valid gzip stream"),
    Case("nifti_nan_voxel", lambda f, s: _nifti("scan.nii.gz", _floats(s, np.nan))(f, s), "error", "NaN or infinite"),
    Case(
        "nifti_all_nan",
        lambda f, s: _nifti("scan.nii.gz", _floats(s, np.nan, None))(f, s),
        "error",
        "168 of 168 voxels are NaN",
    ),
    Case("nifti_inf_voxel", lambda f, s: _nifti("scan.nii", _floats(s, np.inf))(f, s), "error", "NaN or infinite"),
    Case("nifti_pixdim_zero", _pixdim(0.0, compress=True), "error", "pixdim"),
    Case("nifti_pixdim_negative", _pixdim(-0.8, compress=False), "error", "pixdim"),
    Case(
        "nifti_4d",
        _nifti("scan.nii.gz", np.zeros((2, 3, 4, 5), np.int16), spacing=(1, 1, 1, 1)),
        "error",
        "expected a 3-D single-channel volume",
    ),
    Case("metaimage_nan", lambda f, s: _nifti("scan.mha", _floats(s, np.nan))(f, s), "error", "NaN or infinite"),
    Case(
        "metaimage_truncated",
        _cut_file(_nifti("scan.mha", random_hu((20, 30, 40), 9)), 0.66),
        "error",
        "cannot read MetaImage file",
    ),
    Case(
        "nrrd_truncated",
        _cut_file(_nifti("scan.nrrd", random_hu((20, 30, 40), 10)), 0.66),
        "error",
        "cannot read NRRD file",
    ),
]


def _without_third():
    positions = slice_positions((0, 0, 0), AXIAL, 2.5, 5)
    return positions[:2] + positions[3:]


def delattr_slice(folder: pathlib.Path, index: int, key: str) -> None:
    path = sorted(folder.glob("*.dcm"))[index]
    ds = pydicom.dcmread(path)
    delattr(ds, key)
    ds.save_as(path, enforce_file_format=True)


def build_case(case: Case, root: pathlib.Path, seed: int) -> pathlib.Path:
    """Writes ``case``'s input under ``root / case.name``; returns the path to give the readers."""
    return case.build(root / case.name, 100 + seed)


def convert_outcome(case: Case) -> str:
    if case.convert != "same":
        return case.convert
    return "ok" if case.outcome == "ok" else "skip"
