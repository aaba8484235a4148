"""Reading and writing single-file volumes: NIfTI, MetaImage and NRRD."""

from __future__ import annotations

import hashlib
import os
import pathlib
import tempfile

import numpy as np
import SimpleITK as sitk

from cgan_ct.errors import VolumeError
from cgan_ct.io.pseudonym import pseudonym
from cgan_ct.io.sitk_bridge import geometry_from_sitk, to_sitk
from cgan_ct.io.volume import AcquisitionInfo, Volume, hu_to_int16, to_canonical

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


def read_volume_file(path: pathlib.Path, salt: str | None = None) -> Volume:
    """Reads a NIfTI / MetaImage / NRRD file of HU values into a canonical Volume.

    The file's voxel values are taken as HU (after any scaling the format
    stores). Such files carry no patient identity, so the volume id and the
    patient key are both derived from the file content.
    """
    fmt = volume_format(path)
    if fmt is None:
        raise VolumeError(path, "not a supported volume file (.nii, .nii.gz, .mha, .mhd, .nrrd, .nhdr)")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else "unreadable"
        raise VolumeError(path, f"cannot read {fmt} file ({first_line})") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(
            path,
            f"expected a 3-D single-channel volume, got {image.GetDimension()}-D with "
            f"{image.GetNumberOfComponentsPerPixel()} component(s)",
        )
    hu, warnings = hu_to_int16(sitk.GetArrayViewFromImage(image), str(path))
    spacing, origin, direction = geometry_from_sitk(image)
    digest = content_digest(path)
    volume = Volume(
        hu=np.array(hu, dtype=np.int16, copy=True),
        spacing_mm=spacing,
        origin_mm=origin,
        direction=direction,
        volume_id=pseudonym("vol", "file:" + digest, salt),
        patient_key=pseudonym("pat", "file:" + digest, salt),
        acquisition=AcquisitionInfo(source_format=fmt),
        warnings=warnings,
    )
    return to_canonical(volume)


def write_nifti(volume: Volume, path: str | os.PathLike, overwrite: bool = False) -> pathlib.Path:
    """Writes ``volume`` as NIfTI (.nii or .nii.gz) atomically.

    The file appears complete or not at all: it is written under a temporary
    name in the same folder and renamed. An existing file is kept unless
    ``overwrite`` is true. Only voxels and geometry are written.
    """
    path = pathlib.Path(path)
    if volume_format(path) != "NIfTI":
        raise VolumeError(path, "a NIfTI path must end in .nii or .nii.gz")
    if path.exists() and not overwrite:
        raise VolumeError(path, "already exists; not overwriting")
    if not path.parent.is_dir():
        raise VolumeError(path.parent, "output folder does not exist")
    suffix = ".nii.gz" if path.name.lower().endswith(".nii.gz") else ".nii"
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        sitk.WriteImage(to_sitk(volume), tmp_name, useCompression=suffix == ".nii.gz")
        os.replace(tmp_name, path)
    except BaseException:
        pathlib.Path(tmp_name).unlink(missing_ok=True)
        raise
    return path
