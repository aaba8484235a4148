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


def _ratio(value: float, reference: float) -> float | None:
    return None if reference == 0 else float(value / reference)
