"""A CT scan's own noise level, measured without ground truth.

The global noise level of Christianson et al. (Radiology 2015): the local standard deviation in a
disc of about 6 mm around every voxel of a uniform tissue class, and the mode of its histogram,
which the few voxels near edges do not move. Used by the no-reference report
(cgan_ct.inference.no_reference) and to calibrate the lowdose simulation to a scan's own dose.
Arrays are HU (z, y, x); spacing (z, y, x) mm.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cgan_ct.ops.body_mask import body_mask

NOISE_KERNEL_MM = 6.0
TISSUE_HU = (0.0, 100.0)
AIR_HU_RANGE = (-1010.0, -900.0)
MIN_VOXELS = 500


def global_noise_hu(volume_hu, spacing_mm, region: np.ndarray, hu_range) -> float:
    """The mode of the local standard deviation over ``region`` voxels whose local mean is in ``hu_range``.

    NaN when fewer than MIN_VOXELS qualify.
    """
    volume = np.asarray(volume_hu, np.float64)
    size = max(3, int(round(NOISE_KERNEL_MM / float(spacing_mm[1]))) | 1)
    mean = ndimage.uniform_filter(volume, size=(1, size, size))
    square = ndimage.uniform_filter(volume**2, size=(1, size, size))
    local_std = np.sqrt(np.maximum(square - mean**2, 0))
    chosen = region & (mean >= hu_range[0]) & (mean <= hu_range[1])
    values = local_std[chosen]
    if values.size < MIN_VOXELS:
        return float("nan")
    counts, edges = np.histogram(values, bins=np.arange(0.0, min(values.max(), 400.0) + 1.0, 1.0))
    smooth = ndimage.gaussian_filter1d(counts.astype(float), 2.0)
    peak = int(np.argmax(smooth))
    return float((edges[peak] + edges[peak + 1]) / 2)


def noise_regions(volume_hu) -> tuple[np.ndarray, np.ndarray]:
    """(soft-tissue region, air region): inside the body eroded by 3 voxels, outside it by 5 (in-plane)."""
    body = body_mask(np.asarray(volume_hu))
    structure = np.zeros((3, 3, 3), bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    inside = ndimage.binary_erosion(body, structure, iterations=3)
    outside = ~ndimage.binary_dilation(body, structure, iterations=5)
    return inside, outside
