"""Texture of an output against the real scan it should match: noise power and edge sharpness (issue 33, item 3).

PSNR rewards the mean: a model that blurs scores well and looks synthetic. These measures say what an
output does to texture, each as a ratio to the real volume measured the same way (1 is the real scan's
texture; below 1 smoother or blunter, above 1 grainier or harsher):

- noise: the soft-tissue noise power spectrum (tissue_sanity.noise_power_spectrum) of the output and of the
  real volume, both in the same patches: those wholly inside the *real* volume's uniform soft tissue (so an
  output cannot choose easier patches). Ratios of the noise standard deviation and of the NPS-weighted mean
  frequency (the issue's goal: within 25 % of real).
- edges: the in-plane gradient magnitude (Sobel, HU/mm) of the output at the real volume's strongest edges
  (the top ``EDGE_TOP`` of the real gradient inside the body: bone, lung walls, vessels), over the real
  volume's own there. Noise barely moves it (those edges are hundreds of HU); blur lowers it.

Inputs are (z, y, x) HU arrays of one shape with their spacing (mm).

``cell_edge_ratio`` needs no real volume: it measures the squares a cascade leaves where a stage kept the
cells of its condition (a volume made of 8-voxel cells steps at every 8th voxel; real CT has no grid).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from cgan_ct.ops.body_mask import body_mask
from cgan_ct.realism.tissue_sanity import noise_power_spectrum, uniform_soft_tissue

EDGE_TOP = 0.02  # the real volume's strongest 2 % of in-plane gradients inside the body


def gradient_magnitude(volume_hu: np.ndarray, spacing_mm) -> np.ndarray:
    """In-plane gradient magnitude (HU/mm), Sobel per axial slice, float32 (z, y, x)."""
    volume = np.asarray(volume_hu, np.float32)
    gy = ndimage.sobel(volume, axis=1) / (8.0 * float(spacing_mm[1]))
    gx = ndimage.sobel(volume, axis=2) / (8.0 * float(spacing_mm[2]))
    return np.hypot(gy, gx)


def edge_voxels(real_hu: np.ndarray, spacing_mm, top: float = EDGE_TOP, magnitude=None) -> np.ndarray:
    """Boolean mask of the real volume's strongest in-plane edges inside its body (the top ``top`` fraction).

    ``magnitude``: the real volume's ``gradient_magnitude`` where the caller has it already."""
    if not 0 < top < 1:
        raise ValueError(f"top must be in (0, 1), got {top}")
    body = body_mask(real_hu)
    if not body.any():
        raise ValueError("no body in the real volume: its edges are undefined")
    magnitude = gradient_magnitude(real_hu, spacing_mm) if magnitude is None else magnitude
    threshold = np.quantile(magnitude[body], 1 - top)
    return body & (magnitude >= threshold) & (magnitude > 0)


def texture_against(
    real_hu: np.ndarray, outputs: dict[str, np.ndarray], spacing_mm, patch: int = 32
) -> dict[str, dict]:
    """Per output name: {nps_noise_ratio, nps_frequency_ratio, edge_sharpness_ratio, nps_grid_share} against
    ``real_hu``, plus ``"real"``: the real volume's own {nps_noise_hu, nps_mean_frequency_per_mm,
    edge_gradient_hu_per_mm, nps_grid_share} (the grid share as tissue_sanity.noise_power_spectrum's: no ratio,
    real CT's is near 0).

    The NPS ratios are None where the real volume has no uniform soft-tissue patch of ``patch`` x ``patch``
    voxels (a coarser level of a scan: fewer voxels for the same patch in mm).
    """
    real_hu = np.asarray(real_hu)
    for name, output in outputs.items():
        if np.shape(output) != real_hu.shape:
            raise ValueError(f"output {name!r} has shape {np.shape(output)}, the real volume {real_hu.shape}")
    region = uniform_soft_tissue(real_hu, spacing_mm)
    real_magnitude = gradient_magnitude(real_hu, spacing_mm)
    edges = edge_voxels(real_hu, spacing_mm, magnitude=real_magnitude)
    real_nps = noise_power_spectrum(real_hu, spacing_mm, region, patch=patch)
    real_edge = float(real_magnitude[edges].mean())
    result = {
        "real": {
            "nps_noise_hu": None if real_nps is None else real_nps["noise_hu"],
            "nps_mean_frequency_per_mm": None if real_nps is None else real_nps["mean_frequency_per_mm"],
            "edge_gradient_hu_per_mm": real_edge,
            "nps_grid_share": None if real_nps is None else real_nps["grid_share"],
        }
    }
    for name, output in outputs.items():
        nps = None if real_nps is None else noise_power_spectrum(np.asarray(output), spacing_mm, region, patch=patch)
        result[name] = {
            "nps_noise_ratio": None if nps is None else _ratio(nps["noise_hu"], real_nps["noise_hu"]),
            "nps_frequency_ratio": None
            if nps is None
            else _ratio(nps["mean_frequency_per_mm"], real_nps["mean_frequency_per_mm"]),
            "edge_sharpness_ratio": _ratio(float(gradient_magnitude(output, spacing_mm)[edges].mean()), real_edge),
            "nps_grid_share": None if nps is None else nps["grid_share"],
        }
    return result


def cell_edge_ratio(
    volume_hu: np.ndarray, period: int, mask: np.ndarray | None = None, axes: tuple[int, ...] = (1, 2)
) -> float | None:
    """How much more the HU step between neighbours at the boundaries of ``period``-voxel cells (cells from
    voxel 0, between voxels k * period - 1 and k * period) than between the other neighbours: the mean
    absolute step there over the mean elsewhere, along ``axes`` pooled (default y and x: in-plane; ``(0,)``:
    between slices, the bands a coronal view shows), over neighbour pairs both inside ``mask`` (default: the
    body, ``body_mask``). 1: no grid (real CT, whatever its noise); a volume of flat ``period``-voxel squares:
    far above. None without a pair of each kind."""
    if period < 2:
        raise ValueError(f"period must be >= 2, got {period}")
    if not axes or any(axis not in (0, 1, 2) for axis in axes):
        raise ValueError(f"axes must be among 0 (z), 1 (y), 2 (x), got {axes}")
    volume = np.asarray(volume_hu, np.float32)
    mask = body_mask(volume) if mask is None else np.asarray(mask, bool)
    sums = np.zeros(2)  # at boundaries, elsewhere
    counts = np.zeros(2)
    for axis in axes:
        n = volume.shape[axis]
        steps = np.abs(np.diff(volume, axis=axis))
        both = np.logical_and(mask.take(range(n - 1), axis=axis), mask.take(range(1, n), axis=axis))
        shape = [1, 1, 1]
        shape[axis] = n - 1
        boundary = ((np.arange(1, n) % period) == 0).reshape(shape)
        for kind, where in enumerate((boundary, ~boundary)):
            chosen = both & where
            sums[kind] += steps[chosen].sum()
            counts[kind] += chosen.sum()
    if not counts.all() or sums[1] == 0:
        return None
    return float((sums[0] / counts[0]) / (sums[1] / counts[1]))


def _ratio(value: float, reference: float) -> float | None:
    return None if reference == 0 else float(value / reference)
