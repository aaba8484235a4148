"""Writes small synthetic CT series with pydicom, for tests of the reader."""

from __future__ import annotations

import pathlib

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def ramp_hu(points_lps: np.ndarray) -> np.ndarray:
    """A linear HU field of LPS position: linear interpolation reproduces it exactly."""
    return 2.0 * points_lps[..., 0] - 3.0 * points_lps[..., 1] + 5.0 * points_lps[..., 2] - 200.0


def slice_positions(origin, orientation, spacing_z, count, drift=(0.0, 0.0, 0.0), gaps=None):
    """IPPs of ``count`` slices along the normal of ``orientation``, plus ``drift`` per mm (tilt)."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    normal = np.cross(row, col)
    along = np.concatenate([[0.0], np.cumsum(gaps)]) if gaps is not None else np.arange(count) * spacing_z
    return [np.asarray(origin, float) + s * normal + s * np.asarray(drift, float) for s in along]


def ramp_slices(positions, orientation, rows, cols, pixel_spacing):
    """HU of the ramp field at every pixel of every slice: [N, rows, cols]."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    jj, ii = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    out = []
    for p in positions:
        pts = p + (jj[..., None] * pixel_spacing[0]) * col + (ii[..., None] * pixel_spacing[1]) * row
        out.append(ramp_hu(pts))
    return np.rint(np.stack(out)).astype(np.int16)


def write_ct_series(
    folder,
    hu: np.ndarray,
    pixel_spacing=(0.8, 0.8),
    orientation=AXIAL,
    positions=None,
    spacing_z=2.5,
    origin=(-100.0, -120.0, 50.0),
    instance_numbers=None,
    names=None,
    slope=1.0,
    intercept=-1024.0,
    tags=None,
    per_slice_tags=None,
    series_uid=None,
) -> list[pathlib.Path]:
    """Writes ``hu`` [N, rows, cols] as a CT series, one file per slice.

    Stored values are (hu - intercept) / slope as int16. ``tags`` apply to every
    slice, ``per_slice_tags[i]`` to slice i only (in the order of ``hu``).
    """
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n = hu.shape[0]
    if positions is None:
        positions = slice_positions(origin, orientation, spacing_z, n)
    series_uid = series_uid or generate_uid()
    study_uid, frame_uid = generate_uid(), generate_uid()
    paths = []
    for i in range(n):
        ds = Dataset()
        ds.SOPClassUID = CT_IMAGE_STORAGE
        ds.SOPInstanceUID = generate_uid()
        ds.Modality = "CT"
        ds.PatientName = "Test^Patient"
        ds.PatientID = "TEST-0001"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.SeriesNumber = 3
        ds.SeriesDescription = "synthetic"
        ds.InstanceNumber = i + 1 if instance_numbers is None else instance_numbers[i]
        ds.ImagePositionPatient = [float(v) for v in positions[i]]
        ds.ImageOrientationPatient = list(orientation)
        ds.PixelSpacing = list(pixel_spacing)
        ds.SliceThickness = spacing_z
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[2]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        stored = np.rint((hu[i].astype(np.float64) - intercept) / slope).astype(np.int16)
        ds.PixelData = stored.tobytes()
        for key, value in {**(tags or {}), **((per_slice_tags or {}).get(i, {}))}.items():
            setattr(ds, key, value)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / (names[i] if names else f"slice{i:03d}.dcm")
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def random_hu(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1024, 2000, size=shape).astype(np.int16)
