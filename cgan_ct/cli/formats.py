"""``--format``: the files a job writes a volume as, NIfTI and/or a DICOM series (cgan-ct-infer, cgan-ct-synthesize)."""

from __future__ import annotations

import pathlib
from collections.abc import Iterable

from absl import app

from cgan_ct.constants import VOLUME_FORMATS
from cgan_ct.io.dicom_writer import write_dicom_series
from cgan_ct.io.image_files import write_nifti
from cgan_ct.io.volume import Volume

FORMATS = VOLUME_FORMATS


def parse_formats(values: Iterable[str]) -> frozenset[str]:
    """The formats of a ``--format`` list flag; a usage error for none or an unknown one."""
    values = list(values or [])
    formats = frozenset(f.strip().lower() for f in values)
    if not formats or formats - set(FORMATS):
        raise app.UsageError(f"--format takes nifti and/or dicom, got {values}")
    return formats


def output_names(name: str, formats: Iterable[str]) -> dict[str, str]:
    """format -> what ``name`` is written as: ``<name>.nii.gz`` (nifti), the series folder ``<name>_dicom`` (dicom)."""
    names = {"nifti": f"{name}.nii.gz", "dicom": f"{name}_dicom"}
    return {fmt: names[fmt] for fmt in FORMATS if fmt in formats}


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


def write_volume(volume: Volume, folder: pathlib.Path, name: str, formats: Iterable[str]) -> list[pathlib.Path]:
    """``volume`` as ``folder/<name>.nii.gz`` and/or the series ``folder/<name>_dicom/``; the paths written."""
    return [write_volume_as(volume, folder / file, fmt, name) for fmt, file in output_names(name, formats).items()]
