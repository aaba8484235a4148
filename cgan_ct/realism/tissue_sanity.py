"""Per-volume tissue medians, tissue fractions and soft-tissue noise, for sanity checks against real scans.

MAISI-style organ HU checks need an organ segmentation; none is available
offline here, so the classes are defined from the image, by region where
possible (a median inside a fixed HU window is partly self-fulfilling: it can
only move within the window):

- lung: cgan_ct.ops.lung.lung_mask, the two largest connected low-density
  regions inside the body, closed so that vessels belong to them (by region);
- bone: connected structures of >= 300 HU of at least 1 ml, with the holes of
  each axial slice filled so that marrow counts (by region);
- mediastinum (approximates blood: heart and great vessels; NOT a blood
  segmentation): -29..299 HU voxels with lung on both sides along their image
  row, less lungs and bone; the largest connected part (by region and window);
- fat -190..-30 HU and soft tissue -29..150 HU inside the body, outside the
  lungs (synthesis_stats.tissue_masks: by window only).

Fractions are of the body's voxels (and the body's of the whole volume).

Noise power spectrum: unlike synthesis_stats' soft-tissue spectrum (any
32 x 32 patch >= 90 % in the window, mean removed, Hann window: anatomy and
noise together), the NPS takes patches wholly inside uniform soft tissue
(locally averaged HU -29..150), removes a least-squares plane (first-order
detrending, as NPS measurements do), uses no window, and is normalised as
|DFT|^2 dy dx / (Ny Nx) (HU^2 mm^2). Its summaries: the noise standard
deviation (HU, root of the NPS integral, = std of the detrended patches) and
the NPS-weighted mean frequency (cycles/mm): too smooth a generator shows a
low mean frequency, too grainy a high one. Patient images have no truly
uniform region, so residual texture remains in the figure.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cgan_ct.constants import BONE_HU, SOFT_TISSUE_HU
from cgan_ct.ops.body_mask import body_mask
from cgan_ct.realism.synthesis_stats import _patch_corners, _radial_bins, tissue_masks

MIN_BONE_ML = 1.0
MEDIASTINUM_HU = (SOFT_TISSUE_HU[0], BONE_HU - 1)  # soft tissue and contrast-enhanced blood, below bone
# Keys of ``tissue_statistics``, in table order.
MEDIANS = ("lung_hu", "fat_hu", "soft_tissue_hu", "mediastinum_hu", "bone_hu")
FRACTIONS = ("lung_fraction", "fat_fraction", "soft_tissue_fraction", "bone_fraction", "body_fraction")
NOISE = ("nps_noise_hu", "nps_mean_frequency_per_mm", "nps_grid_share")


def bone_region(volume_hu: np.ndarray, spacing_mm, body: np.ndarray) -> np.ndarray:
    """Connected >= 300 HU structures of at least MIN_BONE_ML inside the body, axial holes (marrow) filled."""
    labels, count = ndimage.label(body & (volume_hu >= BONE_HU))
    if count == 0:
        return np.zeros(volume_hu.shape, bool)
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    bone = np.isin(labels, np.flatnonzero(sizes * voxel_ml >= MIN_BONE_ML))
    for k in range(bone.shape[0]):
        if bone[k].any():
            bone[k] = ndimage.binary_fill_holes(bone[k])
    return bone


def mediastinum_region(volume_hu: np.ndarray, lung: np.ndarray, bone: np.ndarray) -> np.ndarray:
    """The largest connected -29..299 HU region lying between lung voxels along its image row, less bone.

    "Between the lungs" is row by row (lung somewhere left and somewhere right
    of the voxel in the same row of its axial slice): a cheap stand-in for the
    lungs' axial convex hull that holds the heart and great vessels.
    """
    low, high = MEDIASTINUM_HU
    lung = np.asarray(lung, bool)
    left = np.maximum.accumulate(lung, axis=2)
    right = np.maximum.accumulate(lung[:, :, ::-1], axis=2)[:, :, ::-1]
    near_bone = np.stack([ndimage.binary_dilation(b, iterations=2) if b.any() else b for b in bone])
    region = left & right & ~lung & ~near_bone & (volume_hu >= low) & (volume_hu <= high)
    labels, count = ndimage.label(region)
    if count == 0:
        return region
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(sizes.argmax())


def noise_power_spectrum(
    volume_hu: np.ndarray,
    spacing_mm,
    region: np.ndarray,
    *,
    patch: int = 32,
    max_patches: int = 128,
    seed: int = 0,
    bin_per_mm: float = 0.05,
) -> dict | None:
    """NPS of ``patch`` x ``patch`` axial patches wholly inside ``region``, planes removed (None without any).

    Returns ``frequencies_per_mm``, ``nps`` (HU^2 mm^2, per radial bin),
    ``noise_hu`` (std of the detrended patches), ``mean_frequency_per_mm`` and ``grid_share``: the share of
    the power on the in-plane Nyquist row and column (half a cycle per voxel along y or x; ``patch`` even),
    where a period-2 grid puts its power (the cross-hatch of a stride-2 transposed convolution). Real CT,
    its noise smoothed by the reconstruction kernel, has little there; white noise 2 / ``patch``.
    """
    corners = _patch_corners(region, patch, 1.0)
    if len(corners) == 0:
        return None
    if len(corners) > max_patches:
        corners = corners[np.sort(np.random.default_rng(seed).choice(len(corners), max_patches, replace=False))]
    patches = np.stack([volume_hu[k, y : y + patch, x : x + patch] for k, y, x in corners]).astype(np.float64)
    yy, xx = np.mgrid[:patch, :patch]
    design = np.stack([np.ones(patch * patch), yy.ravel(), xx.ravel()], axis=1)
    flat = patches.reshape(len(patches), -1).T
    coefficients, *_ = np.linalg.lstsq(design, flat, rcond=None)
    residual = (flat - design @ coefficients).T.reshape(patches.shape)
    dy, dx = float(spacing_mm[1]), float(spacing_mm[2])
    power = (np.abs(np.fft.fft2(residual)) ** 2).mean(axis=0) * dy * dx / (patch * patch)
    bins, count = _radial_bins(patch, (dy, dx), bin_per_mm)
    keep = bins >= 0
    samples = np.bincount(bins[keep], minlength=count)
    nps = np.bincount(bins[keep], weights=power[keep], minlength=count) / np.maximum(samples, 1)
    frequencies = (np.arange(count) + 0.5) * bin_per_mm
    present = samples > 0
    radius = np.hypot(*np.meshgrid(np.fft.fftfreq(patch, dy), np.fft.fftfreq(patch, dx), indexing="ij"))
    nyquist = np.zeros((patch, patch), bool)
    if patch % 2 == 0:
        nyquist[patch // 2, :] = nyquist[:, patch // 2] = True
    return {
        "frequencies_per_mm": frequencies[present],
        "nps": nps[present],
        "noise_hu": float(residual.std()),
        "mean_frequency_per_mm": float((radius * power).sum() / power.sum()) if power.sum() > 0 else 0.0,
        "grid_share": float(power[nyquist].sum() / power.sum()) if power.sum() > 0 else 0.0,
    }


def uniform_soft_tissue(volume_hu: np.ndarray, spacing_mm, body: np.ndarray | None = None) -> np.ndarray:
    """Where the NPS is measured: body voxels outside lungs and bone whose 5 x 5 in-plane mean is soft tissue."""
    volume_hu = np.asarray(volume_hu)
    body = body_mask(volume_hu) if body is None else np.asarray(body, bool)
    lung = tissue_masks(volume_hu, spacing_mm, body=body)["lung"]
    return _uniform(volume_hu, body, lung, bone_region(volume_hu, spacing_mm, body))


def _uniform(volume_hu: np.ndarray, body: np.ndarray, lung: np.ndarray, bone: np.ndarray) -> np.ndarray:
    local_hu = ndimage.uniform_filter(volume_hu.astype(np.float32), (1, 5, 5))
    return body & ~lung & ~bone & (local_hu >= SOFT_TISSUE_HU[0]) & (local_hu <= SOFT_TISSUE_HU[1])


def _median(volume_hu: np.ndarray, mask: np.ndarray) -> float | None:
    return float(np.median(volume_hu[mask])) if mask.any() else None


def tissue_statistics(volume_hu: np.ndarray, spacing_mm, body: np.ndarray | None = None) -> dict:
    """Tissue medians (HU), fractions and soft-tissue noise of one (z, y, x) HU volume.

    Keys: MEDIANS (None where a class is absent), FRACTIONS, NOISE (None
    without a uniform soft-tissue patch). Classes as in the module docstring.
    """
    volume_hu = np.asarray(volume_hu)
    body = body_mask(volume_hu) if body is None else np.asarray(body, bool)
    body_voxels = int(body.sum())
    if body_voxels == 0:
        raise ValueError("no body in the volume (nothing above -500 HU): tissue statistics are undefined")
    masks = tissue_masks(volume_hu, spacing_mm, body=body)
    bone = bone_region(volume_hu, spacing_mm, body)
    mediastinum = mediastinum_region(volume_hu, masks["lung"], bone)
    uniform = _uniform(volume_hu, body, masks["lung"], bone)
    nps = noise_power_spectrum(volume_hu, spacing_mm, uniform)
    return {
        "lung_hu": _median(volume_hu, masks["lung"]),
        "fat_hu": _median(volume_hu, masks["fat"]),
        "soft_tissue_hu": _median(volume_hu, masks["soft_tissue"]),
        "mediastinum_hu": _median(volume_hu, mediastinum),
        "bone_hu": _median(volume_hu, bone),
        "lung_fraction": float(masks["lung"].sum()) / body_voxels,
        "fat_fraction": float(masks["fat"].sum()) / body_voxels,
        "soft_tissue_fraction": float(masks["soft_tissue"].sum()) / body_voxels,
        "bone_fraction": float(bone.sum()) / body_voxels,
        "body_fraction": body_voxels / volume_hu.size,
        "nps_noise_hu": None if nps is None else nps["noise_hu"],
        "nps_mean_frequency_per_mm": None if nps is None else nps["mean_frequency_per_mm"],
        "nps_grid_share": None if nps is None else nps["grid_share"],
    }
