"""Reading and writing single-file volumes: NIfTI, MetaImage and NRRD."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import sys
import tempfile

import numpy as np
import SimpleITK as sitk

from cgan_ct.constants import AIR_HU
from cgan_ct.errors import InputError
from cgan_ct.io.atomic_files import TMP_PREFIX, discard, failure_reason, move_into_place, sync_path, write_failed
from cgan_ct.io.nifti_check import check_nifti
from cgan_ct.io.output_paths import check_output_file
from cgan_ct.io.pseudonym import pseudonym
from cgan_ct.io.sitk_bridge import geometry_from_sitk, to_sitk
from cgan_ct.io.volume import AcquisitionInfo, Volume, below_air_to_air, hu_to_int16, to_canonical

# Suffix -> format name. Multi-part suffixes first.
VOLUME_SUFFIXES = {
    ".nii.gz": "NIfTI",
    ".nii": "NIfTI",
    ".mha": "MetaImage",
    ".mhd": "MetaImage",
    ".nrrd": "NRRD",
    ".nhdr": "NRRD",
}
_HASH_CHUNK = 1 << 22
NONFINITE_CHOICES = ("error", "air")


def _finite_hu(
    values: np.ndarray, path: pathlib.Path, nonfinite: str, bad: np.ndarray | None = None
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Refuses NaN / Inf voxels, or (``nonfinite="air"``) sets them to air with a warning.

    ``bad``: where the file held non-finite values that the reader already turned into numbers.
    """
    if bad is None:
        if values.dtype.kind != "f":
            return values, ()
        bad = ~np.isfinite(values)
    count = int(np.count_nonzero(bad))
    if not count:
        return values, ()
    if nonfinite != "air":
        raise InputError(
            path, f"{count} of {values.size} voxels are NaN or infinite (to read them as air: nonfinite='air')"
        )
    values = np.where(bad.reshape(values.shape), np.asarray(AIR_HU, values.dtype), values)
    return values, (f"{count} NaN or infinite voxels set to air (-1024 HU)",)


_DATA_FILE_KEYS = {"elementdatafile": "=", "data file": ":", "datafile": ":"}  # MetaImage, NRRD (two spellings)


def check_data_file_inside(path: pathlib.Path) -> None:
    """A detached header (.mhd, .nhdr) may name its data file anywhere: refuse one outside the header's folder,
    so a header cannot read another file of the machine into a "de-identified" copy or a dataset."""
    try:
        lines = path.read_bytes()[:65536].decode("latin-1").splitlines()
    except OSError as exc:
        raise InputError(path, f"cannot be read ({exc.strerror or type(exc).__name__})") from None
    folder = path.parent.resolve()
    for line in lines:
        key, sep, value = line.partition("=") if "=" in line.split(":")[0] else line.partition(":")
        key, value = key.strip().lower(), value.strip()
        if _DATA_FILE_KEYS.get(key) != sep or not value or value.upper() in ("LOCAL", "LIST"):
            continue
        name = value.split()[0]  # a pattern ("slice%03d.raw 1 10 1") names files in the same place
        target = (folder / name).resolve()
        if pathlib.Path(name).is_absolute() or not target.is_relative_to(folder):
            raise InputError(
                path, f"its data file {name!r} lies outside the header's folder ({folder}); refusing to read it"
            )


def volume_format(path: str | os.PathLike) -> str | None:
    """The format name for a volume file by its suffix, or None."""
    name = os.fspath(path).lower()
    for suffix, fmt in VOLUME_SUFFIXES.items():
        if name.endswith(suffix):
            return fmt
    return None


def content_digest(path: pathlib.Path) -> str:
    """SHA-256 of the file bytes: the file's identity, wherever it is moved."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def _stderr_captured():
    """Captures what C++ code prints on file descriptor 2 (ITK's MetaImage reader explains itself there).

    Yields a list that holds the captured lines once the block is left.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    printed: list[str] = []
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield printed
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            printed += [line.strip() for line in capture.read().decode(errors="replace").splitlines() if line.strip()]


def _itk_reason(exc: RuntimeError) -> str:
    """ITK's message without its source location and object address."""
    lines = [line.strip() for line in str(exc).strip().splitlines()[1:] if line.strip()]
    text = " ".join(line.split("): ", 1)[-1] if line.startswith("ITK ERROR") else line for line in lines)
    return text or "unreadable"


def read_volume_file(
    path: pathlib.Path, salt: str | None = None, patient: str | None = None, nonfinite: str = "error"
) -> Volume:
    """Reads a NIfTI / MetaImage / NRRD file of HU values into a canonical Volume.

    The file's voxel values are taken as HU (after any scaling the format
    stores); values below -1024 HU become air (with a warning). Such files
    carry no patient identity: the volume id is derived from the file content,
    and so is the patient key unless ``patient`` (the patient's id, e.g. from
    a conversion's --patients table) is given.

    Args:
      nonfinite: "error" (default) refuses NaN / infinite voxels; "air" sets
        them to -1024 HU with a warning.
    """
    fmt = volume_format(path)
    if fmt is None:
        raise InputError(path, "not a supported volume file (.nii, .nii.gz, .mha, .mhd, .nrrd, .nhdr)")
    if nonfinite not in NONFINITE_CHOICES:
        raise ValueError(f"nonfinite must be one of {NONFINITE_CHOICES}, got {nonfinite!r}")
    nifti = check_nifti(path) if fmt == "NIfTI" else None
    if fmt == "MetaImage" or path.name.lower().endswith(".nhdr"):
        check_data_file_inside(path)
    with _stderr_captured() as printed:
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            image, reason = None, _itk_reason(exc)
    if image is None:
        # ITK's exception can blame errno ("No such file") where its own printed line says what happened.
        raise InputError(path, f"cannot read {fmt} file ({' '.join(printed) or reason})")
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            path,
            f"expected a 3-D single-channel volume, got {image.GetDimension()}-D with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s)",
        )
    values, warnings = sitk.GetArrayViewFromImage(image), ()
    if nifti is not None and nifti.itk_offset:  # the standard: scl_slope 0 (or NaN) means no scaling at all
        values = values.astype(np.float64) - nifti.itk_offset
        warnings = (
            f"NIfTI scl_slope is 0 or not a number: no scaling applied (scl_inter {nifti.itk_offset:g} ignored)",
        )
    values, nonfinite_warnings = _finite_hu(values, path, nonfinite, None if nifti is None else nifti.nonfinite)
    warnings += nonfinite_warnings
    hu, clip_warnings = hu_to_int16(values, str(path))
    hu = np.array(hu, dtype=np.int16, copy=True)
    warnings += clip_warnings + below_air_to_air(hu) + tuple(f"ITK: {line}" for line in printed)
    spacing, origin, direction = geometry_from_sitk(image)
    if not (np.isfinite(spacing).all() and min(spacing) > 0 and np.isfinite(origin).all()):
        raise InputError(path, f"voxel spacing {spacing} / origin {origin} are not finite positive values")
    digest = content_digest(path)
    volume = Volume(
        hu=hu,
        spacing_mm=spacing,
        origin_mm=origin,
        direction=direction,
        volume_id=pseudonym("vol", "file:" + digest, salt),
        patient_key=file_patient_key(digest, patient, salt),
        acquisition=AcquisitionInfo(source_format=fmt),
        warnings=warnings,
    )
    return to_canonical(volume)


def file_patient_key(digest: str, patient: str | None, salt: str | None) -> str:
    """A volume file's patient key: from the patient's id where known, else from the file content.

    Keyed like a DICOM PatientID, so a NIfTI and a DICOM series of the same
    patient id fall into the same split.
    """
    return pseudonym("pat", "id:" + patient if patient else "file:" + digest, salt)


def check_nifti_path(path: pathlib.Path, overwrite: bool = False) -> None:
    """``path`` is a NIfTI name (.nii / .nii.gz) that can be written."""
    if volume_format(path) != "NIfTI":
        raise InputError(path, "a NIfTI path must end in .nii or .nii.gz")
    check_output_file(path, overwrite)


def write_nifti(volume: Volume, path: str | os.PathLike, overwrite: bool = False) -> pathlib.Path:
    """Writes ``volume`` as NIfTI (.nii or .nii.gz) atomically, mode 0666 less the user's umask.

    The file appears complete or not at all: it is written under a temporary
    name in the same folder, read back through (header, length, gzip stream)
    and renamed. A failed write (a full disk) raises InputError naming
    ``path``. An existing file is kept unless ``overwrite`` is true. Only
    voxels and geometry are written.
    """
    path = pathlib.Path(path)
    check_nifti_path(path, overwrite)
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else ".nii"
    fd, tmp_name = tempfile.mkstemp(prefix=TMP_PREFIX, suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        sitk.WriteImage(to_sitk(volume), tmp_name, useCompression=suffix == ".nii.gz")
        _check_written(pathlib.Path(tmp_name), path)
        sync_path(tmp_name)
        move_into_place(tmp_name, path)
    except (OSError, RuntimeError) as exc:
        discard(tmp_name)
        raise write_failed(path, failure_reason(exc)) from None
    except BaseException:
        discard(tmp_name)
        raise
    return path


def _check_written(tmp: pathlib.Path, path: pathlib.Path) -> None:
    """ITK reports a full disk only on stderr ("NWAD: wrote only 0 of N bytes") and returns: read the file through."""
    try:
        check_nifti(tmp)
    except InputError:
        raise write_failed(path, "the file came out incomplete; a full disk or a file-size limit?") from None
