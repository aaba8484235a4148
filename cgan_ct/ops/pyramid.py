"""Scale levels for the synthesis cascade: level j is the full-resolution volume
down-sampled by 2**j along z, y and x, in one of two ways (``PYRAMIDS``):

- "subsample" (the default, and every cascade before issue 33's mean pyramid):
  every (2**j)-th voxel, starting at 0. A level keeps its voxels' full noise.
- "mean": the mean of each 2**j-voxel cube (cells from voxel 0; a cell cut by
  the volume's edge averages the voxels it has). A level is what a scanner
  with voxels that large would see: its noise falls with the cell size, so a
  generator drawing it draws little voxel noise, and each x2 stage adds its
  own level's.

The down-sampling is the depixelate condition's (cgan_ct.ops.corruption.depixelate
with the same pyramid), so a depixelation model trained on level-j blocks sees,
as its condition, exactly the nearest-neighbour up-sampling of level j + 1 (for
the mean pyramid, within a block whose origin is on the cell grid): the
cascade's stages are this project's depixelate task, trained on each level's
volumes.
"""

from __future__ import annotations

import numpy as np

from cgan_ct.constants import PYRAMIDS


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


def mean_pool(hu: np.ndarray, factor: int) -> np.ndarray:
    """The mean of each ``factor``-voxel cube of the last three axes (z, y, x), cells from voxel 0; a cell
    cut by the edge averages the voxels it has. float32 (float64 sums)."""
    if factor < 1:
        raise ValueError(f"pooling factor must be >= 1, got {factor}")
    out = np.asarray(hu, np.float64)
    for axis in (-3, -2, -1):
        n = out.shape[axis]
        starts = np.arange(0, n, factor)
        sums = np.add.reduceat(out, starts, axis=axis)
        counts = np.minimum(starts + factor, n) - starts
        shape = [1] * out.ndim
        shape[axis] = len(starts)
        out = sums / counts.reshape(shape)
    return out.astype(np.float32)


def downsample(hu: np.ndarray, factor: int, pyramid: str = "subsample") -> np.ndarray:
    """``hu`` at a level ``factor`` times coarser, by ``pyramid`` (see the module)."""
    check_pyramid(pyramid)
    if pyramid == "mean":
        return mean_pool(hu, factor)
    return subsample(hu, factor)


def check_pyramid(pyramid: str) -> str:
    if pyramid not in PYRAMIDS:
        raise ValueError(f"pyramid must be one of {PYRAMIDS}, got {pyramid!r}")
    return pyramid


def upsample_nearest(hu: np.ndarray, factor: int, shape_zyx=None) -> np.ndarray:
    """Each voxel of (z, y, x) repeated ``factor`` times per axis, cropped to ``shape_zyx``."""
    up = hu
    for axis in (-3, -2, -1):
        up = np.repeat(up, factor, axis=axis)
    if shape_zyx is not None:
        up = up[..., : shape_zyx[0], : shape_zyx[1], : shape_zyx[2]]
    return up
