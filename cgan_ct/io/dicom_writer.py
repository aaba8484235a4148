"""Writing a Volume as a derived, de-identified CT Image Storage series.

Only the voxels, the geometry, the pseudonymous patient key and the
non-identifying acquisition fields are written; every UID is new. Nothing
else from the source reaches the files.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import shutil
import uuid

import numpy as np
import pydicom
from pydicom.datadict import keyword_for_tag
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import DSfloat

from cgan_ct.constants import PACKAGE
from cgan_ct.errors import InputError
from cgan_ct.io.atomic_files import failure_reason, sync_checked, write_failed
from cgan_ct.io.dicom_reader import CT_IMAGE_STORAGE
from cgan_ct.io.output_paths import check_output_folder
from cgan_ct.io.volume import Volume

_INTERCEPT = -1024
SYNTHETIC_DATA_TAG = 0x0008001C
# What Debian 12's dciodvfy says of (0008,001C), which it predates: the one Error a synthetic file may carry.
DCIODVFY_UNKNOWN_SYNTHETIC = "(0x0008,0x001c)"
_ORTHONORMAL_TOLERANCE = 1e-4


def _new_uid() -> str:
    # 2.25.<random UUID>: no organisation root, nothing derived from the source.
    return generate_uid(prefix=None)


def _ds(value: float) -> DSfloat:
    """A decimal string with as many digits as DICOM's 16 characters allow."""
    return DSfloat(float(value), auto_format=True)


def _check_writable(volume: Volume, folder: pathlib.Path, overwrite: bool) -> None:
    direction = np.asarray(volume.direction, float)
    if not np.allclose(direction.T @ direction, np.eye(3), atol=_ORTHONORMAL_TOLERANCE):
        raise InputError(folder, "volume direction is not orthonormal; resample before writing DICOM")
    check_output_folder(folder, overwrite)


def _series_template(
    volume: Volume, description: str, synthetic: bool = False, derivation: str | None = None, made: bool = False
) -> Dataset:
    """Attributes shared by every slice of the new series."""
    ds = Dataset()
    acq = volume.acquisition
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.SOPClassUID = CT_IMAGE_STORAGE
    ds.StudyDate = ""
    ds.StudyTime = ""
    ds.AccessionNumber = ""
    ds.Modality = "CT"
    ds.Manufacturer = acq.manufacturer or ""
    if acq.model:
        ds.ManufacturerModelName = acq.model
    ds.ReferringPhysicianName = ""
    ds.SeriesDescription = description
    ds.DerivationDescription = f"{derivation + '; ' if derivation else ''}written by {PACKAGE}; pseudonymous, new UIDs"
    if made and keyword_for_tag(SYNTHETIC_DATA_TAG) == "SyntheticData":
        ds.SyntheticData = "YES"  # content made by a model or a simulation, not acquired as it stands
    if synthetic:
        # Synthetic Data (0008,001C) = YES, the standard's flag (added in 2021), where pydicom's dictionary
        # has it (pydicom >= 2.2). Older readers do not know it: the dciodvfy of Debian 12's dicom3tools
        # (2022-06) reports it as an unrecognized even-group attribute, its only Error on these files
        # (README, "Synthetic DICOM"). So the older marks stay too: derived image type, derivation, comments.
        if keyword_for_tag(SYNTHETIC_DATA_TAG) == "SyntheticData":
            ds.SyntheticData = "YES"
        ds.DerivationDescription = f"SYNTHETIC: generated from noise by {PACKAGE}; no real patient"
        ds.ImageComments = "SYNTHETIC IMAGE - no real patient was scanned"
    ds.PatientName = ""
    ds.PatientID = volume.patient_key
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.PatientIdentityRemoved = "YES"
    ds.DeidentificationMethod = f"{PACKAGE}: new UIDs, salted pseudonyms, no source attributes"
    ds.SliceThickness = _ds(volume.spacing_mm[0])
    ds.KVP = "" if acq.kvp is None else f"{acq.kvp:g}"
    if acq.kernel:
        ds.ConvolutionKernel = acq.kernel.split("\\")
    ds.PatientPosition = ""
    ds.Laterality = ""  # unknown: dciodvfy requires the element (type 2C)
    ds.StudyInstanceUID = _new_uid()
    ds.SeriesInstanceUID = _new_uid()
    ds.StudyID = ""
    ds.SeriesNumber = 1
    ds.AcquisitionNumber = ""
    ds.FrameOfReferenceUID = _new_uid()
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
    ds.PixelSpacing = [_ds(volume.spacing_mm[1]), _ds(volume.spacing_mm[2])]
    direction = np.asarray(volume.direction, float)
    ds.ImageOrientationPatient = [_ds(v) for v in np.concatenate([direction[:, 2], direction[:, 1]])]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = str(_INTERCEPT)
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "40"
    ds.WindowWidth = "400"
    return ds


def _slice_dataset(template: Dataset, volume: Volume, k: int, stored: np.ndarray) -> Dataset:
    ds = Dataset()
    ds.update(template)
    ds.SOPInstanceUID = _new_uid()
    ds.InstanceNumber = k + 1
    position = volume.index_to_lps((k, 0, 0))
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CT_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def write_dicom_series(
    volume: Volume,
    folder: str | os.PathLike,
    description: str = "cgan-ct volume",
    overwrite: bool = False,
    synthetic: bool = False,
    derivation: str | None = None,
    synthetic_data: bool = False,
) -> pathlib.Path:
    """Writes ``volume`` as a CT Image Storage series, one file per z slice.

    Files are named ``IM00001.dcm``... The series is written into a temporary
    sibling folder and moved into place when complete, so ``folder`` ends up
    holding the whole series or is left as it was: every file is flushed to
    disk and checked complete first, and a failed write (a full disk) raises
    InputError naming ``folder``. An existing non-empty
    ``folder`` is refused unless ``overwrite`` is true. ``synthetic`` marks
    the series as generated data of no real patient (derivation description, image comments).
    ``derivation`` says how the series was derived (DerivationDescription: e.g. the model that made it);
    ``synthetic_data`` sets Synthetic Data (0008,001C) YES: content made by a model or a simulation from a
    real scan (``synthetic`` implies it).

    Returns:
      The folder written.
    """
    folder = pathlib.Path(folder)
    _check_writable(volume, folder, overwrite)
    if int(volume.hu.max(initial=0)) > np.iinfo(np.int16).max + _INTERCEPT:
        raise InputError(folder, "HU above 31743 cannot be stored with the -1024 intercept")
    stored = (volume.hu.astype(np.int32) - _INTERCEPT).astype(np.int16)
    template = _series_template(volume, description, synthetic, derivation, synthetic_data)
    stamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
    tmp = folder.parent / f".{folder.name}.tmp-{stamp}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
    except OSError as exc:
        raise InputError(folder, f"cannot be written ({exc.strerror or type(exc).__name__})") from None
    try:
        for k in range(volume.shape[0]):
            ds = _slice_dataset(template, volume, k, stored)
            with open(tmp / f"IM{k + 1:05d}.dcm", "wb") as f:
                pydicom.dcmwrite(f, ds, enforce_file_format=True)
                sync_checked(f, folder)
        _move_into_place(tmp, folder)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_failed(folder, failure_reason(exc)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def _move_into_place(tmp: pathlib.Path, folder: pathlib.Path) -> None:
    """Replaces ``folder`` by ``tmp``; the old content is removed only after."""
    if not folder.exists():
        os.rename(tmp, folder)
        return
    old = folder.parent / f".{folder.name}.old-{uuid.uuid4().hex[:8]}"
    os.rename(folder, old)
    os.rename(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
