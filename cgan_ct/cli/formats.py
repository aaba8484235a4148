"""``--format``: the formats a job writes a volume as, NIfTI and/or a DICOM series (cgan-ct-infer,
cgan-ct-synthesize); the files themselves are named and written by ``cgan_ct.io.volume_formats``."""

from __future__ import annotations

from collections.abc import Iterable

from absl import app

from cgan_ct.constants import VOLUME_FORMATS


def parse_formats(values: Iterable[str]) -> frozenset[str]:
    """The formats of a ``--format`` list flag; a usage error for none or an unknown one."""
    values = list(values or [])
    formats = frozenset(f.strip().lower() for f in values)
    if not formats or formats - set(VOLUME_FORMATS):
        raise app.UsageError(f"--format takes nifti and/or dicom, got {values}")
    return formats
