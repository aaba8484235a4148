"""Where a synthetic body lies on its image: the field of view and the placement of real scans.

Real chest scans are reconstructed at the field of view their patient needs (pixel spacing 0.59-0.90 mm on the
cohort's six training series) and the body lies where the table put it
(its centre 5-48 mm from the image's). A cascade draws every body on one grid, at the training volumes' median
spacing and where its coarse generator learned to. Pairs of synthetic volumes were measured (BUILD_NOTES, "Why
synthetic volumes looked alike") alike as stored mostly because of that shared grid: with the bodies aligned in
millimetres, six draws of pretrained:synthesis differ about as much as nine real patients do (MS-SSIM 0.400
against 0.388), and as stored they did not (0.389 against 0.270).

So a cascade trained with ``--placement`` (experimental, off by default) records each training volume's
``Placement`` (numbers only: in-plane spacing and the body centre's offset from the image centre), and a
synthetic volume is given a grid drawn from them (``draw``): one training scan's, chosen by the seed, its spacing
and body offset each moved a little. The coarse draw is moved by whole pixels so that its body centre lands at
that offset before the stages refine it (``place_coarse``); its body keeps its size in pixels, so the drawn
spacing gives it its size in mm, as a radiographer's field of view follows the patient. The stages then make
every voxel at the drawn spacing, as they make them at any training scan's: nothing is resampled (sizing the
body to a scan's fill by interpolating the coarse draw cost FRD, and resampling the finished volume smoothed the
stages' texture and cost more: BUILD_NOTES, "Placement on the coarse level"). The output grain is applied at the
drawn spacing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from cgan_ct.constants import AIR_HU, CONTENT_HU
from cgan_ct.ops.body_mask import largest_body_region

BODY_HU = CONTENT_HU  # above: body (the body mask's threshold)
OPENING_MM = 1.5  # the body's opening, in mm (the table and blankets apart)
OFFSET_JITTER_MM = 10.0  # the body centre lies at the chosen scan's, moved by U(-10, 10) mm per axis
SPACING_JITTER = 0.05  # the chosen scan's pixel spacing times exp(U(-0.05, 0.05))
_DRAW_KEY = 0x91AC  # the placement's random stream, apart from every other use of the volume's seed


@dataclasses.dataclass(frozen=True)
class Placement:
    """An image grid for a body: in-plane pixel spacing (mm, y x) and the body centre's offset from the image
    centre (mm, y x: +y towards the last row, +x towards the last column)."""

    spacing_mm: tuple[float, float]
    offset_mm: tuple[float, float]

    def __post_init__(self):
        spacing = tuple(float(s) for s in self.spacing_mm)
        offset = tuple(float(o) for o in self.offset_mm)
        if len(spacing) != 2 or len(offset) != 2:
            raise ValueError(f"a placement has two spacings and two offsets, got {spacing} and {offset}")
        if not all(np.isfinite(spacing)) or min(spacing) <= 0 or not all(np.isfinite(offset)):
            raise ValueError(f"a placement needs positive spacings and finite offsets, got {spacing}, {offset}")
        object.__setattr__(self, "spacing_mm", spacing)
        object.__setattr__(self, "offset_mm", offset)

    def to_json(self) -> dict:
        return {
            "spacing_mm": [round(s, 4) for s in self.spacing_mm],
            "offset_mm": [round(o, 1) for o in self.offset_mm],
        }

    @classmethod
    def from_json(cls, data: dict) -> Placement:
        return cls(tuple(data["spacing_mm"]), tuple(data["offset_mm"]))


def body_geometry(hu: np.ndarray, spacing_yx) -> tuple[tuple[float, float], float] | None:
    """(the body centre's offset from the image centre in mm (y, x), the share of the image it fills) of a
    (z, y, x) HU volume: medians over up to 16 slices of its middle half of each slice's largest body region's
    centroid and pixel share (its outline: the lungs filled in); None where no such slice has a body. The region
    is opened by OPENING_MM first (2 voxels at 0.75 mm; none on a coarse level's 6 mm voxels, where it would cut
    the body apart)."""
    hu = np.asarray(hu)
    opening = int(round(OPENING_MM / float(min(spacing_yx))))
    depth = hu.shape[0]
    first, last = depth // 4, max(depth // 4 + 1, (3 * depth) // 4)
    centres, fills = [], []
    for z in np.unique(np.linspace(first, last - 1, min(16, last - first)).astype(int)):
        body = largest_body_region(hu[z], opening, BODY_HU)
        if body is None:
            continue
        body = ndimage.binary_fill_holes(body)  # its outline: the lungs are the body's too
        cy, cx = ndimage.center_of_mass(body)
        centres.append(((cy - (hu.shape[1] - 1) / 2) * spacing_yx[0], (cx - (hu.shape[2] - 1) / 2) * spacing_yx[1]))
        fills.append(body.mean())
    if not centres:
        return None
    cy, cx = np.median(centres, axis=0)
    return (float(cy), float(cx)), float(np.median(fills))


def body_offset_mm(hu: np.ndarray, spacing_yx) -> tuple[float, float] | None:
    """The body centre's offset from the image centre (mm, y x) of a (z, y, x) HU volume (``body_geometry``)."""
    geometry = body_geometry(hu, spacing_yx)
    return None if geometry is None else geometry[0]


def measure(hu: np.ndarray, spacing_yx) -> Placement | None:
    """The placement of a real (z, y, x) volume on its grid (None where it has no body)."""
    offset = body_offset_mm(hu, spacing_yx)
    return None if offset is None else Placement(tuple(spacing_yx), offset)


def draw(placements: Sequence[Placement], seed: int) -> Placement:
    """The grid of the volume for ``seed``: one of ``placements`` chosen by the seed, its spacing times up to
    SPACING_JITTER, its body centre moved by up to OFFSET_JITTER_MM. The same for the same arguments."""
    if not placements:
        raise ValueError("no placements to draw from")
    rng = np.random.default_rng([_DRAW_KEY, int(seed) & 0xFFFFFFFF])
    base = placements[int(rng.integers(len(placements)))]
    rng.uniform()  # the body-fill jitter of the scheme measured before this one: drawn, unused (seeds keep grids)
    shift = rng.uniform(-OFFSET_JITTER_MM, OFFSET_JITTER_MM, 2)
    factor = float(np.exp(rng.uniform(-SPACING_JITTER, SPACING_JITTER)))
    offset = tuple(o + d for o, d in zip(base.offset_mm, shift, strict=True))
    return Placement(tuple(s * factor for s in base.spacing_mm), offset)


def place_coarse(coarse_hu: np.ndarray, coarse_spacing_yx, placement: Placement, levels: int) -> np.ndarray:
    """A coarse draw (z, y, x HU on the cascade's coarse grid, ``coarse_spacing_yx``) moved by whole pixels so
    that its body centre lies nearest ``placement``'s offset once the stages have refined it on the placement's
    grid (pixels ``2**levels`` times smaller than the coarse ones); air (AIR_HU) comes in at the edge it leaves.
    The body keeps its size in pixels, so it fills the share of the image it was drawn to fill, and the drawn
    spacing gives it its size in mm (a radiographer fits the field of view to the patient: a scan's field of view
    follows its body). Nothing is interpolated. A draw with no body is returned as it is."""
    coarse = np.asarray(coarse_hu, np.float32)
    offset = body_offset_mm(coarse, coarse_spacing_yx)
    if offset is None:
        return coarse
    body_px = [o / s for o, s in zip(offset, coarse_spacing_yx, strict=True)]
    target_px = [o / (s * 2**levels) for o, s in zip(placement.offset_mm, placement.spacing_mm, strict=True)]
    dy, dx = (int(round(t - b)) for t, b in zip(target_px, body_px, strict=True))
    placed = np.full_like(coarse, AIR_HU)
    rows, columns = coarse.shape[1:]
    if abs(dy) < rows and abs(dx) < columns:
        placed[:, max(dy, 0) : rows + min(dy, 0), max(dx, 0) : columns + min(dx, 0)] = coarse[
            :, max(-dy, 0) : rows + min(-dy, 0), max(-dx, 0) : columns + min(-dx, 0)
        ]
    return placed
