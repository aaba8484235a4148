"""In-plane resampling of HU slabs onto another pixel spacing, the grid's size kept.

For measurements: experiments/frd_field_of_view.py puts real series on other fields of view with it, and the
tests make zoomed copies. Synthesis does not resample (cgan_ct.synthesis.placement moves the coarse draw by
whole pixels: a resampled volume lost texture, BUILD_NOTES "Placement on the coarse level"); the realism
measures align bodies with their own (linear) resampling (cgan_ct.realism.ms_ssim.body_aligned).
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
        rows, columns = (
            index * (float(to_spacing[a]) / float(from_spacing[a])) + float(shift_mm[a]) / float(from_spacing[a])
            for a in (0, 1)
        )
        self.coordinates = np.meshgrid(rows + centre, columns + centre, indexing="ij")  # once, every slab
        self.size = size

    def apply(self, slab_hu: np.ndarray) -> np.ndarray:
        """A (rows, size, size) HU slab on the new grid (float32)."""
        slab = np.asarray(slab_hu, np.float32)
        if slab.ndim != 3 or slab.shape[1:] != (self.size, self.size):
            raise ValueError(f"a slab of (rows, {self.size}, {self.size}) voxels was expected, got {slab.shape}")
        out = np.empty_like(slab)
        for z, plane in enumerate(slab):
            out[z] = ndimage.map_coordinates(plane, self.coordinates, order=3, mode="constant", cval=AIR_HU)
        return out
