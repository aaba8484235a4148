"""A lung mask for the paper's pulmonary-region figures (Table II)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cgan_ct.ops.body_mask import body_mask

LUNG_THRESHOLD_HU = -400


def lung_mask(hu: np.ndarray, spacing_mm=(1.0, 1.0, 1.0), min_volume_ml: float = 50.0) -> np.ndarray:
    """Boolean mask (z, y, x) of the lungs.

    Air below -400 HU inside the body (the body's holes), split into connected
    components; the largest two (the lungs; one if they touch), each at least
    ``min_volume_ml``, then closed with a 3-voxel structuring element so that
    vessels inside the lungs belong to them.
    """
    inside = body_mask(hu) & (hu < LUNG_THRESHOLD_HU)
    labels, count = ndimage.label(inside)
    if count == 0:
        return np.zeros(hu.shape, bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    keep = [i for i in np.argsort(sizes)[::-1][:2] if sizes[i] * voxel_ml >= min_volume_ml]
    lungs = np.isin(labels, keep)
    lungs = ndimage.binary_closing(lungs, structure=np.ones((3, 3, 3), bool), iterations=2)
    return lungs & body_mask(hu)
