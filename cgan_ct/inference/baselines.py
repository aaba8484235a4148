"""Classical answers to each task, for the tables beside the model.

Every baseline takes the condition volume in HU (z, y, x) and returns float32 HU.
- depixelate: trilinear and tricubic interpolation from the same samples the
  model sees (every factor-th voxel, starting at 0);
- denoise: Gaussian smoothing (sigma 1 voxel in-plane, 0.5 across slices) and
  non-local means (scikit-image, per axial slice);
- every task: the condition itself.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from scipy import ndimage
from skimage.restoration import denoise_nl_means

from cgan_ct.constants import DEFAULT_FACTOR, DEFAULT_PEAK, DENOISE, DEPIXELATE, POISSON_HU_OFFSET, POISSON_HU_RANGE


def interpolate_samples(condition_hu: np.ndarray, factor: int = DEFAULT_FACTOR, order: int = 1) -> np.ndarray:
    """Interpolates the kept samples (every ``factor``-th voxel) back to full size; order 1 or 3."""
    samples = np.asarray(condition_hu, np.float32)[::factor, ::factor, ::factor]
    grid = np.meshgrid(*(np.arange(n) / factor for n in condition_hu.shape), indexing="ij", sparse=True)
    coordinates = np.broadcast_arrays(*grid)
    return ndimage.map_coordinates(samples, coordinates, order=order, mode="nearest").astype(np.float32)


def gaussian_smoothing(condition_hu: np.ndarray) -> np.ndarray:
    return ndimage.gaussian_filter(np.asarray(condition_hu, np.float32), sigma=(0.5, 1.0, 1.0))


def non_local_means(condition_hu: np.ndarray, peak: float = DEFAULT_PEAK) -> np.ndarray:
    """Per-slice non-local means with the noise level the Poisson protocol implies for soft tissue."""
    sigma_hu = POISSON_HU_RANGE * np.sqrt((POISSON_HU_OFFSET / POISSON_HU_RANGE) / peak)  # std of Y at 0 HU
    images = np.asarray(condition_hu, np.float32)

    def one(image):
        return denoise_nl_means(image, h=0.8 * sigma_hu, sigma=sigma_hu, patch_size=5, patch_distance=5, fast_mode=True)

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:  # scikit-image releases the GIL here
        return np.stack(list(pool.map(one, images))).astype(np.float32)


BASELINES = {DEPIXELATE: ("trilinear", "tricubic"), DENOISE: ("gaussian", "non_local_means")}


def baselines(
    task: str, condition_hu: np.ndarray, skip=(), peak: float = DEFAULT_PEAK, factor: int = DEFAULT_FACTOR
) -> dict[str, np.ndarray]:
    """Name -> baseline volume for ``task`` (the condition itself included), but those named in ``skip``.

    ``peak`` and ``factor``: the condition's Poisson peak (non-local means' noise level) and pixelation factor.
    """
    methods = {
        DEPIXELATE: {
            "trilinear": lambda: interpolate_samples(condition_hu, factor, order=1),
            "tricubic": lambda: interpolate_samples(condition_hu, factor, order=3),
        },
        DENOISE: {
            "gaussian": lambda: gaussian_smoothing(condition_hu),
            "non_local_means": lambda: non_local_means(condition_hu, peak),
        },
    }.get(task, {})
    unknown = set(skip) - {name for names in BASELINES.values() for name in names}
    if unknown:
        raise ValueError(f"unknown baselines to skip: {sorted(unknown)}")
    result = {"condition": np.asarray(condition_hu, np.float32)}
    result.update({name: make() for name, make in methods.items() if name not in skip})
    return result


def seam_score(volume: np.ndarray, block: int) -> float:
    """Mean |difference| of neighbouring voxels across block boundaries over the same inside blocks.

    Boundaries are those of non-overlapping tiles from the origin. 1.0: seams invisible.
    """
    volume = np.asarray(volume, np.float32)
    across, inside = [], []
    for axis in range(3):
        diffs = np.abs(np.diff(volume, axis=axis))
        boundary = (np.arange(diffs.shape[axis]) + 1) % block == 0
        across.append(np.compress(boundary, diffs, axis=axis).ravel())
        inside.append(np.compress(~boundary, diffs, axis=axis).ravel())
    return float(np.concatenate(across).mean() / max(np.concatenate(inside).mean(), 1e-12))
