"""Scale levels for the synthesis cascade: level j is the full-resolution volume
kept at every (2**j)-th voxel along z, y and x.

The down-sampling is the depixelate condition's (cgan_ct.ops.corruption.depixelate
keeps every factor-th voxel, starting at 0), so a depixelation model trained on
level-j blocks sees, as its condition, exactly the nearest-neighbour
up-sampling of level j + 1: the cascade's stages are this project's
depixelate task, trained on each level's volumes.
"""

from __future__ import annotations

import numpy as np


def level_length(length: int, level: int) -> int:
    """Voxels along an axis of ``length`` at ``level`` (ceil(length / 2**level))."""
    return -(-int(length) // 2**level)


def level_shape(shape_zyx, level: int) -> tuple[int, int, int]:
    return tuple(level_length(n, level) for n in shape_zyx)


def subsample(hu: np.ndarray, factor: int) -> np.ndarray:
    """Every ``factor``-th voxel of the last three axes (z, y, x), starting at 0."""
    if factor < 1:
        raise ValueError(f"subsampling factor must be >= 1, got {factor}")
    return hu[..., ::factor, ::factor, ::factor]


def upsample_nearest(hu: np.ndarray, factor: int, shape_zyx=None) -> np.ndarray:
    """Each voxel of (z, y, x) repeated ``factor`` times per axis, cropped to ``shape_zyx``."""
    up = hu
    for axis in (-3, -2, -1):
        up = np.repeat(up, factor, axis=axis)
    if shape_zyx is not None:
        up = up[..., : shape_zyx[0], : shape_zyx[1], : shape_zyx[2]]
    return up
