"""The patient's body in a CT volume: used to drop blocks of pure air, and to find where the body lies in a slice."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cgan_ct.constants import CONTENT_HU


def body_mask(hu: np.ndarray, threshold_hu: int = CONTENT_HU) -> np.ndarray:
    """Boolean mask (z, y, x) of the body: the largest connected component above
    ``threshold_hu``, with the holes of each axial slice (lungs, airways) filled."""
    tissue = hu > threshold_hu
    labels, count = ndimage.label(tissue)
    if count == 0:
        return tissue
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    body = labels == int(sizes.argmax())
    for k in range(body.shape[0]):
        body[k] = ndimage.binary_fill_holes(body[k])
    return body


def largest_body_region(slice_hu: np.ndarray, opening: int = 0, threshold_hu: int = CONTENT_HU) -> np.ndarray | None:
    """Boolean mask (y, x) of the largest connected region above ``threshold_hu`` of one axial slice, after a
    binary opening of ``opening`` voxels (0: none; the table and blankets apart); None where there is none."""
    region = np.asarray(slice_hu) > threshold_hu
    if opening:
        region = ndimage.binary_opening(region, iterations=opening)
    labels, count = ndimage.label(region)
    if not count:
        return None
    sizes = ndimage.sum(region, labels, range(1, count + 1))
    return labels == int(np.argmax(sizes)) + 1
