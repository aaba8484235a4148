"""Multi-scale SSIM between CT volumes, as a diversity measure for generated sets.

A generator that collapses to a few outputs gives pairs of volumes that look
alike: the mean MS-SSIM over pairs of synthetic volumes, set against the same
over pairs of real volumes, shows it. Volumes differ in slice count and
spacing, so two volumes are compared at matched relative heights: slice
floor((i + 0.5) / n * z) of each, for i < n, on the stored in-plane grids
(the voxel grid as stored, as the field compares 512 x 512 images; scans of
different fields of view therefore differ in scale too), HU clipped to
[-1024, 1024] (data range 2048).

MS-SSIM after Wang, Simoncelli and Bovik (2003), as tf.image.ssim_multiscale
computes it: 11-tap Gaussian window (sigma 1.5) without padding, K1 0.01,
K2 0.03, 2 x 2 average pooling between scales, contrast-structure terms
clipped at 0, and the five standard weights. Images too small for five
scales use as many as fit (the window must fit the coarsest one), with the
first weights renormalised to sum to one.

``aligned_ms_ssim`` is the same with each matched slice moved onto a common grid (0.8 mm pixels, centred on its
body): real scans differ in field of view and table height, and those alone make pairs differ as stored
(nine real patients: 0.27 as stored, 0.39 aligned; BUILD_NOTES "Why synthetic volumes looked alike"). Both are
reported; the aligned one says how much of a set's diversity is anatomy.
"""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage

from cgan_ct.ops.body_mask import largest_body_region

MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
WINDOW_HU = (-1024.0, 1024.0)
ALIGNED_SPACING_MM, ALIGNED_SIZE = 0.8, 512  # the aligned measure's common grid: 410 mm across
_SIGMA, _TAPS, _K1, _K2 = 1.5, 11, 0.01, 0.03


def _filtered(image: np.ndarray) -> np.ndarray:
    """Gaussian-weighted local mean over 11 x 11 windows that lie wholly inside the image ('valid')."""
    radius = _TAPS // 2
    smooth = ndimage.gaussian_filter(image, _SIGMA, truncate=radius / _SIGMA, mode="reflect")
    return smooth[..., radius:-radius, radius:-radius]


def _ssim_terms(a: np.ndarray, b: np.ndarray, data_range: float) -> tuple[float, float]:
    """(mean SSIM, mean contrast-structure term) of two equally shaped 2-D images."""
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    mu_a, mu_b = _filtered(a), _filtered(b)
    var_a = _filtered(a * a) - mu_a**2
    var_b = _filtered(b * b) - mu_b**2
    cov = _filtered(a * b) - mu_a * mu_b
    cs = (2 * cov + c2) / (var_a + var_b + c2)
    luminance = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)
    return float(np.mean(luminance * cs)), float(np.mean(cs))


def _downsample(image: np.ndarray) -> np.ndarray:
    """2 x 2 average pooling; odd sizes are padded symmetrically first, as TensorFlow does."""
    pad = [(0, image.shape[0] % 2), (0, image.shape[1] % 2)]
    image = np.pad(image, pad, mode="symmetric")
    return 0.25 * (image[0::2, 0::2] + image[1::2, 0::2] + image[0::2, 1::2] + image[1::2, 1::2])


def scales_for(shape) -> int:
    """How many of the five MS-SSIM scales fit an image of ``shape`` (the window must fit the coarsest)."""
    size = min(shape)
    scales = 0
    while scales < len(MS_SSIM_WEIGHTS) and size >= _TAPS:
        scales += 1
        size = (size + 1) // 2
    if scales == 0:
        raise ValueError(f"images of shape {tuple(shape)} are smaller than the {_TAPS}-pixel SSIM window")
    return scales


def ms_ssim(a: np.ndarray, b: np.ndarray, data_range: float, scales: int | None = None) -> float:
    """MS-SSIM of two 2-D images (same shape) with values spanning ``data_range``; 1 for identical images."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"ms_ssim compares two 2-D images of one shape, got {a.shape} and {b.shape}")
    scales = scales_for(a.shape) if scales is None else scales
    weights = np.asarray(MS_SSIM_WEIGHTS[:scales])
    weights = weights / weights.sum()
    terms = []
    for level in range(scales):
        ssim, cs = _ssim_terms(a, b, data_range)
        terms.append(max(ssim if level == scales - 1 else cs, 0.0))
        if level < scales - 1:
            a, b = _downsample(a), _downsample(b)
    return float(np.prod(np.power(terms, weights)))


def matched_slices(depth: int, count: int) -> np.ndarray:
    """Slice indices at relative heights (i + 0.5) / count of a volume of ``depth`` slices."""
    return np.minimum(((np.arange(count) + 0.5) / count * depth).astype(int), depth - 1)


def volume_ms_ssim(a_hu: np.ndarray, b_hu: np.ndarray, slices: int = 8) -> float:
    """Mean MS-SSIM over ``slices`` axial slices of two (z, y, x) HU volumes at matched relative heights.

    The in-plane shapes must agree; HU are clipped to WINDOW_HU.
    """
    if a_hu.ndim != 3 or b_hu.ndim != 3 or a_hu.shape[1:] != b_hu.shape[1:]:
        raise ValueError(f"volumes to compare need the same in-plane shape, got {a_hu.shape} and {b_hu.shape}")
    low, high = WINDOW_HU
    scales = scales_for(a_hu.shape[1:])
    values = []
    for i, j in zip(matched_slices(a_hu.shape[0], slices), matched_slices(b_hu.shape[0], slices), strict=True):
        a = np.clip(a_hu[i].astype(np.float64), low, high) - low
        b = np.clip(b_hu[j].astype(np.float64), low, high) - low
        values.append(ms_ssim(a, b, high - low, scales))
    return float(np.mean(values))


def body_aligned(slice_hu: np.ndarray, spacing_yx, size: int = ALIGNED_SIZE) -> np.ndarray:
    """An axial slice on a common grid: ``size`` x ``size`` pixels of ALIGNED_SPACING_MM, centred on its body's
    centroid (``ops.body_mask.largest_body_region`` after a 2-voxel opening; the image centre where there is none),
    linear interpolation, air (-1024 HU) outside the slice. Field of view and placement are gone; the body's size
    in millimetres stays."""
    image = np.asarray(slice_hu, np.float64)
    body = largest_body_region(image, opening=2)
    if body is not None:
        cy, cx = ndimage.center_of_mass(body)
    else:
        cy, cx = (image.shape[0] - 1) / 2, (image.shape[1] - 1) / 2
    offsets = (np.arange(size) - (size - 1) / 2) * ALIGNED_SPACING_MM
    rows, columns = np.meshgrid(cy + offsets / spacing_yx[0], cx + offsets / spacing_yx[1], indexing="ij")
    return ndimage.map_coordinates(image, [rows, columns], order=1, mode="constant", cval=WINDOW_HU[0])


def aligned_ms_ssim(volumes, slices: int = 8) -> list[float]:
    """``pairwise_ms_ssim`` with the bodies aligned: each volume a (hu (z, y, x), in-plane spacing (y, x) mm) pair,
    its matched slices ``body_aligned``. What is left of pairs' likeness is anatomy: two draws on different
    fields of view or placed differently are not counted as different for that."""
    aligned = [
        np.stack([body_aligned(hu[i], spacing) for i in matched_slices(hu.shape[0], slices)]) for hu, spacing in volumes
    ]
    return pairwise_ms_ssim(aligned, slices)


def pairwise_ms_ssim(volumes_hu, slices: int = 8) -> list[float]:
    """``volume_ms_ssim`` of every unordered pair of the (z, y, x) HU arrays (a list, in pair order)."""
    volumes_hu = list(volumes_hu)
    if len(volumes_hu) < 2:
        raise ValueError(f"pairwise MS-SSIM needs at least 2 volumes, got {len(volumes_hu)}")
    return [volume_ms_ssim(a, b, slices) for a, b in itertools.combinations(volumes_hu, 2)]
