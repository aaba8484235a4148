"""A lung mask for the paper's pulmonary-region figures (Table II), that holds on sick lungs.

Air below -400 HU inside the body finds the aerated lung, and misses what disease makes dense: consolidation,
ground glass above -400 HU, nodules, masses. The lungs are therefore filled slice by slice: each lung's outline
is closed with a disk of ``CLOSING_RADIUS_MM`` (dense disease against the pleura leaves a dent) and its holes
are filled (dense disease inside the lung leaves a hole). Two guards keep the rest of the chest out:

- each side of the body's midline is filled on its own, so nothing bridges the mediastinum or the trachea;
- a filled piece must be capped by aerated lung in the slices above and below it. The tops of the liver and
  spleen (and the heart's apex) also sit in holes of the lung bases in an axial slice, but are open below:
  they stay out.

A pleural effusion lies outside the lung's outline and is wider than the closing reaches: it stays out too.
Airways that the threshold joined to the lungs stay as they were; the hilum beside them may be filled.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cgan_ct.ops.body_mask import body_mask

LUNG_THRESHOLD_HU = -400
CLOSING_RADIUS_MM = 10.0  # dents up to about 2 cm wide; 15 mm already reaches the mediastinum by the bronchi
MIN_CAPPED = 0.5  # share of a filled piece's faces toward the slices above and below that must be aerated lung

_IN_PLANE = np.zeros((3, 3, 3), bool)  # the 4-neighbourhood of an axial slice, as a (z, y, x) structure
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)
_SQUARE = np.zeros((3, 3, 3), bool)
_SQUARE[1] = True


def lung_mask(hu: np.ndarray, spacing_mm=(1.0, 1.0, 1.0), min_volume_ml: float = 50.0) -> np.ndarray:
    """Boolean mask (z, y, x) of the lungs, dense disease enclosed by aerated lung included.

    ``hu``: (z, y, x) in HU; ``spacing_mm``: (z, y, x). The aerated lungs (``aerated_lung_mask``), plus what
    each side's per-slice closing (radius ``CLOSING_RADIUS_MM``) and hole filling add, where lung caps it
    above and below; always inside the body.
    """
    body = body_mask(hu)
    lungs = _aerated(hu, body, spacing_mm, min_volume_ml)
    pixel_mm = (float(spacing_mm[1]), float(spacing_mm[2]))
    added = np.zeros_like(lungs)
    for side in _sides(body):
        added |= _filled_in_plane(lungs & side, pixel_mm) & side
    added &= body & ~lungs
    return lungs | _capped(added, lungs)


def aerated_lung_mask(hu: np.ndarray, spacing_mm=(1.0, 1.0, 1.0), min_volume_ml: float = 50.0) -> np.ndarray:
    """Boolean mask (z, y, x) of the aerated lungs only: ``lung_mask`` before filling (dense disease left out)."""
    body = body_mask(hu)
    return _aerated(hu, body, spacing_mm, min_volume_ml)


def _aerated(hu: np.ndarray, body: np.ndarray, spacing_mm, min_volume_ml: float) -> np.ndarray:
    """Air below -400 HU inside the body, split into connected components; the largest two (the lungs; one
    if they touch), each at least ``min_volume_ml``, then closed with a 3-voxel cube twice so that vessels
    inside the lungs belong to them; inside the body."""
    labels, count = ndimage.label(body & (hu < LUNG_THRESHOLD_HU))
    if count == 0:
        return np.zeros(hu.shape, bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    keep = np.zeros(count + 1, bool)
    keep[[i for i in np.argsort(sizes)[::-1][:2] if sizes[i] * voxel_ml >= min_volume_ml]] = True
    lungs = keep[labels]
    box = _bounding_box(lungs, 5)
    if box is None:
        return lungs
    # binary_closing(cube 3, iterations=2) is a dilation then an erosion by a 5-cube, which separate into
    # 1-D maximum and minimum filters (outside the array counts as background, as binary_erosion's border):
    # the same mask, faster; the bounding box leaves room for the dilation and the erosion.
    closed = lungs[box].view(np.uint8)
    for axis in range(3):
        closed = ndimage.maximum_filter1d(closed, 5, axis=axis, mode="constant", cval=0)
    for axis in range(3):
        closed = ndimage.minimum_filter1d(closed, 5, axis=axis, mode="constant", cval=0)
    lungs[box] = closed.view(bool)
    return lungs & body


def _sides(body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two boolean (z, 1, x) masks: the columns left and right of each slice's body centroid (the midline)."""
    columns = np.arange(body.shape[2], dtype=float)
    area = body.sum(axis=1).astype(float)  # (z, x)
    midline = (area @ columns) / np.maximum(area.sum(axis=1), 1.0)
    left = columns[None, None, :] < midline[:, None, None]
    return left, ~left


def _bounding_box(mask: np.ndarray, pad: int) -> tuple[slice, ...] | None:
    """Slices of ``mask``'s bounding box grown by ``pad`` voxels (within the array); None if it is empty."""
    found = ndimage.find_objects(mask.view(np.uint8))
    if not found:
        return None
    return tuple(slice(max(s.start - pad, 0), min(s.stop + pad, n)) for s, n in zip(found[0], mask.shape, strict=True))


def _filled_in_plane(part: np.ndarray, pixel_mm: tuple[float, float]) -> np.ndarray:
    """``part`` (z, y, x), each slice closed with a disk of ``CLOSING_RADIUS_MM`` and its holes filled."""
    radius_px = CLOSING_RADIUS_MM / float(np.sqrt(pixel_mm[0] * pixel_mm[1]))
    pad = int(np.ceil(radius_px)) + 2  # room for the dilation, so the crop's edge never erodes it
    box = _bounding_box(part, pad)
    if box is None:
        return part
    crop = np.pad(part[box], ((0, 0), (pad, pad), (pad, pad)))
    closed = crop | _close_in_plane(crop, radius_px)
    # holes: background pieces of a slice that do not reach the crop's edge (one labelling, not a flood fill)
    labels, count = ndimage.label(~closed, structure=_IN_PLANE)
    outside = np.zeros(count + 1, bool)
    for edge in (labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]):
        outside[edge.ravel()] = True
    outside[0] = True
    filled = part.copy()
    filled[box] |= (closed | ~outside[labels])[:, pad:-pad, pad:-pad]
    return filled


def _close_in_plane(mask: np.ndarray, radius_px: float) -> np.ndarray:
    """Per-slice closing of ``mask`` (z, y, x) with an octagon of radius ``radius_px``: a diamond (4-neighbour
    steps) then a square (8-neighbour steps), each iterated, 0.59 r and 0.41 r, so that both its axial and its
    diagonal reach are r. Iterating 3 x 3 steps is much faster than one disk of radius r."""
    steps = ((_IN_PLANE, int(round(0.59 * radius_px))), (_SQUARE, int(round(0.41 * radius_px))))
    out = mask
    for operation in (ndimage.binary_dilation, ndimage.binary_erosion):
        for structure, iterations in steps:
            if iterations:
                out = operation(out, structure=structure, iterations=iterations)
    return out


def _capped(added: np.ndarray, lungs: np.ndarray) -> np.ndarray:
    """The 3-D pieces of ``added`` (z, y, x) whose faces toward the slice above, and toward the slice below,
    are each at least ``MIN_CAPPED`` aerated lung. Faces at the volume's first and last slices count as not
    lung: what the scan cut off is not known to be enclosed."""
    labels, count = ndimage.label(added)
    if count == 0:
        return added
    labels = np.pad(labels, ((1, 1), (0, 0), (0, 0)))
    lungs = np.pad(lungs, ((1, 1), (0, 0), (0, 0)))
    keep = np.ones(count + 1, bool)
    for here, there in ((slice(1, -1), slice(2, None)), (slice(1, -1), slice(None, -2))):
        face = (labels[here] > 0) & (labels[here] != labels[there])  # a piece's voxel whose neighbour is not in it
        piece = labels[here][face]
        total = np.bincount(piece, minlength=count + 1)
        lung = np.bincount(piece, weights=lungs[there][face], minlength=count + 1)
        keep &= lung >= MIN_CAPPED * total
    keep[0] = False
    return keep[labels[1:-1]]
