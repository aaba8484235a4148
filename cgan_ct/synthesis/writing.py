"""Synthetic volumes drawn from a cascade and written to a folder, each complete or not at all.

Volume i is drawn from ``seed + i`` and written to ``synthetic_<i>/`` (``volume.nii.gz``
and/or a DICOM series ``dicom/`` marked as synthetic) by way of a hidden
``.tmp-synthetic_<i>/`` renamed into place when complete. ``synthesis.json``
records the cascade, the slices and, per volume written so far, its folder,
seed and seconds. Never prints: the caller reports progress through callbacks.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from collections.abc import Callable, Iterable

from cgan_ct.constants import VOLUME_FORMATS
from cgan_ct.errors import VolumeError
from cgan_ct.io.dicom_writer import write_dicom_series
from cgan_ct.io.json_files import write_json_atomic
from cgan_ct.io.volume_files import write_nifti

FORMATS = VOLUME_FORMATS
RECORD_FILE = "synthesis.json"
NIFTI_FILE = "volume.nii.gz"
DICOM_FOLDER = "dicom"
DICOM_DESCRIPTION = "cgan-ct synthetic CT"


@dataclasses.dataclass(frozen=True)
class WrittenVolume:
    """One synthetic volume on disk: its folder, its seed, and the seconds drawing it took (writing not counted)."""

    folder: pathlib.Path
    seed: int
    seconds: float


def volume_folder(output_dir: str | os.PathLike, index: int) -> pathlib.Path:
    """Where volume ``index`` is written: ``output_dir/synthetic_<index, 3 digits>``."""
    return pathlib.Path(output_dir) / f"synthetic_{index:03d}"


def write_synthetic_volumes(
    cascade,
    output_dir: str | os.PathLike,
    count: int = 1,
    seed: int = 0,
    slices: int | None = None,
    formats: Iterable[str] = FORMATS,
    overlap: float = 0.25,
    batch_size: int = 16,
    progress: Callable[[int], Callable[[int, int, int], None] | None] | None = None,
    on_volume: Callable[[pathlib.Path, float], None] | None = None,
) -> list[WrittenVolume]:
    """Draws ``count`` volumes from ``cascade`` (a ``Cascade``) into ``output_dir``; returns them in order.

    Args:
      cascade: the cascade to draw from (``cgan_ct.synthesis.synthesis.Cascade``).
      output_dir: made if absent. A ``synthetic_<i>`` folder there already is
        refused (VolumeError) when volume i is reached; the ones before it stay written.
      count: volumes to draw (at least 1); volume i uses ``seed + i``.
      slices: slices per volume (default: the cascade's ``default_slices``).
      formats: ``nifti`` and/or ``dicom``.
      overlap, batch_size: tiling and prediction batch of the depixelation stages.
      progress: called with volume i before it is drawn; may return the
        callback ``(stage_index, blocks_done, blocks_total)`` for that volume.
      on_volume: called with (folder, seconds) once volume i is in place and recorded.
    """
    formats = {f.strip().lower() for f in formats}
    if not formats or formats - set(FORMATS):
        raise ValueError(f"formats must be nifti and/or dicom, got {sorted(formats)}")
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    out = pathlib.Path(output_dir)
    slices = slices or int(cascade.info.default_slices)
    out.mkdir(parents=True, exist_ok=True)
    record = {"cascade_id": cascade.info.cascade_id, "slices": slices, "volumes": []}
    written = []
    for i in range(count):
        folder = volume_folder(out, i)
        if folder.exists():
            raise VolumeError(folder, "exists; choose another output folder or remove it")
        report = progress(i) if progress else None
        start = time.monotonic()
        volume = cascade.synthesize(seed + i, slices, overlap, batch_size, report)
        seconds = time.monotonic() - start
        tmp = out / f".tmp-{folder.name}"
        tmp.mkdir(exist_ok=True)
        if "nifti" in formats:
            write_nifti(volume, tmp / NIFTI_FILE, overwrite=True)
        if "dicom" in formats:
            write_dicom_series(volume, tmp / DICOM_FOLDER, DICOM_DESCRIPTION, overwrite=True, synthetic=True)
        tmp.rename(folder)
        record["volumes"].append({"folder": folder.name, "seed": seed + i, "seconds": round(seconds, 2)})
        write_json_atomic(out / RECORD_FILE, record)
        written.append(WrittenVolume(folder, seed + i, seconds))
        if on_volume:
            on_volume(folder, seconds)
    return written
