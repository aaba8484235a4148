"""Measures that need no ground truth: denoising a real noisy scan, before against after.

- Noise: the global noise level of Christianson et al. (Radiology 2015): the local standard deviation
  in a disc of about 6 mm around every voxel of a uniform tissue class, and the mode of its
  histogram, which the few voxels near edges do not move. Two classes, found automatically: soft
  tissue (0..100 HU inside the body: muscle, liver, blood in large vessels) and air outside the body
  (-1010..-900 HU; scanners clip air at -1024, which makes air's figure a lower bound).
- Sharpness: the edge spread width, the distance (mm) over which the mean profile across an edge
  rises from 10 % to 90 % of its step, on the body/air boundary and on lung/vessel boundaries. Edge
  points and their normals are found once, on the input, and the same profiles are sampled in the
  input and the output: the widths compare the same edges.

Arrays are HU (z, y, x); spacing (z, y, x) mm.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import ndimage

from cgan_ct.ops.body_mask import body_mask
from cgan_ct.ops.lung import lung_mask
from cgan_ct.ops.noise_level import AIR_HU_RANGE, TISSUE_HU, global_noise_hu, noise_regions

__all__ = [
    "AIR_HU_RANGE",
    "TISSUE_HU",
    "compare",
    "edge_width_mm",
    "find_edges",
    "global_noise_hu",
    "measure",
    "noise_regions",
]
_SLICES = 16  # slices (spread over the scan) edge points are taken from
_POINTS_PER_SLICE = 200


@dataclasses.dataclass(frozen=True)
class EdgeProfiles:
    """Where to sample: points (z, y, x) on edges and unit normals (y, x) pointing up the step."""

    kind: str
    points: np.ndarray  # [N, 3] voxel coordinates
    normals: np.ndarray  # [N, 2]
    half_length_px: float


def _boundary_points(mask_slice, smooth_slice, rng, count):
    boundary = mask_slice & ~ndimage.binary_erosion(mask_slice)
    ys, xs = np.nonzero(boundary)
    if ys.size == 0:
        return np.zeros((0, 2)), np.zeros((0, 2))
    pick = rng.choice(ys.size, size=min(count, ys.size), replace=False)
    gy, gx = np.gradient(smooth_slice)
    normals = np.stack([gy[ys[pick], xs[pick]], gx[ys[pick], xs[pick]]], axis=1)
    length = np.linalg.norm(normals, axis=1, keepdims=True)
    keep = length[:, 0] > 1e-6
    return np.stack([ys[pick], xs[pick]], axis=1)[keep].astype(float), (normals / np.maximum(length, 1e-9))[keep]


def find_edges(volume_hu, spacing_mm, seed: int = 0) -> list[EdgeProfiles]:
    """Body/air and lung/vessel edge points of ``volume_hu`` (the input), on up to 16 slices."""
    volume = np.asarray(volume_hu, np.float32)
    rng = np.random.default_rng(seed)
    depth = volume.shape[0]
    slices = np.unique(np.linspace(0, depth - 1, min(_SLICES, depth)).round().astype(int))
    body = body_mask(volume)
    lungs = lung_mask(volume, spacing_mm)
    found = {"body": ([], []), "lung_vessel": ([], [])}
    for z in slices:
        smooth = ndimage.gaussian_filter(volume[z], 1.5)
        masks = {"body": body[z]}
        if lungs[z].any():
            vessels = (smooth > -400) & ndimage.binary_dilation(lungs[z], iterations=2)
            labels, count = ndimage.label(vessels)
            sizes = ndimage.sum(vessels, labels, range(1, count + 1))
            large = np.isin(labels, 1 + np.nonzero((sizes >= 20) & (sizes <= 2000))[0])
            masks["lung_vessel"] = large
        for kind, mask in masks.items():
            points, normals = _boundary_points(mask, smooth, rng, _POINTS_PER_SLICE)
            found[kind][0].append(np.column_stack([np.full(len(points), z), points]))
            found[kind][1].append(normals)
    out = []
    for kind, (points, normals) in found.items():
        points = np.concatenate(points) if points else np.zeros((0, 3))
        normals = np.concatenate(normals) if normals else np.zeros((0, 2))
        out.append(EdgeProfiles(kind, points, normals, 8.0 if kind == "body" else 4.0))
    return out


def edge_width_mm(volume_hu, edges: EdgeProfiles, spacing_mm) -> float:
    """10-90 % rise distance (mm) of the mean profile across ``edges`` in ``volume_hu``; NaN if too few."""
    if len(edges.points) < 20:
        return float("nan")
    offsets = np.arange(-edges.half_length_px, edges.half_length_px + 1e-9, 0.25)
    z = np.repeat(edges.points[:, 0:1], offsets.size, axis=1)
    y = edges.points[:, 1:2] + edges.normals[:, 0:1] * offsets
    x = edges.points[:, 2:3] + edges.normals[:, 1:2] * offsets
    profiles = ndimage.map_coordinates(np.asarray(volume_hu, np.float32), [z, y, x], order=1, mode="nearest")
    profile = profiles.mean(axis=0)
    ends = max(2, offsets.size // 8)
    low, high = profile[:ends].mean(), profile[-ends:].mean()
    if high - low < 50:
        return float("nan")
    level = (profile - low) / (high - low)
    centre = int(np.argmin(np.abs(level - 0.5)))

    def crossing(fraction):  # nearest crossing of ``fraction`` around the centre, interpolated
        above = level >= fraction
        if fraction < 0.5:
            i = centre
            while i > 0 and above[i]:
                i -= 1
            a, b = i, i + 1
        else:
            i = centre
            while i < offsets.size - 1 and not above[i]:
                i += 1
            a, b = i - 1, i
        if a < 0 or b >= offsets.size or level[b] == level[a]:
            return float("nan")
        return offsets[a] + (fraction - level[a]) / (level[b] - level[a]) * (offsets[b] - offsets[a])

    return float((crossing(0.9) - crossing(0.1)) * float(spacing_mm[1]))


def measure(volume_hu, spacing_mm, edges: list[EdgeProfiles], regions=None) -> dict:
    """Noise (HU) in soft tissue and air and edge widths (mm) of one volume, on given edges and regions."""
    inside, outside = regions if regions is not None else noise_regions(volume_hu)
    out = {
        "noise_tissue_hu": global_noise_hu(volume_hu, spacing_mm, inside, TISSUE_HU),
        "noise_air_hu": global_noise_hu(volume_hu, spacing_mm, outside, AIR_HU_RANGE),
    }
    for e in edges:
        out[f"edge_{e.kind}_mm"] = edge_width_mm(volume_hu, e, spacing_mm)
    return out


def compare(before_hu, after_hu, spacing_mm, seed: int = 0) -> dict:
    """Each measure before and after (on the same regions and edges, found on ``before``) and after / before."""
    edges = find_edges(before_hu, spacing_mm, seed)
    regions = noise_regions(before_hu)
    before, after = measure(before_hu, spacing_mm, edges, regions), measure(after_hu, spacing_mm, edges, regions)
    out = {"edge_points": {e.kind: len(e.points) for e in edges}}
    for key in before:
        ratio = after[key] / before[key] if np.isfinite(before[key]) and before[key] > 0 else float("nan")
        out[key] = {"before": before[key], "after": after[key], "ratio": ratio}
    return out
