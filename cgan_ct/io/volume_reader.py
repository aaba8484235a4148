"""``read_volume``: one entry point for every CT input the project accepts."""

from __future__ import annotations

import os
import pathlib

from cgan_ct.errors import InputError
from cgan_ct.io.dicom_reader import read_dicom_series
from cgan_ct.io.image_files import NONFINITE_CHOICES, read_volume_file
from cgan_ct.io.sitk_bridge import resample
from cgan_ct.io.volume import Volume


def _as_spacing(spacing_mm) -> tuple[float, float, float] | None:
    if spacing_mm is None:
        return None
    values = (float(spacing_mm),) * 3 if isinstance(spacing_mm, (int, float)) else tuple(map(float, spacing_mm))
    if len(values) != 3 or min(values) <= 0:
        raise InputError(None, f"spacing_mm must be one or three positive numbers (z, y, x), got {spacing_mm}")
    return values


def read_volume(
    path: str | os.PathLike,
    series: str | None = None,
    spacing_mm: float | tuple[float, float, float] | None = None,
    salt: str | None = None,
    nonfinite: str = "error",
) -> Volume:
    """Reads a CT volume in HU from a DICOM folder or a volume file.

    Args:
      path: a folder holding a DICOM series (searched recursively), or a
        .nii / .nii.gz / .mha / .mhd / .nrrd / .nhdr file of HU values.
      series: which series to read when the folder holds several
        (SeriesNumber, SeriesInstanceUID or the pseudonymous volume id that
        the error listing the series shows).
      spacing_mm: resample to this spacing, one value or (z, y, x) in mm
        (linear interpolation over the same extent). Default: native.
      salt: secret key of the pseudonymous volume id and patient key; default
        $CGAN_CT_SALT, else the user's own secret (see cgan_ct.io.pseudonym).
      nonfinite: NaN / infinite voxels of a volume file: "error" (default)
        or "air" (set to -1024 HU, with a warning).

    Returns:
      A Volume in the canonical orientation (see cgan_ct.io.volume). Tilted or
      unevenly spaced DICOM series come back resampled onto a regular grid,
      and values below -1024 HU set to air, each with a note in
      ``Volume.warnings``.

    Raises:
      InputError: the path does not exist, or cannot be read as CT; the
        message names the file and the problem.
    """
    target = _as_spacing(spacing_mm)
    path = pathlib.Path(path)
    check_exists(path)
    if path.is_dir():
        if nonfinite not in NONFINITE_CHOICES:  # checked here too: DICOM pixels are integers, never NaN
            raise ValueError(f"nonfinite must be one of {NONFINITE_CHOICES}, got {nonfinite!r}")
        volume = read_dicom_series(path, series=series, salt=salt)
    else:
        if series is not None:
            raise InputError(path, "series= applies to DICOM folders, not to volume files")
        volume = read_volume_file(path, salt=salt, nonfinite=nonfinite)
    if target is not None and tuple(volume.spacing_mm) != target:
        volume = resample(volume, target, source=path)
    return volume


def check_exists(path: pathlib.Path) -> None:
    """A missing path, and one that cannot be reached or read, each with its real cause."""
    try:
        path.stat()
    except FileNotFoundError:
        raise InputError(path, "no such file or folder") from None
    except OSError as exc:
        raise InputError(path, f"cannot be reached ({exc.strerror or type(exc).__name__})") from None
    if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
        raise InputError(path, "permission denied: cannot be read")
