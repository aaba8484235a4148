"""In-plane resampling of HU slabs onto another pixel spacing, the grid's size kept.

A synthetic volume is put on a real scan's field of view this way (cgan_ct.synthesis.placement), and the
synthesis report puts it back on the cascade's own grid before looking for copies of training voxels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cgan_ct.constants import AIR_HU


class Regrid:
    """Slabs of ``size`` x ``size`` pixels of ``from_spacing`` (mm, y x) onto ``to_spacing``: the output pixel u
    (from the image centre) samples the point u * to_spacing + ``shift_mm`` mm from the input's centre (cubic
    spline; air outside the input)."""

    def __init__(self, from_spacing, to_spacing, size: int, shift_mm=(0.0, 0.0)):
        centre = (size - 1) / 2
        index = np.arange(size) - centre
        # the spacing ratio first: on the same grid the coordinates are the input's own, exactly
        self.rows = index * (float(to_spacing[0]) / float(from_spacing[0])) + float(shift_mm[0]) / float(
            from_spacing[0]
        )
        self.columns = index * (float(to_spacing[1]) / float(from_spacing[1])) + float(shift_mm[1]) / float(
            from_spacing[1]
        )
        self.rows, self.columns = self.rows + centre, self.columns + centre
        self.size = size

    def apply(self, slab_hu: np.ndarray) -> np.ndarray:
        """A (rows, size, size) HU slab on the new grid (float32)."""
        slab = np.asarray(slab_hu, np.float32)
        if slab.ndim != 3 or slab.shape[1:] != (self.size, self.size):
            raise ValueError(f"a slab of (rows, {self.size}, {self.size}) voxels was expected, got {slab.shape}")
        rows, columns = np.meshgrid(self.rows, self.columns, indexing="ij")
        out = np.empty_like(slab)
        for z, plane in enumerate(slab):
            out[z] = ndimage.map_coordinates(plane, [rows, columns], order=3, mode="constant", cval=AIR_HU)
        return out
