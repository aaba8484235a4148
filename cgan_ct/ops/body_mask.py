"""The patient's body in a CT volume: used to drop blocks of pure air."""

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
