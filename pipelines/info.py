"""cgan-ct-info: read CT volumes and print their summary.

  cgan-ct-info PATH [PATH ...] [--series N] [--spacing_mm 1,1,1]
               [--write_dicom DIR] [--write_nifti FILE.nii.gz] [--nonfinite error|air]
               [--salt_file KEY_FILE]

PATH is a folder holding a DICOM series or a .nii/.nii.gz/.mha/.mhd/.nrrd
file. --write_dicom and --write_nifti save a de-identified copy of the (one)
volume read; both locations are checked before either is written. Errors
print one line and exit with status 2.
"""

from __future__ import annotations

import pathlib

from absl import app, flags

import cgan_ct
from cgan_ct.cli import job
from cgan_ct.errors import InputError

_SERIES = flags.DEFINE_string("series", None, "SeriesNumber, SeriesInstanceUID or volume id to read.")
_SPACING = flags.DEFINE_list("spacing_mm", None, "Resample to this spacing: one value or z,y,x in mm.")
job.define_salt_file()  # --salt_file, read by job.salt_from_flags()
_WRITE_DICOM = flags.DEFINE_string("write_dicom", None, "Write the volume as a DICOM series to this folder.")
_WRITE_NIFTI = flags.DEFINE_string("write_nifti", None, "Write the volume as NIfTI to this file.")
_NONFINITE = flags.DEFINE_enum(
    "nonfinite", "error", ["error", "air"], "NaN / infinite voxels of a volume file: refuse, or set them to air."
)


def summarize(path: str, volume: cgan_ct.Volume) -> str:
    """A multi-line, non-identifying summary of ``volume``."""
    import numpy as np  # not at the top: --help and --version stay fast

    acq = volume.acquisition
    hu = volume.hu
    lines = [
        f"{path}",
        f"  format        {acq.source_format}"
        + (f" series {acq.series_number}" if acq.series_number is not None else ""),
        f"  volume id     {volume.volume_id}   patient key {volume.patient_key}",
        f"  shape (z,y,x) {' x '.join(map(str, volume.shape))}",
        f"  spacing mm    {', '.join(f'{s:.4g}' for s in volume.spacing_mm)}",
        f"  origin mm     {', '.join(f'{o:.2f}' for o in volume.origin_mm)} (LPS x, y, z)",
        f"  HU            min {hu.min()}  p50 {int(np.median(hu))}  max {hu.max()}",
    ]
    scanner = ", ".join(
        f"{name} {value}"
        for name, value in (
            ("manufacturer", acq.manufacturer),
            ("model", acq.model),
            ("kernel", acq.kernel),
            ("kVp", acq.kvp),
            ("slice thickness mm", acq.slice_thickness_mm),
        )
        if value is not None
    )
    if scanner:
        lines.append(f"  acquisition   {scanner}")
    lines += [f"  warning       {w}" for w in volume.warnings]
    return "\n".join(lines)


def _spacing() -> tuple[float, ...] | None:
    if not _SPACING.value:
        return None
    try:
        values = tuple(float(v) for v in _SPACING.value)
    except ValueError:
        raise InputError(None, f"--spacing_mm must be numbers, got {','.join(_SPACING.value)}") from None
    return values[0] if len(values) == 1 else values


def main(argv: list[str]) -> None:
    paths = argv[1:]
    if not paths:
        raise app.UsageError("give at least one PATH (a DICOM folder or a volume file)")
    if (_WRITE_DICOM.value or _WRITE_NIFTI.value) and len(paths) != 1:
        raise app.UsageError("--write_dicom / --write_nifti take exactly one PATH")
    # The library is imported here, not at the top: --help and --version stay fast.
    from cgan_ct.io.image_files import check_nifti_path
    from cgan_ct.io.output_paths import check_output_folder

    # Every output location is checked before any is written (and before the slow read).
    if _WRITE_DICOM.value:
        check_output_folder(pathlib.Path(_WRITE_DICOM.value))
    if _WRITE_NIFTI.value:
        check_nifti_path(pathlib.Path(_WRITE_NIFTI.value))
    salt = job.salt_from_flags()
    for path in paths:
        volume = cgan_ct.read_volume(
            path, series=_SERIES.value, spacing_mm=_spacing(), salt=salt, nonfinite=_NONFINITE.value
        )
        print(summarize(path, volume))
        if _WRITE_DICOM.value:
            print(f"  wrote DICOM   {cgan_ct.write_dicom_series(volume, _WRITE_DICOM.value)}")
        if _WRITE_NIFTI.value:
            print(f"  wrote NIfTI   {cgan_ct.write_nifti(volume, _WRITE_NIFTI.value)}")


def run() -> None:
    job.run(main, __name__, positional=True, patients=True)


if __name__ == "__main__":
    run()
