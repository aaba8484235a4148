"""Conversion between ``Volume`` and SimpleITK images, and resampling.

SimpleITK orders index axes (x, y, z) and numpy arrays from it (z, y, x); its
direction matrix has one column per index axis. ``Volume`` keeps everything in
array order (z, y, x), so the two differ by reversing the axis order.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from cgan_ct.constants import AIR_HU
from cgan_ct.io.volume import Volume, check_grid_size, hu_to_int16


def to_sitk(volume: Volume) -> sitk.Image:
    """A SimpleITK int16 image with the volume's voxels and geometry."""
    image = sitk.GetImageFromArray(volume.hu)
    image.SetSpacing(tuple(float(s) for s in volume.spacing_mm[::-1]))
    image.SetOrigin(tuple(float(o) for o in volume.origin_mm))
    image.SetDirection(tuple(np.asarray(volume.direction, float)[:, ::-1].ravel()))
    return image


def geometry_from_sitk(image: sitk.Image) -> tuple[tuple, tuple, np.ndarray]:
    """(spacing_mm zyx, origin_mm xyz, direction with columns for z, y, x)."""
    direction_xyz = np.asarray(image.GetDirection(), float).reshape(3, 3)
    spacing = tuple(float(s) for s in image.GetSpacing()[::-1])
    origin = tuple(float(o) for o in image.GetOrigin())
    return spacing, origin, direction_xyz[:, ::-1].copy()


def resample(volume: Volume, spacing_mm, interpolator=sitk.sitkLinear, source=None) -> Volume:
    """Resamples ``volume`` to ``spacing_mm`` (z, y, x) over the same extent.

    The grid keeps origin and direction; the number of voxels per axis is the
    old physical extent divided by the new spacing, rounded. Voxels outside
    the source are air (-1024 HU). A grid over MAX_VOXELS is refused, naming
    ``source`` (default: the volume id).
    """
    spacing_mm = tuple(float(s) for s in spacing_mm)
    old_extent = np.asarray(volume.shape) * np.asarray(volume.spacing_mm)
    size_zyx = np.maximum(1, np.rint(old_extent / np.asarray(spacing_mm))).astype(np.int64)
    check_grid_size(size_zyx, source or volume.volume_id, f"resampling to {spacing_mm} mm")
    image = sitk.Cast(to_sitk(volume), sitk.sitkFloat32)
    resampled = sitk.Resample(
        image,
        [int(n) for n in size_zyx[::-1]],
        sitk.Transform(),
        interpolator,
        image.GetOrigin(),
        spacing_mm[::-1],
        image.GetDirection(),
        float(AIR_HU),
        sitk.sitkFloat32,
    )
    hu, clip_warnings = hu_to_int16(sitk.GetArrayFromImage(resampled), volume.volume_id)
    return volume.replace(hu=hu, spacing_mm=spacing_mm, warnings=volume.warnings + clip_warnings)
