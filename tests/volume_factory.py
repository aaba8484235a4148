"""Volumes the tests build: a smooth structured HU volume, a NIfTI file of random HU, and the numpy reference of
the depixelate corruption. Shared by several test modules (a test module never imports another)."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from tests.dicom_factory import random_hu


def phantom_hu(seed: int) -> np.ndarray:
    """A smooth, structured volume (so crops and turns are visible), 64^3 HU."""
    rng = np.random.default_rng(seed)
    z, y, x = np.meshgrid(*(np.linspace(-1, 1, 64),) * 3, indexing="ij")
    body = (y / 0.9) ** 2 + (x / 0.8) ** 2 < 1
    hu = np.where(body, 40.0, -1000.0) + 300 * np.sin(5 * x + rng.uniform(0, 6)) * np.cos(3 * y + z)
    return np.clip(hu, -1024, 3071).astype(np.int16)


def write_nifti_volume(path, shape, seed, spacing=(1.0, 1.0, 2.0)):
    image = sitk.GetImageFromArray(random_hu(shape, seed))
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def numpy_depixelate(hu, factor):
    """Nearest-neighbour pixelation in numpy: every ``factor``-th sample repeated (the reference of the op)."""
    low = hu[..., ::factor, ::factor, ::factor]
    for axis in (-3, -2, -1):
        low = np.repeat(low, factor, axis=axis)
    return low[..., : hu.shape[-3], : hu.shape[-2], : hu.shape[-1]]
