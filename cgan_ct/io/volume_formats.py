"""The files a volume is written as, NIfTI and/or a DICOM series (cgan-ct-infer's ``--format``), named one way."""

from __future__ import annotations

import pathlib
from collections.abc import Iterable

from cgan_ct.constants import VOLUME_FORMATS
from cgan_ct.io.dicom_writer import write_dicom_series
from cgan_ct.io.image_files import write_nifti
from cgan_ct.io.volume import Volume


def output_names(name: str, formats: Iterable[str]) -> dict[str, str]:
    """format -> what ``name`` is written as: ``<name>.nii.gz`` (nifti), the series folder ``<name>_dicom`` (dicom)."""
    names = {"nifti": f"{name}.nii.gz", "dicom": f"{name}_dicom"}
    return {fmt: names[fmt] for fmt in VOLUME_FORMATS if fmt in formats}


def write_volume_as(
    volume: Volume,
    path: pathlib.Path,
    fmt: str,
    name: str,
    derivation: str | None = None,
    synthetic_data: bool = False,
) -> pathlib.Path:
    """``volume`` written to ``path`` in format ``fmt`` (a DICOM series described as ``cgan-ct <name>``, with
    ``derivation`` and ``synthetic_data`` as ``write_dicom_series`` takes them)."""
    if fmt == "nifti":
        return write_nifti(volume, path)
    return write_dicom_series(
        volume, path, description=f"cgan-ct {name}", derivation=derivation, synthetic_data=synthetic_data
    )
